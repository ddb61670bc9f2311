"""Classify Travtus answers by `error.type`, never by status alone.

Travtus answers most data-validation failures with 401, so a 401 is only an auth problem when
its type says so.
"""

from __future__ import annotations

import httpx

from bridge.portals.outcomes import Outcome, Result
from bridge.portals.transport import json_body, retry_after_seconds

CREDENTIALS = frozenset({
    "invalid_authorization", "missing_authorization", "invalid_client", "invalid_request",
    "not_authorized", "no_access_to_group",
})
DATA = frozenset({
    # sync
    "both_group_identifiers_provided", "no_group_provided", "both_bathroom_attributes_provided",
    "no_external_reference", "date_format_invalid", "missing_unit_type", "missing_listing_url",
    "invalid_unit_type", "no_bathroom_attributes_provided", "invalid_number_of_bathrooms",
    "invalid_address",
    # find
    "no_group_identifier_provided",
    # single create
    "missing_or_invalid_unit_type", "no_listing_url",
})
BY_TYPE: dict[str, Outcome] = {
    **dict.fromkeys(CREDENTIALS, Outcome.CREDENTIALS_INVALID),
    **dict.fromkeys(DATA, Outcome.DATA_INVALID),
    "expired_token": Outcome.TOKEN_EXPIRED,
    "not_found": Outcome.NOT_FOUND,
    "rate_limited": Outcome.RATE_LIMITED,
    "idempotency_key_reused": Outcome.CONFLICT,
    "idempotency_key_in_use": Outcome.TRANSIENT,
}
# The listing field each data error is about (None: the request as a whole).
FIELD_OF_TYPE: dict[str, str] = {
    "no_external_reference": "external_reference",
    "both_bathroom_attributes_provided": "number_of_bathrooms",
    "no_bathroom_attributes_provided": "number_of_bathrooms",
    "invalid_number_of_bathrooms": "number_of_bathrooms",
    "missing_unit_type": "unit_type",
    "invalid_unit_type": "unit_type",
    "missing_or_invalid_unit_type": "unit_type",
    "missing_listing_url": "listing_url",
    "no_listing_url": "listing_url",
    "invalid_address": "address",
    "both_group_identifiers_provided": "group_external_ref",
    "no_group_provided": "group_external_ref",
    "no_group_identifier_provided": "group_external_ref",
}


def classify(response: httpx.Response, latency_ms: float) -> Result:
    body = json_body(response)
    status = response.status_code
    result = Result(Outcome.OK, status=status, body=body, latency_ms=latency_ms)
    if 200 <= status < 300:
        return result
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    error_type = error.get("type")
    result.error_type = str(error_type) if error_type else f"http_{status}"
    result.message = str(error.get("message") or response.reason_phrase)
    result.outcome = BY_TYPE.get(result.error_type) or _by_status(status)
    result.field = FIELD_OF_TYPE.get(result.error_type)
    if result.outcome is Outcome.RATE_LIMITED:
        result.retry_at = retry_after_seconds(response)
    return result


def _by_status(status: int) -> Outcome:
    """Only for answers without a known type (gateways, proxies, new types)."""
    if status == 429:
        return Outcome.RATE_LIMITED
    if status >= 500 or status < 400:
        return Outcome.TRANSIENT
    if status in (401, 403):
        return Outcome.CREDENTIALS_INVALID
    if status == 404:
        return Outcome.NOT_FOUND
    if status == 409:
        return Outcome.CONFLICT
    return Outcome.DATA_INVALID
