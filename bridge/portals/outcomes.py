"""The outcome taxonomy every adapter call reports, so callers never parse portal answers."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    OK = "ok"
    TRANSIENT = "transient"  # retry with backoff: 5xx, timeouts, connection errors, key in use
    RATE_LIMITED = "rate_limited"  # retry at `retry_at` (or with backoff when unknown)
    TOKEN_EXPIRED = "token_expired"  # a fresh token was also refused as expired
    CREDENTIALS_INVALID = "credentials_invalid"  # operator action needed; retrying won't help
    DATA_INVALID = "data_invalid"  # this payload will never be accepted as is
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"  # portal state or idempotency key disagrees with the request


@dataclass(frozen=True)
class Problem:
    """One failed validation rule, in the portal's own vocabulary."""

    error_type: str
    message: str
    field: str | None = None
    listing_ref: str | None = None


@dataclass
class Result:
    outcome: Outcome
    status: int | None = None  # HTTP status; None when nothing was answered (or not sent)
    error_type: str | None = None
    message: str = ""
    field: str | None = None
    listing_ref: str | None = None
    retry_at: float | None = None  # unix seconds
    body: Any = None
    latency_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def retryable(self) -> bool:
        return self.outcome in (Outcome.TRANSIENT, Outcome.RATE_LIMITED, Outcome.TOKEN_EXPIRED)


class PortalError(Exception):
    """Raised by the multi-call helpers (paging) that cannot return a single Result."""

    def __init__(self, result: Result) -> None:
        super().__init__(f"{result.outcome}: {result.error_type or ''} {result.message}".strip())
        self.result = result


def rejected(problems: list[Problem], body: Any = None) -> Result:
    """A DATA_INVALID result for payloads refused by local validation (nothing was sent)."""
    first = problems[0]
    return Result(
        outcome=Outcome.DATA_INVALID,
        error_type=first.error_type,
        message="; ".join(p.message for p in problems),
        field=first.field,
        listing_ref=first.listing_ref,
        body=body if body is not None else [p.__dict__ for p in problems],
    )
