"""What each target last accepted, and the delivery state around it: quarantine, held syncs,
backoff, paused or rate-limited targets, and the history of attempts. Key layout:
``bridge/constants.py``. Shared by the worker (writes) and the web side (reads, operator acts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from bridge import constants as k
from bridge.clock import now_ms
from bridge.delivery.claims import mark_due


@dataclass
class Accepted:
    digest: str
    payload: dict[str, Any] | None
    at: int


@dataclass
class Quarantined:
    digest: str
    group: str
    error_type: str
    message: str
    field: str | None
    since: int
    discarded: bool = False


@dataclass
class Held:
    digest: str
    reason: str
    deletions: list[str]
    listings: int
    since: int
    unknown_on_portal: list[str] = field(default_factory=list)


@dataclass
class Attempt:
    at: int
    target: str
    group: str
    operation: str
    listings: list[str]
    idempotency_key: str
    outcome: str
    status: int | None
    latency_ms: float
    attempt: int
    error: str = ""


def _load(raw: bytes | str | None) -> dict[str, Any] | None:
    return orjson.loads(raw) if raw else None


def accepted_key(target: str, group: str | None) -> str:
    # Per-listing targets keep one record per listing wherever it lives (a move between groups
    # changes nothing on such a portal); group-sync targets keep one set per group.
    return f"{k.ACCEPTED}{target}" if group is None else f"{k.ACCEPTED}{target}:{group}"


class Ledger:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def _read_json_hash(self, key: str, refs: list[str] | None
                              ) -> dict[str, dict[str, Any]]:
        """Fields of a hash of JSON values: all of them, or just ``refs`` (absent ones left out)."""
        if refs is None:
            items = [(_text(r), v) for r, v in (await self.redis.hgetall(key)).items()]  # type: ignore[misc]
        else:
            values = await self.redis.hmget(key, refs) if refs else []  # type: ignore[misc]
            items = list(zip(refs, values, strict=True))
        return {ref: data for ref, v in items if (data := _load(v))}

    # -- accepted state --

    async def accepted(self, target: str, group: str | None,
                       refs: list[str] | None = None) -> dict[str, Accepted]:
        records = await self._read_json_hash(accepted_key(target, group), refs)
        return {ref: Accepted(**data) for ref, data in records.items()}

    async def record_accepted(self, target: str, ref: str, record: Accepted) -> None:
        await self.redis.hset(accepted_key(target, None), ref, _json(record))  # type: ignore[misc]

    async def record_sync(self, target: str, group: str, digest: str,
                          records: dict[str, Accepted]) -> None:
        """A group sync was accepted: the group on the portal is now exactly ``records``."""
        key = accepted_key(target, group)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if records:
                pipe.hset(key, mapping={r: orjson.dumps(asdict(a)) for r, a in records.items()})
            pipe.set(f"{k.SYNC_DIGEST}{target}:{group}", digest)
            pipe.delete(f"{k.RELEASE}{target}:{group}")
            pipe.hdel(f"{k.HELD}{target}", group)
            await pipe.execute()

    async def sync_digest(self, target: str, group: str) -> str | None:
        return _s(await self.redis.get(f"{k.SYNC_DIGEST}{target}:{group}"))

    # -- quarantine --

    async def quarantined(self, target: str, refs: list[str] | None = None
                          ) -> dict[str, Quarantined]:
        records = await self._read_json_hash(f"{k.QUARANTINE}{target}", refs)
        return {ref: Quarantined(**data) for ref, data in records.items()}

    async def quarantine(self, target: str, ref: str, entry: Quarantined) -> None:
        await self.redis.hset(f"{k.QUARANTINE}{target}", ref, _json(entry))  # type: ignore[misc]

    async def retry_quarantined(self, target: str, refs: list[str]) -> None:
        """An operator asks for a fresh attempt: a new retry generation gives a new key."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(f"{k.QUARANTINE}{target}", *refs)
            for ref in refs:
                pipe.hincrby(f"{k.RETRIES}{target}", ref, 1)
            await pipe.execute()

    async def retries(self, target: str, refs: list[str]) -> dict[str, int]:
        if not refs:
            return {}
        values = await self.redis.hmget(f"{k.RETRIES}{target}", refs)  # type: ignore[misc]
        return {ref: int(v) for ref, v in zip(refs, values, strict=True) if v}

    async def release_quarantine(self, target: str, refs: list[str]) -> int:
        if not refs:
            return 0
        return int(await self.redis.hdel(f"{k.QUARANTINE}{target}", *refs))  # type: ignore[misc]

    async def discard_quarantine(self, target: str, refs: list[str]) -> int:
        """Keep skipping these versions, but take them off the problem list."""
        entries = await self.quarantined(target, refs)
        for ref, entry in entries.items():
            entry.discarded = True
            await self.quarantine(target, ref, entry)
        return len(entries)

    # -- held syncs --

    async def held(self, target: str) -> dict[str, Held]:
        raw = await self.redis.hgetall(f"{k.HELD}{target}")  # type: ignore[misc]
        return {_text(g): Held(**orjson.loads(v)) for g, v in raw.items()}

    async def hold(self, target: str, group: str, entry: Held) -> None:
        await self.redis.hset(f"{k.HELD}{target}", group, _json(entry))  # type: ignore[misc]

    async def unhold(self, target: str, group: str) -> None:
        await self.redis.hdel(f"{k.HELD}{target}", group)  # type: ignore[misc]

    async def release(self, target: str, group: str) -> Held | None:
        """The operator lets the held sync (exactly that content) go out."""
        entry = (await self.held(target)).get(group)
        if entry:
            await self.redis.set(f"{k.RELEASE}{target}:{group}", entry.digest)
        return entry

    async def released_digest(self, target: str, group: str) -> str | None:
        return _s(await self.redis.get(f"{k.RELEASE}{target}:{group}"))

    async def discard(self, target: str, group: str) -> Held | None:
        """The operator refuses the held sync: that content is never sent (new content is)."""
        entry = (await self.held(target)).get(group)
        if entry:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.set(f"{k.DISCARDED}{target}:{group}", entry.digest)
                pipe.hdel(f"{k.HELD}{target}", group)
                await pipe.execute()
        return entry

    async def discarded_digest(self, target: str, group: str) -> str | None:
        return _s(await self.redis.get(f"{k.DISCARDED}{target}:{group}"))

    # -- backoff per target and group --

    async def backoff(self, target: str, group: str) -> tuple[int, int]:
        key = f"{k.BACKOFF}{target}:{group}"
        attempts, not_before = await self.redis.hmget(key, ["attempts", "not_before"])  # type: ignore[misc]
        return int(attempts or 0), int(not_before or 0)

    async def set_backoff(self, target: str, group: str, attempts: int, not_before: int) -> None:
        fields = {"attempts": attempts, "not_before": not_before}
        await self.redis.hset(f"{k.BACKOFF}{target}:{group}", mapping=fields)  # type: ignore[misc]

    async def clear_backoff(self, target: str, group: str) -> None:
        await self.redis.delete(f"{k.BACKOFF}{target}:{group}")

    # -- target state --

    async def target_state(self, target: str) -> dict[str, str]:
        raw = await self.redis.hgetall(f"{k.TARGET}{target}")  # type: ignore[misc]
        return {_text(f): _text(v) for f, v in raw.items()}

    async def pause(self, target: str, reason: str) -> None:
        fields = {"paused": reason, "paused_at": now_ms()}
        await self.redis.hset(f"{k.TARGET}{target}", mapping=fields)  # type: ignore[misc]

    async def resume(self, target: str) -> None:
        """Clear the pause and make every group due: their changes flow now."""
        await self.redis.hdel(f"{k.TARGET}{target}", "paused", "paused_at", "blocked_until")  # type: ignore[misc]
        groups = [g for g in (_text(g) for g in await self.redis.smembers(k.GROUPS)) if g]  # type: ignore[misc]
        await mark_due(self.redis, groups, now_ms())

    async def block_until(self, target: str, until_ms: int, reason: str) -> None:
        fields = {"blocked_until": until_ms, "last_error": reason}
        await self.redis.hset(f"{k.TARGET}{target}", mapping=fields)  # type: ignore[misc]

    async def note(self, target: str, **fields: str | int) -> None:
        await self.redis.hset(f"{k.TARGET}{target}", mapping=fields)  # type: ignore[misc]

    # -- history and figures --

    async def record_attempt(self, entry: Attempt, latencies_ms: list[int]) -> None:
        data = orjson.dumps(asdict(entry))
        minute = entry.at // 60_000
        stats = f"{k.STATS}{minute}"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.lpush(k.HISTORY, data)
            pipe.ltrim(k.HISTORY, 0, k.HISTORY_MAXLEN - 1)
            group_key = f"{k.HISTORY}:{entry.group}"
            pipe.lpush(group_key, data)
            pipe.ltrim(group_key, 0, k.GROUP_HISTORY_MAXLEN - 1)
            pipe.hincrby(stats, f"calls:{entry.target}", 1)
            pipe.hincrby(stats, f"{entry.outcome}:{entry.target}", 1)
            pipe.expire(stats, k.STATS_TTL_S)
            if latencies_ms:
                pipe.lpush(k.LATENCY, *latencies_ms)
                pipe.ltrim(k.LATENCY, 0, k.LATENCY_MAXLEN - 1)
            await pipe.execute()

    async def history(self, group: str | None = None, limit: int = 100) -> list[Attempt]:
        key = k.HISTORY if group is None else f"{k.HISTORY}:{group}"
        raw = await self.redis.lrange(key, 0, limit - 1)  # type: ignore[misc]
        return [Attempt(**orjson.loads(v)) for v in raw]


def _s(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _text(value: bytes | str) -> str:
    """A hash field or member, never missing (unlike a looked-up value, see ``_s``)."""
    return value.decode() if isinstance(value, bytes) else value


def _json(record: Accepted | Quarantined | Held) -> str:
    # Decoded so the hash value has the type redis-py declares; Redis stores the same bytes.
    return orjson.dumps(asdict(record)).decode()
