"""The two event decoders agree: what the msgspec hot path takes, the pydantic models take too,
and both hand the ingest script the same arguments, byte for byte; what the models refuse, the
hot path refuses (and the models then name the field)."""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from typing import Any

import orjson
import pytest
from pydantic import ConfigDict, TypeAdapter

from bridge.dev.generate import event_stream
from bridge.ingest.events import (
    Group,
    InvalidEvent,
    ValidEvent,
    fast_event,
    model_event,
    parse_event,
)
from tests.support import crm

# Every code point but the surrogates (JSON and UTF-8 cannot carry them alone).
CODE_POINTS = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]


def agree(body: bytes) -> ValidEvent | None:
    """The hot path's event (None if it left it to the models), checked against the models."""
    return decided(body)[1]


def decided(body: bytes) -> tuple[str, ValidEvent | None]:
    """Who decided ("fast", "models" or "refused") and the hot path's event."""
    fast = fast_event(body)
    try:
        model = model_event(body)
    except InvalidEvent:
        assert fast is None, f"the hot path took what the models refuse: {body!r}"
        return "refused", None
    assert fast is None or fast == model, body
    return ("models" if fast is None else "fast"), fast


def test_the_generated_stream_takes_the_hot_path_and_stores_what_the_models_store() -> None:
    for payload in event_stream(300, groups=5, per_group=20):
        body = orjson.dumps(payload)
        assert agree(body) is not None, body


@pytest.mark.parametrize("payload", [
    crm.upsert("north", "apt-1", 3),
    crm.event("listing.created", "north", listing=crm.listing("a")),
    crm.event("listing.deleted", "north", listing={"external_ref": "a", "version": 2}),
    crm.event("listing.deleted", "north", listing={"external_ref": "a", "bedrooms": "x"}),
    crm.event("group.snapshot", "north", listings=[crm.listing("a", 1), crm.listing("b")]),
    crm.event("group.snapshot", "north", listings=[]),
    crm.upsert("g", "a", extra={"rentix": {"sizes": [1, {"inner": 2.5}], "flag": None}}),
    crm.upsert("g", "a", price=None, address=None, deal_type=None, photos=[]),
    crm.upsert("g", "a", price={"amount": 0, "currency": "EUR"}, unknown={"x": 1}),
    crm.upsert("g", "a", description="line one\nline two\ttabbed", address={"lat": -90}),
    crm.event("listing.updated", "g", occurred_at="2026-11-22T10:15:00.123456+05:30",
              listing={"external_ref": "a"}),
])
def test_canonical_events_take_the_hot_path(payload: dict[str, Any]) -> None:
    assert agree(orjson.dumps(payload)) is not None


# Values each field may be given: canonical ones, lax ones the models coerce, wrong ones.
TEXTS = ["x", "", " x", "x ", "\tx", "x\n", "x\x1c", "\x85x", "x\xa0", "\u2028x", "x\u3000",
         "a\nb", "é ü", 'quote " inside', "back\\slash", "x" * 256, "ș" * 255, None, 3]
NUMBERS = [0, -0.0, 1, 2.5, -1, 1e16, 9.999e15, 2**53 + 1, 10**16, 10**30, 1e-7, 5e-324, "3",
           "2.5", True, None, 1.5e300, -90, 90.0, 181]
VALUES = TEXTS + NUMBERS + [[], ["a", " b"], {}, {"k": "v"}, "2026-12-01", "2026-12-01T00:00:00",
                            "EUR", "eur", "EU", "ÉUR", "active", "hidden", " active", "rent"]
FIELDS = ["external_ref", "version", "status", "deal_type", "property_type", "property_subtype",
          "deposit", "bedrooms", "bathrooms", "rooms", "area_sqm", "floor", "floors_total",
          "description", "photos", "listing_url", "available_from", "amenities", "features",
          "furnished", "extra", "price", "address", "price.amount", "price.currency",
          "price.period", "address.line1", "address.postal_code", "address.lat", "address.lng",
          "extra.rentix", "extra.rentix.x", "extra.rentix. key "]
EVENT_FIELDS = {"group": [*TEXTS, "north", "a\x1cb", "  "],
                "occurred_at": ["2026-11-22T10:00:00Z", "2026-11-22T10:00:00",
                                "2026-11-22t10:00:00z",
                                "2026-11-22 10:00:00+02:00", "2026-11-22T10:00Z",
                                "2026-11-22T10:00:00.0009999999Z", "2026-11-22T10:00:00.9999995Z",
                                "2026-11-22T10:00:00,5Z", "2026-11-22T24:00:00Z",
                                "2026-11-22T23:59:60Z", "2026-11-22T10:00:00+24:00",
                                "2026-11-22T10:00:00+05:60", "2026-11-22T10:00:00-00:00",
                                "0000-01-01T00:00:00Z", "2026-02-29T10:00:00Z",
                                "2026-11-22T10:00:00+0200", 1700000000, None]}


def mutated(rng: random.Random, payload: dict[str, Any]) -> dict[str, Any]:
    listing = payload["listing"]
    for _ in range(rng.choice([0, 1, 1, 2])):
        path = rng.choice(FIELDS).split(".", 2)
        value = rng.choice(VALUES)
        target = listing
        for step in path[:-1]:
            if not isinstance(target.get(step), dict):
                target[step] = {}
            target = target[step]
        target[path[-1]] = value
    if rng.random() < 0.15:
        name = rng.choice(list(EVENT_FIELDS))
        payload[name] = rng.choice(EVENT_FIELDS[name])
    return payload


def test_both_decoders_agree_on_mutated_events() -> None:
    rng = random.Random(7)
    deciders: Counter[str] = Counter()
    for n in range(10_000):
        payload = mutated(rng, crm.upsert("g", f"a{n}", n))
        if rng.random() < 0.2:
            payload = crm.event("group.snapshot", "g", listings=[
                payload["listing"], crm.listing(rng.choice(["b", f"a{n}"]))])
        # The standard library writes big integers, and \\u escapes half the time.
        body = json.dumps(payload, ensure_ascii=rng.random() < 0.5).encode()
        deciders[decided(body)[0]] += 1
    assert min(deciders["fast"], deciders["models"], deciders["refused"]) > 500, deciders


@pytest.mark.parametrize("body", [
    b"{not json", b"[]", b"null", b'"x"', b"{}",
    b'{"type":"listing.updated","type":"listing.deleted","occurred_at":"2026-11-22T10:00:00Z",'
    b'"group":"g","listing":{"external_ref":"a"}}',
    b'{"type":"listing.updated","occurred_at":"2026-11-22T10:00:00Z","group":"g",'
    b'"listing":{"external_ref":"a","external_ref":"b"}}',
    b'{"type":"listing.updated","occurred_at":"2026-11-22T10:00:00Z","group":"g",'
    b'"listing":{"external_ref":"a\\ud800"}}',
    b'{"type":"listing.updated","occurred_at":"2026-11-22T10:00:00Z","group":"g",'
    b'"listing":{"external_ref":"a\\ud83d\\ude00"}}',
    b'{"type":"listing.updated","occurred_at":"2026-11-22T10:00:00Z","group":"g",'
    b'"listing":{"external_ref":"a","deposit":-0,"floor":-0,"extra":{"r":{"n":-0,"m":1E2}}}}',
    b'{"type":"listing.updated","occurred_at":"2026-11-22T10:00:00Z","group":"g",'
    b'"listing":{"external_ref":"a","deposit":0.1000000000000000055511151231257827}}',
    b' \n{"type":"listing.deleted","occurred_at":"2026-11-22T10:00:00Z","group":"g",'
    b'"listing":{"external_ref":"a"}}\n',
])
def test_both_decoders_agree_on_odd_bodies(body: bytes) -> None:
    agree(body)


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"NaN", b"Infinity", b"1e16", b"1e308"])
@pytest.mark.parametrize("where", ["deposit", "area_sqm", "extra"])
def test_both_decoders_agree_on_large_and_non_finite_numbers(number: bytes, where: str) -> None:
    value: Any = {"rentix": {"n": [1, 123456.789]}} if where == "extra" else 123456.789
    body = orjson.dumps(crm.upsert("g", "a", **{where: value})).replace(b"123456.789", number)
    assert agree(body) is None


def test_every_character_pydantic_strips_python_strips_too() -> None:
    # The hot path leaves a string with whitespace at either end (str.strip's) to the models.
    strip = TypeAdapter(list[str], config=ConfigDict(str_strip_whitespace=True))
    texts = [f"{char}x{char}" for char in CODE_POINTS]
    for text, kept in zip(texts, strip.validate_python(texts), strict=True):
        if kept != text:
            assert text.strip() == kept == "x", repr(text)


def test_every_group_the_hot_path_takes_matches_the_models_pattern() -> None:
    # The hot path takes a group with no str.strip whitespace at either end and no line break.
    groups = [char for char in CODE_POINTS if not char.isspace()]
    groups += [f"a{char}b" for char in CODE_POINTS if char != "\n"]
    TypeAdapter(list[Group]).validate_python(groups)  # raises if the pattern refuses any


def test_parse_event_falls_back_to_the_models_for_lax_input() -> None:
    body = orjson.dumps(crm.upsert("g", " a ", bedrooms="2", deposit="2.5", furnished="yes"))
    assert fast_event(body) is None
    event = parse_event(body)
    assert event.listings[0][0] == "a"
    stored = orjson.loads(event.listings[0][2])
    assert (stored["bedrooms"], stored["deposit"], stored["furnished"]) == (2, 2.5, True)
