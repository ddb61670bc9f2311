"""External-ID linking (bridge.linking.service) against the sandbox over real HTTP: link and
unlink with operator-facing messages, the web API, the matching scan on the seeded fixture,
adoption state.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from bridge.app import create_app
from bridge.connections import redis_client
from bridge.constants import ks
from bridge.linking.service import Linking
from bridge.sandbox.app import SandboxSettings
from bridge.sandbox.app import create_app as create_sandbox
from bridge.settings import DashboardSettings, Settings, load_settings
from tests.conftest import SECRET
from tests.support import crm
from tests.support.ingest import fold
from tests.support.linking import build_linking_fixture
from tests.support.servers import serve_app

FAST = 100_000  # requests per minute: the sandbox and the bridge's limiter stay out of the way


@pytest.fixture
def sandbox_url() -> Iterator[str]:
    with serve_app(create_sandbox(SandboxSettings(rentix_per_minute=FAST))) as url:
        yield url


@pytest.fixture
def sandbox(sandbox_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox_url, timeout=10) as client:
        yield client


def write_config(tmp_path: Path, redis_url: str, sandbox_url: str, adopt: bool = False) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(
        f'redis_url = "{redis_url}"\n[webhook]\nsecrets = ["{SECRET}"]\n'
        "[debounce]\nwindow_ms = 100\nmax_wait_ms = 500\n"
        f'[[targets]]\nname = "rentix"\nkind = "rentix"\n'
        f'base_url = "{sandbox_url}/rentix/api/v1"\napi_key = "sandbox"\n'
        f"requests_per_minute = {FAST}\nadopt = {'true' if adopt else 'false'}\n"
    )
    return path


@pytest.fixture
def config(tmp_path: Path, redis_url: str, sandbox_url: str) -> Path:
    return write_config(tmp_path, redis_url, sandbox_url)


@pytest.fixture
def settings(config: Path) -> Settings:
    return load_settings(config)


def seed(sandbox: httpx.Client, *forms: dict[str, Any]) -> list[int]:
    response = sandbox.post("/_sandbox/rentix/listings", json={"listings": list(forms)})
    assert response.status_code == 200, response.text
    return list(response.json()["ids"])




def portal_listings(sandbox: httpx.Client) -> dict[int, dict[str, Any]]:
    items = sandbox.get("/_sandbox/rentix/listings").json()["items"]
    return {item["id"]: item for item in items}


def link_calls(sandbox: httpx.Client) -> list[dict[str, Any]]:
    journal = sandbox.get("/_sandbox/journal", params={"portal": "rentix"}).json()["requests"]
    return [r for r in journal if r["path"].endswith("/link")]


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", "link", *args, "--config",
                           str(config)], capture_output=True, text=True, timeout=60)


async def linking(settings: Settings) -> Linking:
    assert settings.redis_url
    return Linking(redis_client(settings.redis_url), settings)


# link and unlink -----------------------------------------------------------------------------

async def test_link_records_the_ref_and_unlink_forgets_it(
    settings: Settings, sandbox: httpx.Client, r: redis.Redis
) -> None:
    [pid] = seed(sandbox, crm.hand_made())
    lk = await linking(settings)
    result = await lk.link("rentix", pid, "apt-1")
    assert (result.changed, result.message) == (True, f"linked rentix listing #{pid} to apt-1")
    assert portal_listings(sandbox)[pid]["externalId"] == "apt-1"
    assert r.smembers(ks().LINKED + "rentix") == {"apt-1"}

    again = await lk.link("rentix", pid, "apt-1")  # asked twice: done already, not an error
    assert not again.changed and "already linked to apt-1" in again.message

    result = await lk.unlink("rentix", pid)
    assert (result.changed, result.external_ref) == (True, "apt-1")
    assert portal_listings(sandbox)[pid]["externalId"] is None
    assert r.smembers(ks().LINKED + "rentix") == set()
    await lk.redis.aclose()


@pytest.mark.processes
def test_cli_turns_each_link_error_into_what_to_do(config: Path, sandbox: httpx.Client) -> None:
    a, b = seed(sandbox, crm.hand_made(), crm.hand_made("Chișinău, strada Columna 81, ap. 14"))
    done = cli(config, "add", "--target", "rentix", str(a), "apt-1")
    assert done.returncode == 0 and done.stdout.strip() == f"linked rentix listing #{a} to apt-1"

    # External ID already linked: name the listing that holds it, and how to free it.
    taken = cli(config, "add", "--target", "rentix", str(b), "apt-1")
    assert taken.returncode == 1
    assert (f"apt-1 is already linked to rentix listing #{a}; unlink that one first "
            f"(bridge link remove --target rentix {a})") in taken.stderr

    # Listing already has external ID: unlink first.
    has = cli(config, "add", "--target", "rentix", str(a), "apt-2")
    assert has.returncode == 1
    assert (f"rentix listing #{a} is already linked to apt-1; unlink it first: "
            f"bridge link remove --target rentix {a}") in has.stderr

    # Listing not found, for link and unlink.
    for args in (("add", "--target", "rentix", "999999", "apt-3"),
                 ("remove", "--target", "rentix", "999999")):
        missing = cli(config, *args)
        assert missing.returncode == 1
        assert "rentix has no listing #999999" in missing.stderr
        assert "check the portal ID" in missing.stderr

    # Listing has no external ID: nothing to unlink is a success.
    nothing = cli(config, "remove", "--target", "rentix", str(b))
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout.strip() == f"rentix listing #{b} has no external ID: nothing to unlink"
    assert portal_listings(sandbox)[a]["externalId"] == "apt-1"


def test_web_api_links_unlinks_and_explains(settings: Settings, sandbox: httpx.Client) -> None:
    a, b = seed(sandbox, crm.hand_made(), crm.hand_made("Chișinău, strada Columna 81, ap. 14"))
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url) as api:
        added = api.post("/api/links", json={"target": "rentix", "portal_id": a,
                                             "external_ref": "apt-1"})
        assert added.status_code == 200 and added.json()["changed"] is True

        clash = api.post("/api/links", json={"target": "rentix", "portal_id": b,
                                             "external_ref": "apt-1"})
        assert clash.status_code == 409
        assert clash.json()["error"]["type"] == "external_id_in_use"
        assert f"rentix listing #{a}" in clash.json()["error"]["message"]

        bad = api.post("/api/links", json={"target": "rentix", "portal_id": "x"})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request"
        unknown = api.post("/api/links", json={"target": "nope", "portal_id": a,
                                               "external_ref": "apt-1"})
        assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "unknown_target"

        nothing = api.delete(f"/api/links/rentix/{b}")
        assert nothing.status_code == 200 and nothing.json()["changed"] is False
        removed = api.delete(f"/api/links/rentix/{a}")
        assert removed.json() | {"message": ""} == {
            "target": "rentix", "portal_id": a, "external_ref": "apt-1", "changed": True,
            "message": ""}
        gone = api.delete("/api/links/rentix/999999")
        assert gone.status_code == 404 and gone.json()["error"]["type"] == "listing_not_found"

        scan = api.post("/api/links/rentix/scan", json={"apply": False})
        assert scan.status_code == 200 and scan.json()["counts"]["unmatched_portal"] == 2
        adoption = api.get("/api/adoption/rentix").json()
        assert adoption["active"] is False and adoption["held_creates"] == []


def test_web_api_sits_behind_the_dashboard_token(settings: Settings,
                                                 sandbox: httpx.Client) -> None:
    [pid] = seed(sandbox, crm.hand_made())
    guarded = settings.model_copy(update={"dashboard": DashboardSettings(token="s3cret")})
    with serve_app(create_app(guarded)) as url, httpx.Client(base_url=url) as api:
        body = {"target": "rentix", "portal_id": pid, "external_ref": "apt-1"}
        refused = api.post("/api/links", json=body)
        assert refused.status_code == 401 and refused.json()["error"]["type"] == "unauthorized"
        assert api.get("/api/adoption/rentix").status_code == 401
        assert portal_listings(sandbox)[pid]["externalId"] is None
        done = api.post("/api/links", json=body, headers={"Authorization": "Bearer s3cret"})
        assert done.status_code == 200 and done.json()["changed"] is True


# the scan on the realistic fixture ---------------------------------------------------------

def post_crm(settings: Settings, listings: list[dict[str, Any]], groups: int = 4) -> None:
    """The CRM's listings arrive as group snapshots through the signed webhook, and are
    folded into the state."""
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url) as bridge:
        for g in range(groups):
            part = listings[g::groups]
            event = crm.event("group.snapshot", f"office-{g}", listings=part)
            response = crm.post(bridge, SECRET, event)
            assert response.status_code in (200, 202), response.text
    assert settings.redis_url
    with redis.Redis.from_url(settings.redis_url) as client:
        fold(client, settings)  # as a worker does; the scan reads the folded state


@pytest.mark.processes
def test_scan_on_the_fixture_links_confident_matches_only_and_twice_changes_nothing(
    config: Path, settings: Settings, sandbox: httpx.Client, tmp_path: Path
) -> None:
    fx = build_linking_fixture()
    forms = [{**{f: v for f, v in item["formData"].items() if f != "id"},
              "externalId": item["externalId"]} for item in fx.portal_items]
    sandbox_id = dict(zip((item["id"] for item in fx.portal_items), seed(sandbox, *forms),
                          strict=True))
    post_crm(settings, fx.crm_listings)

    dry = cli(config, "scan", "--target", "rentix", "--out", str(tmp_path / "dry"))
    assert dry.returncode == 0, dry.stderr
    assert "Nothing linked (dry run)" in dry.stdout
    assert not link_calls(sandbox)

    out = tmp_path / "reports"
    applied = cli(config, "scan", "--target", "rentix", "--apply", "--out", str(out))
    assert applied.returncode == 0, applied.stderr
    report = json.loads(next(out.glob("*.json")).read_text())
    with next(out.glob("*.csv")).open(encoding="utf-8") as table:
        rows = list(csv.DictReader(table))
    assert report["counts"]["skipped_linked"] == len(fx.linked) == 20
    assert len(report["linked"]) == report["counts"]["matched"] > 0
    assert sum(row["status"] == "matched" for row in rows) == report["counts"]["matched"]
    assert {"ambiguous", "unmatched_portal", "unmatched_crm"} <= {row["status"] for row in rows}
    assert f"Linked now: {report['counts']['matched']}" in applied.stdout

    # Judge what the portal now holds against the fixture's ground truth.
    on_portal = portal_listings(sandbox)
    newly = {fid: on_portal[sid]["externalId"] for fid, sid in sandbox_id.items()
             if fid not in fx.linked and on_portal[sid]["externalId"]}
    correct = sum(fx.truth.get(fid) == ref for fid, ref in newly.items())
    precision, recall = correct / len(newly), correct / len(fx.truth)
    print(f"scan --apply on the fixture: {len(newly)} linked, {correct} correct of "
          f"{len(fx.truth)} true pairs: precision {precision:.3f}, recall {recall:.3f}")
    assert precision == 1.0  # no false link at the default threshold
    assert recall >= 0.9
    assert all(on_portal[sandbox_id[fid]]["externalId"] == ref for fid, ref in fx.linked.items())

    calls = len(link_calls(sandbox))
    again = cli(config, "scan", "--target", "rentix", "--apply", "--out", str(tmp_path / "2"))
    assert again.returncode == 0, again.stderr
    assert "Linked now: 0" in again.stdout
    assert "matched (confident)      0" in again.stdout
    assert len(link_calls(sandbox)) == calls  # the second run changed nothing
    assert portal_listings(sandbox) == on_portal


# adoption state ------------------------------------------------------------------------------

@pytest.mark.processes
async def test_scan_keeps_adoption_on_while_listings_are_ambiguous(
    tmp_path: Path, redis_url: str, sandbox_url: str, sandbox: httpx.Client, r: redis.Redis
) -> None:
    settings = load_settings(write_config(tmp_path, redis_url, sandbox_url, adopt=True))
    # Twin flats at one price; the portal listing does not say which one it is.
    [twin] = seed(sandbox, crm.hand_made("Chișinău, strada Columna 81"))
    post_crm(settings, [crm.listing("apt-12"), crm.listing("apt-14", address={
        **crm.listing("x")["address"], "line2": "ap. 14"})], groups=1)
    lk = await linking(settings)
    await lk.adoption.hold("rentix", "apt-12", "office-0", 1)
    await lk.adoption.hold("rentix", "apt-14", "office-0", 1)

    result = await lk.scan("rentix", apply=True)
    assert [a.portal_id for a in result.report.ambiguous] == [twin]
    assert result.adoption.startswith("still on: 1 portal listing(s) need a person")
    assert (await lk.adoption_status("rentix"))["active"] is True

    # The operator links the twin by hand: its held create is an update now, due at once.
    r.delete(ks().DUE)
    await lk.link("rentix", twin, "apt-12")
    assert r.zscore(ks().DUE, "office-0") is not None
    held = (await lk.adoption_status("rentix"))["held_creates"]
    assert [h["ref"] for h in held] == ["apt-14"]

    r.delete(ks().DUE)
    ended = cli(write_config(tmp_path, redis_url, sandbox_url, adopt=True), "adopt", "end",
                "--target", "rentix")
    assert ended.returncode == 0, ended.stderr
    assert "adoption of rentix ended; held creates of 1 group(s) flow now" in ended.stdout
    status = await lk.adoption_status("rentix")
    assert (status["active"], status["held_creates"]) == (False, [])
    assert r.zscore(ks().DUE, "office-0") is not None
    await lk.redis.aclose()


@pytest.mark.processes
def test_adoption_end_refuses_a_target_that_is_not_adopting(config: Path) -> None:
    result = cli(config, "adopt", "end", "--target", "rentix")
    assert result.returncode == 1
    assert "rentix is not in adoption mode (adopt = false)" in result.stderr
    status = cli(config, "adopt", "status")  # the only Rentix target needs no --target
    assert status.returncode == 0
    assert status.stdout.startswith("rentix: adoption off; 0 ref(s) known linked")
