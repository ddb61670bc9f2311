"""Content digests and idempotency keys: the same content gives the same key after a retry or
a crash, new content a new key."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson


def digest(payload: Any) -> str:
    """A stable digest of JSON content (key order does not matter)."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def idempotency_key(target: str, operation: str, scope: str, content_digest: str, *,
                    previous: str | None = None, retry: int = 0) -> str:
    """Derived from target, operation, what it applies to (listing or group) and content.

    ``previous`` is the digest the target last accepted: the key names the transition, so going
    back to earlier content (A, B, then A again) is a new write the portal must apply, not a
    replay of the first. A retry after a failure or a crash has the same ``previous`` (nothing
    new was accepted) and so the same key. ``retry`` counts explicit operator retries, each a
    new intent.
    """
    parts = [target, operation, scope, content_digest, previous or ""]
    if retry:
        parts.append(f"retry-{retry}")
    material = "\x1f".join(parts).encode()
    return "lb-" + hashlib.sha256(material).hexdigest()[:40]
