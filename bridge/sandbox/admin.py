"""The `/_sandbox/` admin API: inspect and seed listings, journal, faults, switches, reset."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .faults import FaultSpecError
from .rentix_store import read_model
from .state import Sandbox, State
from .travtus_rules import admin_view
from .travtus_store import Group

Endpoint = Callable[[Request], Awaitable[Response]]


class AdminError(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    kind = "invalid_request" if status == 400 else "conflict" if status == 409 else "not_found"
    return JSONResponse({"error": {"type": kind, "message": message}}, status)


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise AdminError("body must be JSON") from exc
    if not isinstance(value, dict):
        raise AdminError("body must be a JSON object")
    return value


def _typed(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is not None and (not isinstance(value, kind) or
                              (kind is int and isinstance(value, bool))):
        raise AdminError(f"{name} must be a {kind.__name__}")
    return value


class Admin:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def routes(self) -> list[Route]:
        table: list[tuple[str, str, Endpoint]] = [
            ("/rentix/listings", "GET", self.rentix_listings),
            ("/rentix/listings", "POST", self.rentix_seed),
            ("/rentix/agency", "POST", self.rentix_agency),
            ("/travtus/listings", "GET", self.travtus_listings),
            ("/travtus/listings", "POST", self.travtus_seed),
            ("/travtus/groups", "GET", self.travtus_groups),
            ("/travtus/groups", "POST", self.travtus_add_group),
            ("/travtus/groups/{ref:path}/deny", "POST", self.travtus_deny),
            ("/travtus/groups/{ref:path}/allow", "POST", self.travtus_allow),
            ("/travtus/expire-tokens", "POST", self.expire_tokens),
            ("/credentials", "POST", self.credentials),
            ("/rate-limits", "GET", self.rate_limits),
            ("/rate-limits", "POST", self.set_rate_limits),
            ("/journal", "GET", self.journal),
            ("/faults", "GET", self.faults),
            ("/faults", "POST", self.add_fault),
            ("/faults", "DELETE", self.clear_faults),
            ("/faults/{fault_id:int}", "DELETE", self.remove_fault),
            ("/reset", "POST", self.reset),
        ]
        return [Route(path, self._guarded(fn), methods=[m]) for path, m, fn in table]

    def _guarded(self, fn: Endpoint) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(request)
            except AdminError as exc:
                return _error(exc.status, str(exc))
            except FaultSpecError as exc:
                return _error(400, str(exc))
        return endpoint

    @property
    def state(self) -> State:
        return self.sandbox.state

    # -- Rentix ----------------------------------------------------------------------------------

    async def rentix_listings(self, request: Request) -> Response:
        store = self.state.rentix
        store.settle()
        return JSONResponse({"items": [read_model(x) for x in store.listings.values()]})

    async def rentix_seed(self, request: Request) -> Response:
        body = await _json_object(request)
        listings = body.get("listings")
        if not isinstance(listings, list) or not all(isinstance(x, dict) for x in listings):
            raise AdminError("listings must be an array of objects")
        store = self.state.rentix
        ext_ids = [x.get("externalId") for x in listings if x.get("externalId") is not None]
        clash = [e for e in ext_ids if e in store.by_external]
        if clash or len(set(ext_ids)) != len(ext_ids):
            raise AdminError(f"externalId already linked: {clash or ext_ids}", 409)
        ids = []
        async with self.sandbox.lock:
            for fields in listings:
                form = {k: v for k, v in fields.items()
                        if k not in ("externalId", "announcementStatus", "id") and v is not None}
                status = fields.get("announcementStatus") or "active"
                ext = fields.get("externalId")
                listing = store.create(str(ext) if ext is not None else None, status, form,
                                       synced=False)
                ids.append(listing.id)
        return JSONResponse({"ids": ids})

    async def rentix_agency(self, request: Request) -> Response:
        body = await _json_object(request)
        suspended, enabled = _typed(body, "suspended", bool), _typed(body, "crm_enabled", bool)
        switches = self.state.switches
        if suspended is not None:
            switches.agency_suspended = suspended
        if enabled is not None:
            switches.crm_enabled = enabled
        return JSONResponse({"suspended": switches.agency_suspended,
                             "crm_enabled": switches.crm_enabled})

    # -- Travtus ---------------------------------------------------------------------------------

    async def travtus_listings(self, request: Request) -> Response:
        store = self.state.travtus
        wanted = request.query_params.get("group")
        out = []
        for listing in store.listings.values():
            group = store.groups.get(listing.group_id)
            ref = group.external_ref if group else None
            if wanted is None or wanted in (ref, listing.group_id):
                out.append(admin_view(listing, ref))
        return JSONResponse({"listings": out})

    async def travtus_seed(self, request: Request) -> Response:
        body = await _json_object(request)
        ref, group_id = _typed(body, "group", str), _typed(body, "group_id", str)
        listings = body.get("listings")
        if not (ref or group_id):
            raise AdminError("group (an external ref) or group_id is required")
        if not isinstance(listings, list) or not all(isinstance(x, dict) for x in listings):
            raise AdminError("listings must be an array of objects")
        store = self.state.travtus
        async with self.sandbox.lock:
            group = self._ensure_group(ref, group_id)
            identifiers = []
            for fields in listings:
                ext = fields.get("external_reference")
                existing = store.by_ref(group, ext) if ext is not None else None
                identifiers.append(store.put(group, ext, dict(fields), existing).identifier)
        return JSONResponse({"identifiers": identifiers, "group_id": group.group_id})

    def _ensure_group(self, ref: str | None, group_id: str | None) -> Group:
        store = self.state.travtus
        group = store.groups.get(group_id) if group_id else store.groups_by_ref.get(ref or "")
        if group is None:
            if group_id and ref and ref in store.groups_by_ref:
                raise AdminError(f"group {ref} already exists with another group_id", 409)
            group = store.add_group(external_ref=ref, group_id=group_id)
        return group

    async def travtus_groups(self, request: Request) -> Response:
        store = self.state.travtus
        return JSONResponse({"groups": [
            {"group_id": g.group_id, "group_external_ref": g.external_ref,
             "denied": store.is_denied(g), "listings": len(g.members)}
            for g in store.groups.values()
        ]})

    async def travtus_add_group(self, request: Request) -> Response:
        body = await _json_object(request)
        ref, group_id = _typed(body, "group", str), _typed(body, "group_id", str)
        group = self._ensure_group(ref, group_id)
        return JSONResponse({"group_id": group.group_id, "group_external_ref": group.external_ref})

    async def travtus_deny(self, request: Request) -> Response:
        self.state.travtus.denied.add(request.path_params["ref"])
        return JSONResponse({"denied": request.path_params["ref"]})

    async def travtus_allow(self, request: Request) -> Response:
        self.state.travtus.denied.discard(request.path_params["ref"])
        return JSONResponse({"allowed": request.path_params["ref"]})

    async def expire_tokens(self, request: Request) -> Response:
        return JSONResponse({"expired": self.state.tokens.expire_all()})

    # -- switches --------------------------------------------------------------------------------

    async def credentials(self, request: Request) -> Response:
        body = await _json_object(request)
        switches = self.state.switches
        changed = {n: _typed(body, n, str) for n in
                   ("rentix_api_key", "travtus_client_id", "travtus_client_secret")}
        for name, value in changed.items():
            if value is not None:
                setattr(switches, name, value)
        if changed["travtus_client_id"] is not None or changed["travtus_client_secret"] is not None:
            self.state.tokens.forget_all()
        return JSONResponse({"changed": sorted(n for n, v in changed.items() if v is not None)})

    async def rate_limits(self, request: Request) -> Response:
        s = self.state.switches
        return JSONResponse({"rentix_per_minute": s.rentix_per_minute,
                             "rentix_bulk_per_minute": s.rentix_bulk_per_minute})

    async def set_rate_limits(self, request: Request) -> Response:
        body = await _json_object(request)
        for name in ("rentix_per_minute", "rentix_bulk_per_minute"):
            value = _typed(body, name, int)
            if value is not None:
                if value < 0:
                    raise AdminError(f"{name} must not be negative")
                setattr(self.state.switches, name, value)
        return await self.rate_limits(request)

    # -- journal, faults, reset ------------------------------------------------------------------

    async def journal(self, request: Request) -> Response:
        portal = request.query_params.get("portal") or None
        since_text = request.query_params.get("since") or "0"
        if not since_text.isdigit():
            raise AdminError("since must be a non-negative integer")
        return JSONResponse({"requests": self.state.journal.entries(portal, int(since_text))})

    async def faults(self, request: Request) -> Response:
        return JSONResponse({"faults": self.state.faults.listing()})

    async def add_fault(self, request: Request) -> Response:
        fault = self.state.faults.add(await _json_object(request))
        return JSONResponse({"id": fault.id})

    async def clear_faults(self, request: Request) -> Response:
        self.state.faults.clear()
        return JSONResponse({"cleared": True})

    async def remove_fault(self, request: Request) -> Response:
        if not self.state.faults.remove(request.path_params["fault_id"]):
            raise AdminError("no such fault", 404)
        return JSONResponse({"removed": True})

    async def reset(self, request: Request) -> Response:
        self.sandbox.reset()
        return JSONResponse({"reset": True})
