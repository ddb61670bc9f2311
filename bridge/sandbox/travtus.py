"""The Travtus API (`/travtus`): token, listing sync, find, single create and delete."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

from .portal import Exchange, PortalApp
from .state import State
from .tokens import TokenState
from .travtus_rules import (
    MESSAGES,
    SYNC_STATUS,
    find_view,
    full_view,
    is_date,
    single_listing_error,
    sync_listing_error,
)
from .travtus_store import Group, Listing, TravtusStore
from .wire import Answer, BodyTooLarge, parse_json, read_body, reason

# Undocumented for Travtus; generous, since one sync carries a whole group.
MAX_BODY = 32 * 1024 * 1024
MAX_TOKEN_BODY = 64 * 1024
PAGE = 100
WRITES = ("sync", "create", "delete")

ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"/oauth2/token/?"), "token"),
    ("POST", re.compile(r"/listing/sync/?"), "sync"),
    ("POST", re.compile(r"/listings/find/?"), "find"),
    ("POST", re.compile(r"/listing/?"), "create"),
    ("DELETE", re.compile(r"/listings/(?P<id>[^/]+)/?"), "delete"),
]


def error(status: int, kind: str, message: str | None = None) -> Answer:
    return Answer(status, {"error": {"type": kind, "message": message or MESSAGES.get(kind, kind)}})


def today() -> date:
    return datetime.now(UTC).date()


def _fault_type(status: int) -> str:
    if status == 429:
        return "rate_limited"
    return re.sub(r"[^a-z0-9]+", "_", reason(status).lower()).strip("_")


def _group_refs(body: dict[str, Any]) -> tuple[str | None, str | None]:
    """(group_id, group_external_ref), blanks read as absent and numbers as strings."""
    def clean(value: Any) -> str | None:
        if value is None or isinstance(value, bool):
            return None
        text = str(value).strip()
        return text or None
    return clean(body.get("group_id")), clean(body.get("group_external_ref"))


class TravtusApp(PortalApp):
    name = "travtus"

    def error_answer(self, status: int, kind: str) -> Answer:
        if kind == "idempotency_mismatch":
            return error(422, "idempotency_key_reused")
        if kind == "idempotency_in_flight":
            return error(409, "idempotency_key_in_use")
        return error(status, _fault_type(status), reason(status))

    async def dispatch(self, ex: Exchange) -> Answer:
        route = self._route(ex)
        if route is None:
            return error(404, "not_found", f"No route for {ex.method} {ex.path}")
        name, params = route
        if name == "token":
            return await self._token(ex)
        client_id, refusal = self._authenticate(ex)
        if refusal is not None:
            return refusal
        refusal = await self._read_json(ex)
        if refusal is not None:
            return refusal
        operation = getattr(self, f"_op_{name}")(ex, params)
        return await self.perform(ex, client_id or "", operation, write=name in WRITES)

    def _route(self, ex: Exchange) -> tuple[str, dict[str, str]] | None:
        for method, pattern, name in ROUTES:
            match = pattern.fullmatch(ex.path)
            if match and method == ex.method:
                return name, {k: unquote(v) for k, v in match.groupdict().items()}
        return None

    def _authenticate(self, ex: Exchange) -> tuple[str | None, Answer | None]:
        scheme, _, token = ex.request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, error(400, "missing_authorization")
        state, client_id = ex.state.tokens.check(token.strip())
        if state is TokenState.UNKNOWN:
            return None, error(401, "invalid_authorization")
        if state is TokenState.EXPIRED:
            return None, error(401, "expired_token")
        return client_id, None

    async def _read_json(self, ex: Exchange) -> Answer | None:
        try:
            ex.raw = await read_body(ex.request, MAX_BODY)
        except BodyTooLarge:
            return error(413, "payload_too_large", "The request body is too large.")
        if not ex.raw.strip():
            ex.parsed = {}  # a bodiless DELETE, or an empty request read as no fields
            return None
        ok, ex.parsed = parse_json(ex.raw)
        if not ok or not isinstance(ex.parsed, dict):
            return error(400, "invalid_request", "The request body must be a JSON object.")
        return None

    # -- token -----------------------------------------------------------------------------------

    async def _token(self, ex: Exchange) -> Answer:
        try:
            ex.raw = await read_body(ex.request, MAX_TOKEN_BODY)
        except BodyTooLarge:
            return error(413, "payload_too_large", "The request body is too large.")
        form = {k: v[-1] for k, v in parse_qs(ex.raw.decode("utf-8", "replace")).items()}
        basic_id, basic_secret = self._basic_credentials(ex)
        client_id = form.get("client_id") or basic_id
        secret = form.get("client_secret") or basic_secret
        ttl = self.sandbox.settings.token_ttl

        def run(state: State) -> Answer:
            if form.get("grant_type") != "client_credentials" or not client_id or not secret:
                return error(400, "invalid_request", "grant_type=client_credentials, client_id "
                             "and client_secret are required (form-encoded).")
            switches = state.switches
            if (client_id, secret) != (switches.travtus_client_id,
                                       switches.travtus_client_secret):
                return error(401, "invalid_client")
            token = state.tokens.issue(client_id, ttl)
            return Answer(200, {"access_token": token, "token_type": "Bearer",
                                "expires_in": ttl})
        return await self.perform(ex, client_id or "", run, write=False)

    @staticmethod
    def _basic_credentials(ex: Exchange) -> tuple[str | None, str | None]:
        """OAuth2 also allows the client credentials in HTTP Basic auth."""
        scheme, _, encoded = ex.request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None, None
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return None, None
        return unquote(user), unquote(password)

    # -- operations ------------------------------------------------------------------------------

    def _op_sync(self, ex: Exchange, _: dict[str, str]) -> Callable[[State], Answer]:
        return lambda state: sync(state.travtus, ex.parsed)

    def _op_find(self, ex: Exchange, _: dict[str, str]) -> Callable[[State], Answer]:
        return lambda state: find(state.travtus, ex.parsed)

    def _op_create(self, ex: Exchange, _: dict[str, str]) -> Callable[[State], Answer]:
        return lambda state: create(state.travtus, ex.parsed)

    def _op_delete(self, ex: Exchange, params: dict[str, str]) -> Callable[[State], Answer]:
        return lambda state: delete(state.travtus, params["id"], ex.parsed)


def _accessible(store: TravtusStore, body: dict[str, Any],
                missing: str) -> tuple[Group | None, Answer | None]:
    """The named group, or the refusal: both / neither identifier, or no access."""
    group_id, group_ref = _group_refs(body)
    if group_id and group_ref:
        return None, error(400, "both_group_identifiers_provided")
    if not group_id and not group_ref:
        return None, error(400, missing)
    group = store.group(group_id, group_ref)
    unknown_id = group_id is not None and group is None
    if unknown_id or (group_ref in store.denied) or (group and store.is_denied(group)):
        return None, error(401, "no_access_to_group")
    return group, None


def sync(store: TravtusStore, body: dict[str, Any]) -> Answer:
    store.purge(today())
    group, refusal = _accessible(store, body, "no_group_provided")
    if refusal is not None:
        return refusal
    listings = body.get("listings") or []
    if not isinstance(listings, list) or not all(isinstance(x, dict) for x in listings):
        return error(400, "invalid_request", "listings must be an array of objects.")
    for listing in listings:  # validate all first: one bad listing changes nothing
        kind = sync_listing_error(listing)
        if kind is not None:
            return error(SYNC_STATUS[kind], kind)
    if group is None:  # an unknown group_external_ref creates the group
        group = store.add_group(external_ref=_group_refs(body)[1])
    kept: set[str] = set()
    for fields in listings:
        ref = fields["external_reference"]
        listing = store.put(group, ref, dict(fields), store.by_ref(group, ref))
        kept.add(listing.identifier)
    for identifier in [i for i in group.members if i not in kept]:
        store.delete(identifier)
    return Answer(200, {"success": True})


def _is_live(listing: Listing, on: date) -> bool:
    start = listing.fields.get("active_date")
    return not is_date(start) or date.fromisoformat(start) <= on


def find(store: TravtusStore, body: dict[str, Any]) -> Answer:
    on = today()
    store.purge(on)
    group, refusal = _accessible(store, body, "no_group_identifier_provided")
    if refusal is not None:
        return refusal
    after_text = str(body.get("after-id", body.get("after_id", "1"))).strip()
    if not after_text.lstrip("-").isdigit():
        return error(400, "invalid_request", "after-id must be a listing identifier.")
    after = int(after_text)
    want_ref, want_id = body.get("external_ref"), body.get("identifier")
    matches = [
        x for x in (store.group_listings(group) if group else [])
        if int(x.identifier) > after and _is_live(x, on)
        and (want_ref is None or x.external_reference == want_ref)
        and (want_id is None or x.identifier == str(want_id))
    ]
    if not matches:
        return error(404, "not_found")
    page = matches[:PAGE]
    last_id = int(page[-1].identifier) if len(matches) > PAGE else -1
    return Answer(200, {"last_id": last_id, "listings": [find_view(x) for x in page]})


def create(store: TravtusStore, body: dict[str, Any]) -> Answer:
    store.purge(today())
    group_id, _ = _group_refs(body)
    if group_id is None:
        return error(400, "no_group_provided", "group_id is required.")
    group = store.group(group_id, None)
    if group is None or store.is_denied(group):
        return error(401, "no_access_to_group")
    kind = single_listing_error(body)
    if kind is not None:
        return error(400, kind)
    fields = {k: v for k, v in body.items() if k != "group_id"}
    unit_id = fields.get("unit_id")
    existing = next((x for x in store.group_listings(group)
                     if unit_id is not None and x.unit_id == str(unit_id)), None)
    ref = existing.external_reference if existing else None
    listing = store.put(group, ref, fields, existing)
    return Answer(200, {"success": True, "listing": full_view(listing)})


def delete(store: TravtusStore, identifier: str, body: dict[str, Any]) -> Answer:
    on = today()
    store.purge(on)
    listing = store.listings.get(identifier)
    group = store.groups.get(listing.group_id) if listing else None
    if listing is None or (group is not None and store.is_denied(group)):
        return error(401, "not_authorized")
    when = body.get("inactive_date", body.get("inactive-date"))
    if when is not None and not is_date(when):
        return error(401, "date_format_invalid")
    if when is not None and date.fromisoformat(when) > on:
        store.schedule(listing, date.fromisoformat(when))
    else:
        store.delete(identifier)
    return Answer(200, {"success": True, "listing_id": identifier})
