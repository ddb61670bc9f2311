"""Tenants kept apart end to end (contract section 4a, issue 31): two agencies, ``north`` and
``south``, each with its own webhook secret, dashboard token and sandbox portals (a sandbox of
its own, on its own port and credentials), send the same group names, the same external_refs
and the same webhook-ids with different contents through one web app (in this process, over
real HTTP) and a real ``bridge worker`` process. Each tenant's listings reach its own portals
only, with its own contents; a request signed for one tenant is refused on another's path and
stores nothing; a tenant's dashboard token finds nothing of the other; ``bridge trace --tenant``
tells one tenant's story."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import pytest
import redis

from bridge import counters, tenancy
from bridge.app import create_app
from bridge.constants import keyspace
from bridge.settings import Settings, load_settings
from tests.support import crm
from tests.support.servers import serve_app, wait_until
from tests.tenants.deployment import (
    BRIDGE,
    DEPLOYMENT_TOKEN,
    SECRETS,
    TOKENS,
    Portals,
    config_text,
    content,
    portals,
    post,
    processes,
    tenant_entry,
    tenant_keys,
    upsert,
    workers_up,
)

# The tier of every test here (tests/support/tiers.py).
pytestmark = pytest.mark.processes

TENANTS = ("north", "south")
# The same groups and refs in both tenants.
GROUPS = {"branch-a": ["apt-1", "apt-2", "apt-3", "apt-4"],
          "branch-b": ["apt-5", "apt-6", "apt-7", "apt-8"]}
VERSIONS = 3


@dataclass
class Deployment:
    settings: Settings
    config: Path
    bridge: httpx.Client
    portals: dict[str, Portals]
    redis: redis.Redis


@contextlib.contextmanager
def deployment(redis_url: str, tmp_path: Path, default: bool = False) -> Iterator[Deployment]:
    """North and south as [[tenants]] (with the top level as tenant ``default`` when asked),
    each on its own sandbox; the web app in this process; one ``bridge worker`` process."""
    names = [*TENANTS, *([tenancy.DEFAULT] if default else [])]
    with contextlib.ExitStack() as stack:
        sandboxes = {name: stack.enter_context(portals(name)) for name in names}
        config = tmp_path / "bridge.toml"
        config.write_text(config_text(
            redis_url, [tenant_entry(name, sandboxes[name]) for name in TENANTS],
            default=sandboxes.get(tenancy.DEFAULT), dashboard_token=DEPLOYMENT_TOKEN))
        settings = load_settings(config)
        url = stack.enter_context(serve_app(create_app(settings)))
        bridge = stack.enter_context(httpx.Client(base_url=url, timeout=10))
        client = stack.enter_context(contextlib.closing(redis.Redis.from_url(
            redis_url, decode_responses=True)))
        running = stack.enter_context(processes(config))
        worker = running.worker()
        wait_until(lambda: workers_up(client), timeout=20,
                   what=lambda: f"the worker:\n{running.log(worker)}")
        yield Deployment(settings, config, bridge, sandboxes, client)


def expected(tenant: str, deleted: Collection[str] = ()
             ) -> tuple[dict[str, tuple[str, str]], dict[tuple[str, str], str]]:
    """What ``tenant``'s portals show once its stream is delivered: every listing's last
    version, ``deleted`` hidden on Rentix and gone from its Travtus group."""
    rentix: dict[str, tuple[str, str]] = {}
    travtus: dict[tuple[str, str], str] = {}
    for group, refs in GROUPS.items():
        for ref in refs:
            text = content(tenant, ref, VERSIONS)
            rentix[ref] = ("hidden" if ref in deleted else "active", text)
            if ref not in deleted:
                travtus[(group, ref)] = text
    return rentix, travtus


def delivered(sandbox: Portals,
              want: tuple[dict[str, tuple[str, str]], dict[tuple[str, str], str]]) -> None:
    """Until ``sandbox``'s portals show ``want`` (``Portals.descriptions``), and nothing else."""
    wait_until(lambda: sandbox.descriptions() == want, timeout=20,
               what=lambda: f"{sandbox.tenant}'s portals to show {want}; they show "
               f"{sandbox.descriptions()}")


def test_each_tenants_listings_reach_its_own_portals_only(
    redis_url: str, tmp_path: Path
) -> None:
    with deployment(redis_url, tmp_path) as d:
        answers: dict[str, list[tuple[str, int, Any]]] = {t: [] for t in TENANTS}
        # Interleaved: each event of north, then the same event of south, under the same
        # webhook-id, with the same group and ref and other contents.
        for version in range(1, VERSIONS + 1):
            for group, refs in GROUPS.items():
                for ref in refs:
                    webhook_id = f"evt-{version}-{ref}"
                    for tenant in TENANTS:
                        response = post(d.bridge, tenant, upsert(tenant, group, ref, version),
                                        webhook_id)
                        answers[tenant].append((webhook_id, response.status_code,
                                                response.json()))
        for tenant in TENANTS:
            assert [(status, body) for _, status, body in answers[tenant]] == [
                (202, {"accepted": True, "id": webhook_id})
                for webhook_id, _, _ in answers[tenant]], tenant
        for tenant in TENANTS:
            delivered(d.portals[tenant], expected(tenant))

        # Then north deletes a listing that south changes, under the same webhook-id: two
        # events. A redelivery within one tenant is a duplicate.
        gone = crm.event("listing.deleted", "branch-a",
                         listing={"external_ref": "apt-4", "version": VERSIONS + 1})
        changed = upsert("south", "branch-a", "apt-4", VERSIONS + 1)
        deleted = post(d.bridge, "north", gone, "evt-last")
        in_south = post(d.bridge, "south", changed, "evt-last")
        again = post(d.bridge, "north", upsert("north", "branch-a", "apt-1", 1), "evt-1-apt-1")
        south_again = post(d.bridge, "south", changed, "evt-last")
        for response in (deleted, in_south):
            assert (response.status_code, response.json()) == (202, {"accepted": True,
                                                                     "id": "evt-last"})
        assert (again.status_code, again.json()) == (200, {"duplicate": True,
                                                           "id": "evt-1-apt-1"})
        assert (south_again.status_code, south_again.json()) == (200, {"duplicate": True,
                                                                       "id": "evt-last"})

        # North's apt-4 hidden on its Rentix and gone from its Travtus group; south's at v4.
        south = expected("south")
        last = content("south", "apt-4", VERSIONS + 1)
        south[0]["apt-4"] = ("active", last)
        south[1][("branch-a", "apt-4")] = last
        delivered(d.portals["north"], expected("north", {"apt-4"}))
        delivered(d.portals["south"], south)

        for tenant in TENANTS:
            other = next(t for t in TENANTS if t != tenant)
            journal = d.portals[tenant].journal()
            # Every call came with this tenant's credentials (none refused), and carried
            # nothing of the other tenant.
            assert journal and not [(e["method"], e["path"], e["status"]) for e in journal
                                    if e["status"] in (401, 403)]
            text = orjson.dumps([entry["body"] for entry in journal]).decode()
            assert other not in text and tenant in text
            puts = [e["body"] for e in journal if e["portal"] == "rentix"
                    and e["method"] == "PUT" and e["path"].startswith("/listings")
                    and isinstance(e["body"], dict) and "announcementDescription" in e["body"]]
            assert puts and all(body["announcementDescription"].startswith(f"{tenant} ")
                                for body in puts)
        # Each tenant's state under its own keys, nothing under any other tenant's.
        prefixes = {key.split("}", 1)[0] + "}" for key in d.redis.scan_iter(match="lb:[{]t:*")}
        assert prefixes == {"lb:{t:north}", "lb:{t:south}"}
        # The same ref is two listings: one per tenant, each with its own content.
        for tenant in TENANTS:
            held = d.redis.hgetall(keyspace(tenant).LISTING + "apt-2")
            assert (held["g"], held["v"]) == ("branch-a", str(VERSIONS))
        bodies = {d.redis.get(keyspace(tenant).BODY + "apt-2") for tenant in TENANTS}
        assert len(bodies) == 2 and None not in bodies


def test_a_request_for_one_tenant_is_refused_on_anothers_path_and_stores_nothing(
    redis_url: str, tmp_path: Path
) -> None:
    with deployment(redis_url, tmp_path, default=True) as d:
        # The worker's first turn of each tenant schedules its whole-portal check; what the
        # tenants hold once it has is what a refused request must leave as it is.
        wait_until(lambda: all(d.redis.exists(keyspace(t).RECONCILE_DUE + "rentix")
                               for t in (*TENANTS, tenancy.DEFAULT)),
                   timeout=10, what="the worker's first turn of every tenant")
        before = {t: tenant_keys(d.redis, t) for t in (*TENANTS, tenancy.DEFAULT)}
        event = upsert("north", "branch-a", "apt-1", 1)
        refused = post(d.bridge, "south", event, "wh-cross", secret=SECRETS["north"])
        unknown = post(d.bridge, "west", event, "wh-cross", secret=SECRETS["north"])
        not_a_name = post(d.bridge, "North_Agency", event, "wh-cross", secret=SECRETS["north"])
        unsigned_default = post(d.bridge, None, event, "wh-cross", secret=SECRETS["north"])

        for response in (refused, unknown, not_a_name, unsigned_default):
            assert response.status_code == 401, response.text
            body = response.json()
            assert list(body) == ["error"] and set(body["error"]) == {"type", "message"}
            assert body["error"]["type"] == "invalid_signature"
        # Nothing of north's changed (it was never named), nothing of an unknown tenant was
        # made; south and default (/webhooks/crm) only counted the refusal.
        assert tenant_keys(d.redis, "north") == before["north"]
        assert tenant_keys(d.redis, "west") == tenant_keys(d.redis, "north_agency") == set()
        rejection = {counters.WEBHOOK_REJECTIONS.field("invalid_signature")}
        for tenant in ("south", tenancy.DEFAULT):
            keys = keyspace(tenant)
            added = tenant_keys(d.redis, tenant) - before[tenant]
            stats = {key for key in added if key.startswith(keys.STATS)}
            assert stats and added == {keys.METRICS, *stats}, added
            assert all(set(d.redis.hgetall(key)) == {"rejected:invalid_signature"}
                       for key in stats)
            assert set(d.redis.hgetall(keys.METRICS)) == rejection

        # /webhooks/crm is tenant default, on the top level's secret.
        accepted = post(d.bridge, None, upsert(tenancy.DEFAULT, "branch-a", "apt-1", 2),
                        "wh-same")
        assert (accepted.status_code, accepted.json()) == (202, {"accepted": True,
                                                                 "id": "wh-same"})
        # The same ref and webhook-id in north and south: each its own event.
        for tenant, version in (("north", 4), ("south", 9)):
            response = post(d.bridge, tenant, upsert(tenant, "branch-a", "apt-1", version),
                            "wh-same")
            assert response.status_code == 202, response.text
        assert post(d.bridge, "south", upsert("south", "south-only", "s-1", 1)).status_code \
            == 202

        wait_until(lambda: d.portals[tenancy.DEFAULT].rentix().get("apt-1", {}).get(
            "formData", {}).get("announcementDescription") == content(tenancy.DEFAULT, "apt-1", 2),
            timeout=20, what="the default tenant's listing on its portal")
        delivered(d.portals["north"], ({"apt-1": ("active", content("north", "apt-1", 4))},
                                       {("branch-a", "apt-1"): content("north", "apt-1", 4)}))
        delivered(d.portals["south"], (
            {"apt-1": ("active", content("south", "apt-1", 9)),
             "s-1": ("active", content("south", "s-1", 1))},
            {("branch-a", "apt-1"): content("south", "apt-1", 9),
             ("south-only", "s-1"): content("south", "s-1", 1)}))

        stories = trace_of(d, "north"), trace_of(d, "south")
        plain = run(d, "trace", "apt-1", "--tenant", "north")
        unknown_tenant = run(d, "trace", "apt-1", "--tenant", "west")

    north, south = stories
    assert {e["version"] for e in north["entries"] if e["kind"] == "event"} == {4}
    assert {e["version"] for e in south["entries"] if e["kind"] == "event"} == {9}
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0].startswith("listing apt-1 in group branch-a: live, version 4, ")
    assert "listing.updated v4 in branch-a" in plain.stdout
    assert " v9 " not in plain.stdout and " v2 " not in plain.stdout
    assert unknown_tenant.returncode == 2
    assert "no tenant 'west' is configured (configured: default, north, south)" in \
        unknown_tenant.stderr


def run(d: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BRIDGE, *args, "--config", str(d.config)], capture_output=True,
                          text=True, timeout=30)


def trace_of(d: Deployment, tenant: str) -> dict[str, Any]:
    """``bridge trace apt-1 --tenant T --json`` once both portals' calls are in it."""
    def told() -> dict[str, Any] | None:
        result = run(d, "trace", "apt-1", "--tenant", tenant, "--json")
        if result.returncode != 0:
            return None
        story: dict[str, Any] = orjson.loads(result.stdout)
        calls = {e.get("target") for e in story["entries"] if e["kind"] == "call"}
        return story if calls == {"rentix", "travtus"} else None

    return cast(dict[str, Any], wait_until(
        told, timeout=20, what=f"{tenant}'s story with both portals' calls"))


def test_a_tenants_dashboard_token_finds_nothing_of_another_tenant(
    redis_url: str, tmp_path: Path
) -> None:
    with deployment(redis_url, tmp_path) as d:
        for tenant, version in (("north", 1), ("south", 7)):
            assert post(d.bridge, tenant, upsert(tenant, "branch-a", "apt-1", version)
                        ).status_code == 202
        assert post(d.bridge, "south", upsert("south", "south-only", "s-1", 1)).status_code \
            == 202
        for tenant in TENANTS:
            wait_until(lambda t=tenant: ("branch-a", "apt-1") in d.portals[t].descriptions()[1],
                       timeout=20, what=f"{tenant}'s listing delivered")
        wait_until(lambda: ("south-only", "s-1") in d.portals["south"].descriptions()[1],
                   timeout=20, what="south's own group delivered")

        def get(token: str, path: str, **params: str) -> httpx.Response:
            return d.bridge.get(path, params=params,
                                headers={"authorization": f"Bearer {token}"})

        north = TOKENS["north"]
        # Its own: the shared group holds north's listing.
        group = get(north, "/api/groups/branch-a")
        assert group.status_code == 200, group.text
        [listing] = group.json()["listings"]
        assert (listing["ref"], listing["version"]) == ("apt-1", 1)
        assert listing["body"]["description"] == content("north", "apt-1", 1)
        assert "south" not in group.text
        story = get(north, "/api/listings/apt-1/trace")
        assert story.status_code == 200, story.text
        assert {e["version"] for e in story.json()["entries"] if e["kind"] == "event"} == {1}

        def same_as_missing(found: httpx.Response, missing: httpx.Response,
                            name: str, absent: str) -> None:
            assert found.status_code == missing.status_code == 404
            assert found.json() == orjson.loads(missing.text.replace(absent, name))

        # South's group and listing: as a group and a listing that do not exist.
        same_as_missing(get(north, "/api/groups/south-only"),
                        get(north, "/api/groups/nowhere-else"), "south-only", "nowhere-else")
        same_as_missing(get(north, "/api/listings/s-1/trace"),
                        get(north, "/api/listings/s-404/trace"), "s-1", "s-404")
        # Naming south: as a tenant that does not exist.
        for path in ("/api/groups/south-only", "/api/groups/branch-a",
                     "/api/listings/s-1/trace"):
            same_as_missing(get(north, path, tenant="south"), get(north, path, tenant="nosuch"),
                            "south", "nosuch")
        # The deployment's token reaches south's group.
        assert get(DEPLOYMENT_TOKEN, "/api/groups/south-only", tenant="south").status_code \
            == 200
