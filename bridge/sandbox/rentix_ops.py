"""Rentix operations (upsert, link, unlink, delete, validate, bulk) as pure state changes.

Each returns an `Answer`; the single-listing endpoints and bulk share them.
"""

from __future__ import annotations

from typing import Any

from . import rentix_rules as rules
from .rentix_store import PUBLIC_URL, Listing, RentixStore
from .wire import Answer, reason

MAX_BULK = 100
BULK_OPS = ("upsert", "link", "unlink", "delete", "validate")


def error(status: int, message: str | list[str]) -> Answer:
    return Answer(status, {"statusCode": status, "message": message, "error": reason(status)})


def not_found() -> Answer:
    return error(404, "Listing not found")


def _merge(current: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """A partial update keeps omitted fields; an explicit null clears one."""
    merged = dict(current)
    for name, value in payload.items():
        if name in ("externalId", "announcementStatus", "op", "id"):
            continue
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def _check(store: RentixStore,
           payload: dict[str, Any]) -> tuple[Listing | None, dict[str, Any], list[str]]:
    """(existing listing, merged fields, validation errors) for an upsert payload."""
    ext = payload.get("externalId")
    existing = store.get_external(ext) if isinstance(ext, str) else None
    merged = _merge(existing.form if existing else {}, payload)
    errors = rules.field_errors(payload, merged)
    target = payload.get("announcementStatus") or (existing.status if existing else "draft")
    if target in rules.PUBLIC:
        errors += [e for e in rules.publish_errors(merged) if e not in errors]
    return existing, merged, errors


def upsert(store: RentixStore, payload: Any, publish_delay_s: float) -> Answer:
    if not isinstance(payload, dict):
        return error(400, ["body must be an object"])
    existing, merged, errors = _check(store, payload)
    if errors:
        return error(400, errors)
    requested = payload.get("announcementStatus")
    if existing is None:
        listing = store.create(payload["externalId"], "draft", merged, synced=True)
    else:
        listing = existing
        store.set_form(listing, merged)
        store.touch(listing)
    job_id = None
    if requested == "active":
        job_id = store.queue_publish(listing, publish_delay_s).id
    elif requested is not None:
        listing.status = requested
        listing.job_id = None
    flag = "updated" if existing else "created"
    return Answer(200, {
        "id": listing.id, "externalId": listing.external_id, "status": listing.status,
        "publicUrl": PUBLIC_URL.format(id=listing.id), flag: True, "jobId": job_id,
    })


def validate(store: RentixStore, payload: Any) -> Answer:
    """Bulk `validate`: the upsert checks, saving nothing."""
    if not isinstance(payload, dict):
        return error(400, ["body must be an object"])
    existing, _, errors = _check(store, payload)
    if errors:
        return error(400, errors)
    return Answer(200, {"id": existing.id if existing else None,
                        "externalId": payload["externalId"], "valid": True})


def link(store: RentixStore, listing_id: int | None, payload: Any) -> Answer:
    ext = payload.get("externalId") if isinstance(payload, dict) else None
    errors = rules.external_id_errors(ext)
    if errors or not isinstance(ext, str):  # the rules refuse anything but a string
        return error(400, errors)
    listing = store.get(listing_id) if listing_id is not None else None
    if listing is None:
        return not_found()
    if listing.external_id is not None:
        return error(409, "Listing already has external ID")
    if ext in store.by_external:
        return error(409, "External ID already linked")
    store.link(listing, ext)
    return Answer(200, {"id": listing.id, "externalId": ext, "linked": True})


def unlink(store: RentixStore, listing_id: int | None) -> Answer:
    listing = store.get(listing_id) if listing_id is not None else None
    if listing is None:
        return not_found()
    if listing.external_id is None:
        return error(400, "Listing has no external ID")
    ext = listing.external_id
    store.unlink(listing)
    return Answer(200, {"id": listing.id, "externalId": ext, "unlinked": True})


def delete(store: RentixStore, op: dict[str, Any]) -> Answer:
    listing_id, ext = op.get("id"), op.get("externalId")
    if listing_id is None and ext is None:
        return error(400, ["id or externalId must be provided"])
    if listing_id is not None and not rules.is_int(listing_id):
        return error(400, ["id must be an integer number"])
    listing = store.get(listing_id) if listing_id is not None else store.get_external(str(ext))
    if listing is None:
        return not_found()
    store.delete(listing)
    return Answer(200, {"id": listing.id, "externalId": listing.external_id, "deleted": True})


def bulk(store: RentixStore, body: Any, publish_delay_s: float) -> Answer:
    ops = body.get("operations") if isinstance(body, dict) else None
    if not isinstance(ops, list):
        return error(400, ["operations must be an array"])
    if not ops:
        return error(400, ["operations must contain at least 1 elements"])
    if len(ops) > MAX_BULK:
        return error(400, [f"operations must contain no more than {MAX_BULK} elements"])
    results = [_bulk_item(store, i, op, publish_delay_s) for i, op in enumerate(ops)]
    succeeded = sum(1 for r in results if r["success"])
    summary = {"total": len(ops), "succeeded": succeeded, "failed": len(ops) - succeeded}
    if succeeded == 0:
        answer = error(422, "All operations failed")
        answer.body.update(summary=summary, results=results)
        return answer
    return Answer(200, {"summary": summary, "results": results})


def _bulk_item(store: RentixStore, index: int, op: Any, publish_delay_s: float) -> dict[str, Any]:
    kind = op.get("op") if isinstance(op, dict) else None
    item: dict[str, Any] = {
        "index": index, "op": kind, "success": False,
        "id": op.get("id") if isinstance(op, dict) else None,
        "externalId": op.get("externalId") if isinstance(op, dict) else None,
        "error": None,
    }
    answer = _run_op(store, kind, op, publish_delay_s)
    if answer.status >= 400:
        item["error"] = {"statusCode": answer.status, "message": answer.body["message"]}
        return item
    item["success"] = True
    item.update({k: v for k, v in answer.body.items() if k not in ("linked", "unlinked")})
    return item


def _run_op(store: RentixStore, kind: Any, op: Any, publish_delay_s: float) -> Answer:
    if kind not in BULK_OPS:
        return error(400, [f"op must be one of: {', '.join(BULK_OPS)}"])
    fields = {k: v for k, v in op.items() if k != "op"}
    listing_id = op.get("id")
    if kind in ("link", "unlink") and not rules.is_int(listing_id):
        return error(400, ["id must be an integer number"])
    if kind == "upsert":
        return upsert(store, fields, publish_delay_s)
    if kind == "validate":
        return validate(store, fields)
    if kind == "link":
        return link(store, listing_id, fields)
    if kind == "unlink":
        return unlink(store, listing_id)
    return delete(store, fields)
