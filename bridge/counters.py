"""Cumulative counters and histograms kept in Redis, for Prometheus: their names, labels and
buckets, and how they are stored in the one hash ``lb:metrics`` (``bridge/constants.py``).

Written where the figures arise, in the same round trip as the per-minute stats: the ingest
script (webhook events), the webhook's rejection count, the ledger (portal requests, delivery
latency) and each flush. Read by ``/metrics`` at each scrape, so every web process reports the
same totals, and they survive restarts (they never expire: a counter must never fall).

A field is ``{name}|{label value}|...``; a histogram keeps one field per bucket, counting the
observations that fell in it alone (``|{le}``: one increment per observation, made cumulative
when read), and one for the sum of observed values (``|sum``). Label values never hold ``|``:
target names are ``[a-z0-9_-]`` and every other label value is one of the bridge's own words.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from math import inf

from bridge.constants import ks
from bridge.replies import text

SEP = "|"
SUM = "sum"

Command = tuple[str, ...]


@dataclass(frozen=True)
class Spec:
    """One metric: a counter, or a histogram when it has buckets (upper bounds, in seconds)."""

    name: str  # without the namespace; a counter's ends in _total
    doc: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()

    @property
    def histogram(self) -> bool:
        return bool(self.buckets)

    def field(self, *values: str) -> str:
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, given {values}")
        return SEP.join((self.name, *values))


WEBHOOK_OUTCOMES = ("accepted", "duplicate", "stale")
FLUSH_RESULTS = ("done", "more_to_do", "lease_lost", "error", "cancelled")
# The webhook's refusals (bridge/ingest/webhook.py), 503s included.
REJECTION_REASONS = ("invalid_signature", "invalid_json", "invalid_event", "body_too_large",
                     "unsupported_media_type", "storage_unavailable", "storage_full")

WEBHOOK_EVENTS = Spec(
    "webhook_events_total", "Webhook events answered 200/202, by outcome: accepted (stored, "
    "it changed the desired state), duplicate (webhook id seen before), stale (older than what "
    "the bridge holds)", ("outcome",))
WEBHOOK_REJECTIONS = Spec(
    "webhook_rejections_total", "Webhook requests refused, by reason (storage_unavailable: "
    "answered 503 because Redis could not store the event; counted once Redis is back; "
    "storage_full: answered 503 because Redis neared its memory or inbox ceiling)",
    ("reason",))
PORTAL_REQUESTS = Spec(
    "portal_requests_total", "Delivery calls to the portals, by target, operation and outcome",
    ("target", "operation", "outcome"))
PORTAL_DURATION = Spec(
    "portal_request_duration_seconds", "Duration of delivery calls to the portals",
    ("target", "operation"), (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
FLUSHES = Spec("flushes_total", "Group flushes, by result", ("result",))
FLUSH_DURATION = Spec(
    "flush_duration_seconds", "Duration of group flushes, every target's turn included", (),
    (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
DELIVERY_LATENCY = Spec(
    "event_delivery_seconds", "From a listing change's webhook to its acceptance by the "
    "target (debounce window included)", ("target",),
    (0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600))

SPECS = (WEBHOOK_EVENTS, WEBHOOK_REJECTIONS, PORTAL_REQUESTS, PORTAL_DURATION, FLUSHES,
         FLUSH_DURATION, DELIVERY_LATENCY)
_BY_NAME = {spec.name: spec for spec in SPECS}


def le(bound: float) -> str:
    """A bucket's bound as Prometheus writes it."""
    return "+Inf" if bound == inf else repr(float(bound))


def bucket(spec: Spec, seconds: float) -> str:
    """The bound of the bucket ``seconds`` falls in (the smallest bound not below it)."""
    at = bisect.bisect_left(spec.buckets, seconds)
    return le(spec.buckets[at]) if at < len(spec.buckets) else le(inf)


def count(spec: Spec, *labels: str, by: int = 1) -> Command:
    return ("HINCRBY", ks().METRICS, spec.field(*labels), str(by))


def observe(spec: Spec, seconds: Iterable[float], *labels: str) -> list[Command]:
    """The writes that add ``seconds`` (one observation each) to a histogram: one per bucket
    touched, and one for the sum."""
    base = spec.field(*labels)
    per_bucket: dict[str, int] = {}
    total = 0.0
    for value in seconds:
        bound = bucket(spec, value)
        per_bucket[bound] = per_bucket.get(bound, 0) + 1
        total += value
    if not per_bucket:
        return []
    commands: list[Command] = [("HINCRBY", ks().METRICS, f"{base}{SEP}{bound}", str(n))
                               for bound, n in per_bucket.items()]
    commands.append(("HINCRBYFLOAT", ks().METRICS, f"{base}{SEP}{SUM}", repr(round(total, 6))))
    return commands


@dataclass
class Histogram:
    """One histogram's series as read: cumulative buckets, in order, +Inf last."""

    buckets: list[tuple[str, float]]
    sum: float

    @property
    def count(self) -> float:
        return self.buckets[-1][1]


@dataclass
class Totals:
    """Everything in ``lb:metrics``, by metric and then by label values."""

    counters: dict[str, dict[tuple[str, ...], float]]
    histograms: dict[str, dict[tuple[str, ...], Histogram]]


def read(raw: Mapping[bytes | str, bytes | str]) -> Totals:
    """Decode the hash; fields of unknown metrics or of another shape are left out (say, from
    a newer or older release sharing the Redis)."""
    counters: dict[str, dict[tuple[str, ...], float]] = {s.name: {} for s in SPECS
                                                          if not s.histogram}
    parts: dict[str, dict[tuple[str, ...], dict[str, float]]] = {s.name: {} for s in SPECS
                                                                  if s.histogram}
    for field, value in raw.items():
        name, *rest = text(field).split(SEP)
        spec = _BY_NAME.get(name)
        if spec is None:
            continue
        try:
            number = float(text(value))
        except ValueError:
            continue
        if not spec.histogram and len(rest) == len(spec.labels):
            counters[name][tuple(rest)] = number
        elif spec.histogram and len(rest) == len(spec.labels) + 1:
            parts[name].setdefault(tuple(rest[:-1]), {})[rest[-1]] = number
    return Totals(counters, {name: {labels: _cumulate(_BY_NAME[name], fields)
                                    for labels, fields in series.items()}
                             for name, series in parts.items()})


def _cumulate(spec: Spec, fields: dict[str, float]) -> Histogram:
    running = 0.0
    buckets: list[tuple[str, float]] = []
    for bound in (*spec.buckets, inf):
        running += fields.get(le(bound), 0)
        buckets.append((le(bound), running))
    return Histogram(buckets, fields.get(SUM, 0.0))


def empty(spec: Spec) -> Histogram:
    return _cumulate(spec, {})
