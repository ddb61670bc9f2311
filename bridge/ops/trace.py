"""A listing's story (``bridge trace REF``, ``GET /api/listings/{ref}/trace`` and the dashboard's
listing page): where it stands on each target, then, newest first, every event received for it,
every flush decision about it per target and every portal call that carried it.

The entries are written where they happen: events by the ingest fold (``bridge/ingest/store.py``),
decisions by the flush
(``bridge/delivery/trace.py``), calls with the ledger's record of each attempt; all in
``lb:trace:{ref}`` (``bridge/constants.py``). This module only reads and renders them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

from bridge import constants as k
from bridge import stories
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery import read_listings
from bridge.ops.actions import NotFound
from bridge.ops.models import ListingStatus
from bridge.ops.reads import Reads, listing_state


@dataclass(frozen=True)
class EventEntry:
    """An event received for the listing, and what it did."""

    kind: Literal["event"]
    at: int  # when the webhook received it
    webhook_id: str
    type: str  # listing.created, listing.updated, listing.deleted, group.snapshot
    group: str
    occurred_at: int
    version: int | None
    result: Literal["applied", "stale", "duplicate"]
    absent: bool = False  # a snapshot that left the listing out, and so deleted it


@dataclass(frozen=True)
class DecisionEntry:
    """What a flush decided about the listing for one target."""

    kind: Literal["decision"]
    at: int
    target: str
    group: str
    # sent, unchanged, quarantined, held, waiting for adoption, rate-limited, retrying, paused
    decision: str
    digest: str | None  # the content concerned (a held sync's: the sync's)
    key: str | None  # a write's Idempotency-Key
    operation: str | None  # upsert, hide, delete, sync
    until: int | None  # rate-limited, retrying: when the target may go on
    detail: str


@dataclass(frozen=True)
class CallEntry:
    """A portal call that carried the listing."""

    kind: Literal["call"]
    at: int  # when its answer was recorded
    target: str
    group: str
    operation: str
    idempotency_key: str
    status: int | None  # the HTTP status; None when no answer came
    outcome: str  # ok, transient, data_invalid, rate_limited, ...
    error: str  # the error type and message; empty when accepted
    latency_ms: float
    attempt: int


TraceEntry = EventEntry | DecisionEntry | CallEntry


@dataclass(frozen=True)
class TargetStep:
    """Where the listing stands on one target: the planner's comparison of what a flush would
    send now with what the target last accepted."""

    kind: str
    status: ListingStatus
    in_step: bool
    desired_digest: str | None
    accepted_digest: str | None
    accepted_at: int | None


@dataclass(frozen=True)
class ListingTrace:
    ref: str
    now: int
    retention_days: float
    # The listing as the bridge holds it; None when only its story is left.
    group: str | None
    version: int | None
    deleted: bool | None
    occurred_at: int | None
    received_at: int | None
    targets: dict[str, TargetStep]
    entries: list[TraceEntry]  # newest first, none older than retention_days


class Traces(Reads):
    """The reads of a listing's story, over the operator's reads."""

    async def trace(self, ref: str) -> ListingTrace:
        now = now_ms()
        retention = self.settings.trace
        raw = await self.redis.lrange(ks().TRACE + ref, 0, k.TRACE_MAXLEN - 1)  # type: ignore[misc]
        listing = (await read_listings(self.redis, [ref])).get(ref)
        if listing is None and not raw:
            message = (f"no listing {ref!r} is known, and nothing about it happened in the "
                       f"last {retention.retention_days:g} days")
            inbox = await self._inbox(now)
            if inbox.events:  # its event may be among them: say so, not just "unknown"
                message += (f"; {inbox.events} received event(s) are waiting for a worker to "
                            f"fold them (the oldest for {(inbox.oldest_age_ms or 0) / 1000:g} s)")
            raise NotFound(message)
        entries = newest_first(raw, since=now - retention.retention_ms)
        targets: dict[str, TargetStep] = {}
        if listing is not None:
            for target in self.settings.targets:
                group = None if target.kind == "rentix" else listing.group
                accepted = (await self.ledger.accepted(target.name, group, [ref])).get(ref)
                quarantined = (await self.ledger.quarantined(target.name, [ref])).get(ref)
                state = listing_state(self._adapter(target), listing, accepted, quarantined)
                targets[target.name] = TargetStep(
                    kind=target.kind, status=state.status, in_step=state.status == "in step",
                    desired_digest=state.desired_digest,
                    accepted_digest=accepted.digest if accepted else None,
                    accepted_at=accepted.at if accepted else None)
        return ListingTrace(
            ref=ref, now=now, retention_days=retention.retention_days,
            group=listing.group if listing else None,
            version=listing.version if listing else None,
            deleted=listing.deleted if listing else None,
            occurred_at=listing.occurred_ms if listing else None,
            received_at=listing.received_ms if listing else None,
            targets=targets, entries=entries)


def newest_first(raw: list[bytes | str], since: int) -> list[TraceEntry]:
    """The stored entries from ``since`` on, newest first (at equal times, as stored: the list
    is newest first already). An entry this code cannot read is left out."""
    entries = [entry for item in raw if (entry := parse_entry(item)) is not None
               and entry.at >= since]
    return sorted(entries, key=lambda entry: entry.at, reverse=True)


def parse_entry(raw: bytes | str) -> TraceEntry | None:
    try:
        data = stories.unpack(raw)
        kind = data.get("kind")
        if kind == "event":
            return EventEntry(kind="event", at=int(data["at"]), webhook_id=str(data["webhook_id"]),
                              type=str(data["type"]), group=str(data["group"]),
                              occurred_at=int(data["occurred_at"]),
                              version=_int(data.get("version")), result=data["result"],
                              absent=bool(data.get("absent", False)))
        if kind == "decision":
            return DecisionEntry(kind="decision", at=int(data["at"]), target=str(data["target"]),
                                 group=str(data["group"]), decision=str(data["decision"]),
                                 digest=data.get("digest"), key=data.get("key"),
                                 operation=data.get("operation"), until=_int(data.get("until")),
                                 detail=str(data.get("detail") or ""))
        if kind == "call":
            return CallEntry(kind="call", at=int(data["at"]), target=str(data["target"]),
                             group=str(data["group"]), operation=str(data["operation"]),
                             idempotency_key=str(data["idempotency_key"]),
                             status=_int(data.get("status")), outcome=str(data["outcome"]),
                             error=str(data.get("error") or ""),
                             latency_ms=float(data.get("latency_ms") or 0),
                             attempt=int(data.get("attempt") or 1))
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return None


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


# -- the terminal's rendering (``bridge trace``) --

def render_trace(trace: ListingTrace) -> list[str]:
    """Where the listing stands on each target, then its story, newest first."""
    lines = [_headline(trace)]
    for name, step in trace.targets.items():
        lines.append(f"  {name} ({step.kind}): {_step(step)}")
    lines.append(f"story, newest first (entries kept {trace.retention_days:g} days, "
                 f"at most {k.TRACE_MAXLEN}):")
    if not trace.entries:
        lines.append("  nothing in that time")
    lines += [f"  {clock(entry.at)}  {render_entry(entry)}" for entry in trace.entries]
    return lines


def _headline(trace: ListingTrace) -> str:
    if trace.group is None:
        return f"listing {trace.ref}: not held by the bridge (only its story is left)"
    version = "no version" if trace.version is None else f"version {trace.version}"
    state = "deleted" if trace.deleted else "live"
    return (f"listing {trace.ref} in group {trace.group}: {state}, {version}, occurred "
            f"{clock(trace.occurred_at)}, received {clock(trace.received_at)}")


def _step(step: TargetStep) -> str:
    accepted = ("never accepted anything for it" if step.accepted_digest is None
                else f"accepted {step.accepted_digest} at {clock(step.accepted_at)}")
    wants = ("" if step.in_step or step.desired_digest is None
             else f"; a flush would send {step.desired_digest}")
    return f"{step.status}; {accepted}{wants}"


def render_entry(entry: TraceEntry) -> str:
    """One entry on one line, after its time."""
    if isinstance(entry, EventEntry):
        version = "" if entry.version is None else f" v{entry.version}"
        absent = ", left out: deleted" if entry.absent else ""
        return (f"event     {entry.type}{version} in {entry.group} (occurred "
                f"{clock(entry.occurred_at)}): {entry.result}{absent}; "
                f"webhook-id {entry.webhook_id}")
    if isinstance(entry, DecisionEntry):
        parts = [f"{entry.target}: {entry.decision}"]
        if entry.operation:
            parts.append(entry.operation)
        if entry.digest:
            parts.append(f"digest {entry.digest}")
        if entry.key:
            parts.append(f"key {entry.key}")
        if entry.until:
            parts.append(f"until {clock(entry.until)}")
        detail = f"; {entry.detail}" if entry.detail else ""
        return f"decision  {' '.join(parts)}{detail}"
    status = entry.status if entry.status is not None else "no answer"
    error = f": {entry.error}" if entry.error else ""
    return (f"call      {entry.target}: {entry.operation} -> {status} {entry.outcome}{error} "
            f"({entry.latency_ms:g} ms, key {entry.idempotency_key}, attempt {entry.attempt})")


def clock(at: int | None) -> str:
    if not at:
        return "n/a"
    moment = dt.datetime.fromtimestamp(at / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"
