"""``bridge send``: sign and post events to a bridge, reporting what it answered."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from bridge.ingest.signatures import sign

log = logging.getLogger("bridge.dev.sender")
# Distinct refusals listed in the summary; the rest are counted in one line.
MAX_REFUSALS_SHOWN = 10


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` cannot sign a webhook (None: it can): ``whsec_`` and base64, as the
    bridge's configuration and the CRM's dashboard give it."""
    if not secret.startswith("whsec_"):
        return "a webhook secret starts with whsec_ (as `bridge dev` prints it)"
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        return "what follows whsec_ in a webhook secret is base64"
    return None if key else "the secret is empty after whsec_"


def refusal(response: httpx.Response) -> str:
    """A refusal in the bridge's own words: its ``{"error": {"type", "message"}}`` body."""
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error['type']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:200] or response.reason_phrase}"


@dataclass
class SendReport:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def lines(self) -> list[str]:
        rate = self.sent / self.elapsed_s if self.elapsed_s else 0.0
        out = [f"sent {self.sent} events in {self.elapsed_s:.2f}s ({rate:.0f}/s); "
               f"latency p50 {self.percentile(0.5):.1f} ms, p95 {self.percentile(0.95):.1f} ms"]
        for status, count in sorted(self.statuses.items()):
            out.append(f"  {status}: {count}")
        for reason, count in sorted(self.errors.items()):
            out.append(f"  {reason}: {count}")
        return out + self._refusal_lines()

    def _refusal_lines(self) -> list[str]:
        if not self.refusals:
            return []
        common = self.refusals.most_common()
        out = ["refused, in the bridge's words:"]
        out += [f"  {count} x {reason}" for reason, count in common[:MAX_REFUSALS_SHOWN]]
        rest = common[MAX_REFUSALS_SHOWN:]
        if rest:
            out.append(f"  {sum(c for _, c in rest)} x {len(rest)} other refusals "
                       "(`bridge send -v` logs each)")
        return out


def signed_request(secret: str, event: Any) -> tuple[bytes, dict[str, str]]:
    body = event if isinstance(event, bytes) else orjson.dumps(event)
    msg_id = f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }
    return body, headers


async def send_events(
    url: str,
    secret: str,
    events: Iterable[Any],
    *,
    concurrency: int = 16,
    rate: float | None = None,
    on_sent: Callable[[], None] | None = None,
) -> SendReport:
    """Post every event (at most ``rate`` per second when given) with ``concurrency`` in flight."""
    report = SendReport()
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=concurrency * 2)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.perf_counter()

    async def worker(client: httpx.AsyncClient) -> None:
        while (event := await queue.get()) is not None:
            body, headers = signed_request(secret, event)
            t0 = time.perf_counter()
            try:
                response = await client.post(url, content=body, headers=headers)
                report.statuses[response.status_code] += 1
                if response.status_code >= 400:
                    report.refusals[refusal(response)] += 1
                    log.debug("refused: %s", response.text)
            except httpx.HTTPError as exc:
                report.errors[type(exc).__name__] += 1
            report.latencies_ms.append((time.perf_counter() - t0) * 1000)
            if on_sent:
                on_sent()

    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        workers = [asyncio.create_task(worker(client)) for _ in range(concurrency)]
        for n, event in enumerate(events):
            if rate:
                delay = started + n / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing the stream, not waiting on a result
            await queue.put(event)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    report.elapsed_s = time.perf_counter() - started
    return report
