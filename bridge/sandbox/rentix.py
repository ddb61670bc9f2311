"""The Rentix CRM API (`/rentix/api/v1`): auth, rate limits, body checks and routing."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

from . import rentix_ops as ops
from .portal import Exchange, PortalApp, is_write
from .rentix_store import AGENCY, MONTHLY_LIMIT, RentixStore, job_view, read_model
from .state import State
from .wire import Answer, BodyTooLarge, media_type, parse_json, read_body, reason

MAX_BODY = 512 * 1024
LIST_DEFAULT, LIST_MAX = 20, 100
BULK_PATH = "/listings/bulk"

ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"/agency/?"), "agency"),
    ("PUT", re.compile(r"/listings/?"), "upsert"),
    ("GET", re.compile(r"/listings/?"), "list"),
    ("POST", re.compile(r"/listings/bulk/?"), "bulk"),
    ("GET", re.compile(r"/listings/external/(?P<ext>.+)"), "get_external"),
    ("GET", re.compile(r"/listings/(?P<id>[^/]+)/?"), "get"),
    ("POST", re.compile(r"/listings/(?P<id>[^/]+)/link/?"), "link"),
    ("DELETE", re.compile(r"/listings/(?P<id>[^/]+)/link/?"), "unlink"),
    ("GET", re.compile(r"/job/status/?"), "job"),
]


def _int_or_none(text: str) -> int | None:
    return int(text) if text.isdigit() else None


class RentixApp(PortalApp):
    name = "rentix"

    def error_answer(self, status: int, kind: str) -> Answer:
        if kind == "idempotency_mismatch":
            return ops.error(422, "Idempotency-Key reused with a different request body")
        if kind == "idempotency_in_flight":
            return ops.error(409, "A request with this Idempotency-Key is still being processed")
        return ops.error(status, reason(status))

    async def dispatch(self, ex: Exchange) -> Answer:
        key, refusal = self._authenticate(ex)
        if refusal is not None:
            return refusal
        assert key is not None
        limited = self._rate_limit(ex, key)
        if limited is not None:
            return limited
        route = self._route(ex)
        if route is None:
            return ops.error(404, f"Cannot {ex.method} {ex.path}")
        name, params = route
        if is_write(ex.method):
            refusal = await self._read_json(ex)
            if refusal is not None:
                return refusal
        ex.state.rentix.settle()
        operation = getattr(self, f"_op_{name}")(ex, params)
        return await self.perform(ex, key, operation, write=is_write(ex.method))

    # -- checks, in the documented order ---------------------------------------------------------

    def _authenticate(self, ex: Exchange) -> tuple[str | None, Answer | None]:
        headers = ex.request.headers
        authorization = headers.get("authorization", "")
        scheme, _, from_auth = authorization.partition(" ")
        has_auth = scheme.lower() == "apikey"
        from_header = headers.get("x-api-key")
        if has_auth and from_header is not None:
            return None, ops.error(400, "Multiple authentication methods provided")
        key = (from_auth.strip() if has_auth else from_header or "").strip()
        switches = ex.state.switches
        if not key:
            return None, ops.error(401, "API key is required")
        if key != switches.rentix_api_key:
            return None, ops.error(401, "Invalid API key")
        if switches.agency_suspended:
            return None, ops.error(403, "Agency is suspended")
        if not switches.crm_enabled:
            return None, ops.error(403, "CRM is not enabled for this agency")
        return key, None

    def _rate_limit(self, ex: Exchange, key: str) -> Answer | None:
        switches = ex.state.switches
        buckets = [(f"all:{key}", switches.rentix_per_minute)]
        if ex.path.rstrip("/") == BULK_PATH:
            buckets.append((f"bulk:{key}", switches.rentix_bulk_per_minute))
        decision = ex.state.limiter.acquire(buckets)
        ex.headers.update(decision.headers())
        return None if decision.allowed else ops.error(429, "Too Many Requests")

    def _route(self, ex: Exchange) -> tuple[str, dict[str, str]] | None:
        for method, pattern, name in ROUTES:
            match = pattern.fullmatch(ex.path)
            if match and method == ex.method:
                return name, match.groupdict()
        return None

    async def _read_json(self, ex: Exchange) -> Answer | None:
        if ex.method != "DELETE" and media_type(ex.request) != "application/json":
            return ops.error(415, "Unsupported Media Type")
        try:
            ex.raw = await read_body(ex.request, MAX_BODY)
        except BodyTooLarge:
            return ops.error(413, "Payload Too Large")
        if ex.method == "DELETE" and not ex.raw:
            return None  # unlink carries no body
        ok, ex.parsed = parse_json(ex.raw)
        return None if ok else ops.error(400, "Invalid JSON body")

    # -- operations: each returns the state change to run under the lock ----------------------

    def _op_agency(self, ex: Exchange, _: dict[str, str]) -> Callable[[State], Answer]:
        def run(state: State) -> Answer:
            limits = {"monthlyListings": {"used": state.rentix.created_count,
                                          "limit": MONTHLY_LIMIT}}
            return Answer(200, {**AGENCY, "limits": limits})
        return run

    def _op_upsert(self, ex: Exchange, _: dict[str, str]) -> Callable[[State], Answer]:
        delay = self.sandbox.settings.publish_delay_s
        return lambda state: ops.upsert(state.rentix, ex.parsed, delay)

    def _op_bulk(self, ex: Exchange, _: dict[str, str]) -> Callable[[State], Answer]:
        delay = self.sandbox.settings.publish_delay_s
        return lambda state: ops.bulk(state.rentix, ex.parsed, delay)

    def _op_link(self, ex: Exchange, params: dict[str, str]) -> Callable[[State], Answer]:
        listing_id = _int_or_none(params["id"])
        return lambda state: ops.link(state.rentix, listing_id, ex.parsed)

    def _op_unlink(self, ex: Exchange, params: dict[str, str]) -> Callable[[State], Answer]:
        listing_id = _int_or_none(params["id"])
        return lambda state: ops.unlink(state.rentix, listing_id)

    def _op_get(self, ex: Exchange, params: dict[str, str]) -> Callable[[State], Answer]:
        listing_id = _int_or_none(params["id"])
        return lambda state: _one(state.rentix.get(listing_id) if listing_id else None)

    def _op_get_external(self, ex: Exchange, params: dict[str, str]) -> Callable[[State], Answer]:
        return lambda state: _one(state.rentix.get_external(params["ext"]))

    def _op_list(self, ex: Exchange, _: dict[str, str]) -> Callable[[State], Answer]:
        query = ex.request.query_params
        limit, offset, errors = _paging(query.get("limit"), query.get("offset"))
        if errors:
            return lambda state: ops.error(400, errors)
        return lambda state: _page(state.rentix, limit, offset)

    def _op_job(self, ex: Exchange, _: dict[str, str]) -> Callable[[State], Answer]:
        job_id = _int_or_none(ex.request.query_params.get("id", ""))
        if job_id is None:
            return lambda state: ops.error(400, ["id must be an integer number"])

        def run(state: State) -> Answer:
            job = state.rentix.jobs.get(job_id)
            if job is None:
                return ops.error(404, "Job not found")
            return Answer(200, job_view(state.rentix, job))
        return run


def _one(listing: Any) -> Answer:
    return ops.not_found() if listing is None else Answer(200, read_model(listing))


def _paging(limit: str | None, offset: str | None) -> tuple[int, int, list[str]]:
    errors: list[str] = []
    size, start = LIST_DEFAULT, 0
    if limit is not None:
        if not limit.lstrip("-").isdigit():
            errors.append("limit must be an integer number")
        elif int(limit) > LIST_MAX:
            errors.append(f"limit must not be greater than {LIST_MAX}")
        elif int(limit) < 1:
            errors.append("limit must not be less than 1")
        else:
            size = int(limit)
    if offset is not None:
        if not offset.lstrip("-").isdigit():
            errors.append("offset must be an integer number")
        elif int(offset) < 0:
            errors.append("offset must not be less than 0")
        else:
            start = int(offset)
    return size, start, errors


def _page(store: RentixStore, limit: int, offset: int) -> Answer:
    # Ids only grow and dicts keep insertion order, so the dict is already ordered by id.
    listings = itertools.islice(store.listings.values(), offset, offset + limit)
    return Answer(200, {"items": [read_model(x) for x in listings], "total": len(store.listings)})
