"""The stored form of story entries: every entry reads back exactly, in about half the bytes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bridge import stories
from bridge.clock import now_ms
from bridge.delivery.trace import DECISIONS

AT = now_ms()  # any instant: stories store times as they are
KEY = "lb-cd131cc4e2b9397c76cdd4e33af4f85d51a2a83e"


def decision(decision: str, **fields: Any) -> dict[str, Any]:
    entry = {"kind": "decision", "at": AT, "target": "travtus", "group": "branch-7",
             "decision": decision, "digest": None, "key": None, "operation": None,
             "until": None, "detail": ""}
    return {**entry, **fields}


def call(**fields: Any) -> dict[str, Any]:
    entry = {"kind": "call", "at": AT, "target": "rentix", "group": "branch-7",
             "operation": "bulk", "idempotency_key": KEY, "status": 200, "outcome": "ok",
             "error": "", "latency_ms": 6.7, "attempt": 1}
    return {**entry, **fields}


ENTRIES = [
    decision("sent", digest="dde992da2838ba799da2f4c9a26b4826", key=KEY, operation="sync",
             detail="in the group's sync 946c27eed1a957c228045eb61a0c722a"),
    decision("queued", digest="ebf38f0d7404bc42d7d1d27d9a87811f", key=KEY, operation="upsert",
             detail="in the outbox, for the next bulk request"),
    decision("rate-limited", until=AT + 60_000, detail="the target's rate limit is spent"),
    decision("retrying", until=AT + 5_000, detail="HTTP 503: the portal is down"),
    decision("quarantined", digest="ab" * 16,
             detail="refused before with this content: bedrooms: must be at least 0"),
    decision("unchanged", detail="the target holds this content already"),
    decision("paused"),
    decision("waiting for adoption", detail=stories.PHRASES[5]),
    call(),
    call(status=None, outcome="transient", error="timeout: no answer in 10 s", attempt=3),
    call(status=401, outcome="data_invalid", error="validation_error: bedrooms", attempt=1,
         latency_ms=0.0),
]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e['kind']}-{e.get('decision', '')}")
def test_every_entry_reads_back_as_it_was_written(entry: dict[str, Any]) -> None:
    assert stories.unpack(stories.pack(entry)) == entry


def test_stored_entries_take_about_half_of_their_json_objects() -> None:
    packed = sum(len(stories.pack(entry)) for entry in ENTRIES)
    spelt_out = sum(len(orjson.dumps(entry)) for entry in ENTRIES)
    assert packed <= 0.55 * spelt_out, (packed, spelt_out)


def test_the_ingest_scripts_event_entries_read_as_events() -> None:
    stored = f'["e",{AT},"msg_1","c","branch-7",7,1,"a"]'
    assert stories.unpack(stored) == {
        "kind": "event", "at": AT, "webhook_id": "msg_1", "type": "listing.created",
        "group": "branch-7", "occurred_at": AT - 7, "version": 1, "result": "applied"}
    absent = stories.unpack('["e",5,"msg_2","s","branch-7",0,null,"a",1]')
    assert absent["type"] == "group.snapshot" and absent["version"] is None
    assert absent["absent"] is True


def test_entries_stored_as_json_objects_before_read_as_they_are() -> None:
    entry = call(attempt=2)
    assert stories.unpack(orjson.dumps(entry)) == entry


@pytest.mark.parametrize("raw", ['["x",1]', '["d",1,"t","g",99]', "[]", '"text"', "not json"])
def test_what_cannot_be_read_raises_a_value_lookup_or_type_error(raw: str) -> None:
    with pytest.raises((ValueError, KeyError, IndexError, TypeError)):
        stories.unpack(raw)


def test_every_decision_a_flush_can_tell_has_a_code_and_one_without_is_kept_whole() -> None:
    assert set(DECISIONS) <= set(stories.DECISIONS)
    entry = decision("pondering", detail="a decision added without a code")
    assert stories.pack(entry).startswith("{")
    assert stories.unpack(stories.pack(entry)) == entry
