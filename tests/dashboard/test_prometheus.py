"""deploy/prometheus and deploy/grafana against the real tools: promtool checks and unit-tests
the alert rules, and a real Prometheus scrapes a running bridge, evaluates the alerts on what
it serves and answers every query of the Grafana dashboard."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SECRET
from tests.dashboard.test_counters import scrape
from tests.support import crm
from tests.support.servers import free_port, wait_until

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "listing-bridge.json"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
# .ci/run installs Debian's prometheus package, which ships both; a bare checkout may lack them.
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus is not installed (Debian: apt-get install prometheus)")
SERIES = re.compile(r"\blisting_bridge_[a-z_]+")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60,
                          cwd=RULES.parent)


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


def served_names(client: httpx.Client) -> set[str]:
    """Every series name /metrics declares (with or without samples yet), a counter's _total
    and a histogram's _bucket, _sum and _count included."""
    _, types = scrape(client)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    return {name + suffix for name, kind in types.items()
            for suffix in suffixes.get(kind, ("",))}


@pytest.mark.prometheus
@needs_promtool
def test_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.prometheus
@needs_promtool
def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.prometheus
@needs_promtool
def test_example_prometheus_configuration_is_valid() -> None:
    result = promtool("check", "config", "--syntax-only", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


# Served only by a bridge on a Redis Cluster (bridge/dashboard/metrics.py cluster_figures), one
# gauge per node: this bridge runs on one Redis.
CLUSTER_ONLY = {"listing_bridge_redis_node_up", "listing_bridge_redis_node_failing",
                "listing_bridge_redis_node_slots"}


def test_alerts_and_dashboard_use_only_series_the_bridge_serves(client: httpx.Client) -> None:
    served = served_names(client) | CLUSTER_ONLY
    for where, text in (("alerts.yml", RULES.read_text()),
                        ("listing-bridge.json", "\n".join(dashboard_queries()))):
        unknown = set(SERIES.findall(text)) - served
        assert not unknown, f"{where} names series /metrics does not serve: {sorted(unknown)}"


def test_dashboard_covers_every_counter_and_histogram(client: httpx.Client) -> None:
    used = set(SERIES.findall("\n".join(dashboard_queries())))
    _, types = scrape(client)
    families = {name for name, kind in types.items() if kind in ("counter", "histogram")}
    bases = {re.sub(r"_(bucket|total)$", "", name) for name in used}
    assert families <= bases, sorted(families - bases)


# -- a real Prometheus scraping a running bridge --

@contextlib.contextmanager
def prometheus(tmp_path: Path, bridge_url: str) -> Iterator[httpx.Client]:
    """Prometheus on a free loopback port, scraping the bridge every second with the alert
    rules loaded; always stopped on the way out."""
    assert PROMETHEUS is not None
    rules = tmp_path / "alerts.yml"
    rules.write_text(RULES.read_text())
    config = tmp_path / "prometheus.yml"  # JSON is YAML
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "listing-bridge", "metrics_path": "/metrics",
                            "static_configs": [{"targets": [bridge_url.split("//", 1)[1]]}]}],
    }))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            wait_until(lambda: _ready(client, process), timeout=30, what="prometheus ready")
            yield client
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _ready(client: httpx.Client, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, "prometheus exited; see prometheus.log in the test's tmp dir"
    try:
        return client.get("/-/ready").status_code == 200
    except httpx.TransportError:
        return False


def query(client: httpx.Client, expr: str) -> list[dict[str, Any]]:
    answer = client.get("/api/v1/query", params={"query": expr}).json()
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


@pytest.mark.prometheus
@needs_prometheus
def test_a_real_prometheus_reads_the_bridges_series_and_evaluates_the_alerts(
        client: httpx.Client, tmp_path: Path, folded: Callable[[], int]) -> None:
    for n in range(2):
        assert crm.post(client, SECRET, crm.upsert("g", f"apt-{n}", 1)).status_code == 202
    folded()
    with prometheus(tmp_path, str(client.base_url)) as prom:
        accepted = 'listing_bridge_webhook_events_total{outcome="accepted"}'
        [series] = wait_until(lambda: query(prom, accepted), timeout=30,
                              what="the scraped counter")
        assert series["metric"]["job"] == "listing-bridge"
        assert float(series["value"][1]) == 2
        assert crm.post(client, SECRET, crm.upsert("g", "apt-9", 1)).status_code == 202
        folded()
        wait_until(lambda: [s for s in query(prom, accepted) if float(s["value"][1]) == 3],
                   timeout=30, what="the next scrape to see the third event")

        def evaluated() -> list[dict[str, Any]]:
            groups = prom.get("/api/v1/rules").json()["data"]["groups"]
            rules = [rule for group in groups for rule in group["rules"]]
            return rules if rules and all(r.get("lastEvaluation", "").startswith("20")
                                          and r["health"] != "unknown" for r in rules) else []

        rules = wait_until(evaluated, timeout=30, what="every rule evaluated")
        assert {rule["name"]: rule["health"] for rule in rules} == {
            rule["name"]: "ok" for rule in rules}, [r.get("lastError") for r in rules]
        firing = {r["name"] for r in rules if r["state"] != "inactive"}
        # No worker runs in this test: that alert is pending (it waits 2 min); nothing else is.
        assert firing == {"ListingBridgeNoLiveWorker"}, firing
        for expr in dashboard_queries():
            query(prom, expr.replace("$target", ".*").replace("$__rate_interval", "1m"))
