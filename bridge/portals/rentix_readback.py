"""Does Rentix hold our payload? Our `PUT /listings` payload against its listing read model
(`GET /listings/external/:externalId`, or an item of `GET /listings`).

The read model (rentix-api.md, "Listing read model") carries every write field under
`formData` with the same name, the status as `formData.announcementStatus`, and the photos as
top-level `files[]` media objects (`id`, `externalId`, ...): those, not whatever `formData`
echoes of `files`, are what Rentix holds. A partial update keeps omitted fields
(portal-interpretations.md), so only the fields our payload carries are ours to compare.
"""

from __future__ import annotations

from typing import Any

from bridge.portals.readback import FieldDifference, is_empty, same

# Publishing is asynchronous: an `active` upsert reads `pending_active` until its job is done.
ACTIVE_STATES = frozenset({"active", "pending_active"})
STATUS = "announcementStatus"
FILES = "files"
# Not content: the upsert key (compared against the top-level `externalId`), and the bulk
# operation marker of a deletion payload.
KEY = "externalId"
OP = "op"


def portal_ref(item: dict[str, Any]) -> str | None:
    """The external ID a read-model item is linked to; None for a listing nobody linked."""
    ref = item.get(KEY)
    return ref if isinstance(ref, str) and ref else None


def state(item: dict[str, Any]) -> str | None:
    """The listing's status as Rentix reports it (`active`, `pending_active`, `hidden`, ...)."""
    form = item.get("formData")
    value = form.get(STATUS) if isinstance(form, dict) else None
    return value if isinstance(value, str) else None


def is_hidden(item: dict[str, Any]) -> bool:
    return state(item) == "hidden"


def held_by_portal(payload: dict[str, Any], item: dict[str, Any] | None
                   ) -> list[FieldDifference]:
    """The fields of `payload` that `item` does not hold as sent; [] when it holds them all.
    `item` None means Rentix has no listing for the ref: a difference on `externalId`, unless
    the payload is a hard delete (`{"op": "delete", ...}`), which absence satisfies."""
    if payload.get(OP) == "delete":
        return [] if item is None else [FieldDifference(OP, "delete", state(item))]
    if item is None:
        return [FieldDifference(KEY, payload.get(KEY), None)]
    form = item.get("formData")
    form = form if isinstance(form, dict) else {}
    differences: list[FieldDifference] = []
    for field, ours in payload.items():
        if field == OP:
            continue
        theirs, held = _compare(field, ours, item, form)
        if not held:
            differences.append(FieldDifference(field, ours, theirs))
    return differences


def _compare(field: str, ours: Any, item: dict[str, Any], form: dict[str, Any]
             ) -> tuple[Any, bool]:
    if field == KEY:
        return item.get(KEY), same(ours, item.get(KEY))
    if field == STATUS:
        theirs = state(item)
        return theirs, _same_status(ours, theirs)
    if field == FILES:
        files = item.get(FILES)
        return files, _same_files(ours, files)
    theirs = form.get(field)
    if field == "announcementDescription" and isinstance(theirs, dict):
        # Rentix translates descriptions: a per-language object holds ours if one of its
        # texts is ours.
        return theirs, any(same(ours, text) for text in theirs.values())
    return theirs, same(ours, theirs)


def _same_status(ours: Any, theirs: str | None) -> bool:
    if ours == "active":
        return theirs in ACTIVE_STATES
    return same(ours, theirs)


def _same_files(ours: Any, theirs: Any) -> bool:
    """Our `files[{url, externalFileId} | {id} | {externalFileId}]` against the media objects,
    in order (the first photo is the cover): `files` replaces the photo set."""
    if is_empty(ours) or is_empty(theirs):
        return is_empty(ours) and is_empty(theirs)
    if not isinstance(ours, list) or not isinstance(theirs, list) or len(ours) != len(theirs):
        return False
    return all(_same_file(o, t) for o, t in zip(ours, theirs, strict=True))


def _same_file(ours: Any, theirs: Any) -> bool:
    if not isinstance(ours, dict) or not isinstance(theirs, dict):
        return False
    if ours.get("externalFileId") is not None:
        return same(ours["externalFileId"], theirs.get("externalId"))
    if ours.get("id") is not None:
        return same(ours["id"], theirs.get("id"))
    if ours.get("url") is not None and theirs.get("originalUrl") is not None:
        return same(ours["url"], theirs["originalUrl"])
    return True  # a bare URL Rentix does not echo: only the count can be checked
