"""Content digests and idempotency keys.

A key names one *intent*: this content, for this listing (or group) on this target, written
over what the target last accepted. The key is random, made when the intent is first planned
and kept in ``lb:intent:{target}`` (:class:`Intent`) before the call goes out, so a retry of the
same intent (a timeout, a crash before the answer was recorded) sends the same key and the
portal applies it once, while any new intent (other content, or the same content again after
the target accepted something else: A, B, A, B) gets a key never used before, even after Redis
lost state. Keys derived from content alone repeat in exactly those cases, and the portal then
replays its stored answer instead of applying the write.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import orjson


def digest(payload: Any) -> str:
    """A stable digest of JSON content (key order does not matter)."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def fresh_key() -> str:
    """A key for a new intent: 160 random bits, never derived from anything that can repeat."""
    return "lb-" + secrets.token_hex(20)


@dataclass(frozen=True)
class Intent:
    """A write planned for one scope (a listing, or a group sync) and not yet settled.

    ``digest`` is the content, ``base`` the digest the target had accepted when it was planned
    (empty when nothing), ``key`` its idempotency key. While it stands, the portal may or may not
    hold ``digest``; it goes once the portal's answer is recorded (accepted or refused)."""

    digest: str
    base: str
    key: str

    def matches(self, content: str, base: str | None) -> bool:
        return self.digest == content and self.base == (base or "")


# The intent a write in doubt leaves: no content matches it, so the next flush sends the desired
# content again (under a fresh key).
DISTRUSTED = Intent(digest="(unknown)", base="(unknown)", key="")


def key_for(intent: Intent | None, content: str, base: str | None) -> tuple[str, bool]:
    """The key of the write of ``content`` over ``base``: the standing intent's key when it is
    the same write (a retry), else a fresh one. The flag says whether the key is new."""
    if intent is not None and intent.matches(content, base):
        return intent.key, False
    return fresh_key(), True
