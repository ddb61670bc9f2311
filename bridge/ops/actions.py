"""What an operator can do: release or discard a held sync, retry or discard quarantined
listings, pause or resume a target, make groups due. Every change goes through the ledger
(``bridge/delivery/ledger.py``), as the worker's own do."""

from __future__ import annotations

from redis.asyncio import Redis

from bridge.clock import now_ms
from bridge.delivery.claims import mark_due
from bridge.delivery.ledger import Held, HeldChanged, Ledger
from bridge.settings import Settings


class OperationError(Exception):
    """An operator action that cannot be done, worded to say what to do instead."""


class NotFound(OperationError):
    """The target, group, held sync or quarantined listing named does not exist."""


class HeldSyncChanged(OperationError):
    """The held sync is no longer the one the operator reviewed: nothing was done."""

    def __init__(self, target: str, group: str, reviewed: str, current: Held) -> None:
        super().__init__(
            f"the held sync of group {group!r} on {target} has changed since you reviewed it "
            f"(you named {reviewed}, it is now {current.digest}); nothing was done. It now "
            f"would delete {len(current.deletions)} listing(s): "
            f"{', '.join(current.deletions[:20]) or 'none'}. Review it and name its digest.")
        self.current = current


def known_target(settings: Settings, name: str) -> str:
    names = [t.name for t in settings.targets]
    if name not in names:
        raise NotFound(f"no target named {name!r}; configured: {', '.join(names)}")
    return name


class Actions:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.ledger = Ledger(redis)

    def _target(self, name: str) -> str:
        return known_target(self.settings, name)

    async def make_due(self, *groups: str) -> None:
        await mark_due(self.redis, list(groups), now_ms())

    # -- held syncs --

    async def held_sync(self, target: str, group: str) -> Held:
        held = (await self.ledger.held(self._target(target))).get(group)
        if held is None:
            raise NotFound(f"no held sync for group {group!r} on {target}")
        return held

    async def release(self, target: str, group: str, digest: str) -> Held:
        """Send exactly the held content the operator reviewed (``digest``), deletions
        included, at once; if another sync is held now, nothing happens (HeldSyncChanged)."""
        try:
            held = await self.ledger.release(self._target(target), group, digest)
        except HeldChanged as exc:
            raise HeldSyncChanged(target, group, digest, exc.current) from None
        if held is None:
            raise NotFound(f"no held sync for group {group!r} on {target}")
        await self.make_due(group)
        return held

    async def discard(self, target: str, group: str, digest: str) -> Held:
        """Do not send the held content the operator reviewed; once the group changes, its
        sync is judged afresh."""
        try:
            held = await self.ledger.discard(self._target(target), group, digest)
        except HeldChanged as exc:
            raise HeldSyncChanged(target, group, digest, exc.current) from None
        if held is None:
            raise NotFound(f"no held sync for group {group!r} on {target}")
        return held

    # -- quarantine --

    async def retry(self, target: str, refs: list[str]) -> int:
        entries = await self.ledger.quarantined(self._target(target), refs)
        missing = sorted(set(refs) - set(entries))
        if missing:
            raise NotFound(f"not quarantined on {target}: {', '.join(missing)}")
        await self.ledger.retry_quarantined(target, refs)
        await self.make_due(*{entry.group for entry in entries.values()})
        return len(entries)

    async def discard_quarantined(self, target: str, refs: list[str]) -> int:
        return await self.ledger.discard_quarantine(self._target(target), refs)

    async def retry_many(self, items: list[tuple[str, str]]) -> int:
        """Retry (target, ref) pairs across targets; checks them all before changing any."""
        by_target = await self._quarantined_items(items)
        return sum([await self.retry(t, refs) for t, refs in by_target.items()])

    async def discard_many(self, items: list[tuple[str, str]]) -> int:
        by_target = await self._quarantined_items(items)
        return sum([await self.discard_quarantined(t, refs) for t, refs in by_target.items()])

    async def _quarantined_items(self, items: list[tuple[str, str]]) -> dict[str, list[str]]:
        by_target: dict[str, list[str]] = {}
        for target, ref in items:
            by_target.setdefault(self._target(target), []).append(ref)
        for target, refs in by_target.items():
            entries = await self.ledger.quarantined(target, refs)
            missing = sorted({r for r in refs if r not in entries or entries[r].discarded})
            if missing:
                raise NotFound(f"not quarantined on {target}: {', '.join(missing)}")
        return by_target

    # -- targets --

    async def pause(self, target: str, reason: str = "paused by an operator") -> None:
        await self.ledger.pause(self._target(target), reason)

    async def resume(self, target: str) -> None:
        await self.ledger.resume(self._target(target))
