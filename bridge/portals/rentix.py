"""Rentix: per-listing upserts keyed by `externalId`, with linking and bulk operations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from bridge.portals import rentix_mapping, rentix_readback, rentix_validation
from bridge.portals.base import OwnedClient
from bridge.portals.outcomes import Outcome, PortalError, Problem, Result, rejected
from bridge.portals.readback import FieldDifference, Pace, paced, unexpected_page
from bridge.portals.rentix_errors import classify, classify_item
from bridge.portals.transport import merge_headers, send

PAGE_SIZE = 100  # Rentix's maximum `limit`
BULK_MAX = 100


@dataclass
class RateLimitInfo:
    """The last `X-RateLimit-*` headers seen; None until a response carried them."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None  # unix seconds

    def update(self, headers: httpx.Headers) -> None:
        if "X-RateLimit-Limit" in headers:
            self.limit = _num(headers.get("X-RateLimit-Limit"), int)
            self.remaining = _num(headers.get("X-RateLimit-Remaining"), int)
            self.reset = _num(headers.get("X-RateLimit-Reset"), float)


def _num(value: str | None, kind: type) -> Any:
    try:
        return kind(value) if value is not None else None
    except ValueError:
        return None


class RentixAdapter:
    kind: Literal["rentix"] = "rentix"
    mode: Literal["per_listing"] = "per_listing"  # one listing per call, by external ID

    def __init__(self, name: str, base_url: str, api_key: str, *,
                 client: httpx.AsyncClient | None = None,
                 timeout: httpx.Timeout | float | None = None,
                 deletion_behaviour: rentix_mapping.DeletionBehaviour = "hidden") -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.deletion_behaviour = deletion_behaviour
        self.rate_limit = RateLimitInfo()  # the all-endpoints bucket
        self.bulk_rate_limit = RateLimitInfo()  # bulk answers describe the bulk bucket
        self._client = OwnedClient(client, timeout)

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- mapping and validation (no I/O) --

    def map_listing(self, canonical: dict[str, Any]) -> dict[str, Any]:
        return rentix_mapping.map_listing(canonical, self.name)

    def validate(self, payload: dict[str, Any]) -> list[Problem]:
        return rentix_validation.validate(payload)

    def deletion_payload(self, external_ref: str,
                         behaviour: rentix_mapping.DeletionBehaviour | None = None
                         ) -> dict[str, Any] | None:
        return rentix_mapping.deletion_payload(external_ref, behaviour or self.deletion_behaviour)

    # -- read-back comparison (no I/O) --

    def held_by_portal(self, payload: dict[str, Any], item: dict[str, Any] | None
                       ) -> list[FieldDifference]:
        """The fields of our payload (map_listing / deletion_payload output) that the read
        model `item` does not hold as sent; [] when Rentix holds our content. None: absent."""
        return rentix_readback.held_by_portal(payload, item)

    def portal_ref(self, item: dict[str, Any]) -> str | None:
        """The item's `externalId`; None when the listing is not linked."""
        return rentix_readback.portal_ref(item)

    def is_hidden(self, item: dict[str, Any]) -> bool:
        return rentix_readback.is_hidden(item)

    def portal_state(self, item: dict[str, Any]) -> str | None:
        """The item's status (`formData.announcementStatus`): active, pending_active, ..."""
        return rentix_readback.state(item)

    # -- raw call path: every method below goes through here --

    async def request(self, method: str, path: str, *, json: Any = None,
                      content: bytes | None = None, params: dict[str, Any] | None = None,
                      headers: dict[str, str | None] | None = None,
                      idempotency_key: str | None = None,
                      listing_ref: str | None = None, pace: Pace | None = None) -> Result:
        """One authenticated call, classified. `headers` override the defaults; None removes one.
        `pace` is awaited just before the request goes out (the caller's rate limiting)."""
        hdrs = {"Authorization": f"ApiKey {self.api_key}", "Accept": "application/json"}
        if idempotency_key:
            hdrs["Idempotency-Key"] = idempotency_key
        hdrs = merge_headers(hdrs, headers)
        await paced(pace)
        sent = await send(self._client.http, method, self.base_url + path, headers=hdrs,
                          json=json, content=content, params=params,
                          http_timeout=self._client.timeout)
        if sent.failure:
            sent.failure.listing_ref = listing_ref
            return sent.failure
        assert sent.response is not None
        bucket = self.bulk_rate_limit if path.startswith("/listings/bulk") else self.rate_limit
        bucket.update(sent.response.headers)
        return classify(sent.response, sent.latency_ms, listing_ref)

    # -- agency and jobs --

    async def get_agency(self) -> Result:
        """GET /agency: status, CRM switch and the monthly listing limit."""
        return await self.request("GET", "/agency")

    async def job_status(self, job_id: int) -> Result:
        """GET /job/status: the publish job behind a `pending_active` answer."""
        return await self.request("GET", "/job/status", params={"id": job_id})

    # -- listings --

    async def upsert(self, payload: dict[str, Any], idempotency_key: str | None = None,
                     *, check: bool = True) -> Result:
        """PUT /listings. `check=False` skips local validation (e.g. partial updates that
        rely on fields Rentix already holds to publish)."""
        ref = payload.get("externalId")
        if check and (problems := self.validate(payload)):
            return rejected(problems)
        return await self.request("PUT", "/listings", json=payload,
                                  idempotency_key=idempotency_key, listing_ref=ref)

    async def get_listing(self, listing_id: int) -> Result:
        return await self.request("GET", f"/listings/{int(listing_id)}")

    async def get_by_external_id(self, external_id: str, *, pace: Pace | None = None) -> Result:
        """GET /listings/external/:externalId: OK with the read model, or NOT_FOUND
        (`listing_not_found`) when no listing is linked to it."""
        return await self.request("GET", f"/listings/external/{quote(external_id, safe='')}",
                                  listing_ref=external_id, pace=pace)

    async def list_page(self, limit: int = PAGE_SIZE, offset: int = 0, *,
                        pace: Pace | None = None) -> Result:
        return await self.request("GET", "/listings", params={"limit": limit, "offset": offset},
                                  pace=pace)

    async def iter_listings(self, page_size: int = PAGE_SIZE, *, pace: Pace | None = None
                            ) -> AsyncIterator[dict[str, Any]]:
        """Every listing of the agency, page by page (`limit`/`offset`, ordered by id), `pace`
        awaited before each page. Raises PortalError with the classified Result if a page fails
        or answers something that is not a page (so a broken answer never reads as the end)."""
        offset = 0
        while True:
            result = await self.list_page(page_size, offset, pace=pace)
            if not result.ok:
                raise PortalError(result)
            items, total = _page(result)
            for item in items:
                yield item
            offset += len(items)
            # `total`, when given, decides; else a short page is the last one.
            if not items or (offset >= total if total is not None else len(items) < page_size):
                return

    async def link(self, listing_id: int, external_id: str,
                   idempotency_key: str | None = None) -> Result:
        return await self.request("POST", f"/listings/{int(listing_id)}/link",
                                  json={"externalId": external_id},
                                  idempotency_key=idempotency_key, listing_ref=external_id)

    async def unlink(self, listing_id: int, idempotency_key: str | None = None) -> Result:
        """CONFLICT with error_type `no_external_id` means it was not linked: nothing to do."""
        return await self.request("DELETE", f"/listings/{int(listing_id)}/link",
                                  idempotency_key=idempotency_key)

    async def bulk(self, operations: list[dict[str, Any]],
                   idempotency_key: str | None = None) -> Result:
        """POST /listings/bulk. A 200 may still hold failed items: see `body["results"]`."""
        if not 1 <= len(operations) <= BULK_MAX:
            raise ValueError(f"a bulk request takes 1 to {BULK_MAX} operations")
        return await self.request("POST", "/listings/bulk", json={"operations": operations},
                                  idempotency_key=idempotency_key)

    def bulk_items(self, result: Result, count: int) -> list[Result] | None:
        """Each operation's result of a bulk answer, in the order sent: for a 200 and for the
        all-failed 422 (both carry ``results``); None when the answer speaks for the whole
        request (not sent, refused, rate-limited, a server error)."""
        items = result.body.get("results") if isinstance(result.body, dict) else None
        if not isinstance(items, list) or not (result.ok or result.status == 422):
            return None
        by_index = {item.get("index"): item for item in items if isinstance(item, dict)}
        if len(by_index) != len(items):  # no usable indexes: the order is the index
            by_index = dict(enumerate(items))
        return [classify_item(by_index.get(i), result.latency_ms) for i in range(count)]

    async def delete(self, ref: str | int, idempotency_key: str | None = None) -> Result:
        """Hard delete by external ID (str) or internal id (int), via a one-item bulk."""
        op: dict[str, Any] = {"op": "delete"}
        op["id" if isinstance(ref, int) else "externalId"] = ref
        result = await self.bulk([op], idempotency_key)
        result.listing_ref = ref if isinstance(ref, str) else None
        return _single_item(result)


def _page(result: Result) -> tuple[list[dict[str, Any]], int | None]:
    """A `GET /listings` answer's items and total, or PortalError if it is not a page."""
    body = result.body
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise PortalError(unexpected_page(result, "a page of listings ({\"items\": [...]})"))
    total = body.get("total") if isinstance(body, dict) else None
    return items, total if isinstance(total, int) and not isinstance(total, bool) else None


def _single_item(result: Result) -> Result:
    """A one-item bulk that failed says why in its item: a 404 there is NOT_FOUND."""
    if result.status != 422 or result.error_type != "all_operations_failed":
        return result
    items = result.body.get("results") if isinstance(result.body, dict) else None
    error = (items[0] or {}).get("error") if isinstance(items, list) and items else None
    if isinstance(error, dict) and error.get("statusCode") == 404:
        result.outcome, result.error_type = Outcome.NOT_FOUND, "listing_not_found"
        result.message = str(error.get("message") or "Listing not found")
    return result
