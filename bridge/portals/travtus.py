"""Travtus: whole-group reconciliation through `POST /listing/sync/`."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

import httpx

from bridge.portals import travtus_mapping, travtus_readback, travtus_validation
from bridge.portals.base import OwnedClient
from bridge.portals.outcomes import Outcome, PortalError, Problem, Result, rejected
from bridge.portals.readback import FieldDifference, Pace, paced, unexpected_page
from bridge.portals.transport import merge_headers, send
from bridge.portals.travtus_errors import classify
from bridge.portals.travtus_token import TokenCache, TokenError

FIRST_AFTER_ID = "1"  # Travtus's documented default for `after-id`
LAST_PAGE = -1


class TravtusAdapter:
    kind: Literal["travtus"] = "travtus"
    mode: Literal["group_sync"] = "group_sync"  # the group's whole state in one call

    def __init__(self, name: str, base_url: str, token_url: str, client_id: str,
                 client_secret: str, *, client: httpx.AsyncClient | None = None,
                 timeout: httpx.Timeout | float | None = None) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._client = OwnedClient(client, timeout)
        self.tokens = TokenCache(self._client.http, token_url, client_id, client_secret,
                                 self._client.timeout)

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- mapping and validation (no I/O) --

    def map_listing(self, canonical: dict[str, Any]) -> dict[str, Any]:
        return travtus_mapping.map_listing(canonical, self.name)

    def include_in_sync(self, canonical: dict[str, Any]) -> bool:
        return travtus_mapping.include_in_sync(canonical)

    def map_group(self, canonicals: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The sync `listings` for a group: mapped, hidden ones left out."""
        return [self.map_listing(c) for c in canonicals if self.include_in_sync(c)]

    def validate(self, payload: dict[str, Any]) -> list[Problem]:
        return travtus_validation.validate(payload)

    # -- read-back comparison (no I/O) --

    def held_by_portal(self, payload: dict[str, Any], item: dict[str, Any] | None
                       ) -> list[FieldDifference]:
        """The fields of our sync listing (map_listing output) that the find view's `item`
        does not hold as sent; [] when Travtus holds our content. None: not found."""
        return travtus_readback.held_by_portal(payload, item)

    def portal_ref(self, item: dict[str, Any]) -> str | None:
        """The find item's `external_ref`."""
        return travtus_readback.portal_ref(item)

    # -- raw call path --

    async def request(self, method: str, path: str, *, json: Any = None,
                      headers: dict[str, str | None] | None = None,
                      idempotency_key: str | None = None,
                      authorize: bool = True, pace: Pace | None = None) -> Result:
        """One call with the shared bearer token; on `expired_token` the token is replaced and
        the call retried exactly once. `authorize=False` sends no token (tests). `pace` is
        awaited before each request to the API (the retry too; not the token endpoint, which
        Travtus limits apart)."""
        try:
            token = await self.tokens.get() if authorize else None
        except TokenError as exc:
            return exc.result
        await paced(pace)
        result = await self._once(method, path, json, headers, idempotency_key, token)
        if token and result.error_type == "expired_token":
            try:
                token = await self.tokens.replace(token)
            except TokenError as exc:
                return exc.result
            await paced(pace)
            result = await self._once(method, path, json, headers, idempotency_key, token)
        if token and result.error_type == "invalid_authorization":
            self.tokens.forget(token)  # e.g. rotated credentials: fetch anew next time
        return result

    async def _once(self, method: str, path: str, json: Any, headers: dict[str, str | None] | None,
                    idempotency_key: str | None, token: str | None) -> Result:
        hdrs = {"Accept": "application/json"}
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        if idempotency_key:
            hdrs["Idempotency-Key"] = idempotency_key
        hdrs = merge_headers(hdrs, headers)
        sent = await send(self._client.http, method, self.base_url + path, headers=hdrs,
                          json=json, http_timeout=self._client.timeout)
        if sent.failure:
            return sent.failure
        assert sent.response is not None
        return classify(sent.response, sent.latency_ms)

    # -- listings --

    async def sync(self, group_ref: str, listings: list[dict[str, Any]],
                   idempotency_key: str | None = None, *, check: bool = True) -> Result:
        """Make the group exactly `listings` (already mapped). One invalid listing fails the
        whole request at Travtus, so by default they are checked locally first."""
        if check and (problems := [p for item in listings for p in self.validate(item)]):
            return rejected(problems)
        body = {"group_external_ref": group_ref, "listings": listings}
        result = await self.request("POST", "/listing/sync/", json=body,
                                    idempotency_key=idempotency_key)
        return _attribute(result, listings)

    async def find_page(self, group_ref: str, after_id: str = FIRST_AFTER_ID, *,
                        external_ref: str | None = None, identifier: str | None = None,
                        pace: Pace | None = None) -> Result:
        body: dict[str, Any] = {"group_external_ref": group_ref, "after-id": after_id}
        if external_ref is not None:
            body["external_ref"] = external_ref
        if identifier is not None:
            body["identifier"] = identifier
        return await self.request("POST", "/listings/find/", json=body, pace=pace)

    async def find_all(self, group_ref: str, *, pace: Pace | None = None
                       ) -> list[dict[str, Any]]:
        """Every active listing of the group, following `last_id` to the last page, `pace`
        awaited before each request. Travtus's typed `not_found` is an empty group (or no
        more); anything else that is not a page raises PortalError with the classified Result."""
        found: list[dict[str, Any]] = []
        after = FIRST_AFTER_ID
        while True:
            result = await self.find_page(group_ref, after, pace=pace)
            # Travtus's typed answer for "nothing (more)"; an untyped 404 (wrong base URL,
            # gateway) must not pass for an empty group.
            if result.error_type == "not_found":
                return found
            if not result.ok:
                raise PortalError(result)
            listings, last = _page(result)
            found.extend(listings)
            if last == LAST_PAGE:
                return found
            if last <= int(after):  # a cursor that does not advance would loop for ever
                raise PortalError(unexpected_page(result, f"a last_id after {after}"))
            after = str(last)

    async def create_listing(self, group_id: str, listing: dict[str, Any],
                             idempotency_key: str | None = None) -> Result:
        """POST /listing/: single create/update, matched by `unit_id` within the group."""
        return await self.request("POST", "/listing/", json={**listing, "group_id": group_id},
                                  idempotency_key=idempotency_key)

    async def delete_listing(self, listing_id: str, inactive_date: str | None = None,
                             idempotency_key: str | None = None) -> Result:
        body = {"inactive_date": inactive_date} if inactive_date else None
        return await self.request("DELETE", f"/listings/{quote(str(listing_id), safe='')}/",
                                  json=body, idempotency_key=idempotency_key)


def _page(result: Result) -> tuple[list[dict[str, Any]], int]:
    """A find answer's listings and `last_id`, or PortalError if it is not a page: a broken
    answer must never read as the end of the group."""
    body = result.body
    listings = body.get("listings") if isinstance(body, dict) else None
    last = body.get("last_id") if isinstance(body, dict) else None
    if isinstance(last, str) and last.lstrip("-").isdigit():
        last = int(last)
    if (not isinstance(listings, list) or not all(isinstance(x, dict) for x in listings)
            or not isinstance(last, int) or isinstance(last, bool)):
        expected = 'a page of listings ({"listings": [...], "last_id": <int>})'
        raise PortalError(unexpected_page(result, expected))
    return listings, last


def _attribute(result: Result, listings: list[dict[str, Any]]) -> Result:
    """Travtus names the broken rule but not the listing: find the first listing that breaks
    that rule locally, for its ref and exact field."""
    if result.outcome is not Outcome.DATA_INVALID:
        return result
    for listing in listings:
        for problem in travtus_validation.validate(listing):
            if problem.error_type == result.error_type:
                result.listing_ref, result.field = problem.listing_ref, problem.field
                return result
    return result
