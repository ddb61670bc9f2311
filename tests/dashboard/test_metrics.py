"""/metrics: a Prometheus scrape computed from what the bridge keeps in Redis."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bridge.clock import now_ms
from bridge.delivery.ledger import Attempt, Ledger
from tests.conftest import SECRET
from tests.dashboard.conftest import run, seed_drift, seed_problems
from tests.support import crm


def scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {(s.name, without_tenant(s.labels)): s.value
            for family in text_string_to_metric_families(answer.text)
            for s in family.samples}


def test_metrics_follow_events_deliveries_and_problems(client: httpx.Client, redis_url: str,
                                                       folded: Callable[[], int]) -> None:
    before = scrape(client)
    assert before[("listing_bridge_events_last_hour", (("kind", "received"),))] == 0
    for n in range(3):
        crm.post(client, SECRET, crm.upsert("m", f"apt-{n}", 1))
    folded()
    seed_problems(redis_url)
    at = now_ms()
    attempts = [Attempt(at, "travtus", "m", "sync", ["apt-0"], "lb-1", "ok", 200, 12.0, 1),
                Attempt(at, "rentix", "m", "upsert", ["apt-0"], "lb-2", "transient", 503, 9.0,
                        1, "server_error"),
                Attempt(at, "rentix", "m", "upsert", ["apt-0"], "lb-2", "ok", 200, 8.0, 2)]

    async def record(ledger: Ledger) -> None:
        for i, attempt in enumerate(attempts):
            await ledger.record_attempt(attempt, [100 * (i + 1)] if attempt.outcome == "ok"
                                        else [])

    run(redis_url, record)
    after = scrape(client)

    def value(name: str, **labels: str) -> float:
        return after[(f"listing_bridge_{name}", tuple(sorted(labels.items())))]

    assert value("events_last_hour", kind="received") == 3
    assert value("deliveries_last_hour", target="rentix", result="ok") == 1
    assert value("deliveries_last_hour", target="rentix", result="retrying") == 1
    assert value("portal_calls_last_hour", target="rentix") == 2
    assert value("portal_calls_per_event", target="rentix") == round(2 / 3, 3)
    assert value("delivery_latency_seconds", quantile="0.5") == 0.1
    assert value("delivery_latency_seconds", quantile="0.99") == 0.3
    assert value("held_syncs", target="travtus") == 1
    assert value("quarantined_listings", target="travtus") == 2
    assert value("target_state", target="rentix", state="active") == 1
    assert value("groups_waiting") == 1  # "m" waits for its debounce window
    assert value("workers_alive") == 0
    assert value("redis_used_memory_bytes") > 0 and value("redis_aof_enabled") == 1


def test_metrics_show_each_targets_last_reconciliation_pass(client: httpx.Client,
                                                            redis_url: str) -> None:
    before = scrape(client)
    assert before[("listing_bridge_drift_found_last_pass",
                   (("kind", "drift"), ("target", "rentix")))] == 0
    assert not [key for key in before if key[0] == "listing_bridge_reconcile_last_pass_age_seconds"]
    seed_drift(redis_url)
    after = scrape(client)

    def value(name: str, **labels: str) -> float:
        return after[(f"listing_bridge_{name}", tuple(sorted(labels.items())))]

    assert value("drift_found_last_pass", target="rentix", kind="drift") == 1
    assert value("drift_found_last_pass", target="rentix", kind="unknown") == 1
    assert value("drift_repaired_last_pass", target="rentix", kind="drift") == 1
    assert ("listing_bridge_drift_repaired_last_pass",
            (("kind", "unknown"), ("target", "rentix"))) not in after  # never repaired
    assert value("unknown_listings", target="rentix") == 1
    assert value("unknown_listings", target="travtus") == 0
    assert 0 <= value("reconcile_last_pass_age_seconds", target="rentix") < 60
    assert ("listing_bridge_reconcile_last_pass_age_seconds",
            (("target", "travtus"),)) not in after  # no full pass yet
    assert value("reconcile_failing_checks", target="travtus") == 1


def without_tenant(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """A sample's labels but ``tenant``: these tests serve the one tenant, default."""
    assert labels.get("tenant", "default") == "default"
    return tuple(sorted((k, v) for k, v in labels.items() if k != "tenant"))
