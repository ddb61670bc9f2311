"""External-ID linking on Rentix: link, unlink, the matching scan, and adoption.

Hand-made Rentix listings have no ``externalId``; until one is linked to its CRM record, a
``PUT /listings`` for that record creates a second listing beside it. So:

* :meth:`Linking.link` / :meth:`Linking.unlink` turn the portal's four link errors into
  messages that say what to do;
* :meth:`Linking.scan` reads every portal listing, matches the unlinked ones against the CRM
  listings the bridge knows (``bridge.linking.matching``), writes the report, and with
  ``apply`` links the confident matches (re-running it finds them linked and changes nothing);
* :class:`Adoption`: while a target with ``adopt = true`` is adopting, delivery sends it no
  creates (it holds them in ``lb:adopt:{target}``); ending adoption lets them flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery import Adoption, RateLimiter, mark_due, read_listings
from bridge.linking.matching import (
    DEFAULT_MIN_CONFIDENCE,
    MatchReport,
    match_listings,
    render_text,
    write_csv,
)
from bridge.portals import Outcome, PortalError, RentixAdapter, Result, adapter_for
from bridge.replies import maybe_text
from bridge.settings import RentixTarget, Settings

# lb:adopted:{target}: when adoption ended (documented in bridge.constants).


class LinkError(Exception):
    """A link action that cannot be done, worded to say what to do instead."""

    def __init__(self, type_: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.type = type_
        self.message = message
        self.status = status


@dataclass(frozen=True)
class LinkResult:
    target: str
    portal_id: int
    external_ref: str | None
    changed: bool  # False: it already was that way (nothing to link or unlink)
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScanResult:
    target: str
    report: MatchReport
    applied: bool
    linked: list[LinkResult] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    adoption: str = ""  # what happened to adoption, if the target is adopting

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            **self.report.as_dict(),
            "applied": self.applied,
            "linked": [x.as_dict() for x in self.linked],
            "failed": self.failed,
            "files": self.files,
            "adoption": self.adoption,
        }

    def render(self, max_rows: int | None = 50) -> str:
        lines = [render_text(self.report, max_rows=max_rows), ""]
        if self.applied:
            lines.append(f"Linked now: {len(self.linked)}")
            lines += [f"  FAILED #{f['portal_id']} -> {f['external_ref']}: {f['message']}"
                      for f in self.failed]
        else:
            lines.append("Nothing linked (dry run): add --apply to link the matched listings.")
        if self.adoption:
            lines.append(f"Adoption: {self.adoption}")
        lines += [f"Report: {path}" for path in self.files]
        return "\n".join(lines)



class Linking:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.adoption = Adoption(redis)
        self.limiter = RateLimiter(redis)

    # -- targets and adapters --

    def target(self, name: str | None) -> RentixTarget:
        """The named Rentix target, or the only one when no name is given."""
        rentix = [t for t in self.settings.targets if t.mode == "per_listing"]
        if name is None:
            if len(rentix) == 1:
                return rentix[0]
            names = ", ".join(t.name for t in rentix) or "none configured"
            raise LinkError("unknown_target", f"give --target: Rentix targets are {names}")
        for t in self.settings.targets:
            if t.name == name:
                if t.mode == "per_listing":
                    return t
                raise LinkError("unsupported_target", f"{name} is a {t.kind} target; external "
                                "IDs are linked on Rentix targets only")
        names = ", ".join(t.name for t in rentix) or "none configured"
        raise LinkError("unknown_target", f"no target named {name!r}; Rentix targets: {names}",
                        404)

    @contextlib.asynccontextmanager
    async def _adapter(self, target: RentixTarget) -> AsyncIterator[RentixAdapter]:
        adapter = adapter_for(target)
        try:
            yield adapter
        finally:
            await adapter.aclose()

    async def _rate(self, target: RentixTarget) -> None:
        """Share the target's request rate with the workers (links may be hundreds)."""
        while True:
            wait = await self.limiter.acquire(target.name, target.requests_per_minute, now_ms())
            if not wait:
                return
            await asyncio.sleep(wait / 1000)

    # -- link and unlink --

    async def link(self, target: str | None, portal_id: int, external_ref: str) -> LinkResult:
        t = self.target(target)
        ref = external_ref.strip()
        if not ref:
            raise LinkError("invalid_request", "the external ref may not be empty")
        async with self._adapter(t) as adapter:
            return await self._link(t, adapter, int(portal_id), ref)

    async def _link(self, t: RentixTarget, adapter: RentixAdapter, pid: int,
                    ref: str) -> LinkResult:
        await self._rate(t)
        result = await adapter.link(pid, ref)
        if result.ok:
            await self._now_linked(t.name, ref)
            return LinkResult(t.name, pid, ref, True, f"linked {t.name} listing #{pid} to {ref}")
        if result.error_type == "listing_already_has_external_id":
            current = await self._external_id_of(adapter, pid)
            if current == ref:  # asked twice: already done
                await self._now_linked(t.name, ref)
                return LinkResult(t.name, pid, ref, False,
                                  f"{t.name} listing #{pid} is already linked to {ref}")
            holder = f" {current}" if current else " another external ID"
            raise LinkError("listing_already_linked",
                            f"{t.name} listing #{pid} is already linked to{holder}; unlink it "
                            f"first: bridge link remove --target {t.name} {pid}", 409)
        if result.error_type == "external_id_already_linked":
            owner = await self._holder_of(adapter, ref)
            where = f"{t.name} listing #{owner}" if owner else f"another {t.name} listing"
            undo = f" (bridge link remove --target {t.name} {owner})" if owner else ""
            raise LinkError("external_id_in_use",
                            f"{ref} is already linked to {where}; unlink that one first{undo}, "
                            f"or link #{pid} to a different external ID", 409)
        raise _portal_problem(t.name, pid, result, "nothing was linked")

    async def _now_linked(self, target: str, ref: str) -> None:
        await self.adoption.mark_linked(target, [ref])
        # A create held for this ref is an update now: flush its group so it goes out.
        group = await self.adoption.release(target, ref)
        if group:
            await mark_due(self.redis, [group], now_ms())

    async def _external_id_of(self, adapter: RentixAdapter, pid: int) -> str | None:
        found = await adapter.get_listing(pid)
        return maybe_text((found.body or {}).get("externalId")) if found.ok else None

    async def _holder_of(self, adapter: RentixAdapter, ref: str) -> int | None:
        found = await adapter.get_by_external_id(ref)
        return (found.body or {}).get("id") if found.ok else None

    async def unlink(self, target: str | None, portal_id: int) -> LinkResult:
        t = self.target(target)
        pid = int(portal_id)
        async with self._adapter(t) as adapter:
            await self._rate(t)
            result = await adapter.unlink(pid)
        if result.ok:
            ref = maybe_text((result.body or {}).get("externalId"))
            if ref:
                await self.adoption.unmark_linked(t.name, ref)
            return LinkResult(t.name, pid, ref, True,
                              f"unlinked {t.name} listing #{pid} from {ref}")
        if result.error_type == "no_external_id":
            return LinkResult(t.name, pid, None, False,
                              f"{t.name} listing #{pid} has no external ID: nothing to unlink")
        raise _portal_problem(t.name, pid, result, "nothing was unlinked")

    # -- the matching scan --

    async def scan(self, target: str | None, *, apply: bool = False,
                   min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                   report_dir: Path | None = None) -> ScanResult:
        if not 0 < min_confidence <= 1:
            raise LinkError("invalid_request", "min_confidence must be above 0 and at most 1")
        t = self.target(target)
        async with self._adapter(t) as adapter:
            items = await _portal_listings(adapter)
            report = settle(items, await self.crm_listings(), min_confidence)
            # Linked before the scan (by hand or an earlier scan): known linked from now on.
            await self.adoption.mark_linked(
                t.name, [s.external_ref for s in report.skipped_linked if s.in_crm])
            result = ScanResult(t.name, report, apply)
            if apply:
                await self._apply(t, adapter, result)
        if await self.adoption.active(t):
            result.adoption = await self._after_scan(t, result)
        if report_dir is not None:
            result.files = _write_reports(result, report_dir)
        return result

    async def _apply(self, t: RentixTarget, adapter: RentixAdapter, result: ScanResult) -> None:
        for match in result.report.matched:
            try:
                linked = await self._link(t, adapter, int(match.portal_id), match.external_ref)
            except LinkError as exc:
                result.failed.append({"portal_id": match.portal_id, "type": exc.type,
                                      "external_ref": match.external_ref, "message": exc.message})
                continue
            if linked.changed:
                result.linked.append(linked)

    async def _after_scan(self, t: RentixTarget, result: ScanResult) -> str:
        """End adoption once every unlinked portal listing is resolved (linked, or with no
        CRM candidate at all); an ambiguous one could still be a held create's listing."""
        open_ = len(result.report.ambiguous) + len(result.failed)
        if not result.applied:
            return "on; run the scan with --apply to link the matches and end it"
        if open_:
            return (f"still on: {open_} portal listing(s) need a person (see the report); link "
                    f"them with `bridge link add`, then scan again or run `bridge link adopt "
                    f"end --target {t.name}`")
        groups = await self.adoption.end(t.name)
        return f"ended; held creates flow now ({len(groups)} group(s) due)"

    async def crm_listings(self) -> list[dict[str, Any]]:
        """Every live CRM listing the bridge knows (from events and snapshots)."""
        groups = [maybe_text(g) for g in await self.redis.smembers(ks().GROUPS)]  # type: ignore[misc]
        async with self.redis.pipeline(transaction=False) as pipe:
            for group in groups:
                pipe.smembers(f"{ks().MEMBERS}{group}")
            members = await pipe.execute()
        refs = sorted({str(maybe_text(ref)) for refs in members for ref in refs})
        found = (await read_listings(self.redis, refs)).values()
        return [x.body for x in found if not x.deleted and x.body]

    # -- adoption --

    async def adoption_status(self, target: str | None) -> dict[str, Any]:
        t = self.target(target)
        held = await self.adoption.held(t.name)
        return {
            "target": t.name,
            "configured": t.adopt,
            "active": await self.adoption.active(t),
            "ended_at": await self.adoption.ended_at(t.name),
            "linked": await self.redis.scard(ks().LINKED + t.name),  # type: ignore[misc]
            "held_creates": [h.as_dict() for h in held],
        }

    async def end_adoption(self, target: str | None) -> dict[str, Any]:
        t = self.target(target)
        if not t.adopt:
            raise LinkError("not_adopting", f"{t.name} is not in adoption mode (adopt = false)")
        if not await self.adoption.active(t):
            return {"target": t.name, "ended": False, "groups": [],
                    "message": f"adoption of {t.name} had already ended"}
        groups = await self.adoption.end(t.name)
        return {"target": t.name, "ended": True, "groups": groups,
                "message": f"adoption of {t.name} ended; held creates of {len(groups)} "
                           "group(s) flow now"}


def settle(items: list[dict[str, Any]], crm: list[dict[str, Any]],
           min_confidence: float) -> MatchReport:
    """Match until nothing new is confident: once a match is linked, its CRM listing stops
    competing, so a listing that was ambiguous between it and another may now be certain.
    Without this a second ``--apply`` would find more; with it the second run changes nothing.
    ``matched`` gathers every round; the rest is what the last round left open."""
    items = [dict(item) for item in items]
    by_id = {item["id"]: item for item in items}
    first = report = match_listings(items, crm, min_confidence=min_confidence)
    matched = list(report.matched)
    while report.matched:
        for match in report.matched:
            by_id[match.portal_id]["externalId"] = match.external_ref
        report = match_listings(items, crm, min_confidence=min_confidence)
        matched += report.matched
    return replace(report, matched=tuple(matched), skipped_linked=first.skipped_linked)


def _portal_problem(target: str, pid: int, result: Result, consequence: str) -> LinkError:
    if result.outcome is Outcome.NOT_FOUND:
        return LinkError("listing_not_found",
                         f"{target} has no listing #{pid} (or it belongs to another agency): "
                         "check the portal ID", 404)
    retry = "; try again shortly" if result.retryable else ""
    detail = f"{result.error_type or result.outcome} {result.message}".strip()
    return LinkError("portal_error", f"{target} refused ({result.status or 'no answer'}: "
                     f"{detail}); {consequence}{retry}", 502)


async def _portal_listings(adapter: RentixAdapter) -> list[dict[str, Any]]:
    try:
        return [item async for item in adapter.iter_listings()]
    except PortalError as exc:
        result = exc.result
        retry = "; try again shortly" if result.retryable else ""
        raise LinkError("portal_error", f"{adapter.name} refused the listing pages "
                        f"({result.status or 'no answer'}: {result.error_type} {result.message})"
                        f"; nothing was matched{retry}", 502) from None


def _write_reports(result: ScanResult, directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    base = directory / f"link-scan-{result.target}-{stamp}"
    csv_path, json_path = base.with_suffix(".csv"), base.with_suffix(".json")
    write_csv(result.report, csv_path)
    files = [str(csv_path), str(json_path)]
    result.files = files
    json_path.write_bytes(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    return files
