"""Idempotency-Key handling shared by both portals' writes: replay, body mismatch, in flight."""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .wire import Answer

TTL_S = 24 * 3600


class Verdict(Enum):
    PROCEED = "proceed"  # first use: the caller runs the request, then calls finish()
    REPLAY = "replay"  # answer with the stored reply
    MISMATCH = "mismatch"  # same key, another request -> 422
    IN_FLIGHT = "in_flight"  # same key still running -> 409


@dataclass
class _Record:
    fingerprint: str
    stored_at: float
    answer: Answer | None = None  # None while the first request runs


@dataclass
class Claim:
    verdict: Verdict
    key: tuple[str, str, str] | None = None
    answer: Answer | None = None


def fingerprint(method: str, path: str, parsed: Any, raw: bytes) -> str:
    """Same request = same method, path and JSON value (key order and spacing don't matter)."""
    try:
        canonical = json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        canonical = raw
    digest = hashlib.sha256(canonical).hexdigest()
    return f"{method} {path} {digest}"


class IdempotencyStore:
    def __init__(self, ttl_s: float = TTL_S) -> None:
        self._ttl = ttl_s
        self._records: OrderedDict[tuple[str, str, str], _Record] = OrderedDict()

    def claim(self, portal: str, credential: str, key: str, fp: str) -> Claim:
        """Decide what to do with a keyed write; PROCEED reserves the key (atomically: no await)."""
        now = time.monotonic()
        self._expire(now)
        scoped = (portal, credential, key)
        record = self._records.get(scoped)
        if record is None:
            self._records[scoped] = _Record(fp, now)
            return Claim(Verdict.PROCEED, scoped)
        if record.answer is None:
            return Claim(Verdict.IN_FLIGHT)
        if record.fingerprint != fp:
            return Claim(Verdict.MISMATCH)
        return Claim(Verdict.REPLAY, answer=record.answer)

    def finish(self, claim: Claim, answer: Answer | None) -> None:
        """Store the answer, or free the key when there is none or it is retryable (>=500, 429)."""
        if claim.key is None:
            return
        record = self._records.get(claim.key)
        if record is None:
            return
        if answer is None or answer.status >= 500 or answer.status == 429:
            del self._records[claim.key]
            return
        record.answer = answer
        record.stored_at = time.monotonic()
        self._records.move_to_end(claim.key)

    def _expire(self, now: float) -> None:
        while self._records:
            key, record = next(iter(self._records.items()))
            if now - record.stored_at < self._ttl:
                return
            del self._records[key]
