"""Content digests and idempotency keys: the same content gives the same key after a retry or
a crash, new content a new key."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson


def digest(payload: Any) -> str:
    """A stable digest of JSON content (key order does not matter)."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def idempotency_key(target: str, operation: str, scope: str, content_digest: str) -> str:
    """Derived from target, operation, what it applies to (listing or group) and content."""
    material = "\x1f".join((target, operation, scope, content_digest)).encode()
    return "lb-" + hashlib.sha256(material).hexdigest()[:40]
