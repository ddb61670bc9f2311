"""The desired state of listings as the ingest fold leaves it in Redis, read back.

``lb:listing:{ref}`` and ``lb:body:{ref}`` (see ``bridge/constants.py``) are written only by the
ingest fold (and the worker's repacking); this is their one decoder, used by flush claims, the
operator's views, reconciliation and linking. ``FIELDS`` is the order in which the claim script
returns a listing's fields, so both sides agree on one list. A hash written before the body had
a key of its own still holds it as a field: the body key, when there is one, is the newer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from bridge import constants as k
from bridge.packing import unpack

# Field names of the listing hash, in the order the claim script returns them: every field but
# the snapshot floor, which only the ingest fold reads.
FIELDS = k.LISTING_FIELDS[:-1]
# The hash field a body was kept in before it had a key of its own (lb:body:{ref}).
BODY_FIELD = k.LISTING_FIELDS[4]


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


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def decode_fields(ref: str, values: Sequence[bytes | str | None],
                  body_key: bytes | str | None = None) -> DesiredListing | None:
    """One listing from its hash values in ``FIELDS`` order and its body key's value; None if
    the hash does not exist."""
    group, version, occurred, deleted, body, received, cause = (_text(v) for v in values)
    if body_key is not None:
        body = _text(body_key)
    if group is None and occurred is None:
        return None
    is_deleted = deleted != "0" if deleted is not None else True
    return DesiredListing(
        ref=ref,
        group=group or "",
        version=None if version in (None, "-1") else int(version),
        occurred_ms=int(float(occurred or 0)),
        deleted=is_deleted,
        body=orjson.loads(unpack(body)) if body else None,
        received_ms=int(float(received or 0)),
        cause=cause if is_deleted else None,
        packed=body is not None and body.startswith("~1"),
    )


def bare_tombstone(ref: str, group: str) -> DesiredListing:
    """A member without a hash: read as a bare tombstone, as it always has been."""
    return DesiredListing(ref=ref, group=group, version=None, occurred_ms=0, deleted=True,
                          body=None, received_ms=0)


def decode_hash(ref: str, fields: Mapping[bytes | str, bytes | str],
                body_key: bytes | str | None = None) -> DesiredListing | None:
    """One listing from ``HGETALL lb:listing:{ref}`` and ``GET lb:body:{ref}``."""
    by_name = {_text(name): value for name, value in fields.items()}
    return decode_fields(ref, [by_name.get(name) for name in FIELDS], body_key)


async def read_listings(redis: Redis, refs: Iterable[str]) -> dict[str, DesiredListing]:
    """The desired state of those of ``refs`` that exist, in the order given: one round trip."""
    refs = list(refs)
    if not refs:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for ref in refs:
            pipe.hmget(f"{k.LISTING}{ref}", list(FIELDS))
            pipe.get(f"{k.BODY}{ref}")
        rows = await pipe.execute()
    found = {ref: decode_fields(ref, rows[2 * n], rows[2 * n + 1]) for n, ref in enumerate(refs)}
    return {ref: listing for ref, listing in found.items() if listing is not None}
