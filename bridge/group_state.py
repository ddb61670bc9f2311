"""A group's scheduling state, on the Python side: the one module that names its keys and
reads them.

The state: ``lb:pending:{group}`` (first and last change since the last claim, the change
counter), ``lb:due`` (when each group is flushed next), ``lb:dirty:{group}`` (listings changed
and not settled by every target), ``lb:settled:{group}`` (each target's settled counter),
``lb:lease:{group}`` and ``lb:flushing`` (the flush under way). Their lifetimes are in
``bridge/constants.py``. Lua writes them, through the functions of ``bridge/group_state.lua``:
the debounce rule, the counter that never goes backwards, the shared idle lifetime. Whatever
in Python reads them, or forgets what a group's targets settled, goes through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from bridge import constants as k
from bridge import tenancy
from bridge.constants import ks
from bridge.replies import text


async def wake(redis: Redis) -> None:
    """Give the current tenant a turn of the workers' schedulers now (``lb:wake``, score 0):
    after work was made due outside a turn (an operator's action, a job's end). The webhook
    does the same inside its script."""
    await redis.zadd(k.WAKE, {tenancy.current(): 0})


# ``SORT lb:groups BY`` this: the groups by their last change (idle ones, expired, last).
def by_last_change() -> str:
    """SORT's BY pattern: each group's last change (lb:pending:{group} field ``last``)."""
    return f"{ks().PENDING}*->last"


@dataclass(frozen=True)
class GroupKeys:
    pending: str
    dirty: str
    settled: str
    lease: str


def keys_of(group: str) -> GroupKeys:
    keys = ks()
    return GroupKeys(keys.PENDING + group, keys.DIRTY + group, keys.SETTLED + group,
                     keys.LEASE + group)


async def due(redis: Redis) -> list[tuple[str, int]]:
    """Every group due for a flush (changes, a retry, a lease), soonest first, with when."""
    return [(text(g), int(at)) for g, at in await redis.zrange(ks().DUE, 0, -1, withscores=True)]


async def due_at(redis: Redis, group: str) -> int | None:
    at = await redis.zscore(ks().DUE, group)
    return None if at is None else int(at)


async def flushing_until(redis: Redis, now: int) -> dict[str, int]:
    """The groups whose flush holds a live lease, and until when."""
    running = await redis.zrangebyscore(ks().FLUSHING, now, "+inf", withscores=True)
    return {text(g): int(until) for g, until in running}


async def flushing(redis: Redis, group: str, now: int) -> bool:
    return (await redis.zscore(ks().FLUSHING, group) or 0) > now


async def pending(redis: Redis, group: str) -> dict[str, int]:
    """``first`` (gone once a flush took the changes), ``last`` and ``seq``."""
    raw = await redis.hgetall(keys_of(group).pending)  # type: ignore[misc]
    return {text(f): int(v) for f, v in raw.items()}


async def seq(redis: Redis, group: str) -> str:
    """The group's change counter ("0": none yet)."""
    value = await redis.hget(keys_of(group).pending, "seq")  # type: ignore[misc]
    return text(value) if value is not None else "0"


async def quiet(redis: Redis, group: str) -> bool:
    """No change of the group waits for a flush, and none runs."""
    keys = keys_of(group)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hexists(keys.pending, "first")
        pipe.exists(keys.lease)
        waiting, flushing = await pipe.execute()
    return not waiting and not flushing


async def forget_settled(redis: Redis, group: str) -> None:
    """Forget what every target settled: the group's next flush plans all of it."""
    await redis.delete(keys_of(group).settled)


def read_row(pipe: Any, group: str) -> None:
    """Queue on ``pipe`` what a row of the groups page shows: unsettled listings, first and
    last change, when due (three replies)."""
    keys = keys_of(group)
    pipe.hlen(keys.dirty)
    pipe.hmget(keys.pending, ["first", "last"])
    pipe.zscore(ks().DUE, group)


def read_waiting(pipe: Any, group: str) -> None:
    """Queue on ``pipe`` whether changes wait for the group's flush (one reply)."""
    pipe.exists(keys_of(group).pending)
