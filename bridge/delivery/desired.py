"""The desired state of listings as the ingest fold leaves it in Redis, read back.

``lb:listing:{ref}`` and ``lb:body:{ref}`` (see ``bridge/constants.py``) are written only by the
ingest fold (and the worker's repacking); this is their one decoder, used by flush claims, the
operator's views, reconciliation and linking. ``FIELDS`` is the order in which the claim script
returns a listing's fields, so both sides agree on one list. A hash written before the body had
a key of its own still holds it as a field: the body key, when there is one, is the newer.

Decoding never raises: a listing with a stored value it cannot read (a version Lua kept as a
double, a body that is not JSON) is returned *unreadable*, with the field and value at fault, so
that one listing is quarantined and shown, not its whole group wedged (issue 25).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from redis.asyncio import Redis

from bridge import constants as k
from bridge.constants import ks
from bridge.packing import PREFIX, unpack
from bridge.replies import text

# Field names of the listing hash, in the order the claim script returns them: every field but
# the snapshot floor, which only the ingest fold reads.
FIELDS = k.LISTING_FIELDS[:-1]
GROUP_FIELD, VERSION_FIELD, OCCURRED_FIELD, DELETED_FIELD, BODY_FIELD, RECEIVED_FIELD, \
    CAUSE_FIELD = FIELDS
# What a field means, for an operator reading why a listing cannot be read.
MEANING = {GROUP_FIELD: "group", VERSION_FIELD: "version", OCCURRED_FIELD: "occurred_at",
           DELETED_FIELD: "deleted flag", BODY_FIELD: "body", RECEIVED_FIELD: "received_at"}
EXCERPT_CHARS = 60  # of a value shown in a cause: enough to recognise it, never a whole body

T = TypeVar("T")


@dataclass(frozen=True)
class Unreadable:
    """Why a listing's stored state cannot be used: the field at fault (its name in
    ``LISTING_FIELDS``), its value as stored (cut short; None when absent) and what is wrong."""

    field: str
    value: str | None
    reason: str

    @property
    def message(self) -> str:
        stored = "absent" if self.value is None else repr(self.value)
        return (f"the stored {MEANING.get(self.field, self.field)} ({self.field}) is {stored}: "
                f"{self.reason}")


@dataclass(frozen=True)
class DesiredListing:
    ref: str
    group: str
    version: int | None  # None when the CRM sends no versions
    occurred_ms: int
    deleted: bool
    body: dict[str, Any] | None  # the canonical listing; None for a bare tombstone
    received_ms: int
    # Why it is deleted: constants.CAUSE_DELETED or CAUSE_SNAPSHOT; None while it is live (and
    # for a tombstone written before causes were recorded).
    cause: str | None = None
    packed: bool = False  # the body is stored packed (bridge/packing.py) already
    # Set when a stored value cannot be read: the listing is then neither live nor deleted
    # (deleted False, body None): planning quarantines it and keeps what a target holds of it.
    unreadable: Unreadable | None = None


def excerpt(value: object) -> str:
    """A value as a cause shows it: text, cut to EXCERPT_CHARS."""
    if isinstance(value, bytes):
        text = value.decode(errors="replace")
    elif isinstance(value, str):
        text = value
    else:
        text = orjson.dumps(value).decode()
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS - 1] + "…"



def _packed(stored: bytes | str | None) -> bool:
    if isinstance(stored, str):
        stored = stored.encode()
    return stored is not None and stored.startswith(PREFIX)


def _version(text: str) -> int | None:
    if text == "-1":
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError("not an integer") from None


def _ms(text: str) -> int:
    try:
        return int(float(text))
    except (ValueError, OverflowError):
        raise ValueError("not a time in milliseconds") from None


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError('neither "0" nor "1"')
    return text == "1"


def _body(text: str) -> dict[str, Any] | None:
    if not text:
        return None  # as it always read
    try:
        raw = unpack(text)
    except (ValueError, zlib.error) as exc:
        raise ValueError(f"not packed correctly ({exc})") from None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    return body


class _Reader:
    """Reads one listing's stored values, keeping the first that cannot be read."""

    def __init__(self, values: Mapping[str, bytes | str | None]) -> None:
        self.values = values
        self.unreadable: Unreadable | None = None

    def read(self, name: str, parse: Callable[[str], T], absent: T) -> T:
        stored = self.values.get(name)
        if stored is None:
            return absent
        try:
            return parse(text(stored))
        except ValueError as exc:  # UnicodeDecodeError included
            reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
            self.refuse(name, excerpt(stored), reason)
            return absent

    def refuse(self, name: str, value: str | None, reason: str) -> None:
        if self.unreadable is None:
            self.unreadable = Unreadable(name, value, reason)


def decode_fields(ref: str, values: Sequence[bytes | str | None],
                  body_key: bytes | str | None = None) -> DesiredListing | None:
    """One listing from its hash values in ``FIELDS`` order and its body key's value; None if
    the hash does not exist; unreadable (``DesiredListing.unreadable``) if a value cannot be
    read."""
    stored = dict(zip(FIELDS, values, strict=True))
    if body_key is not None:
        stored[BODY_FIELD] = body_key
    if stored[GROUP_FIELD] is None and stored[OCCURRED_FIELD] is None:
        return None
    reader = _Reader(stored)
    if stored[GROUP_FIELD] is None:
        reader.refuse(GROUP_FIELD, None, "a listing always has a group")
    group = reader.read(GROUP_FIELD, str, "")
    version = reader.read(VERSION_FIELD, _version, None)
    occurred = reader.read(OCCURRED_FIELD, _ms, 0)
    deleted = reader.read(DELETED_FIELD, _flag, True)
    body = reader.read(BODY_FIELD, _body, None)
    received = reader.read(RECEIVED_FIELD, _ms, 0)
    cause = reader.read(CAUSE_FIELD, str, None)
    if reader.unreadable is not None:
        return DesiredListing(ref=ref, group=group, version=version, occurred_ms=occurred,
                              deleted=False, body=None, received_ms=received,
                              unreadable=reader.unreadable)
    return DesiredListing(ref=ref, group=group, version=version, occurred_ms=occurred,
                          deleted=deleted, body=body, received_ms=received,
                          cause=cause if deleted else None,
                          packed=body is not None and _packed(stored[BODY_FIELD]))


def bare_tombstone(ref: str, group: str) -> DesiredListing:
    """A member without a hash: read as a bare tombstone, as it always has been."""
    return DesiredListing(ref=ref, group=group, version=None, occurred_ms=0, deleted=True,
                          body=None, received_ms=0)


def decode_hash(ref: str, fields: Mapping[bytes | str, bytes | str],
                body_key: bytes | str | None = None) -> DesiredListing | None:
    """One listing from ``HGETALL lb:listing:{ref}`` and ``GET lb:body:{ref}``."""
    by_name = {text(name): value for name, value in fields.items()}
    return decode_fields(ref, [by_name.get(name) for name in FIELDS], body_key)


async def read_listings(redis: Redis, refs: Iterable[str]) -> dict[str, DesiredListing]:
    """The desired state of those of ``refs`` that exist, in the order given: one round trip."""
    refs = list(refs)
    if not refs:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for ref in refs:
            pipe.hmget(f"{ks().LISTING}{ref}", list(FIELDS))
            pipe.get(f"{ks().BODY}{ref}")
        rows = await pipe.execute()
    found = {ref: decode_fields(ref, rows[2 * n], rows[2 * n + 1]) for n, ref in enumerate(refs)}
    return {ref: listing for ref, listing in found.items() if listing is not None}
