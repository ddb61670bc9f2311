"""What an operator can do: release or discard a held change (on every target holding it, or
one named), retry or discard quarantined listings, pause or resume a target (or every target of
the tenant), make groups due.
Every change goes through the ledger (``bridge/delivery/ledger.py``), as the worker's own do."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from bridge.clock import now_ms
from bridge.delivery import Held, HeldChanged, Ledger, mark_due
from bridge.ingest.inbox import DeadEvent, DeadLetters
from bridge.logs import about
from bridge.ops.models import HeldSync
from bridge.settings import Settings

log = logging.getLogger("bridge.ops.actions")


class OperationError(Exception):
    """An operator action that cannot be done, worded to say what to do instead."""


class NotFound(OperationError):
    """The target, group, held sync or quarantined listing named does not exist."""


class HeldSyncChanged(OperationError):
    """The held sync is no longer the one the operator reviewed: nothing was done."""

    def __init__(self, target: str | None, group: str, reviewed: str, current: Held) -> None:
        where = f"on {target}" if target else "held"
        super().__init__(
            f"the change of group {group!r} {where} has changed since you reviewed it "
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

    async def held_sync(self, target: str | None, group: str) -> HeldSync:
        """The group's held change, as an operator reviews it; on ``target`` alone when one
        is named. Without one, the targets must hold the same change."""
        changes = HeldSync.of(group, await self._held_entries(target, group))
        if not changes:
            raise NotFound(f"no held change for group {group!r}"
                           + (f" on {target}" if target else ""))
        if len(changes) > 1:
            raise OperationError(
                f"group {group!r} holds different changes: "
                + "; ".join(f"{', '.join(c.targets)}: {c.digest}" for c in changes)
                + ". Name the target (--target) and its digest.")
        return changes[0]

    async def release(self, target: str | None, group: str, digest: str) -> HeldSync:
        """Let the held change the operator reviewed (``digest``) go out, deletions included,
        at once, on every target holding it (or ``target`` alone); if another change is held
        now, nothing happens anywhere (HeldSyncChanged)."""
        change = await self._pinned("release", target, group, digest)
        await self.make_due(group)
        return change

    async def discard(self, target: str | None, group: str, digest: str) -> HeldSync:
        """Do not send the held change's deletions the operator reviewed, on every target
        holding it (or ``target`` alone): each portal keeps those listings; once the group
        changes, its change is judged afresh."""
        return await self._pinned("discard", target, group, digest)

    async def _pinned(self, action: str, target: str | None, group: str, digest: str
                      ) -> HeldSync:
        entries = await self._held_entries(target, group)
        act = self.ledger.release if action == "release" else self.ledger.discard
        try:
            held = await act(list(entries), group, digest)
        except HeldChanged as exc:
            raise HeldSyncChanged(target, group, digest, exc.current) from None
        if held is None:
            raise NotFound(f"no held change for group {group!r}"
                           + (f" on {target}" if target else ""))
        change = HeldSync.of(group, {t: h for t, h in entries.items() if h.digest == digest})[0]
        done = "released" if action == "release" else "discarded"
        log.info("an operator %s the held change %s of %s on %s", done, digest, group,
                 ", ".join(change.targets), extra=about(group, target))
        return change

    async def _held_entries(self, target: str | None, group: str) -> dict[str, Held]:
        """Each target's held entry for the group (``target``'s alone when named)."""
        names = [self._target(target)] if target else [t.name for t in self.settings.targets]
        entries = {name: await self.ledger.held_of(name, group) for name in names}
        return {name: held for name, held in entries.items() if held is not None}

    # -- quarantine --

    async def retry(self, target: str, refs: list[str]) -> int:
        entries = await self.ledger.quarantined(self._target(target), refs)
        missing = sorted(set(refs) - set(entries))
        if missing:
            raise NotFound(f"not quarantined on {target}: {', '.join(missing)}")
        await self.ledger.retry_quarantined(target, refs)
        log.info("an operator retried %s on %s", ", ".join(refs), target,
                 extra=about(target=target, listing=refs[0] if len(refs) == 1 else None))
        await self.make_due(*{entry.group for entry in entries.values()})
        return len(entries)

    async def discard_quarantined(self, target: str, refs: list[str]) -> int:
        discarded = await self.ledger.discard_quarantine(self._target(target), refs)
        log.info("an operator discarded %s on %s", ", ".join(refs), target,
                 extra=about(target=target, listing=refs[0] if len(refs) == 1 else None))
        return discarded

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

    # -- inbox entries the fold set aside (lb:inbox:dead) --

    async def dead_events(self) -> list[DeadEvent]:
        return await DeadLetters(self.redis).events()

    async def retry_dead(self, ids: list[str] | None) -> list[DeadEvent]:
        """Put the entries named by id (``None``: all) back at the inbox's head."""
        return await self._dead(DeadLetters(self.redis).retry, ids)

    async def discard_dead(self, ids: list[str] | None) -> list[DeadEvent]:
        """Drop the entries named by id (``None``: all) for good."""
        return await self._dead(DeadLetters(self.redis).discard, ids)

    async def _dead(self, act: Callable[[list[str] | None], Awaitable[list[DeadEvent]]],
                    ids: list[str] | None) -> list[DeadEvent]:
        try:
            return await act(ids)
        except KeyError as exc:
            raise NotFound(f"not set aside (lb:inbox:dead): {exc.args[0]}; "
                           "`bridge inbox dead list` lists them") from None

    # -- targets --

    async def pause(self, target: str, reason: str = "paused by an operator") -> None:
        await self.ledger.pause(self._target(target), reason)
        log.info("pausing %s (by an operator): %s", target, reason, extra=about(target=target))

    async def resume(self, target: str) -> None:
        await self.ledger.resume(self._target(target))
        log.info("resuming %s (by an operator)", target, extra=about(target=target))

    async def pause_every_target(self, reason: str = "tenant paused by an operator") -> list[str]:
        """Pause every target of the tenant (these settings' targets); their names."""
        names = [t.name for t in self.settings.targets]
        for name in names:
            await self.pause(name, reason)
        return names

    async def resume_every_target(self) -> list[str]:
        """Resume every target of the tenant, a target paused on its own too; their names."""
        names = [t.name for t in self.settings.targets]
        for name in names:
            await self.resume(name)
        return names
