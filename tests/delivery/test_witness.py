"""The witness of lost state: epochs, against the session's Redis."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from bridge.constants import ks
from bridge.delivery.witness import Witness


async def test_workers_starting_together_agree_on_one_first_epoch(redis_url: str) -> None:
    clients = [Redis.from_url(redis_url) for _ in range(8)]
    try:
        witnesses = [Witness(client) for client in clients]
        epochs = await asyncio.gather(*(w.epoch() for w in witnesses))
        assert len(set(epochs)) == 1
        assert not any(w.lost for w in witnesses), "a first start read as lost state"
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))


async def test_another_server_identity_begins_a_lost_epoch_that_stays_lost(
    redis_url: str
) -> None:
    client = Redis.from_url(redis_url)
    try:
        first = await Witness(client).epoch()
        assert await Witness(client).epoch() == first
        await client.hset(ks().WITNESS, "run_id", "a-server-restored-from-backup")  # type: ignore[misc]
        witness = Witness(client)
        second = await witness.epoch()
        assert second != first and witness.lost
        later = Witness(client)
        assert await later.epoch() == second and later.lost
    finally:
        await client.aclose()


async def test_concurrent_claims_answered_out_of_order_are_no_regression(
    redis_url: str
) -> None:
    witness = Witness(Redis.from_url(redis_url))
    floor_a = witness.floor
    floor_b = witness.floor
    assert witness.saw_token("6", floor_b)  # B's claim answered first
    assert witness.saw_token("5", floor_a)  # A asked before B's answer came: fine
    assert not witness.saw_token("3", witness.floor)  # asked after 6 was seen: went back
    await witness.redis.aclose()
