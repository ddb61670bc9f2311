"""What an operator can see and do: the same functions serve ``bridge`` commands and the web API."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson
from redis.asyncio import Redis

from bridge import constants as k
from bridge.flushes import mark_due
from bridge.ledger import Ledger, now_ms
from bridge.settings import Settings


class OperationError(Exception):
    """An operator action that cannot be done, worded to say what to do instead."""


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Operations:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.ledger = Ledger(redis)

    def _target(self, name: str) -> str:
        names = [t.name for t in self.settings.targets]
        if name not in names:
            raise OperationError(f"no target named {name!r}; configured: {', '.join(names)}")
        return name

    async def make_due(self, *groups: str) -> None:
        await mark_due(self.redis, list(groups), now_ms())

    # -- held syncs --

    async def release(self, target: str, group: str) -> dict[str, Any]:
        held = await self.ledger.release(self._target(target), group)
        if held is None:
            raise OperationError(f"no held sync for group {group!r} on {target}")
        await self.make_due(group)
        return asdict(held)

    async def discard(self, target: str, group: str) -> dict[str, Any]:
        held = await self.ledger.discard(self._target(target), group)
        if held is None:
            raise OperationError(f"no held sync for group {group!r} on {target}")
        return asdict(held)

    # -- quarantine --

    async def retry(self, target: str, refs: list[str]) -> int:
        entries = await self.ledger.quarantined(self._target(target), refs)
        missing = sorted(set(refs) - set(entries))
        if missing:
            raise OperationError(f"not quarantined on {target}: {', '.join(missing)}")
        await self.ledger.release_quarantine(target, refs)
        await self.make_due(*{entry.group for entry in entries.values()})
        return len(entries)

    async def discard_quarantined(self, target: str, refs: list[str]) -> int:
        return await self.ledger.discard_quarantine(self._target(target), refs)

    # -- targets --

    async def pause(self, target: str, reason: str = "paused by an operator") -> None:
        await self.ledger.pause(self._target(target), reason)

    async def resume(self, target: str) -> None:
        await self.ledger.resume(self._target(target))

    # -- what is going on --

    async def status(self) -> dict[str, Any]:
        now = now_ms()
        due = await self.redis.zrange(k.DUE, 0, -1, withscores=True)
        targets = {}
        for target in self.settings.targets:
            state = await self.ledger.target_state(target.name)
            quarantined = await self.ledger.quarantined(target.name)
            targets[target.name] = {
                "kind": target.kind,
                "state": _target_state(state, now),
                "last_error": state.get("last_error", ""),
                "held": {g: asdict(h) for g, h in (await self.ledger.held(target.name)).items()},
                "quarantined": {r: asdict(q) for r, q in quarantined.items() if not q.discarded},
            }
        workers = {_s(w): orjson.loads(v) for w, v in (await self.redis.hgetall(k.WORKERS)).items()}
        return {
            "now": now,
            "groups": await self.redis.scard(k.GROUPS),
            "due": [{"group": _s(g), "in_ms": int(score) - now} for g, score in due],
            "queued_jobs": await self.redis.zcard(k.QUEUE),
            "targets": targets,
            "workers": workers,
        }


def _target_state(state: dict[str, str], now: int) -> str:
    if state.get("paused"):
        return f"paused ({state['paused']})"
    if int(state.get("blocked_until") or 0) > now:
        return "rate-limited"
    return "active"


def render_status(status: dict[str, Any]) -> list[str]:
    """The terminal summary of ``bridge status``."""
    lines = [f"groups known: {status['groups']}   flush jobs queued: {status['queued_jobs']}   "
             f"workers alive: {len(status['workers'])}"]
    waiting = [d for d in status["due"] if d["in_ms"] > 0]
    overdue = [d for d in status["due"] if d["in_ms"] <= 0]
    lines.append(f"groups waiting: {len(waiting)}   due now: {len(overdue)}")
    for d in sorted(status["due"], key=lambda d: d["in_ms"])[:10]:
        lines.append(f"  {d['group']}: flush in {max(d['in_ms'], 0) / 1000:.1f}s")
    for name, target in status["targets"].items():
        lines.append(f"target {name} ({target['kind']}): {target['state']}"
                     + (f"; last error: {target['last_error']}" if target["last_error"] else ""))
        for group, held in target["held"].items():
            lines.append(f"  HELD {group}: {held['reason']}")
            if held["deletions"]:
                lines.append(f"    would delete: {', '.join(held['deletions'][:20])}")
        for ref, q in target["quarantined"].items():
            where = f" ({q['field']})" if q["field"] else ""
            lines.append(f"  QUARANTINED {ref} in {q['group']}: {q['error_type']}{where}: "
                         f"{q['message']}")
    return lines
