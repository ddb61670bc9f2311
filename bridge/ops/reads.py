"""The operator's read models (``bridge/ops/models.py``) built from what Redis holds.

Whether a target holds what the bridge wants it to is decided by the planner's own code
(``bridge.delivery.planning.desired_digest``, with the target's adapter for its mapping); a
listing's desired state is read only through ``bridge.delivery.desired``.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from redis.asyncio import Redis

from bridge import constants as k
from bridge import group_state
from bridge.clock import now_ms
from bridge.connections import redis_client
from bridge.constants import ks
from bridge.delivery import (
    BUCKETS,
    Accepted,
    Attempt,
    Budget,
    DesiredListing,
    Held,
    Ledger,
    Outbox,
    Quarantined,
    Unreadable,
    budget,
    desired_content,
    desired_digest,
    drain_seconds,
    read_listings,
)
from bridge.ingest.inbox import DeadLetters
from bridge.ingest.store import received_at
from bridge.ops import figures
from bridge.ops.actions import NotFound
from bridge.ops.cluster import cluster_nodes, is_cluster
from bridge.ops.models import (
    Backoff,
    Drift,
    DueGroup,
    GroupMatch,
    GroupPage,
    GroupRow,
    GroupSort,
    GroupTarget,
    GroupView,
    Heartbeat,
    HeldSync,
    InboxView,
    ListingState,
    ListingStatus,
    ListingView,
    OutboxView,
    Overview,
    Pending,
    Problems,
    QuarantinedListing,
    RedisInfo,
    RedisNode,
    ReportedBudget,
    Status,
    TargetState,
    TargetStatus,
    TargetView,
    Waiting,
    Worker,
)
from bridge.portals import RentixAdapter, TravtusAdapter, adapter_for
from bridge.reconcile import schedule
from bridge.reconcile.records import Records
from bridge.replies import text
from bridge.scripts import Script, load
from bridge.settings import RentixTarget, Settings, TravtusTarget

WORKER_STALE_S = 30  # three missed heartbeats (workers beat every 5 s)

# What a target's drift view lists: unknown listings, groups that drifted, failing checks.
UNKNOWN_SHOWN = 100
LATEST_SHOWN = 20
FAILURES_SHOWN = 10

REST_BY_NAME = load(__file__, "rest_by_name.lua")

Target = RentixTarget | TravtusTarget
Adapter = RentixAdapter | TravtusAdapter


class Reads:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        # arq's queue: on [redis] jobs_url when it is apart (a cluster's always is).
        jobs_url = settings.redis.jobs_url
        self.jobs: Redis = redis_client(jobs_url) if jobs_url else redis
        self.ledger = Ledger(redis)
        self.records = Records(redis)
        self.outbox = Outbox(redis)
        self._adapters: dict[str, Adapter] = {}
        self._by_name = Script(redis, REST_BY_NAME)

    def _adapter(self, target: Target) -> Adapter:
        """Built on first use and kept: the reads only map listings with it (no portal call),
        and building one (its HTTP client) costs tens of milliseconds."""
        if target.name not in self._adapters:
            self._adapters[target.name] = adapter_for(target)
        return self._adapters[target.name]

    async def aclose(self) -> None:
        adapters, self._adapters = list(self._adapters.values()), {}
        for adapter in adapters:
            await adapter.aclose()
        if self.jobs is not self.redis:
            await self.jobs.aclose()

    # -- bridge status --

    async def status(self) -> Status:
        now = now_ms()
        return Status(
            now=now,
            groups=await self.redis.scard(ks().GROUPS),  # type: ignore[misc]
            inbox=await self._inbox(now),
            due=await self._due(now),
            queued_jobs=await self.jobs.zcard(k.QUEUE),
            targets={t.name: await self._target_status(t, now) for t in self.settings.targets},
            workers=await self._heartbeats(),
            held=await self.held_changes(),
            redis_nodes=await self.redis_nodes(),
        )

    async def _due(self, now: int) -> list[DueGroup]:
        """Every group in ``lb:due``, and those with a running flush (a live lease in
        ``lb:flushing``) told apart from those waiting for one."""
        leases = await group_state.flushing_until(self.redis, now)
        groups = [DueGroup(group=g, in_ms=at - now, flushing_until=leases.get(g))
                  for g, at in await group_state.due(self.redis)]
        listed = {d.group for d in groups}
        return groups + [DueGroup(group=g, in_ms=until - now, flushing_until=until)
                         for g, until in leases.items() if g not in listed]

    async def _target_status(self, target: Target, now: int) -> TargetStatus:
        state = await self.ledger.target_state(target.name)
        quarantined = await self.ledger.quarantined(target.name)
        return TargetStatus(
            kind=target.kind,
            state=_described_state(state, now),
            last_error=state.get("last_error", ""),
            held=await self.ledger.held(target.name),
            quarantined={r: q for r, q in quarantined.items() if not q.discarded},
            outbox=await self._outbox(target, state, now),
            drift=await self._drift(target, await self._groups()),
        )

    async def _heartbeats(self) -> dict[str, Heartbeat]:
        raw = await self.redis.hgetall(k.WORKERS)  # type: ignore[misc]
        return {text(worker): _heartbeat(value) for worker, value in raw.items()}

    # -- the overview --

    async def overview(self, minutes: int = 60) -> Overview:
        """Per-minute figures of the last ``minutes`` (oldest first, the current one last),
        what is waiting or running now, delivery latency, workers and Redis itself."""
        now = now_ms()
        current = now // 60_000
        stamps = list(range(current - minutes + 1, current + 1))
        series = figures.series(await self._stats(stamps),
                                [t.name for t in self.settings.targets])
        return Overview(
            now=now,
            minutes=[m * 60_000 for m in stamps],
            events=series.events,
            rejected=series.rejected,
            deliveries=series.deliveries,
            calls=series.calls,
            totals=figures.totals(series),
            calls_per_event=figures.calls_per_event(series),
            latency_ms=figures.latency(await self._latencies()),
            inbox=await self._inbox(now),
            waiting=await self._waiting(now),
            flushing=await self._flushing(),
            queue_depth=await self.jobs.zcard(k.QUEUE),
            workers=await self._workers(now),
            redis=await self._redis_info(),
            recent_failures=await self._failures(10),
        )

    async def _stats(self, minutes: list[int]) -> list[dict[str, int]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for minute in minutes:
                pipe.hgetall(f"{ks().STATS}{minute}")
            rows: list[dict[bytes | str, bytes | str]] = await pipe.execute()
        return [{text(f): int(v) for f, v in row.items()} for row in rows]

    async def _inbox(self, now: int) -> InboxView:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(ks().INBOX)
            pipe.lindex(ks().INBOX, 0)
            events, oldest = await pipe.execute()
        dead = await DeadLetters(self.redis).summary()
        return InboxView(events=int(events),
                         oldest_age_ms=None if oldest is None else now - received_at(oldest),
                         dead=dead.count, dead_oldest_at=dead.oldest_at)

    async def _latencies(self) -> list[int]:
        return [int(v) for v in await self.redis.lrange(ks().LATENCY, 0, -1)]  # type: ignore[misc]

    async def _waiting(self, now: int) -> list[Waiting]:
        """Groups in ``lb:due``: why (changes in debounce, or a retry/lease) and when."""
        due = await group_state.due(self.redis)
        async with self.redis.pipeline(transaction=False) as pipe:
            for group, _ in due:
                group_state.read_waiting(pipe, group)
            pending: list[int] = await pipe.execute()
        return [Waiting(group=g, due_at=at, in_ms=at - now, reason=_why_due(bool(has)))
                for (g, at), has in zip(due, pending, strict=True)]

    async def _flushing(self) -> list[str]:
        """Groups whose flush holds a live lease (``lb:flushing``: no keyspace scan)."""
        groups = await self.redis.zrangebyscore(ks().FLUSHING, now_ms(), "+inf")
        return sorted(text(group) for group in groups)

    async def _workers(self, now: int) -> list[Worker]:
        workers = []
        for worker, beat in (await self._heartbeats()).items():
            age = (now - beat.at) / 1000
            workers.append(Worker(id=worker, at=beat.at, pid=beat.pid, host=beat.host,
                                  age_s=round(age, 1), alive=age < WORKER_STALE_S))
        return sorted(workers, key=lambda w: w.id)

    async def _redis_info(self) -> RedisInfo:
        if is_cluster(self.redis):
            return await self._cluster_info()
        info: dict[str, Any] = {**await self.redis.info("memory"),
                                **await self.redis.info("persistence")}
        return _redis_info(info)

    async def _cluster_info(self) -> RedisInfo:
        """A cluster: its nodes (this tenant's slot named on its master), and in the summary
        the fullest master's figures, and AOF failing if any master's does."""
        nodes = await cluster_nodes(self.redis, [self.settings.tenant])
        masters = [n for n in nodes if n.role == "master" and n.reachable and n.slots]
        fullest = max(masters, key=lambda n: n.maxmemory or 0, default=None)
        failing = [n for n in masters if n.aof_last_write_status not in (None, "ok")]
        return RedisInfo(
            used_memory=None,
            used_memory_human=fullest.used_memory_human if fullest else None,
            maxmemory=fullest.maxmemory if fullest else None, maxmemory_policy=None,
            aof_enabled=int(all(n.aof_enabled for n in masters)) if masters else None,
            aof_last_write_status=failing[0].aof_last_write_status if failing else "ok",
            rdb_last_bgsave_status=None, rdb_changes_since_last_save=None,
            rdb_last_save_time=None, loading=None, nodes=nodes)

    async def redis_nodes(self) -> list[RedisNode]:
        """A cluster's nodes (none on one Redis), this tenant's slot named on its master."""
        if not is_cluster(self.redis):
            return []
        return await cluster_nodes(self.redis, [self.settings.tenant])

    async def _failures(self, limit: int) -> list[Attempt]:
        return [a for a in await self.ledger.history(limit=200) if a.outcome != "ok"][:limit]

    # -- targets --

    async def targets(self) -> list[TargetView]:
        now = now_ms()
        return [await self._target_view(target, now) for target in self.settings.targets]

    async def _target_view(self, target: Target, now: int) -> TargetView:
        state = await self.ledger.target_state(target.name)
        quarantined = await self.ledger.quarantined(target.name)
        tat = await self.redis.get(ks().bucket(target.name))
        expires = state.get("token_expires_at")
        return TargetView(
            name=target.name,
            kind=target.kind,
            state=_state(state, now),
            paused_reason=state.get("paused") or None,
            paused_at=_int(state.get("paused_at")),
            blocked_until=_int(state.get("blocked_until")),
            last_error=state.get("last_error") or None,
            last_error_at=_int(state.get("last_error_at")),
            # Recorded by the flush whose call fetched the token (the tokens stay in memory).
            token_expires_at=_int(expires) if target.kind == "travtus" else None,
            rate_limit=figures.budget(float(tat) if tat else None, target.requests_per_minute,
                                      now),
            quarantined=sum(1 for q in quarantined.values() if not q.discarded),
            held=len(await self.ledger.held(target.name)),
            outbox=await self._outbox(target, state, now),
            drift=await self._drift(target, await self._groups()),
        )

    async def _outbox(self, target: Target, state: dict[str, str], now: int
                      ) -> OutboxView | None:
        """A per-listing target's outbox, with its budgets from its ``lb:target`` hash
        (``state``); a group-sync target has none."""
        if target.mode != "per_listing":
            return None
        depth = await self.outbox.depth(target.name)
        batch = await self.outbox.in_flight(target.name)
        budgets = budget.parse(state)
        # A bulk counts against both ("all endpoints" too): either spent holds the sender back.
        spent = budget.spent_until(budgets, now, "bulk", "general")
        drain = drain_seconds(depth, target.bulk_per_minute, spent, now)
        return OutboxView(
            depth=depth,
            in_flight=len(batch.ops) if batch else 0,
            in_flight_since=batch.at if batch else None,
            bulk_per_minute=target.bulk_per_minute,
            drain_s=round(drain, 1) if drain is not None else None,
            budgets={bucket: _reported(budgets.get(bucket), now) for bucket in BUCKETS},
        )

    # -- drift: the periodic reconciliation --

    async def drift(self) -> list[Drift]:
        groups = await self._groups()
        return [await self._drift(target, groups) for target in self.settings.targets]

    async def _drift(self, target: Target, groups: int) -> Drift:
        state = await self.records.passes(target.name)
        failing, failures = await self.records.failures(target.name, FAILURES_SHOWN)
        return Drift(
            target=target.name,
            kind=target.kind,
            interval_s=self.settings.reconcile.interval_s,
            groups=groups + int(schedule.whole_portal(target)),
            checked=state.checked,
            last_pass=state.last,
            current=state.current,
            unknown_listings=state.unknown,
            unknown=await self.records.unknown(target.name, UNKNOWN_SHOWN),
            latest=await self.records.latest(target.name, LATEST_SHOWN),
            failing=failing,
            failures=failures,
        )

    async def _groups(self) -> int:
        return int(await self.redis.scard(ks().GROUPS))  # type: ignore[misc]

    # -- problems --

    async def problems(self) -> Problems:
        quarantined: list[QuarantinedListing] = []
        for target in self.settings.targets:
            quarantined += [QuarantinedListing.of(target.name, ref, q) for ref, q in
                            (await self.ledger.quarantined(target.name)).items()
                            if not q.discarded]
        quarantined.sort(key=lambda q: (q.since, q.target, q.ref))
        return Problems(quarantined=quarantined, held=await self.held_changes())

    async def held_changes(self, group: str | None = None) -> list[HeldSync]:
        """Each group's held change once, with the targets holding it, oldest first."""
        by_group: dict[str, dict[str, Held]] = {}
        for target in self.settings.targets:
            for name, entry in (await self.ledger.held(target.name)).items():
                if group is None or name == group:
                    by_group.setdefault(name, {})[target.name] = entry
        held = [change for name, entries in by_group.items()
                for change in HeldSync.of(name, entries)]
        return sorted(held, key=lambda h: (h.since, h.group, h.targets))

    # -- groups --

    async def list_groups(self, sort: GroupSort = "name", page: int = 1, per_page: int = 50
                          ) -> GroupPage:
        """One page of every group, in ``sort`` order. Only the page's names cross the network
        and only its groups' figures are read (4 commands per row, one pipeline); the order
        costs Redis one sort of lb:groups (O(N log N) for N groups, in C: SORT) for "name" and
        "last_change" (SORT BY lb:pending:*->last: one hash lookup per group, server-side).
        "pending" and "held" list the groups that have one first (lb:due in due order,
        O(log N + page); the held entries, a handful) and the rest by name after them: the
        same sort, only for the pages that reach past the first ones. Measured at 100,000
        groups (Redis 7.0): ~110 ms of Redis time per page for that sort, 85 commands for a
        page of 20; a cache of the order is the next step if that many groups appear."""
        held = await self._held_targets()
        offset = (page - 1) * per_page
        names = await self._ordered_groups(sort, held, offset, per_page)
        return GroupPage(groups=await self._group_rows(names, held), sort=sort, page=page,
                         per_page=per_page, total=await self._groups())

    async def _ordered_groups(self, sort: GroupSort, held: dict[str, tuple[int, list[str]]],
                              offset: int, count: int) -> list[str]:
        if sort == "last_change":  # the newest first; groups idle past GROUP_IDLE_MS last
            found = await self.redis.sort(  # type: ignore[misc]
                ks().GROUPS, start=offset, num=count, desc=True, by=group_state.by_last_change())
            return [text(g) for g in found]
        first: list[str] = []
        if sort == "pending":  # due for a flush (changes, or a retry): the soonest first
            first = [g for g, _ in await group_state.due(self.redis)]
        elif sort == "held":  # the longest held first
            first = sorted(held, key=lambda g: (held[g][0], g))
        page = first[offset:offset + count]
        rest = count - len(page)
        if rest <= 0:
            return page
        skip = max(0, offset - len(first))
        if first:
            return page + await self._rest_by_name(skip, rest, first)
        found = await self.redis.sort(  # type: ignore[misc]
            ks().GROUPS, start=skip, num=rest, alpha=True)
        return page + [text(g) for g in found]

    async def _rest_by_name(self, skip: int, count: int, first: list[str]) -> list[str]:
        """The groups by name, ``first`` left out: ``skip`` skipped, then at most ``count``."""
        found = await self._by_name(keys=[ks().GROUPS], args=[skip, count, *first])
        return [text(g) for g in found]

    async def _held_targets(self) -> dict[str, tuple[int, list[str]]]:
        """group -> (held since, the targets holding its change)."""
        held: dict[str, tuple[int, list[str]]] = {}
        for target in self.settings.targets:
            for group, entry in (await self.ledger.held(target.name)).items():
                since, targets = held.get(group, (entry.since, []))
                held[group] = (min(since, entry.since), [*targets, target.name])
        return held

    async def _group_rows(self, names: list[str], held: dict[str, tuple[int, list[str]]]
                          ) -> list[GroupRow]:
        now = now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for g in names:
                pipe.scard(f"{ks().MEMBERS}{g}")
                group_state.read_row(pipe, g)
            found: list[Any] = await pipe.execute()
        rows = []
        for n, g in enumerate(names):
            members, dirty, (first, last), due = found[4 * n:4 * n + 4]
            rows.append(GroupRow(group=g, listings=int(members), pending=int(dirty),
                                 pending_since=_int(_maybetext(first)),
                                 last_change=_int(_maybetext(last)),
                                 due_in_ms=None if due is None else int(due) - now,
                                 held=held.get(g, (0, []))[1]))
        return rows

    async def search_groups(self, query: str, limit: int = 50) -> list[GroupMatch]:
        """Groups named like ``query``, and the group of the listing whose external ref it is."""
        query = query.strip()
        if not query:
            return []
        found: dict[str, str | None] = {}  # group -> the listing ref that matched, if any
        listing = (await read_listings(self.redis, [query])).get(query)
        if listing is not None and listing.group:
            found[listing.group] = query
        async for group in self.redis.sscan_iter(ks().GROUPS, match=f"*{_glob_escape(query)}*",
                                                 count=1000):
            found.setdefault(text(group), None)
            if len(found) >= limit:
                break
        ordered = sorted(found, key=lambda g: (g != query, g))
        return [GroupMatch(group=g, matched="group" if found[g] is None else "ref", ref=found[g],
                           listings=await self.redis.scard(f"{ks().MEMBERS}{g}"))  # type: ignore[misc]
                for g in ordered]

    async def group(self, group: str, history: int = 50) -> GroupView:
        if not await self.redis.sismember(ks().GROUPS, group):  # type: ignore[misc]
            raise NotFound(f"no group named {group!r} has been seen")
        now = now_ms()
        members = await self.redis.smembers(f"{ks().MEMBERS}{group}")  # type: ignore[misc]
        desired = await read_listings(self.redis, sorted(text(r) for r in members))
        due = await group_state.due_at(self.redis, group)
        targets: dict[str, GroupTarget] = {}
        states: dict[str, dict[str, ListingState]] = {}
        for target in self.settings.targets:
            targets[target.name], states[target.name] = await self._group_target(
                target, group, desired, now)
        return GroupView(
            group=group,
            pending=await self._pending(group),
            due_in_ms=due - now if due is not None else None,
            flushing=await group_state.flushing(self.redis, group, now),
            listings=[_listing_view(listing, {n: s[ref] for n, s in states.items()})
                      for ref, listing in desired.items()],
            targets=targets,
            history=await self.ledger.history(group, history),
        )

    async def _pending(self, group: str) -> Pending | None:
        """``first`` is cleared when a flush takes the changes; last/seq stay as counters."""
        fields = await group_state.pending(self.redis, group)
        if "first" not in fields:
            return None
        return Pending(first=fields["first"], last=fields.get("last", fields["first"]),
                       seq=fields.get("seq", 0))

    async def _group_target(self, target: Target, group: str,
                            desired: dict[str, DesiredListing], now: int
                            ) -> tuple[GroupTarget, dict[str, ListingState]]:
        """The group on one target, and each listing's state there."""
        per_listing = target.kind == "rentix"
        refs = list(desired)
        accepted = await self.ledger.accepted(target.name, None if per_listing else group,
                                              refs if per_listing else None)
        quarantined = await self.ledger.quarantined(target.name, refs)
        held = (await self.ledger.held(target.name)).get(group)
        attempts, not_before = await self.ledger.backoff(target.name, group)
        adapter = self._adapter(target)
        states = {ref: listing_state(adapter, listing, accepted.get(ref), quarantined.get(ref))
                  for ref, listing in desired.items()}
        view = GroupTarget(
            held=held,
            backoff=Backoff(attempts, not_before) if not_before > now else None,
            # On a group-sync portal, what it holds that the bridge no longer wants there.
            left_on_portal=[] if per_listing else sorted(set(accepted) - set(desired)),
        )
        return view, states


def listing_state(adapter: Adapter, listing: DesiredListing, accepted: Accepted | None,
                  quarantined: Quarantined | None) -> ListingState:
    """Whether the target holds what a flush would send it now: the planner's digest of the
    listing compared with the target's accepted record (or with a quarantined version); or
    that it cannot be planned, and why."""
    content = desired_content(adapter, listing)
    if isinstance(content, Unreadable):  # the target keeps what it holds, if anything
        return ListingState(status="unreadable", desired_digest=None, accepted=accepted,
                            unreadable=content.message)
    want = desired_digest(adapter, listing)
    status: ListingStatus
    if want is None or ((listing.deleted or listing.body is None) and accepted is None):
        # Nothing to send: only what a target accepted from the bridge is its to take down.
        removal = accepted is not None and adapter.mode == "group_sync"
        status = "pending removal" if removal else "absent"
    elif accepted is not None and accepted.digest == want:
        status = "in step"
    elif quarantined is not None and quarantined.digest == want:
        status = "quarantined (discarded)" if quarantined.discarded else "quarantined"
    else:
        status = "pending"
    return ListingState(status=status, desired_digest=want, accepted=accepted)


def _listing_view(listing: DesiredListing, targets: dict[str, ListingState]) -> ListingView:
    return ListingView(ref=listing.ref, version=listing.version, deleted=listing.deleted,
                       occurred_at=listing.occurred_ms, received_at=listing.received_ms,
                       body=listing.body, targets=targets,
                       unreadable=listing.unreadable.message if listing.unreadable else None)


def _reported(seen: Budget | None, now: int) -> ReportedBudget | None:
    if seen is None:
        return None
    return ReportedBudget(limit=seen.limit, remaining=seen.remaining, reset=seen.reset,
                          resets_in_ms=seen.reset - now if seen.reset else None, at=seen.at)


def _heartbeat(raw: bytes | str) -> Heartbeat:
    beat = orjson.loads(raw)
    return Heartbeat(at=int(beat.get("at", 0)), pid=beat.get("pid"), host=beat.get("host"))


def _why_due(has_changes: bool) -> Literal["changes", "retry"]:
    return "changes" if has_changes else "retry"


def _state(state: dict[str, str], now: int) -> TargetState:
    if state.get("paused"):
        return "paused"
    if int(state.get("blocked_until") or 0) > now:
        return "rate-limited"
    return "active"


def _described_state(state: dict[str, str], now: int) -> str:
    """The state as ``bridge status`` words it: a pause says why."""
    name = _state(state, now)
    return f"paused ({state['paused']})" if name == "paused" else name


def _int(value: str | None) -> int | None:
    return int(float(value)) if value else None


def _info_int(info: dict[str, Any], name: str) -> int | None:
    value = info.get(name)
    return int(value) if value is not None else None


def _infotext(info: dict[str, Any], name: str) -> str | None:
    value = info.get(name)
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _maybetext(value: bytes | str | None) -> str | None:
    return None if value is None else text(value)



def _glob_escape(pattern: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in pattern)


def _redis_info(info: dict[str, Any]) -> RedisInfo:
    return RedisInfo(
        used_memory=_info_int(info, "used_memory"),
        used_memory_human=_infotext(info, "used_memory_human"),
        maxmemory=_info_int(info, "maxmemory"),
        maxmemory_policy=_infotext(info, "maxmemory_policy"),
        aof_enabled=_info_int(info, "aof_enabled"),
        aof_last_write_status=_infotext(info, "aof_last_write_status"),
        rdb_last_bgsave_status=_infotext(info, "rdb_last_bgsave_status"),
        rdb_changes_since_last_save=_info_int(info, "rdb_changes_since_last_save"),
        rdb_last_save_time=_info_int(info, "rdb_last_save_time"),
        loading=_info_int(info, "loading"),
    )
