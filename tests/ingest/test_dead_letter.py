"""A poison inbox entry goes aside (``lb:inbox:dead``) with its error, whole, and the fold goes
on: the events around it are folded, their groups made due, and only their counts are kept.
The real fold script, through the workers' ``Inbox``, on the session's Redis."""

from __future__ import annotations

import msgspec
import orjson
import redis.asyncio as aioredis

from bridge.clock import now_ms
from bridge.constants import ks
from bridge.ingest import store
from bridge.ingest.events import ValidEvent
from bridge.ingest.inbox import DeadLetters, Inbox
from bridge.settings import Settings


def good(webhook_id: str, ref: str, group: str = "g1") -> bytes:
    now = now_ms()
    body = orjson.dumps({"external_ref": ref})
    return store.entry(webhook_id, now, ValidEvent("listing.updated", group, now,
                                                   [(ref, 1, body)]))


def malformed(webhook_id: str) -> bytes:
    """A listing event whose version is not a number."""
    now = str(now_ms())
    return msgspec.msgpack.encode([webhook_id, now, "u", "g1", now, "apt-bad", "v2", "{}"])


async def drain(client: aioredis.Redis, settings: Settings) -> int:
    return await Inbox(client, settings).drain(budget_s=5)


async def test_a_malformed_entry_goes_aside_whole_between_two_folded_events(
    client: aioredis.Redis, settings: Settings
) -> None:
    await client.rpush(ks().INBOX, good("wh-1", "apt-1"), malformed("wh-bad"),  # type: ignore[misc]
                       good("wh-2", "apt-2"))
    assert await drain(client, settings) == 2
    assert await client.llen(ks().INBOX) == 0  # type: ignore[misc]
    assert await client.zscore(ks().DUE, "g1") is not None  # the good ones' group is due
    assert await client.exists(f"{ks().LISTING}apt-1", f"{ks().LISTING}apt-2") == 2
    # nothing written
    assert not await client.exists(f"{ks().LISTING}apt-bad", f"{ks().TRACE}apt-bad")
    [event] = await DeadLetters(client).events()
    assert (event.id, event.group, event.refs, event.attempts) == ("wh-bad", "g1",
                                                                   ["apt-bad"], 1)
    assert "version" in event.error and event.at <= now_ms()
    received = await client.hget(ks().METRICS, "webhook_events_total|accepted")  # type: ignore[misc]
    assert int(received) == 2


async def test_an_entry_that_is_not_msgpack_goes_aside_and_a_retry_puts_it_first(
    client: aioredis.Redis, settings: Settings
) -> None:
    await client.rpush(ks().INBOX, b"\xc1not msgpack", good("wh-1", "apt-1"))  # type: ignore[misc]
    assert await drain(client, settings) == 1
    dead = DeadLetters(client)
    [event] = await dead.events()
    assert event.webhook_id is None and event.id.startswith("sha1:")
    assert event.error == "not a msgpack array"
    await client.rpush(ks().INBOX, good("wh-2", "apt-2"))  # type: ignore[misc]
    assert [e.id for e in await dead.retry([event.id])] == [event.id]
    assert await client.lindex(ks().INBOX, 0) == b"\xc1not msgpack"  # type: ignore[misc]
    assert await drain(client, settings) == 1  # still poison: aside again, counted
    [again] = await dead.events()
    assert again.attempts == 2
    assert [e.id for e in await dead.discard(None)] == [event.id]
    assert await client.llen(ks().INBOX_DEAD) == 0  # type: ignore[misc]


async def test_an_error_of_redis_midway_keeps_the_batch_and_sets_the_entry_aside(
    client: aioredis.Redis, settings: Settings
) -> None:
    """A key of the wrong type fails the fold of one event after its shape was checked: the
    events before and after it are folded and due, its count taken back."""
    await client.set(f"{ks().LISTING}apt-x", "not a hash")
    await client.rpush(ks().INBOX, good("wh-1", "apt-1"), good("wh-x", "apt-x", "g2"),  # type: ignore[misc]
                       good("wh-2", "apt-2"))
    assert await drain(client, settings) == 2
    [event] = await DeadLetters(client).events()
    assert event.id == "wh-x" and "WRONGTYPE" in event.error
    assert await client.zscore(ks().DUE, "g1") is not None
    received = await client.hget(ks().METRICS, "webhook_events_total|accepted")  # type: ignore[misc]
    assert int(received) == 2
