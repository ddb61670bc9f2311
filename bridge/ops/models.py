"""The operator's read models: what ``bridge status``, the pages, the JSON API and /metrics show.

Plain dataclasses. Their fields, in order, are the JSON documented in docs/api.md: the API hands
them to orjson as they are (it serialises dataclasses, nested ones and the ledger's included),
and the templates read their attributes. Per-minute figures stay mappings of name to list, as
the charts draw any number of named series.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from bridge.delivery import Accepted, Attempt, Bucket, Held, Quarantined
from bridge.reconcile.records import CheckRecord, FailedCheck, PassRecord, UnknownListing

Series = dict[str, list[int]]  # name -> one count per minute, oldest first
TargetState = Literal["active", "paused", "rate-limited"]
ListingStatus = Literal["in step", "pending", "quarantined", "quarantined (discarded)",
                        "pending removal", "absent", "unreadable"]


# -- GET /api/drift (and in each target's status and view) --

@dataclass(frozen=True)
class Drift:
    """What a target's periodic reconciliation found (``bridge/reconcile/records.py``)."""

    target: str
    kind: str
    interval_s: int  # [reconcile] interval_s; 0: the periodic pass is off
    groups: int  # checks a full pass takes: every group, and the whole portal on a per-listing
    checked: int  # of them, checked in the pass under way
    last_pass: PassRecord | None  # the last full pass; None before the first
    current: PassRecord  # the pass under way
    unknown_listings: int  # in the groups' last checks
    unknown: list[UnknownListing]  # the newest checks' first, at most UNKNOWN_SHOWN
    latest: list[CheckRecord]  # groups whose last check found something, newest first
    failing: int  # groups whose checks fail
    failures: list[FailedCheck]  # some of them, latest first


# -- a per-listing target's outbox (in each target's status and view) --

@dataclass(frozen=True)
class ReportedBudget:
    """One of a per-listing target's budgets as the portal's rate-limit headers last said
    (``bridge/delivery/budget.py``)."""

    limit: int | None
    remaining: int | None
    reset: int | None  # when the portal's window ends (Unix ms)
    resets_in_ms: int | None  # until then; <= 0: it has ended since, the figures are old
    at: int  # when the portal said so


@dataclass(frozen=True)
class OutboxView:
    """Writes waiting to go to a per-listing target by bulk (``bridge/delivery/outbox.py``)."""

    depth: int  # writes waiting, those of the request in flight included
    in_flight: int  # operations of the bulk request in flight (0: none)
    in_flight_since: int | None  # when that request was recorded
    bulk_per_minute: int  # the configured bulk rate; 0: bulk off
    drain_s: float | None  # expected seconds to send them all; None: bulk off
    budgets: dict[Bucket, ReportedBudget | None]  # general, bulk; None: not reported yet


# -- bridge status (and GET /api/status) --

@dataclass(frozen=True)
class DueGroup:
    group: str
    in_ms: int  # <= 0: due now
    # A flush of the group is running: when its lease lapses unless renewed (``lb:flushing``);
    # ``in_ms`` then counts to that lapse too, not to a flush waiting to start.
    flushing_until: int | None = None


@dataclass(frozen=True)
class Heartbeat:
    """A worker's last heartbeat as it wrote it (``workers/worker.py``)."""

    at: int
    pid: int | None
    host: str | None


@dataclass(frozen=True)
class TargetStatus:
    kind: str
    state: str  # "active", "rate-limited" or "paused (<reason>)"
    last_error: str
    held: dict[str, Held]  # group -> held sync
    quarantined: dict[str, Quarantined]  # ref -> entry, discarded ones left out
    outbox: OutboxView | None  # None: a group-sync target has none
    drift: Drift


@dataclass(frozen=True)
class InboxView:
    """Events the webhook stored that no worker has folded into the state yet: more than a
    moment's worth means no worker is folding (bridge/ingest/inbox.py)."""
    events: int
    oldest_age_ms: int | None  # how long the oldest has waited; None when there is none
    # Entries the fold could not handle, set aside for an operator (lb:inbox:dead), and when
    # the first of them was set aside (None: none is).
    dead: int = 0
    dead_oldest_at: int | None = None


@dataclass(frozen=True)
class Status:
    now: int
    groups: int
    inbox: InboxView
    due: list[DueGroup]
    queued_jobs: int
    targets: dict[str, TargetStatus]
    workers: dict[str, Heartbeat]
    held: list[HeldSync] = field(default_factory=list)  # one per group's held change
    redis_nodes: list[RedisNode] = field(default_factory=list)  # a cluster's nodes


# -- GET /api/overview --

@dataclass(frozen=True)
class Totals:
    events: dict[str, int]
    rejected: dict[str, int]
    deliveries: dict[str, dict[str, int]]  # target -> ok / retrying / failed -> count
    calls: dict[str, int]


@dataclass(frozen=True)
class Figures:
    """The per-minute lists of ``lb:stats:{minute}`` over a window."""

    events: Series  # received, duplicate, stale
    rejected: Series  # by reason
    deliveries: dict[str, Series]  # target -> ok / retrying / failed -> per minute
    calls: Series  # by target


@dataclass(frozen=True)
class Latency:
    samples: int
    p50: int | None
    p95: int | None
    p99: int | None


@dataclass(frozen=True)
class Waiting:
    group: str
    due_at: int
    in_ms: int
    reason: Literal["changes", "retry"]


@dataclass(frozen=True)
class Worker:
    id: str
    at: int
    pid: int | None
    host: str | None
    age_s: float
    alive: bool


@dataclass(frozen=True)
class RedisNode:
    """One node of a Redis Cluster, as the cluster and the node itself say."""

    address: str  # host:port
    role: str  # "master" or "replica"
    reachable: bool  # it answered INFO just now
    failing: bool  # the cluster flags it fail or pfail (a failover may be under way)
    slots: int  # how many hash slots it serves
    tenants: list[str]  # the configured tenants whose slot it serves
    master: str | None = None  # a replica's master (address)
    used_memory_human: str | None = None
    maxmemory: int | None = None
    aof_enabled: int | None = None
    aof_last_write_status: str | None = None


@dataclass(frozen=True)
class RedisInfo:
    used_memory: int | None
    used_memory_human: str | None
    maxmemory: int | None
    maxmemory_policy: str | None
    aof_enabled: int | None
    aof_last_write_status: str | None
    rdb_last_bgsave_status: str | None
    rdb_changes_since_last_save: int | None
    rdb_last_save_time: int | None
    loading: int | None
    nodes: list[RedisNode] = field(default_factory=list)  # a cluster's; none on one Redis


@dataclass(frozen=True)
class Overview:
    now: int
    minutes: list[int]  # each minute's start, oldest first; the last one is still filling
    events: Series
    rejected: Series
    deliveries: dict[str, Series]
    calls: Series
    totals: Totals
    calls_per_event: dict[str, float | None]
    latency_ms: Latency
    inbox: InboxView
    waiting: list[Waiting]
    flushing: list[str]
    queue_depth: int
    workers: list[Worker]
    redis: RedisInfo
    recent_failures: list[Attempt]


# -- GET /api/targets --

@dataclass(frozen=True)
class RateBudget:
    requests_per_minute: int
    burst: int
    available: int
    next_in_ms: int


@dataclass(frozen=True)
class TargetView:
    name: str
    kind: str
    state: TargetState
    paused_reason: str | None
    paused_at: int | None
    blocked_until: int | None
    last_error: str | None
    last_error_at: int | None
    token_expires_at: int | None  # Travtus, when a worker records it
    rate_limit: RateBudget
    quarantined: int
    held: int
    outbox: OutboxView | None  # None: a group-sync target has none
    drift: Drift


# -- GET /api/problems --

@dataclass(frozen=True)
class HeldSync:
    """A group's change held by the guards, once, with the targets it holds (each target
    keeps the same entry: ``lb:held:{target}``)."""

    group: str
    targets: list[str]
    digest: str
    reason: str
    deletions: list[str]
    listings: int
    since: int
    unknown_on_portal: list[str]
    causes: list[dict[str, str]]  # per deletion: ref, cause (explicit/inferred), reason

    @classmethod
    def of(cls, group: str, entries: dict[str, Held]) -> list[HeldSync]:
        """The group's held changes from each target's entry: one per digest (one in all
        unless an entry predates the others, say one stored before holds were per group)."""
        by_digest: dict[str, dict[str, Held]] = {}
        for target, held in sorted(entries.items()):
            by_digest.setdefault(held.digest, {})[target] = held
        changes = []
        for same in by_digest.values():
            first = next(iter(same.values()))
            fields = {**asdict(first), "since": min(h.since for h in same.values())}
            changes.append(cls(group=group, targets=list(same), **fields))
        return changes


@dataclass(frozen=True)
class QuarantinedListing:
    """A quarantine entry with the target and ref it belongs to."""

    target: str
    ref: str
    digest: str
    group: str
    error_type: str
    message: str
    field: str | None
    since: int
    discarded: bool

    @classmethod
    def of(cls, target: str, ref: str, entry: Quarantined) -> QuarantinedListing:
        return cls(target=target, ref=ref, **asdict(entry))


@dataclass(frozen=True)
class Problems:
    quarantined: list[QuarantinedListing]  # oldest first
    held: list[HeldSync]  # oldest first

    @property
    def count(self) -> int:
        return len(self.quarantined) + len(self.held)


# -- GET /api/groups?q= --

@dataclass(frozen=True)
class GroupMatch:
    group: str
    matched: Literal["ref", "group"]
    ref: str | None  # the listing ref that matched
    listings: int


GroupSort = Literal["name", "pending", "held", "last_change"]


@dataclass(frozen=True)
class GroupRow:
    """One group in the list, its figures read for the page shown alone."""

    group: str
    listings: int  # members, tombstones included
    pending: int  # listings with a change some target has not settled (lb:dirty)
    pending_since: int | None  # the first change no flush has taken yet
    last_change: int | None  # None: no change in GROUP_IDLE_MS
    due_in_ms: int | None  # its flush (or retry) is scheduled; <= 0: due now
    held: list[str]  # targets holding a change of the group for an operator


@dataclass(frozen=True)
class GroupPage:
    groups: list[GroupRow]
    sort: GroupSort
    page: int
    per_page: int
    total: int  # every group ever seen


# -- GET /api/groups/{group} --

@dataclass(frozen=True)
class Pending:
    first: int  # first change not yet taken by a flush
    last: int
    seq: int


@dataclass(frozen=True)
class ListingState:
    """Whether a target holds what the bridge would send it now."""

    status: ListingStatus
    desired_digest: str | None
    accepted: Accepted | None
    unreadable: str | None = None  # why a flush cannot plan it: the field and value at fault


@dataclass(frozen=True)
class ListingView:
    ref: str
    version: int | None
    deleted: bool
    occurred_at: int
    received_at: int
    body: dict[str, Any] | None
    targets: dict[str, ListingState]
    unreadable: str | None = None  # why its stored state cannot be read: field and value


@dataclass(frozen=True)
class Backoff:
    attempts: int
    not_before: int


@dataclass(frozen=True)
class GroupTarget:
    held: Held | None
    backoff: Backoff | None  # while retrying
    left_on_portal: list[str]  # what a group-sync target holds that the bridge no longer wants


@dataclass(frozen=True)
class GroupView:
    group: str
    pending: Pending | None  # None when no change waits for a flush
    due_in_ms: int | None
    flushing: bool
    listings: list[ListingView]
    targets: dict[str, GroupTarget]
    history: list[Attempt]
