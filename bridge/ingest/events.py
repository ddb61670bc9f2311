"""CRM events (contract section 2): parsing and validation with field-level errors."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic_core import ErrorDetails

from bridge.ingest.listing import NON_FINITE, Listing, ListingRef

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


def parse_event(body: bytes) -> UpsertEvent | DeleteEvent | SnapshotEvent:
    """Parse and validate one event; raise InvalidEvent naming each bad field."""
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
