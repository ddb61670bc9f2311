"""Send one request, timing it, and turn transport failures into TRANSIENT results."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import httpx
import orjson

from bridge.portals.outcomes import Outcome, Result


class Sent:
    """A response (or the transport failure instead of one) with its latency."""

    def __init__(self, response: httpx.Response | None, latency_ms: float, failure: Result | None):
        self.response = response
        self.latency_ms = latency_ms
        self.failure = failure


async def send(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    json: Any = None,
    content: bytes | None = None,
    data: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    http_timeout: httpx.Timeout | None = None,
) -> Sent:
    started = time.perf_counter()
    body = content
    hdrs = dict(headers or {})
    if json is not None and content is None:
        body = orjson.dumps(json, default=_json_default)
        hdrs.setdefault("Content-Type", "application/json")
    kwargs: dict[str, Any] = {"headers": hdrs, "params": params, "data": data}
    if body is not None:
        kwargs["content"] = body
    if http_timeout is not None:
        kwargs["timeout"] = http_timeout
    try:
        response = await http.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        return Sent(None, _since(started), _transient("timeout", exc, started))
    except httpx.TransportError as exc:
        return Sent(None, _since(started), _transient("connection_error", exc, started))
    return Sent(response, _since(started), None)


def _json_default(value: Any) -> Any:
    """Decimals (prices parsed exactly upstream) go out as JSON numbers."""
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def merge_headers(base: dict[str, str], extra: dict[str, str | None] | None) -> dict[str, str]:
    """`extra` overrides `base`; a None value removes the header (to send a bad request)."""
    merged: dict[str, str | None] = {**base, **(extra or {})}
    return {k: v for k, v in merged.items() if v is not None}


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _transient(error_type: str, exc: Exception, started: float) -> Result:
    message = f"{type(exc).__name__}: {exc}".rstrip(": ")
    return Result(Outcome.TRANSIENT, error_type=error_type, message=message,
                  latency_ms=_since(started))


def json_body(response: httpx.Response) -> Any:
    """The decoded body, or the raw text when it is not JSON (proxies, gateways)."""
    if not response.content:
        return None
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text


def retry_after_seconds(response: httpx.Response) -> float | None:
    """`Retry-After` as unix seconds (delta-seconds form only; HTTP dates are rare here)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return time.time() + max(0.0, float(value))
    except ValueError:
        return None
