"""How a listing's story entries are stored (``lb:trace:{ref}``): compact JSON arrays.

A story holds the same few entry shapes over and over (an event, a flush decision, a portal
call), and every listing has one for ``[trace] retention_days``: with their field names spelled
out, the stories of a freshly loaded listing took 1,432 bytes of Redis, more than the rest of
its state together. Stored by position instead, with codes for the fixed vocabularies and the
fixed phrases of decision details, the same entries take about half (the whole figure:
``python -m tests.bench.scale``). Nothing is lost: :func:`unpack` gives back exactly the entry
that was packed, as the dict ``bridge trace`` and the API have always read.

An entry is ``[kind, at, ...]``, kind ``"e"`` (event), ``"d"`` (decision) or ``"c"`` (call):

    event     ["e", at, webhook_id, type, group, at - occurred_at, version, result(, 1)]
              type: TYPES' letter; result: RESULTS' letter; a trailing 1: absent from a
              snapshot. Written by the ingest fold (bridge/ingest/store.py).
    decision  ["d", at, target, group, DECISIONS index, digest, key, operation, until, detail]
    call      ["c", at, target, group, operation, key, status, outcome, latency_ms, attempt,
               error]

Trailing fields equal to their default (None, ``""``, attempt 1) are left off. A detail that
starts with one of ``PHRASES`` is stored as ``[index, rest]``. The codes and phrases are
append-only: stored entries name them. An entry stored as a JSON object (before this format)
reads as it is.
"""

from __future__ import annotations

from typing import Any

import orjson

# Event types by the ingest entry's letter (bridge/ingest/store.py _KIND), and results.
TYPES = {"c": "listing.created", "u": "listing.updated", "d": "listing.deleted",
         "s": "group.snapshot"}
RESULTS = {"a": "applied", "s": "stale", "d": "duplicate"}
# What a flush can decide about a listing for a target (bridge/delivery/trace.py).
DECISIONS = ("sent", "queued", "unchanged", "quarantined", "held", "waiting for adoption",
             "rate-limited", "retrying", "paused")
# Fixed openings of decision details (bridge/delivery/trace.py, bridge/delivery/sender.py).
PHRASES = (
    "in the outbox, for the next bulk request",
    "in the group's sync ",
    "left out of the sync: the portal deletes it",
    "the target's rate limit is spent",
    "refused before with this content: ",
    "the portal may hold a hand-made listing for it: sent once it is linked (bridge link) or "
    "adoption ends",
    "the target holds this content already",
    "deleted, and never sent to this target",
    "nothing to send to this target",
)

_DECISION_CODE = {name: n for n, name in enumerate(DECISIONS)}
_DECISION_FIELDS = ("digest", "key", "operation", "until", "detail")
_CALL_FIELDS = ("operation", "idempotency_key", "status", "outcome", "latency_ms", "attempt",
                "error")
_DEFAULTS: dict[str, Any] = {"attempt": 1, "error": "", "detail": ""}


def pack(entry: dict[str, Any]) -> str:
    """An entry as stored: decisions and calls (events are packed by the ingest fold)."""
    kind = entry["kind"]
    if kind == "decision" and entry["decision"] in _DECISION_CODE:
        head: list[Any] = ["d", entry["at"], entry["target"], entry["group"],
                           _DECISION_CODE[entry["decision"]]]
        tail = [entry.get(name) for name in _DECISION_FIELDS]
        tail[-1] = _phrase(tail[-1] or "")
        return _dumps(head, tail, _DECISION_FIELDS)
    if kind == "call":
        head = ["c", entry["at"], entry["target"], entry["group"]]
        return _dumps(head, [entry.get(name) for name in _CALL_FIELDS], _CALL_FIELDS)
    return orjson.dumps(entry).decode()  # anything without a code is kept as it is


def unpack(raw: bytes | str) -> dict[str, Any]:
    """The entry as :func:`pack` (or the ingest fold) was given it. Raises ``ValueError``,
    ``KeyError``, ``TypeError`` or ``IndexError`` for what this code cannot read."""
    data = orjson.loads(raw)
    if isinstance(data, dict):
        return data  # stored before this format
    kind = data[0]
    if kind == "e":
        entry = {"kind": "event", "at": data[1], "webhook_id": data[2], "type": TYPES[data[3]],
                 "group": data[4], "occurred_at": data[1] - data[5], "version": data[6],
                 "result": RESULTS[data[7]]}
        if len(data) > 8 and data[8]:
            entry["absent"] = True
        return entry
    if kind == "d":
        entry = {"kind": "decision", "at": data[1], "target": data[2], "group": data[3],
                 "decision": DECISIONS[data[4]], **_fields(data[5:], _DECISION_FIELDS)}
        entry["detail"] = _unphrase(entry["detail"])
        return entry
    if kind == "c":
        return {"kind": "call", "at": data[1], "target": data[2], "group": data[3],
                **_fields(data[4:], _CALL_FIELDS)}
    raise ValueError(f"unknown story entry kind {kind!r}")


def _dumps(head: list[Any], tail: list[Any], names: tuple[str, ...]) -> str:
    while tail and tail[-1] == _DEFAULTS.get(names[len(tail) - 1]):
        tail.pop()
    return orjson.dumps(head + tail).decode()


def _fields(values: list[Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: values[n] if n < len(values) else _DEFAULTS.get(name)
            for n, name in enumerate(names)}


def _phrase(detail: str) -> str | list[Any]:
    for n, phrase in enumerate(PHRASES):
        if detail.startswith(phrase):
            return [n, detail[len(phrase):]] if len(detail) > len(phrase) else [n]
    return detail


def _unphrase(stored: Any) -> str:
    if isinstance(stored, list):
        return PHRASES[stored[0]] + (stored[1] if len(stored) > 1 else "")
    return str(stored or "")
