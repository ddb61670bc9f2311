"""Tenants on the command line (issue 31, part 4), as an operator runs it: real `bridge`
processes against the session's Redis, with data that the real ingest scripts wrote for each
tenant under ``tenancy.use``. ``--tenant`` picks whose data a command reads and changes; an
unknown tenant changes nothing; `bridge tenant list` names the configured tenants and those
with data only; `bridge tenant purge` deletes one unconfigured tenant's keys and nothing else.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from redis.asyncio import Redis

from bridge import tenancy
from bridge.app import create_app
from bridge.clock import now_ms
from bridge.constants import keyspace
from bridge.delivery.ledger import Held, Ledger, Quarantined
from bridge.ingest.events import parse_event
from bridge.settings import load_settings
from tests.conftest import OTHER_SECRET, make_settings
from tests.support import crm
from tests.support.ingest import FoldingStore, fold
from tests.support.servers import serve_app
from tests.support.stack import stack_config

pytestmark = pytest.mark.processes  # every test runs the bridge command

BRIDGE = [sys.executable, "-m", "bridge.cli"]
OFFLINE = "http://127.0.0.1:9"  # portals no command here reaches


def tenant_b(sandbox: str) -> str:
    """A second tenant, ``b``, with its own secret and the same two kinds of target."""
    return f"""
[[tenants]]
name = "b"
webhook_secrets = ["{OTHER_SECRET}"]

[[tenants.targets]]
name = "rentix"
kind = "rentix"
base_url = "{sandbox}/rentix/api/v1"
api_key = "sandbox"

[[tenants.targets]]
name = "travtus"
kind = "travtus"
base_url = "{sandbox}/travtus"
token_url = "{sandbox}/travtus/oauth2/token"
client_id = "sandbox"
client_secret = "sandbox"
"""


def two_tenants(tmp_path: Path, redis_url: str, sandbox: str = OFFLINE) -> Path:
    """``default`` (the top-level sections) and ``b``."""
    config = tmp_path / "bridge.toml"
    config.write_text(stack_config(redis_url, sandbox) + tenant_b(sandbox))
    return config


def bridge(config: Path, *args: str, stdin: str | None = None
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BRIDGE, *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=60, input=stdin)


def seed(redis_url: str, tenant: str, *events: dict[str, Any]) -> None:
    """Store and fold ``events`` for ``tenant`` with the webhook's and the workers' scripts."""
    async def go() -> None:
        client = Redis.from_url(redis_url)
        with tenancy.use(tenant):
            store = FoldingStore(client, make_settings(redis_url))
            try:
                for n, event in enumerate(events):
                    await store.put(f"wh-{tenant}-{n}", parse_event(orjson.dumps(event)),
                                    now_ms())
            finally:
                await store.aclose()
                await client.aclose()

    asyncio.run(go())


def hold_and_quarantine(redis_url: str, tenant: str, group: str, ref: str) -> None:
    """A change of ``group`` held on both targets, and ``ref`` quarantined on Rentix."""
    async def go() -> None:
        client = Redis.from_url(redis_url)
        ledger = Ledger(client)
        try:
            with tenancy.use(tenant):
                entry = Held("d-1", "it would delete 1 listing", [ref], 0, now_ms())
                for target in ("rentix", "travtus"):
                    await ledger.hold(target, group, entry)
                await ledger.quarantine("rentix", {ref: Quarantined(
                    "q-1", group, "data_invalid", "propertyArea must be a number",
                    "propertyArea", now_ms())})
        finally:
            await client.aclose()

    asyncio.run(go())


def keys(r: redis.Redis) -> set[str]:
    return set(r.scan_iter(count=1000))


def tenant_keys(r: redis.Redis, tenant: str) -> set[str]:
    return {k for k in keys(r) if k.startswith(tenancy.prefix(tenant))}


# -- --tenant picks the tenant --

def test_tenant_picks_whose_listing_and_figures_a_command_reads(redis_url: str,
                                                               tmp_path: Path) -> None:
    config = two_tenants(tmp_path, redis_url)
    seed(redis_url, "default", crm.upsert("a-homes", "apt-1", 3))
    seed(redis_url, "b", crm.upsert("b-homes", "apt-1", 7), crm.upsert("b-more", "apt-2", 1))

    of_b = bridge(config, "trace", "apt-1", "--tenant", "b")
    of_default = bridge(config, "trace", "apt-1")
    status_b = bridge(config, "status", "--json", "--tenant", "b")

    assert of_b.returncode == 0, of_b.stderr
    assert of_b.stdout.startswith("listing apt-1 in group b-homes: live, version 7,")
    assert of_default.returncode == 0, of_default.stderr
    assert of_default.stdout.startswith("listing apt-1 in group a-homes: live, version 3,")
    assert status_b.returncode == 0, status_b.stderr
    assert orjson.loads(status_b.stdout)["groups"] == 2


def test_an_operators_action_changes_the_named_tenants_data_only(redis_url: str,
                                                                 r: redis.Redis,
                                                                 tmp_path: Path) -> None:
    config = two_tenants(tmp_path, redis_url)
    for tenant in ("default", "b"):
        hold_and_quarantine(redis_url, tenant, "west", "apt-9")

    status = bridge(config, "status", "--tenant", "b")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == "tenant b"  # and the command it suggests names the tenant too:
    assert "  digest d-1: bridge held release|discard --digest d-1 --tenant b west" in lines
    released = bridge(config, "held", "release", "--digest", "d-1", "--tenant", "b", "west")
    retried = bridge(config, "quarantine", "retry", "--target", "rentix", "apt-9",
                     "--tenant", "b")

    assert released.returncode == 0, released.stderr
    assert r.exists(keyspace("b").RELEASE + "rentix:west")
    assert not r.exists(keyspace("default").RELEASE + "rentix:west")
    assert retried.returncode == 0, retried.stderr
    assert not r.hexists(keyspace("b").QUARANTINE + "rentix", "apt-9")
    assert r.hexists(keyspace("default").QUARANTINE + "rentix", "apt-9")


@pytest.mark.parametrize("command", [
    ["status"],
    ["trace", "apt-1"],
    ["held", "release", "--digest", "d-1", "west"],
    ["quarantine", "discard", "--target", "rentix", "apt-9"],
    ["target", "pause", "rentix"],
    ["inbox", "dead", "retry", "--all"],
    ["link", "adopt", "end"],
    ["reconcile", "--apply"],
], ids=lambda c: " ".join(c[:2]))
def test_an_unknown_tenant_names_the_configured_ones_and_changes_nothing(
    command: list[str], redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    config = two_tenants(tmp_path, redis_url)
    seed(redis_url, "default", crm.upsert("west", "apt-1", 3))
    hold_and_quarantine(redis_url, "default", "west", "apt-9")
    before = {k: r.dump(k) for k in keys(r)}

    result = bridge(config, *command, "--tenant", "nosuch")

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: Invalid value for '--tenant': no tenant 'nosuch' is configured (configured: "
        "default, b)")
    assert {k: r.dump(k) for k in keys(r)} == before


def test_without_tenant_a_configuration_with_no_default_asks_for_one(redis_url: str,
                                                                     tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(f'redis_url = "{redis_url}"\n' + tenant_b(OFFLINE))
    result = bridge(config, "status")
    assert result.returncode == 2, result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: Invalid value for '--tenant': no tenant 'default' is configured (configured: "
        "b); pass --tenant NAME")


# -- bridge send --tenant --

def test_send_posts_to_the_tenants_webhook_signed_with_its_secret(redis_url: str,
                                                                  r: redis.Redis,
                                                                  tmp_path: Path) -> None:
    config = two_tenants(tmp_path, redis_url)
    settings = load_settings(config)
    for name, group in (("b", "b-homes"), ("default", "a-homes")):
        (tmp_path / f"{name}.jsonl").write_bytes(orjson.dumps(crm.upsert(group, "apt-1", 5)))
    with serve_app(create_app(settings)) as url:
        # b's secret is not the default tenant's: a wrong one would be refused (401).
        to_b = bridge(config, "send", "--url", f"{url}/webhooks/crm", "--tenant", "b",
                      "--file", str(tmp_path / "b.jsonl"))
        to_default = bridge(config, "send", "--url", f"{url}/webhooks/crm",
                            "--file", str(tmp_path / "default.jsonl"))
    for name in ("b", "default"):
        with tenancy.use(name):
            fold(r, settings.for_tenant(name))

    assert to_b.returncode == 0 and "202: 1" in to_b.stdout, (to_b.stdout, to_b.stderr)
    assert to_default.returncode == 0 and "202: 1" in to_default.stdout, to_default.stdout
    assert r.hget(keyspace("b").LISTING + "apt-1", "g") == "b-homes"
    assert r.hget(keyspace("default").LISTING + "apt-1", "g") == "a-homes"


def test_send_to_an_unknown_tenant_sends_nothing(redis_url: str, tmp_path: Path) -> None:
    config = two_tenants(tmp_path, redis_url)
    with socket.socket() as listening:  # where the events would go: nobody may connect
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        url = f"http://127.0.0.1:{listening.getsockname()[1]}/webhooks/crm"
        result = bridge(config, "send", "--url", url, "--tenant", "nosuch", "--generate", "1")
        listening.setblocking(False)
        with pytest.raises(BlockingIOError):
            listening.accept()
    assert result.returncode == 2, result.stderr
    assert "no tenant 'nosuch' is configured (configured: default, b)" in result.stderr


# -- bridge reconcile --all-tenants --

def test_reconcile_all_tenants_reports_each_tenant_in_turn(redis_url: str, sandbox_url: str,
                                                           r: redis.Redis,
                                                           tmp_path: Path) -> None:
    config = two_tenants(tmp_path, redis_url, sandbox_url)
    seed(redis_url, "default", crm.upsert("a-homes", "apt-1", 3))
    seed(redis_url, "b", crm.upsert("b-homes", "apt-1", 7), crm.upsert("b-homes", "apt-2", 1))

    result = bridge(config, "reconcile", "--all-tenants", "--report",
                    str(tmp_path / "report.json"))
    refused = bridge(config, "reconcile", "--all-tenants", "--tenant", "b")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines.index("tenant default:") < lines.index("tenant b:")
    default_part = lines[lines.index("tenant default:"):lines.index("tenant b:")]
    b_part = lines[lines.index("tenant b:"):]
    assert any(line.startswith("2 group check(s): 2 missing") for line in default_part), lines
    assert any(line.startswith("2 group check(s): 4 missing") for line in b_part), lines
    for tenant, missing in (("default", {"apt-1"}), ("b", {"apt-1", "apt-2"})):
        report = orjson.loads((tmp_path / f"report.{tenant}.json").read_bytes())
        assert {f["ref"] for f in report["findings"] if f["kind"] == "missing"} == missing
    assert refused.returncode == 2
    assert "--all-tenants runs every tenant" in refused.stderr
    # Both tenants read Rentix with one API key: their reads spent that credential's budget,
    # the one the workers spend from, and no budget of a tenant's own.
    settings = load_settings(config)
    [credential] = {settings.credentials()[(t, "rentix")] for t in ("default", "b")}
    assert r.exists(f"lb:{{r:{credential}}}:ratelimit:reads")
    assert not [key for key in keys(r) if ":ratelimit" in key and key.startswith("lb:{t:")]


# -- bridge tenant list --

def test_tenant_list_names_configured_tenants_and_those_with_data_only(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    config = two_tenants(tmp_path, redis_url)
    seed(redis_url, "default", crm.upsert("a-homes", "apt-1", 3))
    seed(redis_url, "b", crm.upsert("b-homes", "apt-1", 7), crm.upsert("b-more", "apt-2", 1))
    hold_and_quarantine(redis_url, "b", "b-homes", "apt-1")
    seed(redis_url, "gone", crm.upsert("old-homes", "apt-1", 1))

    text = bridge(config, "tenant", "list")
    as_json = bridge(config, "tenant", "list", "--json")

    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == [
        "configured tenants:",
        f"  default: 1 group(s), inbox 0, set aside 0, held 0, quarantined 0, "
        f"{len(tenant_keys(r, 'default'))} key(s)",
        f"  b: 2 group(s), inbox 0, set aside 0, held 1, quarantined 1, "
        f"{len(tenant_keys(r, 'b'))} key(s)",
        "with data in Redis but not configured:",
        f"  gone: 1 group(s), inbox 0, set aside 0, {len(tenant_keys(r, 'gone'))} key(s); "
        "not configured: `bridge tenant purge gone` deletes its data",
    ]
    assert as_json.returncode == 0, as_json.stderr
    listed = orjson.loads(as_json.stdout)
    assert [t["name"] for t in listed["configured"]] == ["default", "b"]
    assert listed["configured"][1] == {
        "name": "b", "configured": True, "keys": len(tenant_keys(r, "b")), "groups": 2,
        "inbox": 0, "set_aside": 0, "held": 1, "quarantined": 1}
    assert [(t["name"], t["keys"]) for t in listed["not_configured"]] == [
        ("gone", len(tenant_keys(r, "gone")))]


# -- bridge tenant purge --

def three_tenants_and_deployment_keys(redis_url: str, r: redis.Redis) -> None:
    """Data for default, b, ``gone`` and ``gone-2`` (whose prefix ``gone`` is not: purging
    ``gone`` must leave it), and keys of no tenant."""
    seed(redis_url, "default", crm.upsert("a-homes", "apt-1", 3))
    seed(redis_url, "b", crm.upsert("b-homes", "apt-1", 7))
    seed(redis_url, "gone", crm.upsert("old-homes", "apt-1", 1), crm.upsert("old", "apt-2", 1))
    seed(redis_url, "gone-2", crm.upsert("old-homes", "apt-1", 1))
    # More keys than one UNLINK batch and one SCAN page hold.
    r.mset({f"{tenancy.prefix('gone')}filler:{n}": "x" for n in range(1_200)})
    r.hset("lb:workers", "w-1", "{}")
    r.set("lb:{r:cred-1}:ratelimit", "0")


def test_purge_refuses_a_configured_tenant(redis_url: str, r: redis.Redis,
                                           tmp_path: Path) -> None:
    config = two_tenants(tmp_path, redis_url)
    seed(redis_url, "b", crm.upsert("b-homes", "apt-1", 7))
    before = keys(r)
    result = bridge(config, "tenant", "purge", "b", "--yes")
    assert result.returncode == 2
    assert "tenant 'b' is configured: remove it from the configuration first" in result.stderr
    assert keys(r) == before


def test_purge_asks_for_the_name_and_deletes_that_tenants_keys_only(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    config = two_tenants(tmp_path, redis_url)
    three_tenants_and_deployment_keys(redis_url, r)
    before = keys(r)
    gone = tenant_keys(r, "gone")

    wrong = bridge(config, "tenant", "purge", "gone", stdin="b\n")
    assert wrong.returncode == 1
    assert f"tenant gone has {len(gone)} key(s) in Redis" in wrong.stdout
    assert "nothing deleted" in wrong.stderr and keys(r) == before

    purged = bridge(config, "tenant", "purge", "gone", stdin="gone\n")
    assert purged.returncode == 0, purged.stderr
    # The prompt and the answer share a line: the answer came from a pipe, not a terminal.
    assert purged.stdout.splitlines()[-1] == (
        f"type the tenant's name (gone) to delete them: deleted {len(gone)} key(s) of tenant gone")
    assert keys(r) == before - gone
    assert tenant_keys(r, "gone-2") and r.exists("lb:workers", "lb:{r:cred-1}:ratelimit") == 2


def test_purge_yes_deletes_without_asking_and_a_second_run_finds_nothing(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    config = two_tenants(tmp_path, redis_url)
    three_tenants_and_deployment_keys(redis_url, r)
    before = keys(r)
    gone = tenant_keys(r, "gone")

    purged = bridge(config, "tenant", "purge", "gone", "--yes", stdin="")
    again = bridge(config, "tenant", "purge", "gone", "--yes")

    assert purged.returncode == 0, purged.stderr
    assert f"deleted {len(gone)} key(s) of tenant gone" in purged.stdout
    assert keys(r) == before - gone
    assert again.returncode == 0 and "no data in Redis: nothing to delete" in again.stdout


@pytest.mark.parametrize("name", ["go*", "Gone", "a}:x", ""])
def test_purge_refuses_what_is_no_tenant_name(name: str, redis_url: str, r: redis.Redis,
                                              tmp_path: Path) -> None:
    config = two_tenants(tmp_path, redis_url)
    three_tenants_and_deployment_keys(redis_url, r)
    before = keys(r)
    result = bridge(config, "tenant", "purge", name, "--yes")
    assert result.returncode == 2
    assert "is not a tenant name" in result.stderr
    assert keys(r) == before
