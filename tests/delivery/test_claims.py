"""The claim, renew, fenced-write and finish scripts against the real test Redis, fed by the real
ingest script: a group's flush runs under a lease no other flush can share, and a flush whose
lease was taken writes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import orjson
import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bridge import constants as k
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery import claims, ratelimit
from bridge.delivery.claims import (
    Acceptance,
    Claim,
    Flushes,
    Keys,
    Lease,
    LeaseLost,
    Write,
    mark_due,
    stamp,
)
from bridge.delivery.desired import DesiredListing
from bridge.scripts import Lua, Script, placeholders
from bridge.settings import Settings
from tests.support.ingest import Scripts
from tests.support.sandbox import eventually
from tests.support.servers import wait_until
from workers import scheduler

LEASE_MS = 60_000
SHORT_LEASE_MS = 1_000  # the shortest lease settings allow: for leases that must lapse
# The present, as Redis's clock reads it too: its expiries are judged against it.
T0 = now_ms()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    # Bytes replies, as the worker's arq connection gives them.
    async with aioredis.Redis.from_url(redis_url) as connection:
        yield connection


@pytest.fixture
def flushes(client: aioredis.Redis, settings: Settings) -> Flushes:
    return Flushes(client, lease_ms=LEASE_MS, debounce=settings.debounce)


@pytest.fixture
def short(client: aioredis.Redis, settings: Settings) -> Flushes:
    return Flushes(client, lease_ms=SHORT_LEASE_MS, debounce=settings.debounce)


class Ingest:
    """The webhook's own script, called directly: the state a claim reads is the real one."""

    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        self.r = r
        self.scripts = Scripts(r, settings)
        self.ids = 0

    def _call(self, kind: str, group: str, at: int, *items: str | int) -> None:
        self.ids += 1
        self.scripts(f"wh-{self.ids}", at, kind, group, at, *items)

    def upsert(self, group: str, ref: str, at: int, version: int = -1, **body: object) -> None:
        self._call("u", group, at, ref, version, orjson.dumps({"ref": ref, **body}).decode())

    def delete(self, group: str, ref: str, at: int, version: int = -1) -> None:
        self._call("d", group, at, ref, version, "")


@pytest.fixture
def ingest(r: redis.Redis, settings: Settings) -> Ingest:
    return Ingest(r, settings)


async def claimed(flushes: Flushes, group: str, at: int) -> Claim:
    claim = await flushes.claim(group, at)
    assert claim is not None, f"group {group!r} is leased"
    return claim


def holder(r: redis.Redis, group: str) -> str | None:
    """The token of the flush holding the group's lease."""
    return cast("str | None", r.get(ks().LEASE + group))


def lease_left(r: redis.Redis, group: str) -> int:
    return cast(int, r.pttl(ks().LEASE + group))


async def taken_over(short: Flushes, r: redis.Redis, group: str) -> tuple[Claim, Claim]:
    """A flush froze past its lease and another claimed the group: (stale, current). The
    current one renews to LEASE_MS, so it holds the group for the rest of the test."""
    stale = await claimed(short, group, now_ms())
    wait_until(lambda: lease_left(r, group) < 0, timeout=5, what="the lease to lapse")
    current = await claimed(short, group, now_ms())
    assert await short.renew(current, LEASE_MS)
    return stale, current



def contents(r: redis.Redis) -> dict[str, bytes | None]:
    """Every key and its serialized value: equal snapshots mean nothing was written."""
    return {key: cast("bytes | None", r.dump(key)) for key in cast(list[str], r.keys("*"))}


# Claim ---------------------------------------------------------------------------------------

async def test_claim_takes_pending_changes_clears_first_and_leases_the_group(
    flushes: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("g1", "a", T0)
    ingest.upsert("g1", "b", T0 + 50)

    claim = await claimed(flushes, "g1", T0 + 500)

    assert (claim.group, claim.seq, claim.first_pending_ms) == ("g1", "2", T0)
    assert r.hgetall(ks().PENDING + "g1") == {"last": str(T0 + 50), "seq": "2"}
    assert r.zscore(ks().DUE, "g1") == T0 + 500 + LEASE_MS
    assert holder(r, "g1") == str(claim.token)
    assert LEASE_MS - 1_000 < lease_left(r, "g1") <= LEASE_MS


async def test_claim_of_a_group_without_changes_has_no_first_and_no_listings(
    flushes: Flushes, r: redis.Redis
) -> None:
    claim = await claimed(flushes, "quiet", T0)

    assert (claim.seq, claim.first_pending_ms, claim.listings) == ("0", None, [])
    assert r.zscore(ks().DUE, "quiet") == T0 + LEASE_MS


async def test_claim_returns_every_member_decoded_and_sorted_by_ref(
    flushes: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("g1", "live", T0, version=3, rent=900)
    ingest.upsert("g1", "gone", T0, version=1, rent=500)
    ingest.delete("g1", "gone", T0 + 10, version=2)  # a deletion keeps the last body
    ingest.delete("g1", "never-seen", T0 + 20)  # a bare tombstone: no body at all
    r.sadd(ks().MEMBERS + "g1", "hashless")  # a member without a hash reads as deleted

    claim = await claimed(flushes, "g1", T0 + 500)

    assert claim.listings == [
        DesiredListing(ref="gone", group="g1", version=2, occurred_ms=T0 + 10, deleted=True,
                       body={"ref": "gone", "rent": 500}, received_ms=T0 + 10,
                       cause=k.CAUSE_DELETED),
        DesiredListing(ref="hashless", group="g1", version=None, occurred_ms=0, deleted=True,
                       body=None, received_ms=0),
        DesiredListing(ref="live", group="g1", version=3, occurred_ms=T0, deleted=False,
                       body={"ref": "live", "rent": 900}, received_ms=T0),
        DesiredListing(ref="never-seen", group="g1", version=None, occurred_ms=T0 + 20,
                       deleted=True, body=None, received_ms=T0 + 20, cause=k.CAUSE_DELETED),
    ]


async def test_a_claims_token_is_the_text_its_lease_holds(flushes: Flushes, r: redis.Redis
                                                           ) -> None:
    claim = await claimed(flushes, "g1", T0)
    assert isinstance(claim.token, str)  # as Claim declares it
    assert claim.token == holder(r, "g1")


def test_claims_module_re_exports_the_one_desired_listing() -> None:
    assert claims.DesiredListing is DesiredListing


async def test_a_second_claim_while_the_lease_is_held_gets_nothing_and_takes_nothing(
    flushes: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    first = await claimed(flushes, "g1", T0 + 500)
    ingest.upsert("g1", "a", T0 + 600)  # arrives during the flush
    pending = r.hgetall(ks().PENDING + "g1")

    assert await flushes.claim("g1", T0 + 800) is None

    assert r.hgetall(ks().PENDING + "g1") == pending  # its changes wait for the next claim
    assert holder(r, "g1") == str(first.token)
    assert r.get(ks().FENCE) == str(first.token)  # no token was spent


async def test_a_claim_refused_by_a_lease_makes_the_group_due_when_the_lease_lapses(
    flushes: Flushes, ingest: Ingest, r: redis.Redis, settings: Settings
) -> None:
    await claimed(flushes, "g1", T0)
    ingest.upsert("g1", "a", T0 + 100)  # the debounce makes it due long before the lease ends
    assert r.zscore(ks().DUE, "g1") == T0 + 100 + settings.debounce.window_ms

    before = lease_left(r, "g1")
    assert await flushes.claim("g1", T0 + 300) is None
    after = lease_left(r, "g1")

    due = cast(float, r.zscore(ks().DUE, "g1"))
    assert T0 + 300 + after <= due <= T0 + 300 + before


async def test_a_claim_refused_by_a_lease_never_makes_the_group_due_earlier(
    flushes: Flushes, r: redis.Redis
) -> None:
    await claimed(flushes, "g1", T0)
    later = T0 + 10 * LEASE_MS  # e.g. a target's backoff
    r.zadd(ks().DUE, {"g1": later})

    assert await flushes.claim("g1", T0 + 300) is None
    assert r.zscore(ks().DUE, "g1") == later


async def test_a_group_can_be_claimed_again_once_its_flush_finished(
    flushes: Flushes, r: redis.Redis
) -> None:
    first = await claimed(flushes, "g1", T0)
    await flushes.finish(first, None)
    second = await claimed(flushes, "g1", T0 + 100)
    assert holder(r, "g1") == str(second.token)


async def test_a_lapsed_lease_lets_another_flush_claim_the_group(
    short: Flushes, r: redis.Redis
) -> None:
    stale, current = await taken_over(short, r, "g1")
    assert holder(r, "g1") == str(current.token) != str(stale.token)


async def test_fencing_tokens_never_repeat_across_claims(
    flushes: Flushes, short: Flushes, r: redis.Redis
) -> None:
    tokens: list[str] = []
    for n in range(3):
        claim = await claimed(flushes, "g1", T0 + n)
        tokens.append(str(claim.token))
        await flushes.finish(claim, None)
    tokens.append(str((await claimed(flushes, "g2", T0)).token))  # another group, same sequence
    tokens += [str(c.token) for c in await taken_over(short, r, "g3")]  # after a lapse too
    assert len(set(tokens)) == len(tokens)
    assert [int(t) for t in tokens] == sorted(int(t) for t in tokens)


async def test_lb_flushing_holds_the_group_while_leased_and_not_after_finish(
    flushes: Flushes, r: redis.Redis
) -> None:
    claim = await claimed(flushes, "g1", T0)
    assert r.zscore(ks().FLUSHING, "g1") == T0 + LEASE_MS
    assert await flushes.claim("g1", T0 + 1) is None
    assert r.zscore(ks().FLUSHING, "g1") == T0 + LEASE_MS  # a refused claim changes nothing there

    await flushes.finish(claim, None)

    assert r.zscore(ks().FLUSHING, "g1") is None


async def test_an_ingest_touch_during_a_flush_does_not_shorten_the_lease(
    flushes: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    claim = await claimed(flushes, "g1", T0)
    before = lease_left(r, "g1")

    ingest.upsert("g1", "a", T0 + 100)
    ingest.delete("g1", "a", T0 + 200)

    assert holder(r, "g1") == str(claim.token)
    assert before - 1_000 < lease_left(r, "g1") <= before
    assert r.zscore(ks().FLUSHING, "g1") == T0 + LEASE_MS
    assert await flushes.claim("g1", T0 + 300) is None  # the changes wait for this flush


# Renew ---------------------------------------------------------------------------------------

async def test_renew_extends_the_lease_of_the_current_claim(
    client: aioredis.Redis, settings: Settings, r: redis.Redis
) -> None:
    flushes = Flushes(client, lease_ms=5_000, debounce=settings.debounce)
    claim = await claimed(flushes, "g1", now_ms())
    assert lease_left(r, "g1") <= 5_000

    start = now_ms()
    assert await flushes.renew(claim, 30_000) is True

    assert 29_000 < lease_left(r, "g1") <= 30_000
    assert holder(r, "g1") == str(claim.token)
    flushing = cast(float, r.zscore(ks().FLUSHING, "g1"))
    assert start + 30_000 <= flushing <= now_ms() + 30_000
    assert r.zscore(ks().DUE, "g1") == flushing  # if it dies now, due when the new lease lapses


async def test_renew_with_a_stale_token_changes_nothing(short: Flushes, r: redis.Redis) -> None:
    stale, current = await taken_over(short, r, "g1")
    before = contents(r)

    assert await short.renew(stale, 10 * LEASE_MS) is False

    assert holder(r, "g1") == str(current.token)
    assert lease_left(r, "g1") <= LEASE_MS
    assert contents(r) == before  # the due and flushing times included


async def test_renew_of_a_finished_flush_does_not_bring_its_lease_back(
    flushes: Flushes, r: redis.Redis
) -> None:
    claim = await claimed(flushes, "g1", T0)
    await flushes.finish(claim, None)

    assert await flushes.renew(claim, LEASE_MS) is False
    assert not r.exists(ks().LEASE + "g1")
    assert r.zscore(ks().DUE, "g1") is None and r.zscore(ks().FLUSHING, "g1") is None


# Fenced writes -------------------------------------------------------------------------------

BATCH, INTENTS = ks().OUTBOX_BATCH + "t", ks().INTENT + "t"


def batch(value: str) -> Write:
    return Write("batch", (BATCH,), (value,))


def intents(*pairs: str) -> Write:
    return Write("record intents", (INTENTS,), pairs)


async def test_fenced_writes_apply_with_the_current_token(
    flushes: Flushes, r: redis.Redis
) -> None:
    claim = await claimed(flushes, "g1", T0)

    assert await flushes.fenced(claim, [batch("1"), intents("a", "1", "b", "2")])

    assert r.get(BATCH) == "1" and r.hgetall(INTENTS) == {"a": "1", "b": "2"}


async def test_fenced_writes_with_a_stale_token_apply_none_of_them(
    short: Flushes, r: redis.Redis
) -> None:
    stale, current = await taken_over(short, r, "g1")
    before = contents(r)

    assert await short.fenced(stale, [batch("1"), intents("a", "1")]) is False
    assert contents(r) == before

    assert await short.fenced(current, [batch("2")]) is True
    assert r.get(BATCH) == "2"


@pytest.mark.parametrize("bad", [
    Write("SET", (BATCH,), ("1",)),  # no such write: free-form commands are gone
    Write("batch", (BATCH,), ("1", "2")),  # too many arguments
    Write("batch", (BATCH, INTENTS), ("1",)),  # too many keys
    Write("record intents", (INTENTS,), ("a",)),  # a field without its value
], ids=["unknown", "arguments", "keys", "pairs"])
async def test_a_malformed_fenced_write_applies_none_of_them(
    flushes: Flushes, r: redis.Redis, bad: Write
) -> None:
    claim = await claimed(flushes, "g1", T0)
    before = contents(r)

    with pytest.raises(ResponseError, match="write 2"):
        await flushes.fenced(claim, [intents("a", "1"), bad])

    assert contents(r) == before and not r.exists(INTENTS)


async def test_an_acceptance_declares_its_listings_current_group(
    flushes: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    # The fence reads the listing's group first and declares its keys: the script may mark
    # it changed there (it moved on since the write was planned).
    ingest.upsert("g1", "a", T0)
    claim = await claimed(flushes, "g1", T0)
    ingest.upsert("g2", "a", T0 + 5)  # moved to g2 meanwhile
    planned = stamp(claim.listings[0])

    assert await flushes.fenced(claim, [Acceptance("a", planned).write()])

    assert r.hexists(ks().DIRTY + "g2", "a")


async def test_the_fenced_script_refuses_an_undeclared_group_and_writes_nothing(
    flushes: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("g1", "a", T0)
    claim = await claimed(flushes, "g1", T0)
    ingest.upsert("g2", "a", T0 + 5)
    keys = Keys(ks().LEASE + "g1")
    writes = keys.writes([intents("x", "1"), Acceptance("a", stamp(claim.listings[0])).write()])
    before = contents(r)

    answer = await Script(flushes.redis, claims.FENCED)(keys=keys.names, args=[
        claim.token, T0, k.GROUP_IDLE_MS, claims.group_prefixes(), writes])

    assert answer == [b"missing", *(key.encode() for key in claims.group_keys("g2"))]
    assert contents(r) == before


async def test_a_lease_whose_write_was_fenced_off_stops_its_flush(
    short: Flushes, r: redis.Redis
) -> None:
    stale, _ = await taken_over(short, r, "g1")
    lease = Lease(short, stale, LEASE_MS)  # its local deadline alone would let it go on
    lease.ensure()

    with pytest.raises(LeaseLost):
        await lease.apply([batch("1")])

    assert not r.exists(BATCH)
    with pytest.raises(LeaseLost):
        lease.ensure()  # no more portal calls


async def test_a_leased_flush_keeps_renewing_its_lease(short: Flushes, r: redis.Redis) -> None:
    claim = await claimed(short, "g1", now_ms())
    first_expiry = cast(float, r.zscore(ks().FLUSHING, "g1"))

    async with short.leased(claim) as lease:
        async def renewed() -> bool:
            return cast(float, r.zscore(ks().FLUSHING, "g1")) > first_expiry

        await eventually(renewed)  # a renewal of the lease
        lease.ensure()
        assert holder(r, "g1") == str(claim.token)
        assert cast(float, r.zscore(ks().DUE, "g1")) > first_expiry


async def test_fenced_writes_of_long_commands_apply_whole(
    flushes: Flushes, r: redis.Redis
) -> None:
    # A group sync of 600 listings is one write of 1,200 arguments, chunked for Lua's unpack().
    fields = {f"apt-{i}": f"v{i}" for i in range(600)}
    members = [f"m{i}" for i in range(2_500)]
    claim = await claimed(flushes, "g1", T0)

    assert await flushes.fenced(claim, [
        Write("write records", (ks().ACCEPTED + "t:g1",),
              tuple(x for item in fields.items() for x in item)),
        Write("link", (ks().LINKED + "t",), tuple(members)),
    ])

    assert r.hgetall(ks().ACCEPTED + "t:g1") == fields
    assert r.scard(ks().LINKED + "t") == len(members)


# Finish --------------------------------------------------------------------------------------

async def test_finish_without_new_changes_takes_the_group_off_due_and_ends_the_lease(
    flushes: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("g1", "a", T0)
    claim = await claimed(flushes, "g1", T0 + 500)

    assert await flushes.finish(claim, None) is True
    assert r.zscore(ks().DUE, "g1") is None
    assert not r.exists(ks().LEASE + "g1")


async def test_finish_with_work_left_schedules_next_due(
    flushes: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("g1", "a", T0)
    claim = await claimed(flushes, "g1", T0 + 500)

    assert await flushes.finish(claim, T0 + 5_000) is True
    assert r.zscore(ks().DUE, "g1") == T0 + 5_000


async def test_finish_after_changes_arrived_keeps_the_group_due_at_their_debounce(
    flushes: Flushes, ingest: Ingest, r: redis.Redis, settings: Settings
) -> None:
    ingest.upsert("g1", "a", T0)
    claim = await claimed(flushes, "g1", T0 + 500)
    ingest.upsert("g1", "a", T0 + 600, rent=1)  # arrives during the flush

    assert await flushes.finish(claim, None) is False
    assert r.zscore(ks().DUE, "g1") == T0 + 600 + settings.debounce.window_ms
    assert not r.exists(ks().LEASE + "g1") and r.zscore(ks().FLUSHING, "g1") is None


async def test_finish_after_a_stream_of_changes_caps_their_due_at_max_wait(
    flushes: Flushes, ingest: Ingest, r: redis.Redis, settings: Settings
) -> None:
    window, max_wait = settings.debounce.window_ms, settings.debounce.max_wait_ms
    claim = await claimed(flushes, "g1", T0)
    # Changes keep coming during the flush, each within the window of the one before.
    for at in range(T0 + 100, T0 + 100 + max_wait + window, window // 2):
        ingest.upsert("g1", "a", at, rent=at)
    last = int(cast(str, r.hget(ks().PENDING + "g1", "last")))
    assert last + window > T0 + 100 + max_wait

    assert await flushes.finish(claim, None) is False
    assert r.zscore(ks().DUE, "g1") == T0 + 100 + max_wait  # first + max wait, not last + window


@pytest.mark.parametrize(("offset", "expected"), [(10_000, 0), (-100, -100)],
                         ids=["later retry", "earlier retry"])
async def test_finish_after_changes_arrived_brings_an_earlier_next_due_forward_only(
    flushes: Flushes, ingest: Ingest, r: redis.Redis, settings: Settings,
    offset: int, expected: int,
) -> None:
    ingest.upsert("g1", "a", T0)
    claim = await claimed(flushes, "g1", T0 + 500)
    ingest.upsert("g1", "a", T0 + 600, rent=1)
    changes_due = T0 + 600 + settings.debounce.window_ms

    assert await flushes.finish(claim, changes_due + offset) is False
    # A later retry does not delay the changes; an earlier one comes first.
    assert r.zscore(ks().DUE, "g1") == changes_due + expected


async def test_mark_due_during_a_flush_makes_the_group_due_now_after_its_finish(
    flushes: Flushes, client: aioredis.Redis, ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("g1", "a", T0)
    claim = await claimed(flushes, "g1", T0 + 500)

    await mark_due(client, ["g1"], T0 + 700)

    assert r.hget(ks().PENDING + "g1", "seq") == "2"
    assert r.zscore(ks().DUE, "g1") == T0 + 700  # brought forward from the lease
    start = now_ms()
    assert await flushes.finish(claim, None) is False
    # A bare seq bump has no debounce: due at once.
    assert start <= cast(float, r.zscore(ks().DUE, "g1")) <= now_ms()


async def test_finish_twice_raises_lease_lost(flushes: Flushes, r: redis.Redis) -> None:
    claim = await claimed(flushes, "g1", T0)
    await flushes.finish(claim, T0 + 5_000)

    with pytest.raises(LeaseLost):
        await flushes.finish(claim, None)
    assert r.zscore(ks().DUE, "g1") == T0 + 5_000


async def test_finish_with_a_stale_token_raises_lease_lost_and_changes_nothing(
    short: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    stale, current = await taken_over(short, r, "g1")
    ingest.upsert("g1", "a", T0)  # the current flush has changes to pick up later
    before = contents(r)

    with pytest.raises(LeaseLost):
        await short.finish(stale, None)

    assert contents(r) == before
    assert holder(r, "g1") == str(current.token)
    assert r.zscore(ks().FLUSHING, "g1") is not None


# The scripts' key names -------------------------------------------------------------------

@pytest.mark.parametrize("script", [claims.CLAIM, claims.RENEW, claims.FENCED, claims.FINISH,
                                    claims.WRITE, claims.MARK_DUE, ratelimit.ACQUIRE,
                                    scheduler.TAKE_DUE],
                         ids=["claim", "renew", "fenced", "finish", "write", "mark_due",
                              "acquire", "take_due"])
def test_delivery_scripts_have_every_placeholder_replaced(script: Lua | str) -> None:
    source = script if isinstance(script, str) else script.source
    assert not placeholders(source)
    assert "__" not in source


def test_claim_script_asks_for_the_listing_fields_in_desired_order() -> None:
    assert '"g", "v", "t", "d", "body", "at", "c"' in claims.CLAIM.source


def test_finish_states_the_debounce_rule_through_the_shared_fragment() -> None:
    # One rule for the fold and the finish: bridge/group_state.lua's due_at.
    assert ("group_state.lua", 11) in claims.FINISH.origin
    assert "due_at(first, last, window, maxwait)" in claims.FINISH.source


# Keys a script learns only by reading ----------------------------------------------------------

async def test_a_script_that_found_undeclared_keys_is_called_again_with_them() -> None:
    calls: list[list[str]] = []

    async def call(more: list[str]) -> object:
        calls.append(more)
        return [b"missing", b"lb:{t:default}:dirty:g2"] if len(calls) == 1 else 1

    async def read() -> list[str]:
        return [ks().DIRTY + "g1"]

    assert await claims.with_declared(call, read) == 1
    assert calls == [[ks().DIRTY + "g1"], [ks().DIRTY + "g1", ks().DIRTY + "g2"]]


async def test_keys_that_keep_moving_end_in_an_error_not_a_loop() -> None:
    async def call(more: list[str]) -> object:
        return ["missing", f"{ks().DIRTY}g{len(more)}"]

    async def read() -> list[str]:
        return []

    with pytest.raises(claims.Undeclared):
        await claims.with_declared(call, read)


async def test_a_claim_declares_every_member_it_reads(
    flushes: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("g1", "a", T0)
    ingest.upsert("g1", "b", T0)
    script = Script(flushes.redis, claims.CLAIM)
    keys = ks()
    fixed = [keys.LEASE + "g1", keys.FENCE, keys.PENDING + "g1", keys.DUE, keys.FLUSHING,
             keys.SETTLED + "g1", keys.DIRTY + "g1", keys.MEMBERS + "g1"]
    before = contents(r)

    answer = await script(keys=[*fixed, ks().LISTING + "a", ks().BODY + "a"],
                          args=["g1", T0, LEASE_MS, ks().LISTING, ks().BODY])

    assert answer == [b"missing", (ks().LISTING + "b").encode(), (ks().BODY + "b").encode()]
    assert contents(r) == before and not r.exists(ks().LEASE + "g1")
