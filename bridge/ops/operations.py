"""What an operator can see and do: the same functions serve ``bridge`` commands and the web API."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import orjson
from redis.asyncio import Redis

from bridge import constants as k
from bridge.clock import now_ms
from bridge.delivery.claims import mark_due
from bridge.delivery.idempotency import digest
from bridge.delivery.ledger import Accepted, Attempt, Ledger, Quarantined
from bridge.portals import rentix_mapping, travtus_mapping
from bridge.settings import RentixTarget, Settings, TravtusTarget


class OperationError(Exception):
    """An operator action that cannot be done, worded to say what to do instead."""


class NotFound(OperationError):
    """The target, held sync or quarantined listing named does not exist."""


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
            raise NotFound(f"no target named {name!r}; configured: {', '.join(names)}")
        return name

    async def make_due(self, *groups: str) -> None:
        await mark_due(self.redis, list(groups), now_ms())

    # -- held syncs --

    async def release(self, target: str, group: str) -> dict[str, Any]:
        held = await self.ledger.release(self._target(target), group)
        if held is None:
            raise NotFound(f"no held sync for group {group!r} on {target}")
        await self.make_due(group)
        return asdict(held)

    async def discard(self, target: str, group: str) -> dict[str, Any]:
        held = await self.ledger.discard(self._target(target), group)
        if held is None:
            raise NotFound(f"no held sync for group {group!r} on {target}")
        return asdict(held)

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


    # -- the dashboard's and API's reads --

    async def overview(self, minutes: int = 60) -> dict[str, Any]:
        """Per-minute figures of the last ``minutes`` (oldest first, the current one last),
        what is waiting or running now, delivery latency, workers and Redis itself."""
        now = now_ms()
        current = now // 60_000
        stamps = list(range(current - minutes + 1, current + 1))
        async with self.redis.pipeline(transaction=False) as pipe:
            for minute in stamps:
                pipe.hgetall(f"{k.STATS}{minute}")
            rows = [{_s(f): int(v) for f, v in row.items()} for row in await pipe.execute()]
        names = [t.name for t in self.settings.targets]
        series = _series(rows, names)
        return {
            "now": now,
            "minutes": [m * 60_000 for m in stamps],
            **series,
            "totals": _totals(series),
            "calls_per_event": _calls_per_event(series),
            "latency_ms": await self._latency(),
            "waiting": await self._waiting(now),
            "flushing": await self._flushing(),
            "queue_depth": await self.redis.zcard(k.QUEUE),
            "workers": await self._workers(now),
            "redis": await self._redis_info(),
            "recent_failures": [asdict(a) for a in await self._failures(10)],
        }

    async def _latency(self) -> dict[str, Any]:
        values = sorted(int(v) for v in await self.redis.lrange(k.LATENCY, 0, -1))
        return {"samples": len(values), **{f"p{q}": _percentile(values, q) for q in (50, 95, 99)}}

    async def _waiting(self, now: int) -> list[dict[str, Any]]:
        """Groups in ``lb:due``: why (changes in debounce, or a retry/lease) and when."""
        due = await self.redis.zrange(k.DUE, 0, -1, withscores=True)
        groups = [_s(g) for g, _ in due]
        async with self.redis.pipeline(transaction=False) as pipe:
            for group in groups:
                pipe.exists(f"{k.PENDING}{group}")
            pending = await pipe.execute()
        return [{"group": g, "due_at": int(score), "in_ms": int(score) - now,
                 "reason": "changes" if has else "retry"}
                for g, (_, score), has in zip(groups, due, pending, strict=True)]

    async def _flushing(self) -> list[str]:
        prefix = f"arq:in-progress:{k.FLUSH_JOB_ID}"
        return sorted([_s(key)[len(prefix):] async for key in self.redis.scan_iter(
            match=_glob_escape(prefix) + "*", count=1000)])

    async def _workers(self, now: int) -> list[dict[str, Any]]:
        raw = await self.redis.hgetall(k.WORKERS)
        workers = []
        for worker, value in raw.items():
            beat = orjson.loads(value)
            age = (now - int(beat.get("at", 0))) / 1000
            workers.append({"id": _s(worker), **beat, "age_s": round(age, 1),
                            "alive": age < WORKER_STALE_S})
        return sorted(workers, key=lambda w: w["id"])

    async def _redis_info(self) -> dict[str, Any]:
        info = {**await self.redis.info("memory"), **await self.redis.info("persistence")}
        fields = ("used_memory", "used_memory_human", "maxmemory", "maxmemory_policy",
                  "aof_enabled", "aof_last_write_status", "rdb_last_bgsave_status",
                  "rdb_changes_since_last_save", "rdb_last_save_time", "loading")
        return {f: _plain(info.get(f)) for f in fields}

    async def _failures(self, limit: int) -> list[Attempt]:
        return [a for a in await self.ledger.history(limit=200) if a.outcome != "ok"][:limit]

    async def targets(self) -> list[dict[str, Any]]:
        now = now_ms()
        return [await self._target_view(target, now) for target in self.settings.targets]

    async def _target_view(self, target: RentixTarget | TravtusTarget, now: int
                           ) -> dict[str, Any]:
        state = await self.ledger.target_state(target.name)
        quarantined = await self.ledger.quarantined(target.name)
        tat = await self.redis.get(f"{k.RATE_LIMIT}{target.name}")
        expires = state.get("token_expires_at")
        return {
            "name": target.name,
            "kind": target.kind,
            "state": _state_name(state, now),
            "paused_reason": state.get("paused") or None,
            "paused_at": _int(state.get("paused_at")),
            "blocked_until": _int(state.get("blocked_until")),
            "last_error": state.get("last_error") or None,
            "last_error_at": _int(state.get("last_error_at")),
            # Travtus tokens live in the workers' memory; shown when a worker records them.
            "token_expires_at": _int(expires) if target.kind == "travtus" else None,
            "rate_limit": _budget(float(tat) if tat else None, target.requests_per_minute, now),
            "quarantined": sum(1 for q in quarantined.values() if not q.discarded),
            "held": len(await self.ledger.held(target.name)),
        }

    async def problems(self) -> dict[str, Any]:
        quarantined, held = [], []
        for target in self.settings.targets:
            for ref, q in (await self.ledger.quarantined(target.name)).items():
                if not q.discarded:
                    quarantined.append({"target": target.name, "ref": ref, **asdict(q)})
            for group, h in (await self.ledger.held(target.name)).items():
                held.append({"target": target.name, "group": group, **asdict(h)})
        quarantined.sort(key=lambda q: (q["since"], q["target"], q["ref"]))
        held.sort(key=lambda h: (h["since"], h["target"], h["group"]))
        return {"quarantined": quarantined, "held": held}

    async def search_groups(self, query: str, limit: int = 50) -> list[dict[str, Any]]:
        """Groups named like ``query``, and the group of the listing whose external ref it is."""
        query = query.strip()
        found: dict[str, dict[str, Any]] = {}
        if not query:
            return []
        ref_group = _s(await self.redis.hget(f"{k.LISTING}{query}", "g"))
        if ref_group:
            found[ref_group] = {"group": ref_group, "matched": "ref", "ref": query}
        async for group in self.redis.sscan_iter(k.GROUPS, match=f"*{_glob_escape(query)}*",
                                                 count=1000):
            name = _s(group)
            found.setdefault(name, {"group": name, "matched": "group", "ref": None})
            if len(found) >= limit:
                break
        ordered = sorted(found.values(), key=lambda f: (f["group"] != query, f["group"]))
        for item in ordered:
            item["listings"] = await self.redis.scard(f"{k.MEMBERS}{item['group']}")
        return ordered

    async def group(self, group: str, history: int = 50) -> dict[str, Any]:
        if not await self.redis.sismember(k.GROUPS, group):
            raise NotFound(f"no group named {group!r} has been seen")
        now = now_ms()
        refs = sorted(_s(r) for r in await self.redis.smembers(f"{k.MEMBERS}{group}"))
        desired = await self._desired(refs)
        pending = {_s(f): int(v) for f, v in
                   (await self.redis.hgetall(f"{k.PENDING}{group}")).items()}
        due = await self.redis.zscore(k.DUE, group)
        targets = {t.name: await self._group_target(t, group, desired, now)
                   for t in self.settings.targets}
        listings = [{"ref": ref, **desired[ref],
                     "targets": {n: t["listings"][ref] for n, t in targets.items()}}
                    for ref in refs if ref in desired]
        for view in targets.values():
            del view["listings"]
        return {
            "group": group,
            # ``first`` is cleared when a flush takes the changes; last/seq stay as counters.
            "pending": pending if "first" in pending else None,
            "due_in_ms": int(due) - now if due is not None else None,
            "flushing": await self.redis.exists(
                f"arq:in-progress:{k.FLUSH_JOB_ID}{group}") > 0,
            "listings": listings,
            "targets": targets,
            "history": [asdict(a) for a in await self.ledger.history(group, history)],
        }

    async def _desired(self, refs: list[str]) -> dict[str, dict[str, Any]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.hgetall(f"{k.LISTING}{ref}")
            rows = await pipe.execute()
        desired = {}
        for ref, row in zip(refs, rows, strict=True):
            fields = {_s(f): _s(v) for f, v in row.items()}
            if not fields:
                continue
            body = fields.get("body")
            desired[ref] = {
                "version": None if fields.get("v") in (None, "-1") else int(fields["v"]),
                "deleted": fields.get("d") == "1",
                "occurred_at": _int(fields.get("t")),
                "received_at": _int(fields.get("at")),
                "body": orjson.loads(body) if body else None,
            }
        return desired

    async def _group_target(self, target: RentixTarget | TravtusTarget, group: str,
                            desired: dict[str, dict[str, Any]], now: int) -> dict[str, Any]:
        per_listing = target.kind == "rentix"
        accepted = await self.ledger.accepted(target.name, None if per_listing else group,
                                              None if not per_listing else list(desired))
        quarantined = await self.ledger.quarantined(target.name, list(desired))
        held = (await self.ledger.held(target.name)).get(group)
        attempts, not_before = await self.ledger.backoff(target.name, group)
        listings = {ref: _listing_state(target, ref, d, accepted.get(ref), quarantined.get(ref))
                    for ref, d in desired.items()}
        return {
            "held": asdict(held) if held else None,
            "backoff": {"attempts": attempts, "not_before": not_before}
            if not_before > now else None,
            # On a group-sync portal, what it holds that the bridge no longer wants there.
            "left_on_portal": sorted(set(accepted) - set(desired)) if not per_listing else [],
            "listings": listings,
        }


WORKER_STALE_S = 30  # three missed heartbeats (workers beat every 5 s)
RATE_BURST = 5  # RateLimiter.acquire's burst: the budget a target has when idle
RETRYING = {"transient", "rate_limited", "token_expired"}


def _series(rows: list[dict[str, int]], targets: list[str]) -> dict[str, Any]:
    """Per-minute lists from the ``lb:stats:{minute}`` hashes (see ``bridge/constants.py``)."""
    events = {name: [row.get(name, 0) for row in rows]
              for name in ("received", "duplicate", "stale")}
    reasons = sorted({f.split(":", 1)[1] for row in rows for f in row
                      if f.startswith("rejected:")})
    rejected = {r: [row.get(f"rejected:{r}", 0) for row in rows] for r in reasons}
    deliveries: dict[str, dict[str, list[int]]] = {}
    calls: dict[str, list[int]] = {}
    for target in targets:
        calls[target] = [row.get(f"calls:{target}", 0) for row in rows]
        by_class = {"ok": [], "retrying": [], "failed": []}
        for row in rows:
            counts = dict.fromkeys(by_class, 0)
            for field, value in row.items():
                outcome, _, name = field.rpartition(":")
                if name == target and outcome not in ("calls", "rejected", ""):
                    counts[_outcome_class(outcome)] += value
            for cls, value in counts.items():
                by_class[cls].append(value)
        deliveries[target] = by_class
    return {"events": events, "rejected": rejected, "deliveries": deliveries, "calls": calls}


def _outcome_class(outcome: str) -> str:
    if outcome == "ok":
        return "ok"
    return "retrying" if outcome in RETRYING else "failed"


def _totals(series: dict[str, Any]) -> dict[str, Any]:
    return {
        "events": {n: sum(v) for n, v in series["events"].items()},
        "rejected": {n: sum(v) for n, v in series["rejected"].items()},
        "deliveries": {t: {c: sum(v) for c, v in by.items()}
                       for t, by in series["deliveries"].items()},
        "calls": {t: sum(v) for t, v in series["calls"].items()},
    }


def _calls_per_event(series: dict[str, Any]) -> dict[str, float | None]:
    """Portal calls per accepted event over the window: how well changes are coalesced."""
    received = sum(series["events"]["received"])
    return {t: round(sum(v) / received, 3) if received else None
            for t, v in series["calls"].items()}


def _percentile(values: list[int], q: int) -> int | None:
    if not values:
        return None
    return values[max(1, math.ceil(q * len(values) / 100)) - 1]  # nearest rank


def _budget(tat: float | None, per_minute: int, now: int) -> dict[str, Any]:
    """Requests a target may make at once now, from the shared GCRA state
    (``bridge/ratelimit.py``): each spent request pushes the arrival time one interval on."""
    interval = 60_000 / per_minute
    ahead = max(0.0, (tat or now) - now)
    available = max(0, min(RATE_BURST, RATE_BURST - math.ceil(ahead / interval)))
    return {"requests_per_minute": per_minute, "burst": RATE_BURST, "available": available,
            "next_in_ms": 0 if available else math.ceil(ahead - interval * (RATE_BURST - 1))}


def _listing_state(target: RentixTarget | TravtusTarget, ref: str, desired: dict[str, Any],
                   accepted: Accepted | None, quarantined: Quarantined | None
                   ) -> dict[str, Any]:
    """Whether the target holds what the bridge wants it to: the planner's digests compared."""
    want = _desired_digest(target, ref, desired)
    if want is None or (desired["deleted"] and accepted is None):
        # Nothing to send: only what a target accepted from the bridge is its to take down.
        status = "pending removal" if accepted and target.kind == "travtus" else "absent"
    elif accepted is not None and accepted.digest == want:
        status = "in step"
    elif quarantined is not None and quarantined.digest == want:
        status = "quarantined (discarded)" if quarantined.discarded else "quarantined"
    else:
        status = "pending"
    return {"status": status, "desired_digest": want,
            "accepted": asdict(accepted) if accepted else None}


def _desired_digest(target: RentixTarget | TravtusTarget, ref: str,
                    desired: dict[str, Any]) -> str | None:
    body = desired["body"]
    if isinstance(target, RentixTarget):
        if desired["deleted"] or body is None:
            payload = rentix_mapping.deletion_payload(ref, target.delete_behaviour)
            return digest(payload) if payload is not None else None
        return digest(rentix_mapping.map_listing(body, target.name))
    if desired["deleted"] or body is None or not travtus_mapping.include_in_sync(body):
        return None
    return digest(travtus_mapping.map_listing(body, target.name))


def _state_name(state: dict[str, str], now: int) -> str:
    if state.get("paused"):
        return "paused"
    if int(state.get("blocked_until") or 0) > now:
        return "rate-limited"
    return "active"


def _int(value: str | None) -> int | None:
    return int(float(value)) if value not in (None, "") else None


def _plain(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


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
