"""The sender: drains one per-listing target's outbox by bulk, one sender per target at a time.

A sender holds the target's lease (``lb:sender:{target}``: a fencing token from ``lb:fence``,
renewed while it runs), so no two send at once and one that froze past its lease writes
nothing. Each turn:

1. the bulk in flight (``lb:outbox:batch:{target}``), if a timeout or a crash left one: it goes
   again exactly as it was, with its key; else the next batch is composed from the ready writes
   (up to 100 operations, fairly across groups: round-robin over the groups' lanes, the group
   served longest ago first, oldest first within a group: ``outbox_take.lua``) and recorded
   before it is sent;
2. it waits for the budgets: the portal's own report first (a window it said is spent is waited
   out, never tried), then the shared rate limiter (a bulk counts in the target's general bucket
   and in its bulk bucket, as Rentix counts it);
3. it sends, and settles each operation's result atomically (``settle.lua``): accepted
   (ledger), refused (that listing quarantined, with the portal's message), or retried later
   (the entry stays, backed off); a whole request that failed stays in flight and is retried
   with the same key after a backoff, or when a rate limit resets; invalid credentials pause the
   target, as for single writes.

With the target's PUT lane on (``RentixTarget.put_lane``), single PUTs run beside the bulks in
the same turn, spending the general budget the bulks leave free (the lane's own bucket, at the
general rate less one request per bulk slot, and the shared one with a request of headroom kept
for the next bulk) on the next writes, fairly chosen. A write taken for a PUT is recorded
(``lb:outbox:puts:{target}``) before the PUT goes out and is never composed into a bulk; a
timeout, a 5xx or a crash sends it again by PUT with the same key (its intent key), even when
the lane has been turned off since. Its answer is settled as a bulk operation's is.

When the outbox is empty or the budgets say wait, the sender lets go of the target and makes it
due again when there is something it may send (``lb:senders``; the workers' scheduler turns due
targets into ``send_outbox`` jobs).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import orjson
from redis.asyncio import Redis

from bridge import constants as k
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery import budget
from bridge.delivery.ahead import Ahead, Taken
from bridge.delivery.claims import Command, Fence, LeaseLost, RenewableLease, Write, kept
from bridge.delivery.fresh import Freshener
from bridge.delivery.ledger import (
    Accepted,
    Attempt,
    Ledger,
    Quarantined,
    attempt_writes,
    noted,
    trace_writes,
)
from bridge.delivery.outbox import (
    BULK_MAX_OPS,
    Batch,
    Outbox,
    PutRecord,
    Queued,
    Settle,
    Take,
    compose,
)
from bridge.delivery.ratelimit import ACQUIRE, DEFAULT_BURST, RateLimiter
from bridge.delivery.trace import decision_entry
from bridge.delivery.witness import Witness
from bridge.logs import about
from bridge.portals import Outcome, RentixAdapter, Result
from bridge.scripts import Script, load
from bridge.settings import DebounceSettings, DeliverySettings, RentixTarget

log = logging.getLogger("bridge.delivery.sender")

# A wait for the rate limiter shorter than this happens in the job; a longer one ends the turn.
MAX_INLINE_WAIT_MS = 2_000
# With the PUT lane on, a bulk's wait for its rate slot up to this long happens in the turn,
# while the lane spends the general budget the bulks leave free.
LANE_INLINE_WAIT_MS = 10_000
# The lane looks again this often when it has nothing to take.
LANE_IDLE_MS = 250
# The lane leaves the bulks this many general requests of those the portal reports remaining.
LANE_RESERVE = 2
# The sender takes writes ahead of their groups' flushes (ahead.py) at most this often.
AHEAD_EVERY_S = 1.0
# A paused target's sender looks again this often (a resume makes it due at once).
PAUSED_RECHECK_MS = 60_000
# A refused operation's content is quarantined; these answers mean "refused".
REFUSED = (Outcome.DATA_INVALID, Outcome.CONFLICT, Outcome.NOT_FOUND)

TAKE = load(__file__, "sender_take.lua")
RENEW = load(__file__, "sender_renew.lua")
STOP = load(__file__, "sender_stop.lua")

Kind = Literal["accepted", "refused", "retry"]


@dataclass(frozen=True)
class Settled:
    """One operation's result, as the settle script records it."""

    kind: Kind
    op: Queued
    record: str  # JSON: Accepted, Quarantined, or the rescheduled outbox entry
    at: int = 0  # retry: when it may go again
    why: str = ""

    def arg(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "ref": self.op.ref, "group": self.op.group,
               "deletion": self.op.operation != "upsert", "digest": self.op.digest,
               "key": self.op.key, "record": self.record, "at": self.at}
        if self.op.stamp is not None:  # no nulls: cjson would decode them truthy
            out["stamp"] = self.op.stamp
        if self.op.lane:
            out["lane"] = self.op.lane
        return out


class SenderLease(RenewableLease):
    def __init__(self, sender: Sender, target: str, token: str, lease_ms: int) -> None:
        super().__init__(lease_ms)
        self._sender = sender
        self.target = target
        self.token = token

    @property
    def what(self) -> str:
        return f"the outbox of {self.target!r}"

    def _log_extra(self) -> dict[str, str]:
        return about(target=self.target)

    async def _renew(self) -> bool:
        return bool(await self._sender._renew(keys=[ks().SENDER + self.target, ks().SENDERS], args=[
            self.target, self.token, self.lease_ms, now_ms()]))

    async def _fenced(self, writes: Sequence[Write]) -> bool:
        if any(w.op == "accepted" for w in writes):  # recorded by outbox.Settle
            raise ValueError("the sender records acceptances through outbox.Settle")
        return await self._sender._fence(ks().SENDER + self.target, self.token, writes)


class Sender:
    """What a worker needs to drain outboxes: built once, one :meth:`drain` per job."""

    def __init__(self, redis: Redis, settings: DeliverySettings,
                 adapters: dict[str, RentixAdapter], ledger: Ledger,
                 limiter: RateLimiter, window_ms: int = DebounceSettings().window_ms,
                 witness: Witness | None = None) -> None:
        """``window_ms``: the debounce window; a group whose changes waiting for its flush
        have kept coming for longer is a busy one, whose writes are taken ahead
        (``ahead.py``). ``witness``: the flushes' (``witness.py``), which sees the sender's
        fencing tokens too: they come from the same counter, so a sender's take after Redis
        went back in time must count as evidence, not push the counter past what the
        flushes saw and hide it."""
        self.redis = redis
        self.settings = settings
        self.adapters = adapters
        self.ledger = ledger
        self.limiter = limiter
        self.outbox = Outbox(redis)
        self._take = Script(redis, TAKE)
        self._renew = Script(redis, RENEW)
        self._fence = Fence(redis)
        self._stop = Script(redis, STOP)
        self._settle = Settle(redis)
        self._take_out = Take(redis)
        self._freshen = Freshener(redis, ledger)
        self.ahead = Ahead(redis, ledger, window_ms)
        self.witness = witness
        self._acquire = Script(redis, ACQUIRE)

    async def drain(self, spec: RentixTarget) -> str:
        """Send what the target's outbox holds, as far as its budgets allow now."""
        name = spec.name
        floor = self.witness.floor if self.witness else 0
        taken = await self._take(keys=[ks().SENDER + name, ks().FENCE],
                                 args=[self.settings.lease_ms])
        if int(taken[0]) == 0:
            # Another sender drains it: look again when its lease would lapse.
            await self.redis.zadd(ks().SENDERS, {name: now_ms() + int(taken[1])}, gt=True)
            return f"{name}: another sender drains it"
        if self.witness and not self.witness.saw_token(str(taken[0]), floor):
            await self.witness.state_lost("the fencing counter went back")
        lease = SenderLease(self, name, str(taken[0]), self.settings.lease_ms)
        not_before = now_ms()
        sent = 0
        turn = SenderTurn(self, spec, lease)
        try:
            async with kept(lease):
                not_before = await turn.run()
                sent = turn.sent
        except LeaseLost as exc:
            log.warning("sending %s's outbox stopped: %s", name, exc, extra=about(target=name))
            return f"{name}: lease lost"
        finally:
            await self._stop(keys=[ks().SENDER + name, ks().OUTBOX_BATCH + name, ks().OUTBOX + name,
                                   ks().OUTBOX_READY + name, ks().SENDERS, ks().OUTBOX_PUTS + name],
                             args=[name, lease.token, not_before,
                                   "" if turn.puts_due is None else turn.puts_due])
        return f"{name}: {sent} operation(s) sent"


class SenderTurn:
    """One sender's run over one target's outbox, under its lease."""

    def __init__(self, sender: Sender, spec: RentixTarget, lease: SenderLease) -> None:
        self.s = sender
        self.spec = spec
        self.name = spec.name
        self.adapter = sender.adapters[spec.name]
        self.lease = lease
        self.ledger = sender.ledger.fenced(lease)
        self.sent = 0
        # The refs of the bulk in flight (never taken for a PUT), and the lock under which
        # the bulks and the PUT lane take from the outbox.
        self.batch_refs: set[str] = set()
        self.taking = asyncio.Lock()
        # When the earliest PUT the lane took may go again (None: none waits).
        self.puts_due: int | None = None
        self._next_ahead = 0.0  # monotonic s: when writes may next be taken ahead

    async def run(self) -> int:
        """Send batches (and, with the PUT lane, single PUTs beside them) until nothing may go
        now; when to come back."""
        deadline = time.monotonic() + self.s.settings.job_timeout_s * 0.6
        batch = await self.s.outbox.in_flight(self.name)
        self.batch_refs = {op.ref for op in batch.ops} if batch else set()
        pending = int(await self.s.redis.hlen(ks().OUTBOX_PUTS + self.name))  # type: ignore[misc]
        if not self.spec.lane_per_minute and not pending:
            return await self._bulks(deadline, MAX_INLINE_WAIT_MS)
        # The lane runs beside the bulks: between two bulks (28 a minute) the bucket of the
        # general budget they leave free refills several times over, so the bulks' waits
        # happen in the turn and the lane spends them.
        bulks = asyncio.create_task(self._bulks(
            deadline, LANE_INLINE_WAIT_MS if self.spec.lane_per_minute else MAX_INLINE_WAIT_MS))
        puts = asyncio.create_task(self._puts(deadline, bulks))
        tasks = [bulks, puts]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()  # a cancelled bulk or PUT stays recorded: it goes again as it was
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and \
                    not isinstance(result, asyncio.CancelledError):
                raise result
        return bulks.result()

    async def _bulks(self, deadline: float, inline_ms: int) -> int:
        """Send batches until nothing may go by bulk now; when to come back."""
        while time.monotonic() < deadline:
            state = await self.ledger.target_state(self.name)
            now = now_ms()
            if state.get("paused"):
                return now + PAUSED_RECHECK_MS
            blocked = int(state.get("blocked_until") or 0)
            spent = budget.spent_until(budget.parse(state), now, "bulk", "general")
            if (until := max(blocked, spent or 0)) > now:
                return until
            left = int((deadline - time.monotonic()) * 1000)
            inline = max(0, min(inline_ms, left))  # never past the job's deadline
            lane = bool(self.spec.lane_per_minute)
            # With the lane, a bulk is composed once it may go: while it waits for its slot,
            # the lane sends the longest-waiting writes by PUT.
            if lane and not self.batch_refs:
                async with self.taking:
                    await self._take_ahead()
                if not await self.s.outbox.depth(self.name):
                    return now_ms()  # nothing to send: no bulk slot spent on it
                if (wait := await self._rate_slot(inline)) is not None:
                    return wait
            async with self.taking:  # the PUT lane never takes what a bulk carries
                batch = await self.s.outbox.in_flight(self.name)
                if batch is None:
                    now = now_ms()
                    taken = await self._take(now)
                    batch = compose(taken, now)
                    if batch is None:
                        self.batch_refs = set()
                        return now
                    await self.lease.apply([Write("batch", (ks().OUTBOX_BATCH + self.name,),
                                                  (batch.json(),))])
                    slot = not lane
                else:
                    slot = not lane or bool(self.batch_refs)  # resent: its slot is still due
                self.batch_refs = {op.ref for op in batch.ops}
            if slot and (wait := await self._rate_slot(inline)) is not None:
                return wait
            again = await self._send(batch)
            if again is not None:
                return again
        return now_ms()

    async def _take(self, now: int, put: bool = False) -> list[Queued]:
        """The next writes to send (a bulk's, or one for a PUT), each with its listing's newer
        content where no guard judges it (``fresh.py``)."""
        token = self.lease.token
        await self._take_ahead()
        taken = await self.s._take_out(self.name, token, now, 1 if put else BULK_MAX_OPS,
                                       put=put, exclude=sorted(self.batch_refs) if put else ())
        if taken:
            fresh = await self.s._freshen(self.name, token, self.adapter, taken,
                                          now if put else None)
            if fresh is not None:
                await self._tell_fresh(taken, fresh)
            taken = fresh
        if taken is None:
            raise LeaseLost(f"{self.lease.what} was taken over")
        return taken

    async def _take_ahead(self) -> None:
        """Changed listings of groups still waiting for their flush join the outbox, where no
        guard judges them (``ahead.py``); at most every AHEAD_EVERY_S."""
        if not self.spec.ahead or time.monotonic() < self._next_ahead:
            return
        self._next_ahead = time.monotonic() + AHEAD_EVERY_S
        taken = await self.s.ahead(self.spec, self.lease.token, self.adapter)
        if taken is None:
            raise LeaseLost(f"{self.lease.what} was taken over")
        if taken:
            await self._tell_ahead(taken)

    async def _tell_ahead(self, taken: list[Taken]) -> None:
        """Each write's story: queued ahead of its group's flush."""
        at = now_ms()
        told = [(t.write.ref, decision_entry(
            at, self.name, t.group, "queued", digest=t.write.digest, key=t.write.key,
            operation=t.write.operation, detail="ahead of its group's flush"))
            for t in taken]
        await self.lease.apply(trace_writes(told, self.ledger.trace_ttl_ms))

    async def _tell_fresh(self, taken: list[Queued], fresh: list[Queued]) -> None:
        """Each replaced write's story: the newer content it goes with."""
        at = now_ms()
        told = [(new.ref, decision_entry(at, self.name, new.group, "queued", digest=new.digest,
                                         key=new.key, operation=new.operation,
                                         detail="newer content, taken as it left the outbox"))
                for old, new in zip(taken, fresh, strict=True) if new is not old]
        if told:
            await self.lease.apply(trace_writes(told, self.ledger.trace_ttl_ms))

    async def _rate_slot(self, inline_ms: int = MAX_INLINE_WAIT_MS) -> int | None:
        """Wait briefly for both shared buckets, or return when to come back: first for the
        portal's bulk window to have room at an even spread (``budget.paced_until``), then
        for the shared GCRA buckets."""
        per_bulk = self.spec.bulk_per_minute or 1  # bulk turned off: drain what is left, slowly
        # Read once: only this sender's bulks change it. Each look costs a round trip that the
        # flushes' PUTs polling the same bucket do not pay.
        reported = budget.parse(await self.ledger.target_state(self.name)).get("bulk")
        while True:
            now = now_ms()
            paced = reported.paced_until(now, 60_000 / per_bulk) if reported else None
            if paced is not None:
                wait = paced - now
            else:
                wait = await self.s.limiter.acquire_bulk(
                    self.name, self.spec.requests_per_minute, per_bulk, now)
                if not wait:
                    return None
            if wait > inline_ms:
                return now_ms() + wait
            await asyncio.sleep(wait / 1000)

    # -- the PUT lane ------------------------------------------------------------------------

    async def _puts(self, deadline: float, bulks: asyncio.Task[int]) -> None:
        """While the bulks drain the outbox: resend the PUTs taken before and not answered
        (same key, never in a bulk), then take the next writes fairly for single PUTs, within
        the general budget the bulks leave free."""
        while time.monotonic() < deadline:
            self.lease.ensure()
            now = now_ms()
            if (reset := self._general_low(now)) is not None:
                if bulks.done():
                    return
                await _nap(reset - now, bulks)  # the portal says the general window is short
                continue
            records = await self.s.outbox.puts(self.name)
            self.puts_due = min((r.not_before for r in records), default=None)
            due = [r for r in records if r.not_before <= now]
            record = due[0] if due else None
            if record is None:
                if bulks.done():
                    return  # what waits to go again goes with the next turn
                if not self.spec.lane_per_minute:  # off, or the bulks leave it nothing
                    if not records:
                        return
                    await _nap((self.puts_due or now) - now, bulks)
                    continue
                async with self.taking:
                    taken = await self._take(now, put=True)
                if not taken:
                    await _nap(LANE_IDLE_MS, bulks)  # nothing for the lane now
                    continue
                record = PutRecord(taken[0], now)
                self.puts_due = min(self.puts_due or now, now)
            while wait := await self._lane_slot():
                if time.monotonic() + wait / 1000 > deadline:
                    return  # taken and recorded: the next send resends it, same key
                await _nap(wait, bulks)
            await self._put(record)

    def _general_low(self, now: int) -> int | None:
        """When the general window resets, if the portal's last answer left no more than the
        bulks' reserve in it."""
        info = self.adapter.rate_limit
        if info.remaining is not None and info.remaining <= LANE_RESERVE and info.reset \
                and info.reset * 1000 > now:
            return int(info.reset * 1000)
        return None

    async def _lane_slot(self) -> int:
        """0 when a PUT of the lane may go now (counted), else the ms to wait: the lane's own
        bucket (the general rate less one request per bulk slot) and the shared general bucket
        with one request less of burst, so a bulk always finds a request free there."""
        general = 60_000 / self.spec.requests_per_minute
        # A PUT taken before the lane lost its budget (turned off, or bulks that leave it
        # none) goes again at the general rate, not at one a minute.
        lane = 60_000 / (self.spec.lane_per_minute or self.spec.requests_per_minute)
        args = [now_ms(), lane, math.floor(lane * (DEFAULT_BURST - 1)),
                general, math.floor(general * (DEFAULT_BURST - 2))]
        return int(await self.s._acquire(
            keys=[ks().bucket(self.name) + k.PUTS, ks().bucket(self.name)],
            args=args))

    async def _put(self, record: PutRecord) -> None:
        """Send one PUT (or delete) of the lane with its intent key and settle its answer as a
        single write's: accepted, refused, or kept to go again by PUT with that key."""
        op = record.op
        self.lease.ensure()
        if op.operation == "delete":
            result = await self.adapter.delete(op.ref, op.key)
        else:
            result = await self.adapter.upsert(op.payload, op.key)
        seen = budget.command(self.name, {
            "general": budget.from_headers(self.adapter.rate_limit, now_ms())})
        gone = op.operation == "delete" and result.outcome is Outcome.NOT_FOUND
        if result.ok or gone or result.outcome in REFUSED:
            await self._record(op.key, record.attempts + 1, op.operation, result,
                               [self._settled(op, result)], seen, put=True)
            self.sent += 1
            return
        now = now_ms()
        reason = f"{result.outcome}: {result.error_type or result.status or ''} " \
                 f"{result.message}".strip()
        again = record.attempts + 1
        until = now + self._backoff_ms(again)
        if result.outcome is Outcome.RATE_LIMITED and result.retry_at:
            until = max(until, int(result.retry_at * 1000))
        kept_ = PutRecord(op, record.at, again, until)
        entry = Attempt(now, self.name, op.group, op.operation, [op.ref], op.key,
                        str(result.outcome), result.status, round(result.latency_ms, 1), again,
                        reason)
        await self.lease.apply([
            Write("put record", (ks().OUTBOX_PUTS + self.name,), (op.ref, kept_.json())),
            *noted(seen),
            *attempt_writes(entry, [], self.ledger.trace_ttl_ms, [op.ref]),
            *trace_writes(_decisions(self.name, op.group, [
                Settled("retry", op, "", until, reason)], now), self.ledger.trace_ttl_ms)])
        self.puts_due = min(self.puts_due or until, until)
        if result.outcome is Outcome.CREDENTIALS_INVALID:
            await self.ledger.pause(self.name, reason)
            log.error("pausing %s (by the bridge: credentials refused): %s", self.name, reason,
                      extra=about(target=self.name))
        elif result.outcome is Outcome.RATE_LIMITED and until > now:
            await self.ledger.block_until(self.name, until, reason)

    async def _send(self, batch: Batch) -> int | None:
        """Send ``batch`` and record its answer; None to go on, else when to come back."""
        self.lease.ensure()
        result = await self.adapter.bulk(batch.body(), batch.key)
        items = self.adapter.bulk_items(result, len(batch.ops))
        seen = self._budgets()
        if items is None:
            return await self._failed(batch, result, seen)
        settled = [self._settled(op, item) for op, item in zip(batch.ops, items, strict=True)]
        await self._record(batch.key, batch.attempts + 1, "bulk", result, settled, seen)
        self.sent += len(batch.ops)
        return None

    def _settled(self, op: Queued, item: Result) -> Settled:
        now = now_ms()
        if item.ok or (op.operation == "delete" and item.outcome is Outcome.NOT_FOUND):
            # A delete of what is not there leaves the portal as desired.
            return Settled("accepted", op, _dumps(Accepted(op.digest, None, now)))
        why = f"{item.error_type or item.outcome}: {item.message}".strip()
        if item.outcome in REFUSED:
            entry = Quarantined(op.digest, op.group, item.error_type or str(item.outcome),
                                item.message, item.field, now)
            return Settled("refused", op, _dumps(entry), why=why)
        retry = op.retried(op.attempts + 1)
        return Settled("retry", op, retry.json(), now + self._backoff_ms(retry.attempts), why)

    def _backoff_ms(self, attempts: int) -> int:
        """Exponential backoff with full jitter, as a group's flush backs off."""
        delivery = self.s.settings
        ceiling = min(delivery.retry_max_s, delivery.retry_base_s * 2 ** max(0, attempts - 1))
        return int(1000 * random.uniform(ceiling / 2, ceiling))

    def _budgets(self) -> Command | None:
        at = now_ms()
        return budget.command(self.name, {
            "general": budget.from_headers(self.adapter.rate_limit, at),
            "bulk": budget.from_headers(self.adapter.bulk_rate_limit, at)})

    async def _record(self, key: str, attempt: int, operation: str, result: Result,
                      settled: list[Settled], seen: Command | None, put: bool = False) -> None:
        """Settle every operation of a bulk (or a PUT's, ``put``), record the call per group,
        and tell each listing's story: one atomic write, only while this sender holds the
        target."""
        now = now_ms()
        extra = noted(seen)
        for n, (group, ops) in enumerate(_by_group(settled).items()):
            accepted = [s for s in ops if s.kind == "accepted"]
            entry = Attempt(now, self.name, group, operation, [s.op.ref for s in ops][:50],
                            key, str(result.outcome), result.status,
                            round(result.latency_ms, 1), attempt,
                            "" if result.ok else f"{result.error_type} {result.message}".strip())
            extra += attempt_writes(entry, [now - s.op.received_ms for s in accepted],
                                    self.ledger.trace_ttl_ms, [s.op.ref for s in ops],
                                    counted=n == 0)  # one call, whatever it carried
            extra += trace_writes(_decisions(self.name, group, ops, now),
                                  self.ledger.trace_ttl_ms)
        if not await self.s._settle(self.name, self.lease.token,
                                    [s.arg() for s in settled], extra, put=put):
            raise LeaseLost(f"{self.lease.what} was taken over")
        if not put:
            self.batch_refs = set()  # the bulk is answered
        for item in settled:  # one line per listing an operator must look at, as a flush says
            if item.kind == "refused":
                log.info("quarantined %s on %s: %s", item.op.ref, self.name, item.why,
                         extra=about(item.op.group, self.name, item.op.ref))

    async def _failed(self, batch: Batch, result: Result, seen: Command | None) -> int | None:
        """The whole request failed: keep it in flight (same key) and say when to try again;
        or, when the portal refused the request itself, settle every operation as refused."""
        if result.outcome in REFUSED:
            settled = [self._settled(op, result) for op in batch.ops]
            await self._record(batch.key, batch.attempts + 1, "bulk", result, settled, seen)
            return None
        now = now_ms()
        reason = f"{result.outcome}: {result.error_type or result.status or ''} " \
                 f"{result.message}".strip()
        again = batch.attempts + 1
        writes = [Write("batch", (ks().OUTBOX_BATCH + self.name,),
                        (Batch(batch.key, batch.ops, batch.at, again).json(),)), *noted(seen)]
        by_group = _by_group([Settled("retry", op, "") for op in batch.ops])
        for n, (group, ops) in enumerate(by_group.items()):
            entry = Attempt(now, self.name, group, "bulk", [s.op.ref for s in ops][:50],
                            batch.key, str(result.outcome), result.status,
                            round(result.latency_ms, 1), again, reason)
            writes += attempt_writes(entry, [], self.ledger.trace_ttl_ms,
                                     [s.op.ref for s in ops], counted=n == 0)
        await self.lease.apply(writes)
        if result.outcome is Outcome.CREDENTIALS_INVALID:
            await self.ledger.pause(self.name, reason)
            log.error("pausing %s (by the bridge: credentials refused): %s", self.name, reason,
                      extra=about(target=self.name))
            return now + PAUSED_RECHECK_MS
        if result.outcome is Outcome.RATE_LIMITED and result.retry_at:
            until = int(result.retry_at * 1000)
            if until > now:
                await self.ledger.block_until(self.name, until, reason)
                return until
        wait = self._backoff_ms(again)
        log.info("bulk to %s failed (%s); next try in %.1f s", self.name, reason, wait / 1000,
                 extra=about(target=self.name))
        return now + wait


def _by_group(settled: list[Settled]) -> dict[str, list[Settled]]:
    groups: dict[str, list[Settled]] = {}
    for item in settled:
        groups.setdefault(item.op.group, []).append(item)
    return groups


def _decisions(target: str, group: str, ops: list[Settled], at: int
               ) -> list[tuple[str, dict[str, Any]]]:
    """What each listing's story says beyond the call: refused, or to be tried again."""
    out: list[tuple[str, dict[str, Any]]] = []
    for s in ops:
        if s.kind == "refused":
            out.append((s.op.ref, decision_entry(at, target, group, "quarantined",
                                                 digest=s.op.digest, detail=s.why)))
        elif s.kind == "retry":
            out.append((s.op.ref, decision_entry(at, target, group, "retrying",
                                                 digest=s.op.digest, until=s.at,
                                                 detail=s.why)))
    return out


def _dumps(record: Accepted | Quarantined) -> str:
    return orjson.dumps(asdict(record)).decode()


async def _nap(ms: float, bulks: asyncio.Task[int]) -> None:
    """Sleep ``ms`` (at most half a second), or until the bulks are done."""
    seconds = max(0.0, min(ms, 500)) / 1000
    if bulks.done():
        await asyncio.sleep(seconds)
    else:
        await asyncio.wait([bulks], timeout=seconds)
