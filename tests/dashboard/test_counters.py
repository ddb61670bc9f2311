"""/metrics counters and histograms: cumulative totals kept in Redis (``lb:metrics``), so every
web process reports the same series and a rate never sees them fall."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from bridge import counters
from bridge.app import create_app
from bridge.clock import now_ms
from bridge.delivery.claims import LeaseLost
from bridge.delivery.ledger import Attempt, Ledger, counted_flush
from bridge.delivery.results import FlushOutcome, FlushResult
from tests.conftest import OTHER_SECRET, SECRET, make_settings
from tests.dashboard.conftest import run
from tests.support import crm
from tests.support.ingest import fold
from tests.support.servers import free_port, redis_server, serve_app, wait_until
from tests.support.stack import Stack, running_stack

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]
NS = "listing_bridge_"


def scrape(client: httpx.Client) -> tuple[Series, dict[str, str]]:
    """Every sample, and each family's type, as a Prometheus server would parse them."""
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    families = list(text_string_to_metric_families(answer.text))
    samples = {(s.name, without_tenant(s.labels)): s.value
               for family in families for s in family.samples}
    return samples, {family.name: family.type for family in families}


def value(samples: Series, name: str, **labels: str) -> float:
    return samples[(NS + name, tuple(sorted(labels.items())))]


def totals(samples: Series) -> Series:
    """The counter and histogram samples alone (gauges may move between two scrapes)."""
    names = {NS + spec.name for spec in counters.SPECS} | {
        NS + spec.name + suffix for spec in counters.SPECS
        for suffix in ("_bucket", "_sum", "_count")}
    return {key: v for key, v in samples.items() if key[0] in names}


def test_webhook_events_and_rejections_are_counted_by_outcome_and_reason(
        client: httpx.Client, folded: Callable[[], int]) -> None:
    before, types = scrape(client)
    assert types[NS + "webhook_events"] == "counter"
    for outcome in ("accepted", "duplicate", "stale"):  # there before the first event
        assert value(before, "webhook_events_total", outcome=outcome) == 0
    assert crm.post(client, SECRET, crm.upsert("g", "a", 2), "msg-1").status_code == 202
    assert crm.post(client, SECRET, crm.upsert("g", "b", 1)).status_code == 202
    assert crm.post(client, SECRET, crm.upsert("g", "a", 2), "msg-1").status_code == 200
    assert crm.post(client, SECRET, crm.upsert("g", "a", 1)).status_code == 202  # older
    assert crm.post(client, OTHER_SECRET, crm.upsert("g", "c", 1)).status_code == 401
    assert client.post("/webhooks/crm", content=b"{}",
                       headers={"content-type": "text/plain"}).status_code == 415
    folded()  # a worker counts what each event changed as it folds it
    after, _ = scrape(client)
    assert value(after, "webhook_events_total", outcome="accepted") == 2
    assert value(after, "webhook_events_total", outcome="duplicate") == 1
    assert value(after, "webhook_events_total", outcome="stale") == 1
    assert value(after, "webhook_rejections_total", reason="invalid_signature") == 1
    assert value(after, "webhook_rejections_total", reason="unsupported_media_type") == 1
    # The deprecated hourly gauge is unchanged: stale events count as received there.
    assert value(after, "events_last_hour", kind="received") == 3


@pytest.mark.servers
def test_events_refused_while_redis_is_away_are_counted_once_it_is_back() -> None:
    with redis_server() as own:
        settings = make_settings(own.url)
        with serve_app(create_app(settings)) as url, \
                httpx.Client(base_url=url, timeout=10) as client:
            assert crm.post(client, SECRET, crm.upsert("g", "a", 1)).status_code == 202
            own.stop(kill=True)
            for version in (2, 3):
                assert crm.post(client, SECRET, crm.upsert("g", "a", version)).status_code == 503
            own.start()
            assert crm.post(client, SECRET, crm.upsert("g", "a", 4)).status_code == 202
            with redis.Redis.from_url(own.url) as check:
                fold(check, settings)  # as a worker does: it counts the events it folds
            samples, _ = scrape(client)
    assert value(samples, "webhook_rejections_total", reason="storage_unavailable") == 2
    assert value(samples, "webhook_events_total", outcome="accepted") == 2


def test_portal_calls_fill_counters_and_duration_and_latency_histograms(
        client: httpx.Client, redis_url: str) -> None:
    at = now_ms()
    attempts = [(Attempt(at, "rentix", "m", "upsert", ["a"], "k1", "ok", 200, 12.0, 1), [400]),
                (Attempt(at, "rentix", "m", "upsert", ["b"], "k2", "transient", 503, 700.0, 1,
                         "server_error"), []),
                (Attempt(at, "travtus", "m", "sync", ["a", "b"], "k3", "ok", 200, 60.0, 1),
                 [1200, 40_000])]

    async def record(ledger: Ledger) -> None:
        for attempt, latencies in attempts:
            await ledger.record_attempt(attempt, latencies)

    run(redis_url, record)
    samples, types = scrape(client)
    assert types[NS + "portal_request_duration_seconds"] == "histogram"
    assert value(samples, "portal_requests_total", target="rentix", operation="upsert",
                 outcome="ok") == 1
    assert value(samples, "portal_requests_total", target="rentix", operation="upsert",
                 outcome="transient") == 1
    duration = {"target": "rentix", "operation": "upsert"}
    assert value(samples, "portal_request_duration_seconds_bucket", le="0.025", **duration) == 1
    assert value(samples, "portal_request_duration_seconds_bucket", le="0.5", **duration) == 1
    assert value(samples, "portal_request_duration_seconds_bucket", le="1.0", **duration) == 2
    assert value(samples, "portal_request_duration_seconds_count", **duration) == 2
    assert value(samples, "portal_request_duration_seconds_sum", **duration) == pytest.approx(
        0.712)
    assert value(samples, "event_delivery_seconds_bucket", target="rentix", le="0.5") == 1
    assert value(samples, "event_delivery_seconds_count", target="rentix") == 1
    assert value(samples, "event_delivery_seconds_bucket", target="travtus", le="2.5") == 1
    assert value(samples, "event_delivery_seconds_bucket", target="travtus", le="30.0") == 1
    assert value(samples, "event_delivery_seconds_bucket", target="travtus", le="60.0") == 2
    assert value(samples, "event_delivery_seconds_bucket", target="travtus", le="+Inf") == 2
    assert value(samples, "event_delivery_seconds_sum", target="travtus") == pytest.approx(41.2)


def test_each_flush_is_counted_by_result_and_timed(client: httpx.Client,
                                                   redis_url: str) -> None:
    class Flush:
        def __init__(self, ledger: Ledger, outcome: FlushOutcome | BaseException) -> None:
            self.ledger = ledger
            self.outcome = outcome

        @counted_flush
        async def run(self) -> FlushResult:
            if isinstance(self.outcome, BaseException):
                raise self.outcome
            return FlushResult("g", self.outcome)

    async def flushes(ledger: Ledger) -> None:
        for outcome in (FlushOutcome.DONE, FlushOutcome.DONE, FlushOutcome.MORE_TO_DO,
                        LeaseLost("taken"), RuntimeError("bug"), asyncio.CancelledError()):
            with contextlib.suppress(LeaseLost, RuntimeError, asyncio.CancelledError):
                await Flush(ledger, outcome).run()

    before, _ = scrape(client)
    assert value(before, "flushes_total", result="done") == 0
    assert value(before, "flush_duration_seconds_count") == 0
    run(redis_url, flushes)
    after, _ = scrape(client)
    for result, n in (("done", 2), ("more_to_do", 1), ("lease_lost", 1), ("error", 1),
                      ("cancelled", 1)):
        assert value(after, "flushes_total", result=result) == n, result
    assert value(after, "flush_duration_seconds_bucket", le="0.05") == 6
    assert value(after, "flush_duration_seconds_count") == 6


def test_counts_of_another_shape_in_redis_are_left_out(client: httpx.Client,
                                                       redis_url: str) -> None:
    async def seed(ledger: Ledger) -> None:
        await ledger.redis.hset("lb:{t:default}:metrics", mapping={
            "webhook_events_total|accepted|extra": 5, "no_such_metric|x": 1,
            "flushes_total|done": 3, "flushes_total|error": "not a number"})

    run(redis_url, seed)
    samples, _ = scrape(client)
    assert value(samples, "flushes_total", result="done") == 3
    assert value(samples, "flushes_total", result="error") == 0
    assert value(samples, "webhook_events_total", outcome="accepted") == 0
    assert not [key for key in samples if "no_such_metric" in key[0]]


# -- the whole bridge against the sandbox --

@contextlib.contextmanager
def another_web_process(stack: Stack) -> Iterator[httpx.Client]:
    """``bridge serve`` as its own process on the same configuration (so the same Redis)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bridge.cli", "serve", "--config",
                                str(stack.config), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            wait_until(lambda: _answers(client), timeout=20, what="bridge serve to answer")
            yield client
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.processes
def test_deliveries_to_the_sandbox_show_in_every_web_process_alike(
        redis_url: str, tmp_path: Path) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        # The first sync is refused once with a 503: a transient outcome, then ok.
        assert stack.sandbox.post("/_sandbox/faults", json={
            "portal": "travtus", "path": "/listing/sync", "status": 503, "count": 1,
        }).status_code in (200, 201)
        for n in range(3):
            stack.post(crm.upsert("west", f"apt-{n}", 1))
        stack.wait(lambda: len(stack.rentix_listings()) == 3, what="rentix puts")
        stack.wait(lambda: len(stack.travtus_listings("west")) == 3, timeout=20,
                   what="travtus sync after its 503")

        def flushed() -> Any:
            samples, _ = scrape(stack.bridge)
            return value(samples, "flushes_total", result="done") >= 1 and samples

        samples = stack.wait(flushed, what="a flush counted as done")
        stack.stop_workers()  # nothing moves between the two scrapes below
        assert value(samples, "webhook_events_total", outcome="accepted") == 3
        assert value(samples, "portal_requests_total", target="rentix", operation="upsert",
                     outcome="ok") == 3
        assert value(samples, "portal_requests_total", target="travtus", operation="sync",
                     outcome="transient") == 1
        assert value(samples, "portal_requests_total", target="travtus", operation="sync",
                     outcome="ok") >= 1
        assert value(samples, "portal_request_duration_seconds_count", target="rentix",
                     operation="upsert") == 3
        assert value(samples, "event_delivery_seconds_count", target="rentix") == 3
        assert value(samples, "event_delivery_seconds_count", target="travtus") == 3
        assert value(samples, "flush_duration_seconds_count") >= 1
        with another_web_process(stack) as other:
            here, _ = scrape(stack.bridge)
            there, _ = scrape(other)
        assert totals(here) == totals(there)
        assert totals(here)  # not two empty scrapes


def test_cumulative_totals_never_expire(redis_url: str) -> None:
    async def ttl() -> int:
        redis = Redis.from_url(redis_url)
        try:
            await Ledger(redis).record_flush("done", 0.2)
            return int(await redis.ttl("lb:{t:default}:metrics"))
        finally:
            await redis.aclose()

    assert asyncio.run(ttl()) == -1


def without_tenant(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """A sample's labels but ``tenant``: these tests serve the one tenant, default."""
    assert labels.get("tenant", "default") == "default"
    return tuple(sorted((k, v) for k, v in labels.items() if k != "tenant"))
