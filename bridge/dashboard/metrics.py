"""Prometheus metrics at /metrics, computed from Redis at each scrape (the web process keeps no
counters of its own: the figures are the workers' and the webhook's, shared through Redis, so
every web process reports the same series).

Every tenant's series carry a ``tenant`` label (the configured tenants only: its values are
bounded by the configuration); the deployment's own (the arq queue, workers, Redis) carry none.
Counters (``_total``) and histograms come from the cumulative ``lb:metrics`` hash
(``bridge/counters.py``); gauges say what holds now (queues, held, quarantined, drift, workers,
targets, budgets). The ``*_last_hour`` gauges, from the per-minute ``lb:stats:{minute}``, and
the bridge's own latency quantiles are deprecated: rates of the counters and
``histogram_quantile`` over the histograms replace them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from bridge import counters, tenancy
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.counters import Totals
from bridge.dashboard.api import operations
from bridge.dashboard.auth import access, settings_of
from bridge.ops.models import HeldSync, Overview, RedisNode, TargetView
from bridge.reconcile.compare import KINDS

NS = "listing_bridge"
DEPRECATED = " (deprecated: goes in a coming release; use {0})"
# Label values reported as 0 before their first count, so a rate sees the first increment.
KNOWN: dict[str, list[tuple[str, ...]]] = {
    counters.WEBHOOK_EVENTS.name: [(o,) for o in counters.WEBHOOK_OUTCOMES],
    counters.WEBHOOK_REJECTIONS.name: [(r,) for r in counters.REJECTION_REASONS],
    counters.FLUSHES.name: [(r,) for r in counters.FLUSH_RESULTS],
}


@dataclass(frozen=True)
class Part:
    """One tenant's figures: its dashboard reads and its counters."""

    tenant: str
    overview: Overview
    targets: list[TargetView]
    totals: Totals
    held: list[HeldSync]


Family = CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily


class Families:
    """Each metric family once, however many tenants add to it (a name twice in one scrape is
    not valid): a tenant's families put its name first, as the ``tenant`` label."""

    def __init__(self) -> None:
        self.by_name: dict[str, Family] = {}

    def family(self, kind: type[Family], name: str, doc: str, labels: list[str]) -> Family:
        if name not in self.by_name:
            self.by_name[name] = kind(f"{NS}_{name}", doc, labels=labels)
        return self.by_name[name]


class Labelled:
    """One family as one tenant adds to it: the tenant's name goes before the labels."""

    def __init__(self, family: Family, tenant: str) -> None:
        self.family = family
        self.tenant = tenant

    def add_metric(self, labels: list[str], *value: Any) -> None:
        self.family.add_metric([self.tenant, *labels], *value)


class Snapshot(Collector):
    """Yields metric families from one snapshot of the dashboard's own reads: every tenant's
    (``parts``) with its ``tenant`` label, then the deployment's own (workers, the queue, Redis)
    without it, from ``deployment``'s overview."""

    def __init__(self, parts: list[Part], deployment: Overview | None) -> None:
        self.parts = parts
        self.deployment = deployment

    def collect(self) -> Iterator[Metric]:
        families = Families()
        for part in self.parts:
            TenantFigures(part, families).collect()
        yield from families.by_name.values()
        if self.deployment is not None:
            yield from deployment_figures(self.deployment)


def one(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{NS}_{name}", doc)
    family.add_metric([], value)
    return family


def deployment_figures(o: Overview) -> Iterator[Metric]:
    """What belongs to no tenant: the arq queue, the workers, Redis itself."""
    yield one("queue_depth", "Jobs in the arq queue", o.queue_depth)
    yield one("workers_alive", "Workers with a recent heartbeat",
              sum(1 for w in o.workers if w.alive))
    age = GaugeMetricFamily(f"{NS}_worker_heartbeat_age_seconds", "Seconds since each worker's "
                            "last heartbeat", labels=["worker"])
    for worker in o.workers:
        age.add_metric([worker.id], worker.age_s)
    yield age
    info = o.redis
    yield one("redis_used_memory_bytes", "Redis used_memory", info.used_memory or 0)
    yield one("redis_aof_enabled", "1 when Redis appends every write to its AOF",
              int(info.aof_enabled or 0))
    healthy = info.aof_last_write_status in (None, "ok") and \
        info.rdb_last_bgsave_status in (None, "ok")
    yield one("redis_persistence_ok", "1 when Redis's last AOF write and RDB save "
              "succeeded", int(healthy))
    yield from cluster_figures(o.redis.nodes)


def cluster_figures(nodes: list[RedisNode]) -> Iterator[Metric]:
    """A Redis Cluster's nodes (nothing on one Redis): up, failing, slots served."""
    if not nodes:
        return
    up = GaugeMetricFamily(f"{NS}_redis_node_up", "1 when the cluster node answered INFO",
                           labels=["node", "role"])
    failing = GaugeMetricFamily(f"{NS}_redis_node_failing", "1 when the cluster flags the "
                                "node fail or pfail (a failover may be under way)",
                                labels=["node", "role"])
    slots = GaugeMetricFamily(f"{NS}_redis_node_slots", "Hash slots the node serves (0: a "
                              "replica, or a master that lost its slots)", labels=["node"])
    for node in nodes:
        up.add_metric([node.address, node.role], int(node.reachable))
        failing.add_metric([node.address, node.role], int(node.failing))
        slots.add_metric([node.address], node.slots)
    yield from (up, failing, slots)


class TenantFigures:
    """One tenant's series, added to the shared families."""

    def __init__(self, part: Part, families: Families) -> None:
        self.overview = part.overview
        self.targets = part.targets
        self.totals = part.totals
        self.held = part.held
        self.tenant = part.tenant
        self.families = families

    def collect(self) -> None:
        """The first tenant's calls make the families, in the order of the scrape."""
        for method in (self._counters, self._histograms, self._events, self._deliveries,
                       self._now, self._targets, self._drift):
            method()

    def _family(self, kind: type[Family], name: str, doc: str,
                labels: Sequence[str] = ()) -> Labelled:
        family = self.families.family(kind, name, doc, ["tenant", *labels])
        return Labelled(family, self.tenant)

    def _gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> Labelled:
        return self._family(GaugeMetricFamily, name, doc, labels)

    def _counters(self) -> None:
        for spec in counters.SPECS:
            if spec.histogram:
                continue
            family = self._family(CounterMetricFamily, spec.name, spec.doc, spec.labels)
            series = {labels: 0.0 for labels in KNOWN.get(spec.name, [])}
            series.update(self.totals.counters[spec.name])
            for labels, value in sorted(series.items()):
                family.add_metric(list(labels), value)

    def _histograms(self) -> None:
        targets: list[tuple[str, ...]] = [(t.name,) for t in self.targets]
        known: dict[str, list[tuple[str, ...]]] = {counters.DELIVERY_LATENCY.name: targets,
                                                   counters.FLUSH_DURATION.name: [()]}
        for spec in counters.SPECS:
            if not spec.histogram:
                continue
            family = self._family(HistogramMetricFamily, spec.name, spec.doc, spec.labels)
            series = {labels: counters.empty(spec) for labels in known.get(spec.name, [])}
            series.update(self.totals.histograms[spec.name])
            for labels, histogram in sorted(series.items()):
                family.add_metric(list(labels), histogram.buckets, histogram.sum)

    def _events(self) -> None:
        totals = self.overview.totals
        events = self._gauge("events_last_hour", "Webhook events in the last 60 minutes, by "
                             "kind (received, duplicate, stale)"
                             + DEPRECATED.format("rate(listing_bridge_webhook_events_total)"),
                             ["kind"])
        for kind, n in totals.events.items():
            events.add_metric([kind], n)
        rejected = self._gauge("rejections_last_hour",
                               "Webhook requests refused in the last 60 minutes"
                               + DEPRECATED.format("listing_bridge_webhook_rejections_total"),
                               ["reason"])
        for reason, n in totals.rejected.items():
            rejected.add_metric([reason], n)

    def _deliveries(self) -> None:
        totals = self.overview.totals
        deliveries = self._gauge("deliveries_last_hour", "Portal delivery attempts in the last "
                                 "60 minutes, by target and result (ok, retrying, failed)"
                                 + DEPRECATED.format("listing_bridge_portal_requests_total"),
                                 ["target", "result"])
        calls = self._gauge("portal_calls_last_hour", "Portal calls in the last 60 minutes"
                            + DEPRECATED.format("listing_bridge_portal_requests_total"),
                            ["target"])
        per_event = self._gauge("portal_calls_per_event",
                                "Portal calls per received event over the last 60 minutes",
                                ["target"])
        for target, by in totals.deliveries.items():
            for result, n in by.items():
                deliveries.add_metric([target, result], n)
            calls.add_metric([target], totals.calls[target])
            ratio = self.overview.calls_per_event[target]
            if ratio is not None:
                per_event.add_metric([target], ratio)
        latency = self._gauge("delivery_latency_seconds", "Webhook-to-portal-acceptance "
                              "latency over the recent deliveries (up to 2000)"
                              + DEPRECATED.format("histogram_quantile over "
                                                  "listing_bridge_event_delivery_seconds"),
                              ["quantile"])
        quantiles = self.overview.latency_ms
        for label, value in (("0.5", quantiles.p50), ("0.95", quantiles.p95),
                             ("0.99", quantiles.p99)):
            if value is not None:
                latency.add_metric([label], value / 1000)

    def _now(self) -> None:
        o = self.overview
        waiting = [w for w in o.waiting if w.in_ms > 0]
        self._one("groups_waiting", "Groups whose flush is scheduled later "
                        "(debounce or retry)", len(waiting))
        overdue = [w for w in o.waiting if w.in_ms <= 0 and w.group not in o.flushing]
        self._one("groups_overdue", "Groups due now but not being flushed", len(overdue))
        self._one("flushes_running", "Group flushes in progress", len(o.flushing))
        self._one("inbox_events", "Webhook events stored and not yet folded into the "
                        "state by a worker", o.inbox.events)
        self._one("inbox_oldest_age_seconds", "Seconds the oldest unfolded event has "
                        "waited (0: none waits)", (o.inbox.oldest_age_ms or 0) / 1000)
        self._one("inbox_dead_events", "Inbox entries the fold could not handle, set "
                        "aside until an operator retries or discards them", o.inbox.dead)

    def _one(self, name: str, doc: str, value: float) -> Labelled:
        family = self._gauge(name, doc)
        family.add_metric([], value)
        return family

    def _targets(self) -> None:
        now = now_ms()
        families = {
            "state": self._gauge("target_state", "1 for the target's current state",
                                 ["target", "state"]),
            "quarantined": self._gauge("quarantined_listings", "Listings a target refused, "
                                       "waiting for an operator", ["target"]),
            "held": self._gauge("held_syncs", "Group syncs held for an operator", ["target"]),
            "held_age": self._gauge("held_sync_oldest_age_seconds", "Seconds the oldest held "
                                    "sync of the target has waited for an operator (0: none)",
                                    ["target"]),
            "budget": self._gauge("rate_limit_available", "Requests a target may make at once "
                                  "now under the bridge's own rate limit", ["target"]),
            # A per-listing target's outbox: an alert on a depth that does not fall, or on a
            # bulk request in flight for long, finds a backlog that is not draining.
            "outbox": self._gauge("outbox_depth", "Writes waiting in a per-listing target's "
                                  "outbox for a bulk request, the one in flight included",
                                  ["target"]),
            "drain": self._gauge("outbox_drain_seconds", "Expected seconds to send a per-listing "
                                 "target's outbox at its bulk budget (absent: bulk is off)",
                                 ["target"]),
            "in_flight": self._gauge("outbox_in_flight_age_seconds", "Seconds the bulk request "
                                     "in flight has been out (0: none)", ["target"]),
        }
        for t in self.targets:
            for state in ("active", "paused", "rate-limited"):
                families["state"].add_metric([t.name, state], int(t.state == state))
            families["quarantined"].add_metric([t.name], t.quarantined)
            families["held"].add_metric([t.name], t.held)
            since = [h.since for h in self.held if t.name in h.targets]
            families["held_age"].add_metric([t.name], max(now - min(since), 0) / 1000
                                            if since else 0)
            families["budget"].add_metric([t.name], t.rate_limit.available)
            if (box := t.outbox) is not None:
                families["outbox"].add_metric([t.name], box.depth)
                if box.drain_s is not None:
                    families["drain"].add_metric([t.name], box.drain_s)
                out = box.in_flight_since
                families["in_flight"].add_metric([t.name], max(now - out, 0) / 1000
                                                 if out is not None and box.in_flight else 0)

    def _drift(self) -> None:
        """The periodic reconciliation, per target: its last full pass, what the groups' last
        checks found unknown, and the checks failing."""
        families = {
            "found": self._gauge("drift_found_last_pass", "Listings the last full reconciliation "
                                 "pass found out of step with the desired state, by kind",
                                 ["target", "kind"]),
            "repaired": self._gauge("drift_repaired_last_pass", "Listings the last full "
                                    "reconciliation pass repaired, by kind", ["target", "kind"]),
            "unknown": self._gauge("unknown_listings", "Listings on the portal the bridge never "
                                   "sent there and nothing links to (groups' last checks)",
                                   ["target"]),
            "age": self._gauge("reconcile_last_pass_age_seconds", "Seconds since the last full "
                               "reconciliation pass finished (absent before the first)",
                               ["target"]),
            "failing": self._gauge("reconcile_failing_checks", "Groups whose reconciliation "
                                   "checks fail (retried with backoff)", ["target"]),
        }
        now = now_ms()
        for t in self.targets:
            drift, last = t.drift, t.drift.last_pass
            for kind in KINDS:
                families["found"].add_metric([t.name, kind], last.found[kind] if last else 0)
                if kind != "unknown":  # unknown listings are never touched
                    families["repaired"].add_metric([t.name, kind],
                                                    last.repaired[kind] if last else 0)
            families["unknown"].add_metric([t.name], drift.unknown_listings)
            if last is not None and last.finished is not None:
                families["age"].add_metric([t.name], max(now - last.finished, 0) / 1000)
            families["failing"].add_metric([t.name], drift.failing)


async def metrics(request: Request) -> Response:
    """Every configured tenant's series for the deployment (``?tenant=`` for one); a tenant's
    token, its own. The deployment's series (queue, workers, Redis) come with either."""
    tenant = access(request).tenant
    names = [tenant] if tenant is not None else settings_of(request).tenant_names()
    parts = [await tenant_part(request, name) for name in names]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Snapshot(parts, parts[0].overview if parts else None))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def tenant_part(request: Request, tenant: str) -> Part:
    with tenancy.use(tenant):
        ops = operations(request, tenant)
        totals = counters.read(await request.app.state.redis.hgetall(ks().METRICS))
        return Part(tenant, await ops.overview(), await ops.targets(), totals,
                    (await ops.problems()).held)
