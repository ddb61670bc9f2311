"""The adoption gate's state: while a Rentix target adopts hand-made listings, a create for a
ref it never accepted is held until the ref is linked (or adoption ends). Delivery asks it
before sending a possible create; linking fills and ends it. Keys: ``bridge/constants.py``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.claims import Write, mark_due
from bridge.delivery.ledger import Fence, write
from bridge.replies import maybe_text
from bridge.settings import RentixTarget


@dataclass(frozen=True)
class HeldCreate:
    ref: str
    group: str
    since: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Adoption:
    """Adoption state in Redis; delivery asks it before sending a possible create. A flush
    writes through its lease (``fenced``), like its ledger writes."""

    def __init__(self, redis: Redis, fence: Fence | None = None) -> None:
        self.redis = redis
        self.fence = fence

    def fenced(self, fence: Fence) -> Adoption:
        return Adoption(self.redis, fence)

    async def _write(self, *writes: Write) -> None:
        await write(self.redis, self.fence, writes)

    async def active(self, target: RentixTarget) -> bool:
        return target.adopt and not await self.redis.exists(ks().ADOPTED + target.name)

    async def is_linked(self, target: str, ref: str) -> bool:
        return bool(await self.redis.sismember(ks().LINKED + target, ref))  # type: ignore[misc]

    async def mark_linked(self, target: str, refs: Iterable[str]) -> None:
        refs = list(refs)
        if refs:
            await self._write(Write("link", (ks().LINKED + target,), tuple(refs)))

    async def unmark_linked(self, target: str, ref: str) -> None:
        await self.redis.srem(ks().LINKED + target, ref)  # type: ignore[misc]

    async def is_held(self, target: str, ref: str) -> bool:
        return bool(await self.redis.hexists(ks().ADOPT + target, ref))  # type: ignore[misc]

    async def hold(self, target: str, ref: str, group: str, at_ms: int) -> None:
        entry = HeldCreate(ref, group, at_ms)
        payload = orjson.dumps(entry.as_dict()).decode()
        await self._write(Write("hold create", (ks().ADOPT + target,), (ref, payload)))

    async def release(self, target: str, ref: str) -> str | None:
        """Forget a held create (it is linked now); returns its group, to flush it."""
        raw = await self.redis.hget(ks().ADOPT + target, ref)  # type: ignore[misc]
        if raw is None:
            return None
        await self.redis.hdel(ks().ADOPT + target, ref)  # type: ignore[misc]
        return str(orjson.loads(raw)["group"])

    async def held(self, target: str) -> list[HeldCreate]:
        raw = await self.redis.hgetall(ks().ADOPT + target)  # type: ignore[misc]
        return sorted((HeldCreate(**orjson.loads(v)) for v in raw.values()), key=lambda h: h.ref)

    async def ended_at(self, target: str) -> int | None:
        value = maybe_text(await self.redis.get(ks().ADOPTED + target))
        return int(value) if value else None

    async def end(self, target: str) -> list[str]:
        """End adoption: held creates flow (their groups are due now). Returns those groups."""
        await self.redis.set(ks().ADOPTED + target, now_ms())
        held = await self.held(target)
        await self.redis.delete(ks().ADOPT + target)
        groups = sorted({h.group for h in held})
        # A flush in flight that still held a create keeps its group due (mark_due bumps seq).
        await mark_due(self.redis, groups, now_ms())
        return groups
