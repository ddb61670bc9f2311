"""What the workers' periodic pass and manual runs (``bridge reconcile``) found, kept for the
operator, and the lock of each periodic check.

Each check of a group on a target runs under that group's *check lock* (``lb:reconcile:lock:
{target}:{group}``, a token with a short expiry, renewed while it runs), so one group is never
checked twice at once on one target. Its outcome is written by one script, only while the
lock is still its own: the group's last check, the totals of the pass under way (a pass is full
once every group, and the whole portal on a per-listing target, has been checked since it
began: its totals then become the last full pass's), the groups whose last check found
something or listings unknown to the bridge, and when the group is next due. A failure is
written the same way, with its backoff. A manual run writes each group's last check the same
way (``source`` "manual"), but not the pass's totals, the schedule or a lock: the pages show
what it found until the group's next check. Key layout: ``bridge/constants.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from bridge import constants as k
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.reconcile.compare import KINDS, UNREADABLE, Finding, GroupCheck
from bridge.reconcile.schedule import BACKOFF_FIRST_MS, BACKOFF_MAX_MS
from bridge.replies import text
from bridge.scripts import Script, load

log = logging.getLogger("bridge.reconcile.records")

Counts = dict[str, int]  # kind -> count, every kind present

# The check's lock, and its outcome: each written only while the lock is still the check's.
ACQUIRE = load(__file__, "lock_acquire.lua")
RENEW = load(__file__, "lock_renew.lua")
RELEASE = load(__file__, "lock_release.lua")
# The limits of the groups listed as having found something (last_check.lua, a fragment).
_LISTED = {"UNKNOWN_GROUPS": k.RECONCILE_UNKNOWN_GROUPS, "FOUND_GROUPS": k.RECONCILE_FOUND_GROUPS}
RECORD = load(__file__, "record.lua", {"KINDS": KINDS, **_LISTED})
MANUAL = load(__file__, "manual.lua", _LISTED)
FAIL = load(__file__, "fail.lua", {"FIRST": BACKOFF_FIRST_MS, "MAX": BACKOFF_MAX_MS})


# -- what the records hold, as the reads return it --

@dataclass(frozen=True)
class UnknownListing:
    """A listing on the portal that the bridge never sent there and nothing links it to."""

    group: str  # "" when found by reading the whole portal (no group holds it)
    ref: str
    detail: str
    seen_at: int  # the check that last found it


@dataclass(frozen=True)
class CheckRecord:
    """A group's last check."""

    group: str
    at: int
    found: Counts
    repaired: Counts  # confirmed by reading the portal back
    unknown_count: int
    # ref -> why its stored state cannot be read (the field and value at fault), at most
    # RECONCILE_UNKNOWN_KEPT of them
    unreadable: dict[str, str] = field(default_factory=dict)
    source: str = "periodic"  # or "manual": bridge reconcile
    remaining: Counts = field(default_factory=dict)  # still differing after the check
    # ref -> why a difference found was not repaired, at most RECONCILE_UNKNOWN_KEPT of them
    not_repaired: dict[str, str] = field(default_factory=dict)

    @property
    def outstanding(self) -> int:
        """The bridge's own differences known to remain: missing, drift and stale (unknown
        listings are not its own, and are shown apart)."""
        return sum(n for kind, n in self.remaining.items() if kind != "unknown")


@dataclass(frozen=True)
class PassRecord:
    """A pass over every group of a target: the last full one, or the one under way."""

    started: int | None
    finished: int | None  # None while under way
    checks: int
    found: Counts
    repaired: Counts


@dataclass(frozen=True)
class FailedCheck:
    group: str
    attempts: int
    error: str
    at: int


@dataclass(frozen=True)
class PassState:
    last: PassRecord | None
    current: PassRecord
    checked: int  # groups checked in the pass under way
    unknown: int  # unknown listings in the groups' last checks


def counts(findings: list[Finding]) -> Counts:
    """Findings per kind, unreadable listings too (they are not counted in the pass)."""
    return {kind: sum(1 for f in findings if f.kind == kind) for kind in (*KINDS, UNREADABLE)}


class Records:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._acquire = Script(redis, ACQUIRE)
        self._renew = Script(redis, RENEW)
        self._release = Script(redis, RELEASE)
        self._record = Script(redis, RECORD)
        self._fail = Script(redis, FAIL)
        self._manual = Script(redis, MANUAL)

    # -- the check's lock --

    async def acquire(self, target: str, group: str) -> str | None:
        """The lock's token, or None while another check of the group runs."""
        token = secrets.token_hex(8)
        taken = await self._acquire(keys=_lock_keys(target, group),
                                    args=[token, group, now_ms(), k.RECONCILE_LOCK_MS])
        return token if taken else None

    async def renew(self, target: str, group: str, token: str) -> bool:
        """Whether the lock was still the check's (and is renewed)."""
        return bool(await self._renew(keys=_lock_keys(target, group),
                                      args=[token, group, now_ms(), k.RECONCILE_LOCK_MS]))

    async def release(self, target: str, group: str, token: str) -> None:
        await self._release(keys=_lock_keys(target, group), args=[token, group])

    @contextlib.asynccontextmanager
    async def locked(self, target: str, group: str, token: str) -> AsyncIterator[None]:
        """Renew the lock while the check runs, and release it after (if still held)."""
        renewing = asyncio.create_task(self._keep(target, group, token))
        try:
            yield
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            with contextlib.suppress(Exception):  # Redis away: the lock lapses by itself
                await self.release(target, group, token)

    async def _keep(self, target: str, group: str, token: str) -> None:
        while True:
            await asyncio.sleep(k.RECONCILE_LOCK_MS / 3000)
            try:
                held = await self.renew(target, group, token)
            except Exception as exc:  # a blip: the next renewal may still be in time
                log.debug("renewing the check lock of %s on %s failed: %s", group, target, exc)
                continue
            if not held:
                log.warning("the check of %s on %s lost its lock: its findings will not be "
                            "recorded", group, target)
                return

    # -- outcomes --

    async def record(self, token: str, check: GroupCheck, repaired: list[Finding],
                     next_due: int, whole_portal: bool) -> int:
        """Write one check's outcome; 0 if the lock is no longer this check's (nothing
        written), 2 if it completed the target's pass."""
        target, group = check.target, check.group
        unknown = [f for f in check.findings if f.kind == "unknown"]
        unreadable = [f for f in check.findings if f.kind == UNREADABLE]
        found, fixed = counts(check.findings), counts(repaired)
        now = now_ms()
        record = _record(now, "periodic", check.findings, repaired,
                         {kind: found[kind] - fixed[kind] for kind in found}, {})
        keys = [_lock(target, group), f"{ks().RECONCILE_DUE}{target}",
                f"{ks().RECONCILE_RUNNING}{target}", f"{ks().RECONCILE_CHECKS}{target}",
                f"{ks().RECONCILE_PASS}{target}",
                f"{ks().RECONCILE_PASS}{target}{k.RECONCILE_PASS_GROUPS}",
                f"{ks().RECONCILE_UNKNOWN}{target}", f"{ks().RECONCILE_FOUND}{target}",
                f"{ks().RECONCILE_FAILED}{target}", ks().GROUPS]
        args: list[Any] = [token, group, now, next_due, orjson.dumps(record), len(unknown),
                           int(whole_portal)]
        args += [found[kind] for kind in KINDS] + [fixed[kind] for kind in KINDS]
        args.append(len(unreadable))
        return int(await self._record(keys=keys, args=args))

    async def record_manual(self, check: GroupCheck, repaired: list[Finding],
                            remaining: list[Finding], not_repaired: dict[str, str]) -> None:
        """Write a manual run's check of a group as its last check: ``remaining`` is what the
        portal still differs by afterwards (read back after a repair)."""
        target = check.target
        still = [f for f in remaining if f.kind == "unknown"]
        record = _record(now_ms(), "manual", check.findings, repaired, counts(remaining),
                         not_repaired, remaining)
        keys = [f"{ks().RECONCILE_CHECKS}{target}", f"{ks().RECONCILE_PASS}{target}",
                f"{ks().RECONCILE_UNKNOWN}{target}", f"{ks().RECONCILE_FOUND}{target}"]
        await self._manual(keys=keys, args=[check.group, record["at"], orjson.dumps(record),
                                            len(still), len(check.findings)])

    async def failed(self, token: str, target: str, group: str, error: str,
                     interval_ms: int) -> int:
        """Write a failed check; the delay before its next try (0: the lock was lost)."""
        keys = [_lock(target, group), f"{ks().RECONCILE_DUE}{target}",
                f"{ks().RECONCILE_RUNNING}{target}", f"{ks().RECONCILE_FAILED}{target}"]
        return int(await self._fail(keys=keys, args=[token, group, now_ms(), interval_ms,
                                                      error[:500]]))

    # -- reads --

    async def passes(self, target: str) -> PassState:
        raw = await self.redis.hgetall(f"{ks().RECONCILE_PASS}{target}")  # type: ignore[misc]
        fields = {text(f): int(v) for f, v in raw.items()}
        checked = await self.redis.scard(  # type: ignore[misc]
            f"{ks().RECONCILE_PASS}{target}{k.RECONCILE_PASS_GROUPS}")
        last = None
        if "last_finished" in fields:
            last = PassRecord(started=fields.get("last_started"),
                              finished=fields["last_finished"],
                              checks=fields.get("last_checks", 0),
                              found=_counts(fields, "last_found:"),
                              repaired=_counts(fields, "last_repaired:"))
        current = PassRecord(started=fields.get("started"), finished=None,
                             checks=fields.get("checks", 0), found=_counts(fields, "found:"),
                             repaired=_counts(fields, "repaired:"))
        return PassState(last=last, current=current, checked=int(checked),
                         unknown=max(fields.get("unknown", 0), 0))

    async def last_checks(self, target: str, groups: list[str]) -> dict[str, CheckRecord]:
        """The last check of each of ``groups`` that has one."""
        records = await self._checks(target, groups)
        return {g: _check(g, r) for g, r in records.items()}

    async def latest(self, target: str, limit: int) -> list[CheckRecord]:
        """The groups whose last check found something, newest first."""
        groups = await self._newest(f"{ks().RECONCILE_FOUND}{target}", limit)
        records = await self._checks(target, groups)
        return [_check(g, records[g]) for g in groups if g in records]

    async def unknown(self, target: str, limit: int) -> list[UnknownListing]:
        """Unknown listings of the groups' last checks, the newest checks first."""
        groups = await self._newest(f"{ks().RECONCILE_UNKNOWN}{target}", limit)
        records = await self._checks(target, groups)
        found: list[UnknownListing] = []
        for group in groups:
            record = records.get(group, {})
            for item in record.get("unknown", []):
                found.append(UnknownListing(group=group, ref=str(item.get("ref", "")),
                                            detail=str(item.get("detail", "")),
                                            seen_at=int(record.get("at", 0))))
                if len(found) >= limit:
                    return found
        return found

    async def failures(self, target: str, limit: int) -> tuple[int, list[FailedCheck]]:
        """How many groups' checks are failing, and some of them, latest first."""
        key = f"{ks().RECONCILE_FAILED}{target}"
        total = int(await self.redis.hlen(key))  # type: ignore[misc]
        _, raw = await self.redis.hscan(key, 0, count=max(limit, 10))
        failed = []
        for group, value in raw.items():
            entry = orjson.loads(value)
            failed.append(FailedCheck(group=text(group), attempts=int(entry.get("attempts", 0)),
                                      error=str(entry.get("error", "")),
                                      at=int(entry.get("at", 0))))
        failed.sort(key=lambda f: (-f.at, f.group))
        return total, failed[:limit]

    async def _newest(self, key: str, limit: int) -> list[str]:
        return [text(g) for g in await self.redis.zrevrange(key, 0, limit - 1)]

    async def _checks(self, target: str, groups: list[str]) -> dict[str, dict[str, Any]]:
        if not groups:
            return {}
        raw = await self.redis.hmget(f"{ks().RECONCILE_CHECKS}{target}", groups)  # type: ignore[misc]
        return {g: orjson.loads(v) for g, v in zip(groups, raw, strict=True) if v is not None}


def _lock(target: str, group: str) -> str:
    return f"{ks().RECONCILE_LOCK}{target}:{group}"


def _lock_keys(target: str, group: str) -> list[str]:
    return [_lock(target, group), f"{ks().RECONCILE_RUNNING}{target}"]


def _counts(fields: dict[str, int], prefix: str) -> Counts:
    return {kind: fields.get(prefix + kind, 0) for kind in KINDS}


def _record(at: int, source: str, findings: list[Finding], repaired: list[Finding],
            remaining: Counts, not_repaired: dict[str, str],
            after: list[Finding] | None = None) -> dict[str, Any]:
    """A check's JSON; its unknown and unreadable listings are those of ``after`` (what still
    differs) when given, else of ``findings``."""
    after = findings if after is None else after
    unknown = [f for f in after if f.kind == "unknown"]
    unreadable = [f for f in after if f.kind == UNREADABLE]
    kept = k.RECONCILE_UNKNOWN_KEPT
    return {"at": at, "source": source, "found": counts(findings), "repaired": counts(repaired),
            "remaining": remaining,
            "unknown": [{"ref": f.ref, "detail": f.detail} for f in unknown[:kept]],
            "unknown_count": len(unknown),
            "unreadable": {f.ref: f.detail for f in unreadable[:kept]},
            "not_repaired": dict(list(not_repaired.items())[:kept])}


def _check(group: str, record: dict[str, Any]) -> CheckRecord:
    found = _kinds(record.get("found", {}))
    repaired = _kinds(record.get("repaired", {}))
    # Records written before "remaining" was kept: what was found and not repaired.
    remaining = _kinds(record.get("remaining")
                       or {kind: found[kind] - repaired[kind] for kind in KINDS})
    return CheckRecord(group=group, at=int(record.get("at", 0)), found=found, repaired=repaired,
                       unknown_count=int(record.get("unknown_count", 0)),
                       unreadable={str(ref): str(why) for ref, why
                                   in record.get("unreadable", {}).items()},
                       source=str(record.get("source", "periodic")), remaining=remaining,
                       not_repaired={str(ref): str(why) for ref, why
                                     in record.get("not_repaired", {}).items()})


def _kinds(values: dict[str, Any]) -> Counts:
    return {kind: int(values.get(kind, 0)) for kind in KINDS}
