"""Bounded state for deleted listings: once every target has accepted a deletion (or never had
the listing), its body and everything kept about it per target go, leaving a tombstone.

A tombstone is what ordering needs and nothing more: the listing hash's version, time, group,
deleted flag, snapshot floor and the webhook ids that set it. It expires ``[retention]
horizon_days`` after the later of its time and its floor; an event received later is refused by
the horizon itself if the tombstone would have refused it by time (``bridge/ingest/store.py``).
Not by a TTL: the fold judges each event as of its receipt, so a tombstone must outlive its
expiry while the inbox still holds an event received before it. The compaction lists it in
``lb:tombstones`` with its expiry, and the fold removes it once no such event remains. The
listing also leaves its group's members, so flushes no longer read or plan it.

A flush compacts at its end, when no target has anything left to do for the group, through one
script fenced by the group's lease; the script compacts a listing only if it is still the same
deletion the flush judged (version and time), so a listing that came back meanwhile is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

from bridge import constants as k
from bridge.constants import ks
from bridge.delivery.desired import DesiredListing
from bridge.delivery.idempotency import Intent
from bridge.delivery.ledger import Accepted
from bridge.scripts import Script, load

_G, _V, _T, _D, _, _, _, _FLOOR = k.LISTING_FIELDS

COMPACT = load(__file__, "compact.lua", {"V": _V, "T": _T, "D": _D, "G": _G, "FLOOR": _FLOOR,
                                         "SOURCES": k.LISTING_SOURCES})


@dataclass(frozen=True)
class PerListingView:
    """What a per-listing target's ledger says of some deleted listings."""

    accepted: dict[str, Accepted]
    intents: dict[str, Intent]
    waiting: set[str]  # in the outbox
    wanted: dict[str, str | None]  # ref -> the deletion's digest (None: nothing is sent)

    def done(self, ref: str) -> bool:
        """The target accepted the deletion, never had the listing, or is never told."""
        if ref in self.intents or ref in self.waiting:
            return False
        held = self.accepted.get(ref)
        want = self.wanted.get(ref)
        return held is None or want is None or held.digest == want


def sync_done(accepted_refs: set[str], sync_intent: bool, ref: str) -> bool:
    """A group-sync target no longer holds the listing, and no sync is in doubt."""
    return not sync_intent and ref not in accepted_refs


class Tombstones:
    def __init__(self, redis: Redis, horizon_ms: int) -> None:
        self.horizon_ms = horizon_ms
        self._compact = Script(redis, COMPACT)

    async def compact(self, group: str, token: str, now: int, listings: Sequence[DesiredListing],
                      targets: list[str], per_listing: list[str]) -> int:
        """Compact these deleted listings of ``group`` under the flush's lease (token); how
        many were; -1 if the lease was lost (nothing done). ``now`` is not needed any more:
        a tombstone is kept whenever it expires (the fold removes it)."""
        if not listings:
            return 0
        items = [[item.ref, item.version if item.version is not None else -1,
                  item.occurred_ms] for item in listings]
        keys = compact_keys(group, [item.ref for item in listings], targets, per_listing)
        return int(await self._compact(keys=keys, args=[
            group, token, self.horizon_ms, orjson.dumps(items), len(targets),
            len(per_listing)]))


def compact_keys(group: str, refs: list[str], targets: list[str],
                 per_listing: list[str]) -> list[str]:
    """Every key the compaction of ``refs`` may touch, in compact.lua's order."""
    names = ks()
    keys = [names.LEASE + group, names.TOMBSTONES, names.MEMBERS + group, names.DIRTY + group]
    for target in targets:
        keys += [f"{ks().QUARANTINE}{target}", f"{ks().INTENT}{target}"]
    for target in per_listing:
        keys += [f"{ks().ACCEPTED}{target}", f"{ks().ADOPT}{target}", f"{ks().LINKED}{target}"]
    for ref in refs:
        keys += [f"{ks().LISTING}{ref}", f"{ks().BODY}{ref}"]
    return keys
