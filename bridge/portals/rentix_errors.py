"""Classify every documented Rentix answer into an Outcome.

Rentix's body is `{"statusCode", "message": str | [str], "error"}`; several situations share a
status (two 409s, three 400s), so the message decides where it must.
"""

from __future__ import annotations

from typing import Any

import httpx

from bridge.portals.outcomes import Outcome, Result
from bridge.portals.transport import json_body, retry_after_seconds

# (status, exact message) → (outcome, error_type)
BY_MESSAGE: dict[tuple[int, str], tuple[Outcome, str]] = {
    (400, "Multiple authentication methods provided"):
        (Outcome.CREDENTIALS_INVALID, "multiple_auth_methods"),
    (400, "Listing has no external ID"): (Outcome.CONFLICT, "no_external_id"),
    (400, "Invalid JSON body"): (Outcome.DATA_INVALID, "invalid_json"),
    (401, "API key is required"): (Outcome.CREDENTIALS_INVALID, "api_key_required"),
    (401, "Invalid API key"): (Outcome.CREDENTIALS_INVALID, "invalid_api_key"),
    (403, "Agency is suspended"): (Outcome.CREDENTIALS_INVALID, "agency_suspended"),
    (403, "CRM is not enabled for this agency"): (Outcome.CREDENTIALS_INVALID, "crm_not_enabled"),
    (404, "Listing not found"): (Outcome.NOT_FOUND, "listing_not_found"),
    (409, "External ID already linked"): (Outcome.CONFLICT, "external_id_already_linked"),
    (409, "Listing already has external ID"):
        (Outcome.CONFLICT, "listing_already_has_external_id"),
    (409, "A request with this Idempotency-Key is still being processed"):
        (Outcome.TRANSIENT, "idempotency_key_in_use"),
    (422, "Idempotency-Key reused with a different request body"):
        (Outcome.CONFLICT, "idempotency_key_reused"),
    (422, "All operations failed"): (Outcome.DATA_INVALID, "all_operations_failed"),
}

# Fallbacks when the message is not one we know.
BY_STATUS: dict[int, tuple[Outcome, str]] = {
    400: (Outcome.DATA_INVALID, "bad_request"),
    401: (Outcome.CREDENTIALS_INVALID, "unauthorized"),
    403: (Outcome.CREDENTIALS_INVALID, "forbidden"),
    404: (Outcome.NOT_FOUND, "not_found"),
    409: (Outcome.CONFLICT, "conflict"),
    413: (Outcome.DATA_INVALID, "payload_too_large"),
    415: (Outcome.DATA_INVALID, "unsupported_media_type"),
    422: (Outcome.DATA_INVALID, "unprocessable_entity"),
    429: (Outcome.RATE_LIMITED, "rate_limited"),
}


def classify(response: httpx.Response, latency_ms: float, listing_ref: str | None = None
             ) -> Result:
    body = json_body(response)
    status = response.status_code
    base = Result(Outcome.OK, status=status, body=body, latency_ms=latency_ms,
                  listing_ref=listing_ref)
    if 200 <= status < 300:
        return base
    raw = body.get("message") if isinstance(body, dict) else None
    if isinstance(raw, list):  # field validation: every message starts with its field
        messages = [str(m) for m in raw]
        base.outcome, base.error_type = Outcome.DATA_INVALID, "validation_failed"
        base.message, base.field = "; ".join(messages), field_of(messages[0] if messages else "")
        return base
    base.message = str(raw) if raw is not None else (response.text[:500] or response.reason_phrase)
    base.outcome, base.error_type = _lookup(status, base.message)
    if status == 422 and base.error_type == "all_operations_failed":
        base.field = _first_item_field(body)
    if status == 429:
        # Wait for the later of the two: either alone may be too early.
        times = [t for t in (rate_limit_reset(response), retry_after_seconds(response))
                 if t is not None]
        base.retry_at = max(times) if times else None
    return base


def classify_item(item: Any, latency_ms: float = 0.0, listing_ref: str | None = None
                  ) -> Result:
    """One operation's result within a bulk answer (``results[i]``): OK, or the outcome its
    ``error`` ({statusCode, message}) stands for, classified as the same answer to a single
    request would be. An item that is not a result at all is TRANSIENT (send it again)."""
    if not isinstance(item, dict) or ("success" not in item and "error" not in item):
        return Result(Outcome.TRANSIENT, error_type="no_item_result",
                      message="the bulk answer has no result for this operation",
                      latency_ms=latency_ms, listing_ref=listing_ref)
    error = item.get("error")
    if item.get("success") is True or error is None:
        return Result(Outcome.OK, status=200, body=item, latency_ms=latency_ms,
                      listing_ref=listing_ref)
    status = error.get("statusCode") if isinstance(error, dict) else None
    status = status if isinstance(status, int) else 500
    raw = error.get("message") if isinstance(error, dict) else None
    result = Result(Outcome.OK, status=status, body=item, latency_ms=latency_ms,
                    listing_ref=listing_ref)
    if isinstance(raw, list):
        messages = [str(m) for m in raw]
        result.outcome, result.error_type = Outcome.DATA_INVALID, "validation_failed"
        result.message, result.field = "; ".join(messages), field_of(messages[0] if messages
                                                                     else "")
        return result
    result.message = str(raw) if raw is not None else f"operation failed with {status}"
    result.outcome, result.error_type = _lookup(status, result.message)
    return result


def _lookup(status: int, message: str) -> tuple[Outcome, str]:
    known = BY_MESSAGE.get((status, message))
    if known:
        return known
    if status in BY_STATUS:
        return BY_STATUS[status]
    if status >= 500:
        return Outcome.TRANSIENT, "server_error"
    if 400 <= status < 500:
        return Outcome.DATA_INVALID, f"http_{status}"
    return Outcome.TRANSIENT, f"http_{status}"  # 1xx/3xx: not an answer we can act on


def field_of(message: str) -> str | None:
    """`propertyType must be one of: ...` → `propertyType`."""
    head = message.split(" ", 1)[0].strip()
    return head or None


def _first_item_field(body: Any) -> str | None:
    """For an all-failed bulk, the field behind the first item's error, if it names one."""
    results = body.get("results") if isinstance(body, dict) else None
    for item in results or []:
        message = ((item or {}).get("error") or {}).get("message")
        if isinstance(message, list) and message:
            return field_of(str(message[0]))
    return None


def rate_limit_reset(response: httpx.Response) -> float | None:
    value = response.headers.get("X-RateLimit-Reset")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
