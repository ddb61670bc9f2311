"""Rentix data: listings indexed by id and externalId, media, and publish jobs."""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from .wire import now_iso

AGENCY = {"id": 1, "name": "Sandbox Agency", "status": "active", "isCrmEnabled": True}
MONTHLY_LIMIT = 1000
PUBLIC_URL = "https://rentix.md/announcement/{id}"


@dataclass
class Media:
    id: int
    external_id: str | None
    url: str | None

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id, "externalId": self.external_id, "contentType": "image/jpeg",
            "size": "204800", "optimization": "success", "originalUrl": self.url,
        }


@dataclass
class Listing:
    id: int
    external_id: str | None
    status: str
    form: dict[str, Any]  # write fields as merged, without externalId/announcementStatus
    media: list[Media]
    created_at: str
    updated_at: str
    last_synced_at: str | None
    job_id: int | None = None  # the publish job this listing waits for


@dataclass
class Job:
    id: int
    listing_id: int
    due: float  # monotonic
    created_at: str
    status: str = "pending"
    result: dict[str, Any] | None = None


@dataclass
class RentixStore:
    listings: dict[int, Listing] = field(default_factory=dict)
    by_external: dict[str, int] = field(default_factory=dict)
    jobs: dict[int, Job] = field(default_factory=dict)
    media_by_external: dict[str, Media] = field(default_factory=dict)
    created_count: int = 0
    _queue: list[tuple[float, int]] = field(default_factory=list)
    _listing_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _job_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _media_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- lookups ---------------------------------------------------------------------------------

    def get(self, listing_id: int) -> Listing | None:
        return self.listings.get(listing_id)

    def get_external(self, external_id: str) -> Listing | None:
        found = self.by_external.get(external_id)
        return None if found is None else self.listings.get(found)

    # -- changes ---------------------------------------------------------------------------------

    def create(self, external_id: str | None, status: str, form: dict[str, Any],
               synced: bool) -> Listing:
        stamp = now_iso()
        listing = Listing(
            id=next(self._listing_ids), external_id=external_id, status=status, form={},
            media=[], created_at=stamp, updated_at=stamp,
            last_synced_at=stamp if synced else None,
        )
        self.set_form(listing, form)
        self.listings[listing.id] = listing
        if external_id is not None:
            self.by_external[external_id] = listing.id
        self.created_count += 1
        return listing

    def set_form(self, listing: Listing, form: dict[str, Any]) -> None:
        listing.form = form
        listing.media = [self._media_for(item) for item in form.get("files") or []]

    def touch(self, listing: Listing) -> None:
        listing.updated_at = listing.last_synced_at = now_iso()

    def link(self, listing: Listing, external_id: str) -> None:
        listing.external_id = external_id
        self.by_external[external_id] = listing.id

    def unlink(self, listing: Listing) -> None:
        if listing.external_id is not None:
            self.by_external.pop(listing.external_id, None)
        listing.external_id = None

    def delete(self, listing: Listing) -> None:
        self.unlink(listing)
        self.listings.pop(listing.id, None)

    # -- publishing ------------------------------------------------------------------------------

    def queue_publish(self, listing: Listing, delay_s: float) -> Job:
        job = Job(next(self._job_ids), listing.id, time.monotonic() + delay_s, now_iso())
        self.jobs[job.id] = job
        heapq.heappush(self._queue, (job.due, job.id))
        listing.status = "pending_active"
        listing.job_id = job.id
        return job

    def settle(self) -> None:
        """Finish every publish job whose time has come (jobs run lazily, on the next request)."""
        now = time.monotonic()
        while self._queue and self._queue[0][0] <= now:
            _, job_id = heapq.heappop(self._queue)
            self._finish(self.jobs[job_id])

    def queue_position(self, job: Job) -> int:
        return sum(1 for due, _ in self._queue if due < job.due)

    def _finish(self, job: Job) -> None:
        job.status = "completed"
        listing = self.listings.get(job.listing_id)
        # A later write (hidden, another publish, a delete) supersedes this job's effect.
        if listing is not None and listing.job_id == job.id:
            listing.status = "active"
            listing.job_id = None
        job.result = {
            "announcementId": job.listing_id, "status": "active",
            "publicUrl": PUBLIC_URL.format(id=job.listing_id),
        }

    def _media_for(self, item: dict[str, Any]) -> Media:
        if isinstance(item.get("id"), int):
            return Media(item["id"], item.get("externalFileId"), item.get("url"))
        ext = item.get("externalFileId")
        if isinstance(ext, str) and ext in self.media_by_external:
            return self.media_by_external[ext]  # the reference's dedup by externalFileId
        media = Media(next(self._media_ids), ext if isinstance(ext, str) else None, item.get("url"))
        if media.external_id is not None:
            self.media_by_external[media.external_id] = media
        return media


def read_model(listing: Listing) -> dict[str, Any]:
    """The shape of GET /listings/:id."""
    form = dict(listing.form)
    form["id"] = listing.id
    form["announcementStatus"] = listing.status
    return {
        "id": listing.id,
        "externalId": listing.external_id,
        "publicUrl": PUBLIC_URL.format(id=listing.id),
        "createdAt": listing.created_at,
        "updatedAt": listing.updated_at,
        "lastSyncedAt": listing.last_synced_at,
        "formData": form,
        "user": _user(form.get("userId")),
        "files": [m.describe() for m in listing.media],
    }


def _user(user_id: Any) -> dict[str, Any]:
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        return {"id": user_id, "externalId": None, "name": f"Agent {user_id}",
                "phone": "+37360000000", "role": "agent"}
    return {"id": 1, "externalId": None, "name": "Sandbox Agency", "phone": "+37322000000",
            "role": "admin"}


def job_view(store: RentixStore, job: Job) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": job.id, "type": "announcement_finalize", "status": job.status,
        "queuePosition": store.queue_position(job) if job.status == "pending" else 0,
        "createdAt": job.created_at,
    }
    if job.result is not None:
        view["resultData"] = job.result
    return view
