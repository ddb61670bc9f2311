"""CRM events (contract section 2): parsing and validation with field-level errors.

Two decoders, one answer. msgspec Structs decode the events CRMs send (canonical listings) and
their listings are stored as msgspec writes them back; whatever they refuse, the pydantic models
decide, as before: the lax inputs they accept (stored as ``model_dump_json`` writes them) and
every 400's field errors, word for word. Each Struct accepts a subset of its model and keeps
the same values (tests/ingest/test_event_decoders.py holds them to it), so which one decoded an
event changes nothing stored.

Why pydantic left the hot path: validating a typical event (one listing, ~1 KB) took ~10 µs and
writing the listing back as JSON ~7 µs more; msgspec decodes and re-encodes it in ~3 µs, ~6 µs
with the checks that keep it within the models (kept_as_is, occurred_at, unique refs). What that
and the rest did to the benchmark (tests/bench/webhook.py): bridge/ingest/webhook.py.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
from msgspec import Meta
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic_core import ErrorDetails

from bridge.ingest.listing import (
    NON_FINITE,
    Listing,
    ListingRef,
    ListingRefStruct,
    ListingStruct,
    kept_as_is,
)

Group = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^\S(.*\S)?$")]


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore")
    occurred_at: dt.datetime
    group: Group

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError("occurred_at needs a timezone, e.g. 2026-11-22T10:15:00Z")
        return value

    @property
    def occurred_ms(self) -> int:
        return int(self.occurred_at.timestamp() * 1000)


class UpsertEvent(_Event):
    type: Literal["listing.created", "listing.updated"]
    listing: Listing


class DeleteEvent(_Event):
    type: Literal["listing.deleted"]
    listing: ListingRef


class SnapshotEvent(_Event):
    type: Literal["group.snapshot"]
    listings: list[Listing]

    @field_validator("listings")
    @classmethod
    def _unique_refs(cls, listings: list[Listing]) -> list[Listing]:
        seen: set[str] = set()
        for listing in listings:
            if listing.external_ref in seen:
                raise ValueError(f"external_ref {listing.external_ref!r} appears twice")
            seen.add(listing.external_ref)
        return listings


Event = Annotated[UpsertEvent | DeleteEvent | SnapshotEvent, Field(discriminator="type")]
_EVENT = TypeAdapter(Event)
EVENT_TYPES = ("listing.created", "listing.updated", "listing.deleted", "group.snapshot")


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class InvalidEvent(Exception):
    def __init__(self, errors: list[FieldError], not_json: bool = False) -> None:
        self.errors = errors
        self.not_json = not_json
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))


def _field(loc: tuple[int | str, ...]) -> str:
    # The discriminator's tag (e.g. "listing.updated") is not a field the sender wrote.
    parts = [p for p in loc if p not in EVENT_TYPES]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(body)"


def _where(error: ErrorDetails) -> str:
    if str(error["type"]).startswith("union_tag"):
        return "type"
    if error["type"] == "model_attributes_type" and not error["loc"]:
        return "(body)"
    # A number deep inside ``extra`` carries its path below the field that was validated.
    below: tuple[int | str, ...] = error.get("ctx", {}).get("extra_path", ())
    return _field(error["loc"] + below)


def _message(error: ErrorDetails) -> str:
    if error["type"] == "union_tag_invalid":
        return f"type must be one of: {', '.join(EVENT_TYPES)}"
    if error["type"] == "union_tag_not_found":
        return f"type is required, one of: {', '.join(EVENT_TYPES)}"
    if error["type"] == NON_FINITE:
        return ("Input should be a finite number (NaN, Infinity and numbers beyond ±1.7e308, "
                "such as 1e400, are not)")
    message = str(error["msg"]).removeprefix("Value error, ")
    return message


# What is stored of one listing: its external_ref, its version (-1: none) and its canonical
# JSON (empty for a deletion).
StoredListing = tuple[str, int, bytes]


class ValidEvent(msgspec.Struct, frozen=True, gc=False):
    """A valid event, reduced to what the inbox keeps of it (bridge.ingest.store.entry)."""

    type: str  # one of EVENT_TYPES
    group: str
    occurred_ms: int
    listings: list[StoredListing]


def parse_event(body: bytes) -> ValidEvent:
    """Parse and validate one event; raise InvalidEvent naming each bad field."""
    event = fast_event(body)
    return model_event(body) if event is None else event


# The hot path: msgspec ----------------------------------------------------------------------

# RFC 3339 with at most microseconds (pydantic truncates further digits; msgspec would round),
# read by datetime.fromisoformat, which pydantic agrees with on these.
_HH, _MM = "(?:[01][0-9]|2[0-3])", "[0-5][0-9]"
_OCCURRED = re.compile(rf"[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}T{_HH}:{_MM}:{_MM}(?:\.[0-9]{{1,6}})?"
                       rf"(?:Z|[+-]{_HH}:{_MM})")


class _Fast(msgspec.Struct, tag_field="type", gc=False):
    occurred_at: str
    # And Group's pattern, ^\S(.*\S)?$: no whitespace at either end, no line break.
    group: Annotated[str, Meta(min_length=1, max_length=255)]


class _Created(_Fast, tag="listing.created"):
    listing: ListingStruct


class _Updated(_Fast, tag="listing.updated"):
    listing: ListingStruct


class _Deleted(_Fast, tag="listing.deleted"):
    listing: ListingRefStruct


class _Snapshot(_Fast, tag="group.snapshot"):
    listings: list[ListingStruct]


_FAST = msgspec.json.Decoder(_Created | _Updated | _Deleted | _Snapshot)
_ENCODE = msgspec.json.Encoder().encode
_TYPE: dict[type[_Fast], str] = {
    _Created: "listing.created", _Updated: "listing.updated", _Deleted: "listing.deleted",
    _Snapshot: "group.snapshot",
}


def fast_event(body: bytes) -> ValidEvent | None:
    """The event if msgspec's Structs take it as it is, else None (the models decide)."""
    try:
        event = _FAST.decode(body)
    except msgspec.MsgspecError:
        return None
    group = event.group
    if group.strip() is not group or "\n" in group or not _OCCURRED.fullmatch(event.occurred_at):
        return None
    try:
        occurred = dt.datetime.fromisoformat(event.occurred_at)
    except ValueError:
        return None
    if isinstance(event, _Deleted):
        ref = event.listing
        if not kept_as_is(ref):
            return None
        listings = [(ref.external_ref, _version(ref.version), b"")]
    elif isinstance(event, _Snapshot):
        listings = []
        seen: set[str] = set()
        for listing in event.listings:
            stored = _stored(listing)
            if stored is None or listing.external_ref in seen:
                return None
            seen.add(listing.external_ref)
            listings.append(stored)
    else:
        stored = _stored(event.listing)
        if stored is None:
            return None
        listings = [stored]
    return ValidEvent(_TYPE[type(event)], event.group, int(occurred.timestamp() * 1000),
                      listings)


def _stored(listing: ListingStruct) -> StoredListing | None:
    if not kept_as_is(listing):
        return None
    return listing.external_ref, _version(listing.version), _ENCODE(listing)


def _version(version: object) -> int:
    return version if type(version) is int else -1


# The reference: pydantic --------------------------------------------------------------------


def model_event(body: bytes) -> ValidEvent:
    """The event as the pydantic models validate it; InvalidEvent naming each bad field."""
    event = _validate(body)
    if isinstance(event, DeleteEvent):
        ref = event.listing
        listings = [(ref.external_ref, _version(ref.version), b"")]
    elif isinstance(event, SnapshotEvent):
        listings = [_dumped(listing) for listing in event.listings]
    else:
        listings = [_dumped(event.listing)]
    return ValidEvent(event.type, event.group, event.occurred_ms, listings)


def _dumped(listing: Listing) -> StoredListing:
    return (listing.external_ref, _version(listing.version),
            listing.model_dump_json(exclude_unset=True).encode())


def _validate(body: bytes) -> UpsertEvent | DeleteEvent | SnapshotEvent:
    try:
        return _EVENT.validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise InvalidEvent([FieldError("(body)", "the body is not valid JSON")], True) from None
        if errors and errors[0]["type"] == "model_attributes_type" and not errors[0]["loc"]:
            raise InvalidEvent([FieldError("(body)", "the body must be a JSON object")]) from None
        fields = [FieldError(_where(e), _message(e)) for e in errors]
        raise InvalidEvent(fields) from None
