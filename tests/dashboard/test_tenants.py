"""The dashboard, the JSON API and /metrics per tenant (contract section 4a, issue 31): a
tenant's own token reaches that tenant only, and anything of another tenant answers exactly as
what does not exist; the deployment's token reaches every tenant, picked with ``?tenant=``.
Two tenants hold the same group and the same external_ref, written by the real ingest code
under ``tenancy.use``; the app is the real one, over real HTTP."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from bridge import tenancy
from bridge.app import create_app
from bridge.clock import now_ms
from bridge.delivery.ledger import Held, Ledger, Quarantined
from bridge.ingest.events import parse_event
from bridge.settings import ConfigError, Settings, parse_settings
from tests.conftest import OTHER_SECRET, SECRET, make_settings
from tests.dashboard.conftest import TARGETS, TOKEN
from tests.support import crm
from tests.support.ingest import FoldingStore
from tests.support.servers import serve_app

TOKENS = {"a": "tenant-a-dashboard-token", "b": "tenant-b-dashboard-token"}
SECRETS = {"a": SECRET, "b": OTHER_SECRET}
# The same group and the same listing in both tenants, told apart by version and description;
# and a group of each tenant's own.
OWN_GROUP = {"a": "north", "b": "south", tenancy.DEFAULT: "middle"}
VERSION = {"a": 3, "b": 8, tenancy.DEFAULT: 5}


def tenants_settings(redis_url: str, deployment_token: str | None = TOKEN,
                     tokens: dict[str, str] = TOKENS, default: bool = False) -> Settings:
    """Tenants a and b (each with its dashboard token and both targets); the top level is a
    tenant of its own (``default``) only when asked."""
    data: dict[str, Any] = {
        "redis_url": redis_url,
        "webhook": {"secrets": [SECRET]} if default else {},
        "targets": TARGETS if default else [],
        "tenants": [{"name": name, "webhook_secrets": [SECRETS[name]], "targets": TARGETS,
                     **({"dashboard_token": tokens[name]} if name in tokens else {})}
                    for name in ("a", "b")],
    }
    if deployment_token is not None:
        data["dashboard"] = {"token": deployment_token}
    return parse_settings(data)


def seed(redis_url: str, tenant: str) -> None:
    """Through the webhook's store and the workers' fold, for ``tenant``: group "west" with
    listing "apt-1" (in both tenants), the tenant's own group with one listing; then a change
    of "west" held on travtus, one of the own group on rentix, and the own listing quarantined
    on rentix."""
    own = OWN_GROUP[tenant]
    events = [crm.upsert("west", "apt-1", VERSION[tenant], description=f"flat of {tenant}"),
              crm.upsert(own, f"{own}-1", 1)]

    async def go() -> None:
        client = Redis.from_url(redis_url)
        try:
            with tenancy.use(tenant):
                store = FoldingStore(client, make_settings(redis_url))
                for n, event in enumerate(events):
                    await store.put(f"wh-{tenant}-{n}", parse_event(orjson.dumps(event)),
                                    now_ms())
                await store.aclose()
                ledger = Ledger(client)
                await ledger.hold("travtus", "west", Held(f"d-{tenant}", "max_delete_count",
                                                          ["apt-1"], 0, now_ms()))
                await ledger.hold("rentix", own, Held(f"h-{tenant}", "max_delete_count",
                                                      [f"{own}-1"], 0, now_ms()))
                await ledger.quarantine("rentix", {f"{own}-1": Quarantined(
                    f"q-{tenant}", own, "data_invalid", "propertyArea must be a number",
                    "propertyArea", now_ms())})
        finally:
            await client.aclose()

    asyncio.run(go())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def serving(settings: Settings, listen_host: str = "127.0.0.1"
            ) -> Iterator[tuple[httpx.Client, Any]]:
    """A client of the app served, and the app itself (to replace its settings). Once it
    serves, code that reaches for a tenant's keys with no tenant set fails, as in serve: no
    route here quietly works on ``default``."""
    app = create_app(settings, listen_host)
    with serve_app(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        tenancy.require_explicit()
        try:
            yield http, app
        finally:
            tenancy.require_explicit(False)


@pytest.fixture
def served(redis_url: str) -> Iterator[tuple[httpx.Client, Any]]:
    """The app over two seeded tenants."""
    for tenant in ("a", "b"):
        seed(redis_url, tenant)
    with serving(tenants_settings(redis_url)) as both:
        yield both


@pytest.fixture
def http(served: tuple[httpx.Client, Any]) -> httpx.Client:
    return served[0]


def as_tenant(http: httpx.Client, holder: str, path: str, **params: str) -> httpx.Response:
    """GET ``path`` with tenant ``holder``'s token."""
    return http.get(path, params=params, headers=bearer(TOKENS[holder]))


def as_deployment(http: httpx.Client, path: str, **params: str) -> httpx.Response:
    return http.get(path, params=params, headers=bearer(TOKEN))


def same_refusal(one: httpx.Response, other: httpx.Response, names: tuple[str, str]) -> None:
    """Two answers alike but for the name each asked about: same status, type and wording."""
    assert one.status_code == other.status_code == 404
    assert one.headers["content-type"] == other.headers["content-type"]
    assert unnamed(one.text, names[0]) == unnamed(other.text, names[1])


def unnamed(text: str, name: str) -> str:
    """``text`` with ``name`` left out where it is quoted (JSON, HTML text or attribute)."""
    for quoted in ("'{}'", "&#39;{}&#39;", "“{}”", '"{}"'):
        text = text.replace(quoted.format(name), quoted.format("NAME"))
    return text


def test_a_tenants_token_reads_its_own_group_and_listing(http: httpx.Client) -> None:
    for tenant in ("a", "b"):
        group = as_tenant(http, tenant, "/api/groups/west")
        assert group.status_code == 200, group.text
        (listing,) = group.json()["listings"]
        assert (listing["ref"], listing["version"]) == ("apt-1", VERSION[tenant])
        assert listing["body"]["description"] == f"flat of {tenant}"
        trace = as_tenant(http, tenant, "/api/listings/apt-1/trace").json()
        assert trace["group"] == "west"
        assert {e.get("version") for e in trace["entries"] if e["kind"] == "event"} == \
            {VERSION[tenant]}
        page = as_tenant(http, tenant, "/dashboard/groups/west")
        assert page.status_code == 200 and f"flat of {tenant}" not in page.text  # no bodies
        assert f"Tenant <strong>{tenant}</strong>" in page.text
        found = as_tenant(http, tenant, "/api/groups", q="o").json()["groups"]
        assert [g["group"] for g in found] == [OWN_GROUP[tenant]]
        # Its own token, its own tenant named: the same.
        named = as_tenant(http, tenant, "/api/groups/west", tenant=tenant)
        assert named.json()["listings"] == group.json()["listings"]


def test_another_tenants_data_answers_as_what_does_not_exist(http: httpx.Client) -> None:
    same_refusal(as_tenant(http, "a", "/api/groups/south"),
                 as_tenant(http, "a", "/api/groups/nowhere"), ("south", "nowhere"))
    same_refusal(as_tenant(http, "a", "/api/listings/south-1/trace"),
                 as_tenant(http, "a", "/api/listings/nothing-1/trace"), ("south-1", "nothing-1"))
    same_refusal(as_tenant(http, "a", "/dashboard/groups/south"),
                 as_tenant(http, "a", "/dashboard/groups/nowhere"), ("south", "nowhere"))
    # ?tenant= naming another tenant: as a tenant that is not configured, on every route.
    for path in ("/api/groups/west", "/api/overview", "/dashboard/", "/dashboard/groups/west",
                 "/metrics", "/api/adoption/rentix"):
        same_refusal(as_tenant(http, "a", path, tenant="b"),
                     as_tenant(http, "a", path, tenant="zed"), ("b", "zed"))
        assert as_deployment(http, path, tenant="zed").status_code == 404
    assert "b" not in as_tenant(http, "a", "/api/overview", tenant="zed").json()["error"][
        "message"].replace("'zed'", "")


def test_a_tenants_token_cannot_act_on_another_tenant(http: httpx.Client,
                                                     r: redis.Redis) -> None:
    before = {k: r.dump(k) for k in sorted(r.keys(tenancy.prefix("b") + "*"))}
    token = bearer(TOKENS["a"])
    refused = [
        http.post("/api/targets/rentix/pause", params={"tenant": "b"}, json={}, headers=token),
        http.post("/api/tenant/pause", params={"tenant": "b"}, json={}, headers=token),
        http.post("/api/held/discard", json={"group": "south", "digest": "h-b"}, headers=token),
        http.post("/api/quarantine/discard", json={"items": [
            {"target": "rentix", "ref": "south-1"}]}, headers=token),
        http.post("/api/held/release", params={"tenant": "b"},
                  json={"group": "west", "digest": "d-b"}, headers=token),
    ]
    assert [answer.status_code for answer in refused] == [404] * 5
    assert {k: r.dump(k) for k in sorted(r.keys(tenancy.prefix("b") + "*"))} == before
    # Its own held change, by its own digest, it may discard.
    mine = http.post("/api/held/discard", json={"group": "west", "digest": "d-a"},
                     headers=token)
    assert mine.status_code == 200, mine.text


def test_the_deployments_token_picks_a_tenant_with_the_parameter(http: httpx.Client) -> None:
    for tenant in ("a", "b"):
        group = as_deployment(http, "/api/groups/west", tenant=tenant).json()
        assert group["listings"][0]["version"] == VERSION[tenant]
        assert as_deployment(http, f"/api/groups/{OWN_GROUP[tenant]}",
                             tenant=tenant).status_code == 200
    # No default tenant here: the API names the parameter; the pages list the tenants.
    missing = as_deployment(http, "/api/groups/west")
    assert missing.status_code == 400
    assert missing.json()["error"]["type"] == "invalid_request"
    assert "'tenant'" in missing.json()["error"]["message"]
    assert as_deployment(http, "/api/adoption/rentix").status_code == 400
    picker = as_deployment(http, "/dashboard/groups")
    assert picker.status_code == 200
    assert re.findall(r'href="([^"]+)"', picker.text)[1:] == [
        "/dashboard/groups?tenant=a", "/dashboard/groups?tenant=b"]
    assert as_deployment(http, "/dashboard/static/dashboard.css").status_code == 200
    # Nobody's token: nothing.
    assert http.get("/api/groups/west", params={"tenant": "a"}).status_code == 401
    assert http.get("/dashboard/", headers=bearer("guess")).status_code == 401


def test_links_between_pages_keep_the_tenant(http: httpx.Client) -> None:
    page = as_deployment(http, "/dashboard/problems", tenant="b").text
    assert 'href="/dashboard/groups/west?tenant=b"' in page
    assert 'href="/dashboard/listings/south-1?tenant=b"' in page
    assert 'data-post="/api/held/release?tenant=b"' in page
    assert '<input type="hidden" name="tenant" value="b">' in \
        as_deployment(http, "/dashboard/groups", tenant="b").text
    assert '<option selected>b</option>' in page  # the deployment may switch
    groups = as_deployment(http, "/dashboard/groups", tenant="b", per_page="1").text
    assert 'rel="next" href="/dashboard/groups?sort=name&amp;page=2&amp;per_page=1&amp;' \
        'tenant=b"' in groups
    # A tenant's token needs no parameter, and its links carry none.
    own = as_tenant(http, "a", "/dashboard/problems").text
    assert 'href="/dashboard/groups/west"' in own and "<select" not in own


def test_metrics_carry_the_tenant_label(http: httpx.Client) -> None:
    every = scrape(as_deployment(http, "/metrics"))
    assert tenants_of(every) == {"a", "b"}
    for tenant in ("a", "b"):
        assert every[("listing_bridge_quarantined_listings",
                      (("target", "rentix"), ("tenant", tenant)))] == 1
        assert every[("listing_bridge_held_syncs",
                      (("target", "travtus"), ("tenant", tenant)))] == 1
    # The deployment's own series carry no tenant.
    assert ("listing_bridge_workers_alive", ()) in every
    assert ("listing_bridge_queue_depth", ()) in every
    own = scrape(as_tenant(http, "a", "/metrics"))
    assert tenants_of(own) == {"a"}
    assert ("listing_bridge_workers_alive", ()) in own
    assert tenants_of(scrape(as_deployment(http, "/metrics", tenant="b"))) == {"b"}


def scrape(answer: httpx.Response) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert answer.status_code == 200, answer.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text)
            for s in family.samples}


def tenants_of(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> set[str]:
    return {value for _, labels in samples for key, value in labels if key == "tenant"}


def states(http: httpx.Client, tenant: str) -> dict[str, str]:
    return {t["name"]: t["state"] for t in as_tenant(http, tenant, "/api/targets").json()[
        "targets"]}


def test_pausing_a_tenant_pauses_every_target_of_its_own(http: httpx.Client) -> None:
    paused = http.post("/api/tenant/pause", json={"reason": "agency on hold"},
                       headers=bearer(TOKENS["a"]))
    assert paused.status_code == 200, paused.text
    assert paused.json() == {"tenant": "a", "state": "paused", "reason": "agency on hold",
                             "targets": ["rentix", "travtus"]}
    assert states(http, "a") == {"rentix": "paused", "travtus": "paused"}
    assert states(http, "b") == {"rentix": "active", "travtus": "active"}
    page = as_tenant(http, "a", "/dashboard/targets").text
    assert 'data-post="/api/tenant/resume"' in page and "/api/tenant/pause" not in page
    # The deployment resumes it, naming it; an action from another site is refused first.
    foreign = http.post("/api/tenant/resume", params={"tenant": "a"}, json={},
                        headers={**bearer(TOKEN), "Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert http.post("/api/tenant/resume", json={}, headers=bearer(TOKEN)).status_code == 400
    resumed = http.post("/api/tenant/resume", params={"tenant": "a"}, json={},
                        headers=bearer(TOKEN))
    assert resumed.json() == {"tenant": "a", "state": "active", "targets": ["rentix", "travtus"]}
    assert states(http, "a") == {"rentix": "active", "travtus": "active"}


def test_settings_are_read_at_each_request(served: tuple[httpx.Client, Any],
                                           redis_url: str) -> None:
    """As serve replaces them on SIGHUP: a rotated tenant token works at once, the old one
    no longer."""
    http, app = served
    app.state.settings = tenants_settings(redis_url, tokens={"a": "rotated-token-of-a"})
    assert as_tenant(http, "a", "/api/groups/west").status_code == 401
    rotated = http.get("/api/groups/west", headers=bearer("rotated-token-of-a"))
    assert rotated.status_code == 200 and rotated.json()["listings"][0]["version"] == 3
    assert as_tenant(http, "b", "/api/overview").status_code == 401  # b has no token now


def test_the_default_tenant_is_the_deployments_choice_without_the_parameter(
        redis_url: str) -> None:
    seed(redis_url, "b")
    seed(redis_url, tenancy.DEFAULT)
    with serving(tenants_settings(redis_url, default=True)) as (http, _):
        http.headers.update(bearer(TOKEN))
        assert http.get("/api/groups/west").json()["listings"][0]["version"] == 5
        assert http.get("/api/groups", params={"q": "south", "tenant": "b"}).json()[
            "groups"][0]["group"] == "south"
        assert http.get("/dashboard/").status_code == 200


def test_tenant_tokens_alone_serve_beyond_loopback(redis_url: str) -> None:
    settings = tenants_settings(redis_url, deployment_token=None)
    with serving(settings, listen_host="0.0.0.0") as (http, _):
        # No deployment token beyond loopback: no one reaches every tenant, nor any without
        # a token, whatever Host they name.
        assert http.get("/api/overview", params={"tenant": "a"}).status_code == 401
        assert http.get("/metrics").status_code == 401
        assert as_tenant(http, "a", "/api/overview").status_code == 200
        assert as_tenant(http, "b", "/metrics").status_code == 200
    none = tenants_settings(redis_url, deployment_token=None, tokens={})
    with pytest.raises(ConfigError, match=r"0\.0\.0\.0.*no token.*dashboard_token"):
        create_app(none, listen_host="0.0.0.0")


def test_loopback_without_any_token_reaches_every_tenant(redis_url: str) -> None:
    seed(redis_url, "b")
    settings = tenants_settings(redis_url, deployment_token=None)
    with serving(settings) as (http, _):
        assert http.get("/api/groups/south", params={"tenant": "b"}).status_code == 200
        assert tenants_of(scrape(http.get("/metrics"))) == {"a", "b"}
        # A tenant's token still narrows to its tenant.
        assert as_tenant(http, "a", "/api/groups/south").status_code == 404
        assert http.get("/api/overview", params={"tenant": "a"},
                        headers={"Host": "evil.example"}).status_code == 403
