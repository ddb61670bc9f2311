"""The tenants' turns of the workers' schedulers (issue 31), driven by Hypothesis against the
real scripts on the session's Redis.

The invariant: **no tenant with work is ever left without a future turn**, and a turn's work is
found. At every step, for every tenant whose keys hold work (events in its inbox, a group due in
``lb:{t:X}:due``, an outbox due in ``lb:{t:X}:senders``, a check due on a target not paused, a
compacted tombstone), ``lb:wake`` holds the tenant with a score no later than that work is due
(or than ``now``: the next tick takes it; ``NextDue.at`` answers ``now`` when events wait,
whatever else is overdue); or a turn of the tenant holds it (the score is that turn's ticket,
which lapses TURN_LEASE_MS after the turn was taken), and the turn's end leaves it due in time.
A wake-up is never undone: once something woke a tenant (score 0), only a take of its turn
changes that score. ``_shares`` shares out the whole room, evenly (its own test).

Every step is a real piece: a webhook is accept.lua (``store.accept_now``, which wakes its
tenant); a scheduler tick is take_turns.lua at the model's ``now``, and each of its turns goes
step by step as ``Scheduler._turn`` does (next_due.lua's look, the fold (``fold_now``) when
``_turn`` would fold, take_due.lua of outboxes then groups within the turn's ``_shares``
share, the checks' take (take_checks.lua) and sweep (a check scheduled), next_due.lua again,
end_turn.lua with ``NextDue.at``), so that anything may happen between two steps of a turn: a
webhook, another worker's tick and turn, a job's end (its writes, then ``tenant_job``'s wake, or
a crash before the wake), an operator's ``mark_due`` or a pause or resume of a target
(``Ledger``), time passing, a worker dying mid-turn (its tickets lapse) and starting again
(``wake_all``). Scores are ms on a virtual clock, which starts at the real one: ``now`` is
passed to every script explicitly (only the fold's tombstone purge and the ledger's own writes
read the real clock; what they write is read back as it is).

What the model leaves out: arq's queue (``_room`` is drawn) and the sweep's owed turn
(``ReconcileScheduler.owed_at``: the sweep's checks are scheduled in the turn, below). A live
worker's turn ends before its ticket lapses (time does not pass a live turn's ticket): a turn
longer than TURN_LEASE_MS is outside the model (``BRIDGE_TURNS_SLOW=1`` lets time pass it).

A job that crashes between its writes and its wake leaves what it wrote unknown to the
schedulers: the invariant holds that work to the score it had before the write (none: to
nothing) until the tenant is woken, or a turn holding the tenant looks at its keys.

``BRIDGE_TURNS_OFF`` (comma-separated: collide, resume, crash, checks, tombstones) switches
rule families off, to look for one thing at a time (unset: every family on). "collide" off,
no two takes are in the same ms and an example whose turn ends on a ticket that another take or
turn set is left out; "resume" off, only a tenant with groups is resumed. Those two families
found the two bugs that the tests at the end replay (each its shortest story): a turn known by
its score alone, and a resume that woke only a tenant with groups; both fixed.
``BRIDGE_TURNS_EXAMPLES=4000,60`` runs that many random examples of that many steps, not
derandomized (about 8 minutes on two cores: the module's 600 s timeout holds).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import orjson
import pytest
import redis
from hypothesis import assume, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis as AsyncRedis

from bridge import constants as k
from bridge import group_state, tenancy
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.claims import mark_due
from bridge.delivery.ledger import Ledger
from bridge.ingest import store
from bridge.ingest.events import parse_event
from bridge.ingest.inbox import FoldSettings, fold_now
from tests.support import crm
from workers import scheduler
from workers.scheduler import TURN_LEASE_MS, NextDue, _shares
from workers.worker import wake_all

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

# The rule families switched off (BRIDGE_TURNS_OFF, comma-separated; none by default).
OFF = frozenset(filter(None, os.environ.get("BRIDGE_TURNS_OFF", "").split(",")))
SLOW = os.environ.get("BRIDGE_TURNS_SLOW") == "1"

GROUPS = ("ga", "gb", "gc")
TARGETS = ("ta", "tb")
FOLD_EVENTS = 2  # a fold takes at most this many events (MAX_EVENTS, shrunk: one turn may
#                  leave some for the next)
FOLD = FoldSettings(window_ms=200, max_wait_ms=1_000, horizon_ms=30 * 86_400_000,
                    trace_ttl_ms=86_400_000)
DEDUPE_TTL_S = 3_600
# How far ahead a job's end, an operator or a turn's sweep schedules something (ms); 5_000 is
# TURN_LEASE_MS, 1_000 the scheduler's RETRY_MS: scores that may meet a turn's ticket.
AHEAD = st.sampled_from([0, 1, 300, 1_000, 4_000, 5_000, 9_000])
tenant_names = st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True)
T = TypeVar("T")


def family(name: str) -> Callable[[Any], bool]:
    return lambda self: name not in self.off


def iso(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass
class Turn:
    """One tenant's turn, taken in a worker's tick; its steps in ``PHASES`` order."""

    number: int
    worker: int
    tenant: str
    ticket: int
    share: int
    token: str = ""  # its tick's token (take_turns.lua's ARGV[4])
    phase: str = "look"
    dead: bool = False  # its worker died: it never ends, its ticket lapses
    seen: NextDue | None = None  # what its last look found
    now: int = 0  # the turn's `now` (read after its first look)
    folded: int = 0


PHASES = ("look", "fold", "enqueue", "checks", "after", "end")


@dataclass(frozen=True)
class Job:
    """A job a turn enqueued: a flush (group), a send (target) or a check (target, group)."""

    kind: str
    tenant: str
    name: str
    group: str = ""


@dataclass
class Worker:
    alive: bool = True
    turns: list[Turn] = field(default_factory=list)  # its tick's, not ended


class TurnsMachine(RuleBasedStateMachine):
    redis_url: ClassVar[str]
    off: ClassVar[frozenset[str]] = OFF

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        # Any: redis-py's types do not tell its synchronous replies from its asynchronous ones.
        self.r: Any = redis.Redis.from_url(self.redis_url, decode_responses=True)
        self.ar = AsyncRedis.from_url(self.redis_url)
        self.scripts = {lua.name: self.r.register_script(lua.source) for lua in (
            scheduler.TAKE_TURNS, scheduler.END_TURN, scheduler.NEXT_DUE, scheduler.TAKE_DUE,
            scheduler.TAKE_CHECKS)}
        self.now = now_ms()  # the virtual clock (ms): it starts at the real one
        self.start = self.now  # the story tells times from here
        self.tenants: list[str] = []
        self.workers = [Worker(), Worker()]
        self.turns: list[Turn] = []  # not ended (a dead worker's too)
        self.numbers = itertools.count(1)
        self.jobs: list[Job] = []
        self.woken: set[str] = set()  # woken (score 0) since their turn was last taken
        # The turn whose take set the tenant's score (its ticket), while that score stands.
        self.holder: dict[str, int | None] = {}
        # Written by a job that crashed before its wake: (tenant, key, member) -> its score
        # before (None: it was not there), until the schedulers can know of it.
        self.unannounced: dict[tuple[str, str, str], float | None] = {}
        self.webhooks = 0
        self.log: list[str] = []

    def run(self, awaitable: Awaitable[T]) -> T:
        return self.loop.run_until_complete(awaitable)

    def teardown(self) -> None:
        """Only what this example made: its tenants' keys and their entries in lb:wake."""
        try:
            for tenant in self.tenants:
                keys = list(self.r.scan_iter(match=tenancy.prefix(tenant) + "*", count=500))
                if keys:
                    self.r.unlink(*keys)
            if self.tenants:
                self.r.zrem(k.WAKE, *self.tenants)
                self.r.hdel(k.TURNS, *self.tenants)
        finally:
            self.run(self.ar.aclose())
            self.r.close()
            self.loop.close()

    @initialize(names=st.lists(tenant_names, min_size=2, max_size=3, unique=True))
    def tenants_of(self, names: list[str]) -> None:
        assert all(tenancy.valid(n) for n in names)
        # Fresh names: nothing of an earlier example (or of anyone) is there already.
        for name in names:
            assert not self.r.exists(k.WAKE) or self.r.zscore(k.WAKE, name) is None
            assert next(self.r.scan_iter(match=tenancy.prefix(name) + "*"), None) is None
        self.tenants = names

    def note(self, line: str) -> None:
        self.log.append(f"@{self.now - self.start}: {line}")

    # -- the model's bookkeeping --

    def woke(self, tenant: str) -> None:
        """Something woke the tenant (score 0): whatever a crash left unknown is known now."""
        self.woken.add(tenant)
        self.holder[tenant] = None
        for key in [key for key in self.unannounced if key[0] == tenant]:
            del self.unannounced[key]

    def wrote(self, tenant: str, key: str, member: str) -> tuple[str, str, str, float | None]:
        """What a job is about to write: its score now."""
        return tenant, key, member, self.r.zscore(key, member)

    # -- the CRM's side: a webhook --

    @rule(tenant=st.integers(0, 2), group=st.sampled_from(GROUPS),
          ref=st.sampled_from(["r1", "r2", "r3"]), again=st.booleans())
    def webhook(self, tenant: int, group: str, ref: str, again: bool) -> None:
        """accept.lua: the event into the inbox (a redelivery: a duplicate), its tenant woken."""
        t = self.tenants[tenant % len(self.tenants)]
        if not again or not self.webhooks:
            self.webhooks += 1
        webhook_id = f"wh-{self.webhooks}"
        event = parse_event(orjson.dumps(crm.event(
            "listing.updated", group, iso(self.now - 10),
            listing=crm.listing(ref, self.webhooks))))
        with tenancy.use(t):
            status = store.accept_now(self.r, webhook_id, self.now,
                                      store.entry(webhook_id, self.now, event), DEDUPE_TTL_S)
        self.note(f"webhook {webhook_id} for {t} ({group}): {status}")
        self.woke(t)

    # -- the workers' schedulers --

    def live_turns(self, worker: int | None = None) -> list[Turn]:
        return [t for t in self.turns if not t.dead and (worker is None or t.worker == worker)]

    def idle(self) -> list[int]:
        """The live workers that may tick (a worker's next tick waits for its turns)."""
        return [n for n, w in enumerate(self.workers) if w.alive and not w.turns]

    @precondition(lambda self: bool(self.idle()))
    @rule(worker=st.integers(0, 1), room=st.integers(0, 4),
          steps=st.integers(0, len(PHASES)))
    def tick(self, worker: int, room: int, steps: int) -> None:
        """take_turns.lua at ``now``: each tenant taken gets a turn, its share of ``room``;
        each turn goes on for ``steps`` steps at once."""
        idle = self.idle()
        worker = idle[worker % len(idle)]
        w = self.workers[worker]
        if "collide" in self.off and any(t.ticket == self.now + TURN_LEASE_MS
                                         for t in self.turns):
            if any(t.ticket <= self.now + 1 for t in self.live_turns()):
                return
            self.now += 1  # no two takes in the same ms
        token = f"tick{next(self.numbers)}"
        taken = self.scripts["take_turns.lua"](
            keys=[k.WAKE, k.TURNS], args=[self.now, TURN_LEASE_MS, scheduler.TURNS_PER_TICK,
                                          token])
        assert set(taken) <= set(self.tenants), taken
        if not taken:
            return
        ticket = self.now + TURN_LEASE_MS
        for tenant, share in zip(taken, _shares(room, len(taken)), strict=True):
            turn = Turn(next(self.numbers), worker, tenant, ticket, share, token)
            self.woken.discard(tenant)
            self.holder[tenant] = turn.number
            self.turns.append(turn)
            w.turns.append(turn)
            self.note(f"worker {worker} takes {tenant} (turn {turn.number}, ticket "
                      f"+{ticket - self.start}, share {share})")
        for turn in list(w.turns):
            self.go_on(turn, steps)

    @precondition(lambda self: bool(self.live_turns()))
    @rule(pick=st.integers(0, 7), steps=st.integers(1, len(PHASES)), ahead=AHEAD,
          sweep=st.booleans(), group=st.sampled_from(("", *GROUPS)), on=st.sampled_from(TARGETS))
    def turn_goes_on(self, pick: int, steps: int, ahead: int, sweep: bool, group: str,
                     on: str) -> None:
        """The next ``steps`` steps of a live turn (``Scheduler._turn``), to its end at most."""
        live = self.live_turns()
        self.go_on(live[pick % len(live)], steps, ahead, sweep and "checks" not in self.off, group,
                   on)

    @precondition(lambda self: bool(self.live_turns()))
    @rule(pick=st.integers(0, 7))
    def turn_ends(self, pick: int) -> None:
        """A live turn's remaining steps, to its end."""
        live = self.live_turns()
        self.go_on(live[pick % len(live)], len(PHASES))

    def go_on(self, turn: Turn, steps: int, ahead: int = 0, sweep: bool = False,
              group: str = "", on: str = TARGETS[0]) -> None:
        with tenancy.use(turn.tenant):
            for _ in range(steps):
                getattr(self, f"_{turn.phase}")(turn, ahead, sweep, group, on)
                if turn.phase == "end":
                    self.turns.remove(turn)
                    self.workers[turn.worker].turns.remove(turn)
                    return
                turn.phase = PHASES[PHASES.index(turn.phase) + 1]

    def look(self) -> NextDue:
        """next_due.lua, as ``Scheduler._look`` calls it (reconciliation on: every target)."""
        keys = ks()
        per_target = [key for t in TARGETS
                      for key in (f"{keys.RECONCILE_DUE}{t}", f"{keys.TARGET}{t}")]
        found = self.scripts["next_due.lua"](
            keys=[keys.INBOX, keys.DUE, keys.SENDERS, keys.TOMBSTONES, *per_target],
            args=list(TARGETS))
        return NextDue(*(int(n) for n in found))

    def _look(self, turn: Turn, *_: Any) -> None:
        turn.seen = self.look()
        turn.now = self.now

    def _fold(self, turn: Turn, *_: Any) -> None:
        before, now = turn.seen, turn.now
        assert before is not None
        if before.at(now) >= 0 and (before.inbox or 0 <= before.tombstones
                                    + k.TOMBSTONE_GRACE_MS <= now):
            turn.folded = fold_now(self.r, FOLD, max_events=FOLD_EVENTS).events
            self.note(f"turn {turn.number} folds {turn.folded}")

    def _enqueue(self, turn: Turn, *_: Any) -> None:
        """Outboxes, then groups, within the turn's share (``Scheduler._enqueue``)."""
        enqueued = 0
        for due, kind in ((ks().SENDERS, "send"), (ks().DUE, "flush")):
            most = turn.share - enqueued
            if most <= 0:
                continue
            taken = self.scripts["take_due.lua"](keys=[due],
                                                 args=[self.now, scheduler.RETRY_MS, most])
            self.jobs += [Job(kind, turn.tenant, name) for name in taken]
            enqueued += len(taken)
            if taken:
                self.note(f"turn {turn.number} takes {kind} {taken}")

    def _checks(self, turn: Turn, ahead: int, sweep: bool, group: str, target: str) -> None:
        """The sweep schedules a check (not before ``now``), then the due checks of targets not
        paused are taken (``ReconcileScheduler.turn``)."""
        assert turn.seen is not None
        if sweep:
            self.r.zadd(f"{ks().RECONCILE_DUE}{target}", {group: self.now + ahead}, nx=True)
        if not (0 <= turn.seen.checks <= turn.now):
            return
        for name in TARGETS:
            if self.r.hget(f"{ks().TARGET}{name}", "paused"):
                continue
            taken = self.scripts["take_checks.lua"](
                keys=[f"{ks().RECONCILE_DUE}{name}", f"{ks().RECONCILE_RUNNING}{name}"],
                args=[self.now, k.RECONCILE_RETAKE_MS, k.RECONCILE_LOCK_MS,
                      k.RECONCILE_PER_TARGET])
            self.jobs += [Job("check", turn.tenant, name, g) for g in taken[::2]]

    def _after(self, turn: Turn, *_: Any) -> None:
        turn.seen = self.look()  # the look after, for the end
        if self.holds(turn):
            # The turn holds the tenant: what it saw, its end schedules (or a wake-up stands).
            for key in [key for key in self.unannounced if key[0] == turn.tenant]:
                del self.unannounced[key]

    def holds(self, turn: Turn) -> bool:
        """Is ``turn`` the tenant's latest turn, and nothing woke the tenant since its take?"""
        return (self.r.zscore(k.WAKE, turn.tenant) == turn.ticket
                and self.r.hget(k.TURNS, turn.tenant) == f"{turn.token}:{turn.tenant}")

    def _end(self, turn: Turn, *_: Any) -> None:
        assert turn.seen is not None
        nxt = turn.seen.at(self.now)
        if "collide" in self.off and self.r.zscore(k.WAKE, turn.tenant) == turn.ticket:
            # Its ticket, set by this turn's take; not another take's in the same ms, nor
            # another turn's end that scheduled the tenant at this ticket's time by chance.
            assume(self.holder.get(turn.tenant) == turn.number)
        ended = self.scripts["end_turn.lua"](keys=[k.WAKE, k.TURNS],
                                             args=[turn.tenant, turn.ticket, nxt, turn.token])
        if ended:
            self.holder[turn.tenant] = None
        self.note(f"turn {turn.number} ends: next {nxt - self.start if nxt >= 0 else -1}"
                  f", {'set' if ended else 'left'}")

    # -- a job's end --

    @precondition(lambda self: bool(self.jobs))
    @rule(pick=st.integers(0, 7), ahead=AHEAD, again=st.booleans(), extra=st.booleans(),
          crash=st.booleans())
    def job_ends(self, pick: int, ahead: int, again: bool, extra: bool, crash: bool) -> None:
        """A job's writes (its group, outbox or check due again at ``now + ahead``, or not at
        all; a flush may leave a tombstone or an outbox to send), then ``tenant_job``'s wake,
        or a crash before the wake."""
        crash = crash and "crash" not in self.off
        job = self.jobs.pop(pick % len(self.jobs))
        t = job.tenant
        with tenancy.use(t):
            keys = ks()
            if job.kind == "check":
                due, member = f"{keys.RECONCILE_DUE}{job.name}", job.group
                self.r.zrem(f"{keys.RECONCILE_RUNNING}{job.name}", member)
            else:
                due, member = (keys.DUE if job.kind == "flush" else keys.SENDERS), job.name
            writes = [self.wrote(t, due, member)]
            if again:
                self.r.zadd(due, {member: self.now + ahead})
            else:
                self.r.zrem(due, member)
            if extra and job.kind == "flush":
                if "tombstones" in self.off:
                    extra_key, extra_member, at = keys.SENDERS, TARGETS[0], self.now
                else:  # compact.lua: a deleted listing's tombstone
                    extra_key, extra_member, at = keys.TOMBSTONES, f"x-{member}", self.now + ahead
                writes.append(self.wrote(t, extra_key, extra_member))
                self.r.zadd(extra_key, {extra_member: at}, nx=True)
            self.note(f"{job.kind} job {job.name}/{job.group} of {t} ends: "
                      f"{'again +' + str(ahead) if again else 'done'}"
                      f"{', extra' if extra else ''}{', CRASH' if crash else ''}")
            if crash:
                for tenant, key, mem, before in writes:
                    self.unannounced.setdefault((tenant, key, mem), before)
                return
            self.run(group_state.wake(self.ar))
        self.woke(t)

    # -- an operator's --

    @rule(tenant=st.integers(0, 2), group=st.sampled_from(GROUPS), ahead=AHEAD)
    def operator_marks_due(self, tenant: int, group: str, ahead: int) -> None:
        """``claims.mark_due``: the group due at ``now + ahead`` unless sooner; a wake."""
        t = self.tenants[tenant % len(self.tenants)]
        with tenancy.use(t):
            self.run(mark_due(self.ar, [group], self.now + ahead))
        self.note(f"operator marks {group} of {t} due +{ahead}")
        self.woke(t)

    @rule(tenant=st.integers(0, 2), on=st.sampled_from(TARGETS))
    def operator_pauses(self, tenant: int, on: str) -> None:
        """``Ledger.pause``: the target's checks wait, due, for a resume."""
        t = self.tenants[tenant % len(self.tenants)]
        with tenancy.use(t):
            self.run(Ledger(self.ar).pause(on, "paused by the model"))
        self.note(f"operator pauses {on} of {t}")

    @rule(tenant=st.integers(0, 2), on=st.sampled_from(TARGETS))
    def operator_resumes(self, tenant: int, on: str) -> None:
        """``Ledger.resume``: the target's outbox and every group due now, and a wake (only
        of a tenant with groups, with the family "resume" off)."""
        t = self.tenants[tenant % len(self.tenants)]
        with tenancy.use(t):
            groups = self.r.smembers(ks().GROUPS)
            if not groups and "resume" in self.off:
                return
            self.run(Ledger(self.ar).resume(on))
        if groups:
            self.woke(t)
        self.note(f"operator resumes {on} of {t}")

    # -- time, and workers dying --

    @rule(ms=st.sampled_from([1, 100, 999, 1_000, 2_000, 4_999, 5_000, 12_000]))
    def time_passes(self, ms: int) -> None:
        """Time passes; not beyond a live turn's ticket (a turn ends within its lease)."""
        until = self.now + ms
        tickets = [t.ticket for t in self.live_turns()]
        if tickets and not SLOW:
            until = min(until, min(tickets) - 1)
        self.now = max(self.now, until)

    @precondition(lambda self: any(w.turns for w in self.workers))
    @rule(worker=st.integers(0, 1))
    def worker_dies(self, worker: int) -> None:
        """Mid-turn: its turns never end."""
        busy = [w for w in self.workers if w.turns]
        w = busy[worker % len(busy)]
        w.alive = False
        for turn in w.turns:
            turn.dead = True
        w.turns.clear()
        self.note(f"worker {self.workers.index(w)} dies")

    @precondition(lambda self: not all(w.alive for w in self.workers))
    @rule()
    def worker_starts(self) -> None:
        """A worker starts (a dead one again; called directly, another: a deploy):
        ``wake_all`` gives every tenant a turn."""
        worker = next((n for n, w in enumerate(self.workers) if not w.alive), -1)
        if worker >= 0:
            self.workers[worker].alive = True
        self.run(wake_all(self.ar, self.tenants))
        for t in self.tenants:
            self.woke(t)
        self.note(f"worker {worker} starts" if worker >= 0 else "a worker starts")

    # -- the invariant --

    def work_of(self, tenant: str) -> list[tuple[str, str, float]]:
        """The tenant's work, read from its keys: (key, member, when due)."""
        keys = ks()
        work: list[tuple[str, str, float]] = []
        if self.r.llen(keys.INBOX):
            work.append((keys.INBOX, "", self.now))
        for key in (keys.DUE, keys.SENDERS):
            work += [(key, m, at) for m, at in self.r.zrange(key, 0, -1, withscores=True)]
        work += [(keys.TOMBSTONES, m, at + k.TOMBSTONE_GRACE_MS)
                 for m, at in self.r.zrange(keys.TOMBSTONES, 0, -1, withscores=True)]
        for target in TARGETS:
            if not self.r.hexists(f"{keys.TARGET}{target}", "paused"):
                key = f"{keys.RECONCILE_DUE}{target}"
                work += [(key, m, at) for m, at in self.r.zrange(key, 0, -1, withscores=True)]
        return work

    @invariant()
    def every_tenant_with_work_has_a_turn_in_time(self) -> None:
        for tenant in self.tenants:
            score = self.r.zscore(k.WAKE, tenant)
            if tenant in self.woken:
                assert score == 0, (
                    f"{tenant} was woken and its turn not taken since, yet lb:wake holds "
                    f"{score}: a wake-up was undone\n" + self.story())
            with tenancy.use(tenant):
                work = self.work_of(tenant)
            need = None
            for key, member, at in work:
                if (tenant, key, member) in self.unannounced:
                    before = self.unannounced[(tenant, key, member)]
                    if before is None:
                        continue  # a crash left it unknown: no turn is owed for it yet
                    at = max(at, before)
                need = at if need is None else min(need, at)
            if need is None:
                continue
            if score is not None and score <= max(need, self.now):
                continue  # in time, or due now: the next tick takes it (work overdue already)
            held = [t for t in self.turns if t.tenant == tenant and t.ticket == score
                    and self.r.hget(k.TURNS, tenant) == f"{t.token}:{tenant}"]
            if held:
                # A turn holds the tenant (or held it and died: its ticket lapses).
                assert score is not None and score <= self.now + TURN_LEASE_MS
                continue
            pretty = [(key.rsplit(":", 1)[-1], member, at - self.start)
                      for key, member, at in work]
            raise AssertionError(
                f"{tenant} has work due at +{need - self.start} (now +"
                f"{self.now - self.start}): {pretty}; lb:wake holds "
                f"{'nothing' if score is None else '+' + str(score - self.start)}, "
                f"and no turn in progress holds it\n" + self.story())

    def story(self) -> str:
        return "what happened:\n  " + "\n  ".join(self.log)


@pytest.fixture
def turns_profile(model_profile: hypothesis_settings) -> hypothesis_settings:
    """The ``ci`` profile's derandomized examples, more and longer (each step is a few Redis
    calls); the long profile's as they are."""
    profile = model_profile
    if profile.max_examples <= 30:
        profile = hypothesis_settings(profile, max_examples=200, stateful_step_count=50)
    if examples := os.environ.get("BRIDGE_TURNS_EXAMPLES"):  # e.g. 5000,80 (examples, steps)
        many, steps = (int(n) for n in examples.split(","))
        profile = hypothesis_settings(profile, max_examples=many, stateful_step_count=steps,
                                      derandomize=False)
    return profile


def test_no_tenant_with_work_is_left_without_a_turn(
    redis_url: str, turns_profile: hypothesis_settings
) -> None:
    TurnsMachine.redis_url = redis_url
    run_state_machine_as_test(TurnsMachine, settings=turns_profile)


# -- the bugs the machine finds with every family on (BRIDGE_TURNS_OFF=), as their shortest
# stories, replayed step by step with the invariant after each step as Hypothesis does --


class Replay(TurnsMachine):
    off: ClassVar[frozenset[str]] = frozenset()  # every family on


def replay(redis_url: str, names: list[str], steps: Callable[[Replay], None]) -> None:
    Replay.redis_url = redis_url
    machine = Replay()
    try:
        machine.tenants_of(names)
        steps(machine)
    finally:
        machine.teardown()


# end_turn.lua knew a turn by its score alone (score == ticket): a turn whose ticket was no
# longer its own (another worker took the tenant in the same ms, after a wake-up: the same
# ticket; or another turn's end scheduled the tenant at exactly this ticket's time) ended with
# its stale look and removed or postponed the tenant's turn, and the other turn's end was then
# refused. Each turn now has a token (lb:{wake}:turns): only the latest one ends.


def test_two_takes_in_one_ms_and_the_first_turn_ends_last(redis_url: str) -> None:
    def steps(m: Replay) -> None:
        check = m.every_tenant_with_work_has_a_turn_in_time
        m.worker_starts()  # wake_all: every tenant's turn now (no work)
        check()
        m.tick(worker=1, room=0, steps=5)  # turn 1 of "a", ticket now + 5000: looks, no work
        check()
        m.operator_marks_due(tenant=0, group="ga", ahead=300)  # ga due at +300; "a" woken
        check()
        m.tick(worker=0, room=0, steps=0)  # the same ms: turn 3 of "a", the same ticket
        check()
        m.turn_goes_on(pick=0, steps=1, ahead=0, sweep=False, group="", on="ta")  # turn 1
        #   ends: score == its ticket, so its look (no work) stands: "a" leaves lb:wake
        m.turn_goes_on(pick=1, steps=6, ahead=0, sweep=False, group="", on="ta")  # turn 3:
        #   sees ga due at +300; its end is refused (no ticket of its own in lb:wake)
        check()  # ga is due at +300 and no turn of "a" will come

    replay(redis_url, ["a", "b"], steps)


def test_a_turn_ends_after_another_scheduled_the_tenant_at_its_ticket(redis_url: str) -> None:
    def steps(m: Replay) -> None:
        check = m.every_tenant_with_work_has_a_turn_in_time
        m.worker_starts()
        m.tick(worker=0, room=0, steps=5)  # turn 1 of "a", ticket +5000: looks, no work
        m.operator_marks_due(tenant=0, group="ga", ahead=5_000)  # ga due at +5000; woken
        m.time_passes(ms=1)
        m.tick(worker=1, room=0, steps=6)  # turn 3 of "a" (ticket +5001): due at +5000
        check()
        m.turn_goes_on(pick=0, steps=1, ahead=0, sweep=False, group="", on="ta")  # turn 1
        #   ends: the score is its ticket's value, so its look (no work) stands
        check()  # ga is due at +5000 and "a" is not in lb:wake

    replay(redis_url, ["a", "b"], steps)


def test_a_resume_gives_the_tenant_a_turn(redis_url: str) -> None:
    def steps(m: Replay) -> None:
        check = m.every_tenant_with_work_has_a_turn_in_time
        m.worker_starts()
        m.tick(worker=0, room=0, steps=3)  # turn 1 of "a"
        m.turn_goes_on(pick=0, steps=3, ahead=1_000, sweep=True, group="", on="ta")  # the
        #   sweep schedules ta's whole-portal check at +1000; the turn ends with "a" due then
        m.operator_pauses(tenant=0, on="ta")
        m.turn_goes_on(pick=0, steps=6, ahead=0, sweep=False, group="", on="ta")  # turn 2
        m.time_passes(ms=1_000)
        m.tick(worker=0, room=0, steps=6)  # "a"'s turn: its only check is paused: no turn
        check()
        assert m.r.zscore(k.WAKE, "a") is None
        m.operator_resumes(tenant=0, on="ta")  # the check is due, and the outbox
        check()

    replay(redis_url, ["a", "b"], steps)


@given(room=st.integers(0, 5_000), tenants=st.integers(1, scheduler.TURNS_PER_TICK))
def test_shares_share_out_the_whole_room_evenly(room: int, tenants: int) -> None:
    shares = _shares(room, tenants)
    assert len(shares) == tenants
    assert sum(shares) == room
    assert max(shares) - min(shares) <= 1
    assert shares == sorted(shares, reverse=True)  # the extra ones to the first (served longest
    #                                                ago)
