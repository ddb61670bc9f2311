"""The claim and finish scripts against the real test Redis, fed by the real ingest script."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from bridge import constants as k
from bridge.delivery import claims, ratelimit
from bridge.delivery.claims import Flushes, mark_due
from bridge.delivery.desired import DesiredListing
from bridge.ingest.store import ingest_script
from bridge.scripts import placeholders
from bridge.settings import Settings
from workers import scheduler

LEASE_MS = 60_000
T0 = 1_700_000_000_000


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    # Bytes replies, as the worker's arq connection gives them.
    async with aioredis.Redis.from_url(redis_url) as connection:
        yield connection


@pytest.fixture
def flushes(client: aioredis.Redis) -> Flushes:
    return Flushes(client, lease_ms=LEASE_MS)


class Ingest:
    """The webhook's own script, called directly: the state a claim reads is the real one."""

    def __init__(self, r: redis.Redis, settings: Settings) -> None:
        self.r = r
        self.script = ingest_script(settings.webhook, settings.debounce)
        self.ids = 0

    def _call(self, kind: str, group: str, at: int, *items: str | int) -> None:
        self.ids += 1
        self.r.eval(self.script, 0, f"wh-{self.ids}", at, kind, group, at, *items)

    def upsert(self, group: str, ref: str, at: int, version: int = -1, **body: object) -> None:
        self._call("u", group, at, ref, version, orjson.dumps({"ref": ref, **body}).decode())

    def delete(self, group: str, ref: str, at: int, version: int = -1) -> None:
        self._call("d", group, at, ref, version, "")


@pytest.fixture
def ingest(r: redis.Redis, settings: Settings) -> Ingest:
    return Ingest(r, settings)


# Claim ---------------------------------------------------------------------------------------

async def test_claim_takes_pending_changes_clears_first_and_leases_the_group(
    flushes: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("g1", "a", T0)
    ingest.upsert("g1", "b", T0 + 50)

    claim = await flushes.claim("g1", T0 + 500)

    assert (claim.group, claim.seq, claim.first_pending_ms) == ("g1", "2", T0)
    assert r.hgetall(k.PENDING + "g1") == {"last": str(T0 + 50), "seq": "2"}
    assert r.zscore(k.DUE, "g1") == T0 + 500 + LEASE_MS


async def test_claim_of_a_group_without_changes_has_no_first_and_no_listings(
    flushes: Flushes, r: redis.Redis
) -> None:
    claim = await flushes.claim("quiet", T0)

    assert (claim.seq, claim.first_pending_ms, claim.listings) == ("0", None, [])
    assert r.zscore(k.DUE, "quiet") == T0 + LEASE_MS


async def test_claim_returns_every_member_decoded_and_sorted_by_ref(
    flushes: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("g1", "live", T0, version=3, rent=900)
    ingest.upsert("g1", "gone", T0, version=1, rent=500)
    ingest.delete("g1", "gone", T0 + 10, version=2)  # a deletion keeps the last body
    ingest.delete("g1", "never-seen", T0 + 20)  # a bare tombstone: no body at all
    r.sadd(k.MEMBERS + "g1", "hashless")  # a member without a hash reads as deleted

    claim = await flushes.claim("g1", T0 + 500)

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


def test_claims_module_re_exports_the_one_desired_listing() -> None:
    assert claims.DesiredListing is DesiredListing


# Finish --------------------------------------------------------------------------------------

async def test_finish_without_new_changes_takes_the_group_off_due(
    flushes: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("g1", "a", T0)
    claim = await flushes.claim("g1", T0 + 500)

    assert await flushes.finish(claim, None) is True
    assert r.zscore(k.DUE, "g1") is None


async def test_finish_with_work_left_schedules_next_due(
    flushes: Flushes, ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("g1", "a", T0)
    claim = await flushes.claim("g1", T0 + 500)

    assert await flushes.finish(claim, T0 + 5_000) is True
    assert r.zscore(k.DUE, "g1") == T0 + 5_000


async def test_finish_after_changes_arrived_keeps_the_group_due_at_their_time(
    flushes: Flushes, ingest: Ingest, r: redis.Redis, settings: Settings
) -> None:
    ingest.upsert("g1", "a", T0)
    claim = await flushes.claim("g1", T0 + 500)
    ingest.upsert("g1", "a", T0 + 600, rent=1)  # arrives during the flush

    assert await flushes.finish(claim, None) is False
    assert r.zscore(k.DUE, "g1") == T0 + 600 + settings.debounce.window_ms


async def test_finish_after_changes_arrived_brings_an_earlier_next_due_forward_only(
    flushes: Flushes, ingest: Ingest, r: redis.Redis, settings: Settings
) -> None:
    ingest.upsert("g1", "a", T0)
    claim = await flushes.claim("g1", T0 + 500)
    ingest.upsert("g1", "a", T0 + 600, rent=1)
    changes_due = T0 + 600 + settings.debounce.window_ms

    assert await flushes.finish(claim, changes_due + 10_000) is False
    assert r.zscore(k.DUE, "g1") == changes_due  # a later retry does not delay the changes
    assert await flushes.finish(claim, changes_due - 100) is False
    assert r.zscore(k.DUE, "g1") == changes_due - 100


async def test_mark_due_during_a_flush_keeps_the_group_due_after_its_finish(
    flushes: Flushes, client: aioredis.Redis, ingest: Ingest, r: redis.Redis
) -> None:
    ingest.upsert("g1", "a", T0)
    claim = await flushes.claim("g1", T0 + 500)

    await mark_due(client, ["g1"], T0 + 700)

    assert r.hget(k.PENDING + "g1", "seq") == "2"
    assert r.zscore(k.DUE, "g1") == T0 + 700  # brought forward from the lease
    assert await flushes.finish(claim, None) is False
    assert r.zscore(k.DUE, "g1") == T0 + 700


# The scripts' key names -------------------------------------------------------------------

@pytest.mark.parametrize("script", [claims.CLAIM, claims.FINISH, ratelimit.ACQUIRE,
                                    scheduler.TAKE_DUE],
                         ids=["claim", "finish", "acquire", "take_due"])
def test_delivery_scripts_have_every_placeholder_replaced(script: str) -> None:
    assert not placeholders(script)
    assert "__" not in script


def test_claim_script_asks_for_the_listing_fields_in_desired_order() -> None:
    assert '"g", "v", "t", "d", "body", "at"' in claims.CLAIM
