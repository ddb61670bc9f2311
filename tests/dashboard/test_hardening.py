"""The operator surface against other sites: cross-site and form requests change nothing, a
loopback-only dashboard answers only requests addressed to this machine, and a blank token
never starts."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from bridge.app import create_app
from bridge.dashboard.auth import same_origin, split_host, tokens_match
from bridge.settings import ConfigError, DashboardSettings, parse_settings
from tests.conftest import SECRET
from tests.dashboard.conftest import TOKEN, dashboard_settings, seed_problems
from tests.dashboard.test_api import snapshot
from tests.support.servers import serve_app

# Every state-changing route of the dashboard's API and the linking API, with a body that
# would be valid as JSON.
ACTIONS: list[tuple[str, str, dict[str, object]]] = [
    ("POST", "/api/held/release", {"target": "travtus", "group": "mass", "digest": "d-mass"}),
    ("POST", "/api/held/discard", {"target": "travtus", "group": "mass", "digest": "d-mass"}),
    ("POST", "/api/quarantine/retry", {"items": [{"target": "travtus", "ref": "apt-1"}]}),
    ("POST", "/api/quarantine/discard", {"items": [{"target": "travtus", "ref": "apt-1"}]}),
    ("POST", "/api/targets/rentix/pause", {"reason": "forged"}),
    ("POST", "/api/targets/rentix/resume", {}),
    ("POST", "/api/links", {"target": "rentix", "portal_id": 1, "external_ref": "apt-1"}),
    ("POST", "/api/links/rentix/scan", {"apply": True}),
    ("POST", "/api/adoption/rentix/end", {}),
    ("DELETE", "/api/links/rentix/1", {"why": "a body, so that it has a type"}),
]
EVIL = "https://evil.example"


def basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"operator:{token}".encode()).decode()


def form_fields(body: dict[str, object]) -> dict[str, str]:
    return {key: str(value) for key, value in body.items()}


def test_a_cross_site_form_post_changes_nothing(client: httpx.Client, redis_url: str,
                                                r: redis.Redis) -> None:
    seed_problems(redis_url)
    before = snapshot(r)
    for method, path, body in ACTIONS:
        # What a page on another site makes the operator's browser send.
        forged = client.request(method, path, data=form_fields(body),
                                headers={"Origin": EVIL, "Sec-Fetch-Site": "cross-site"})
        assert forged.status_code == 403, (path, forged.text)
        assert forged.json()["error"]["type"] == "cross_site_request"
        # Even a JSON body does not make another site's request acceptable.
        for headers in ({"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"},
                        {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):
            refused = client.request(method, path, json=body, headers=headers)
            assert refused.status_code == 403, (path, headers, refused.text)
    assert snapshot(r) == before


def test_a_cross_site_post_with_cached_basic_credentials_changes_nothing(
    redis_url: str, r: redis.Redis
) -> None:
    seed_problems(redis_url)
    before = snapshot(r)
    settings = dashboard_settings(redis_url, dashboard={"token": TOKEN})
    with serve_app(create_app(settings, listen_host="0.0.0.0")) as url, \
            httpx.Client(base_url=url, timeout=10) as http:
        for method, path, body in ACTIONS:
            forged = http.request(method, path, data=form_fields(body),
                                  headers={"Authorization": basic(TOKEN), "Origin": EVIL,
                                           "Sec-Fetch-Site": "cross-site"})
            assert forged.status_code == 403, (path, forged.text)
    assert snapshot(r) == before


def test_every_action_refuses_a_body_that_is_not_json(client: httpx.Client, redis_url: str,
                                                      r: redis.Redis) -> None:
    seed_problems(redis_url)
    before = snapshot(r)
    for method, path, body in ACTIONS:
        for content in ({"data": form_fields(body)},
                        {"content": b'{"apply": true}', "headers": {"content-type": "text/plain"}}):
            answer = client.request(method, path, **content)
            assert answer.status_code == 400, (path, content, answer.text)
            assert answer.json()["error"]["type"] == "invalid_request"
            assert "Content-Type: application/json" in answer.json()["error"]["message"]
    # A POST with no body at all is not JSON either.
    assert client.post("/api/adoption/rentix/end").status_code == 400
    assert snapshot(r) == before


def test_the_dashboards_own_pages_and_plain_clients_may_act(client: httpx.Client,
                                                            r: redis.Redis) -> None:
    own = str(client.base_url).rstrip("/")
    browser = {"Origin": own, "Sec-Fetch-Site": "same-origin"}
    paused = client.post("/api/targets/rentix/pause", json={"reason": "by hand"},
                         headers=browser)
    assert paused.status_code == 200, paused.text
    assert r.hget("lb:{t:default}:target:rentix", "paused") is not None
    resumed = client.post("/api/targets/rentix/resume", json={})  # curl: neither header
    assert resumed.status_code == 200, resumed.text
    # Behind a proxy that rewrites Host, the public name comes as X-Forwarded-Host.
    proxied = client.post("/api/targets/rentix/resume", json={},
                          headers={"Origin": "https://bridge.example.com",
                                   "X-Forwarded-Host": "bridge.example.com"})
    assert proxied.status_code == 200, proxied.text
    # Reads are never refused for their origin (a page's own polling, a bookmark).
    assert client.get("/api/status", headers={"Sec-Fetch-Site": "cross-site"}).status_code \
        == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example",
                                  "0.0.0.0", "10.0.0.5:80", "[::ffff:10.0.0.1]", ""])
def test_loopback_only_dashboard_refuses_another_host_name(client: httpx.Client, host: str,
                                                           redis_url: str,
                                                           r: redis.Redis) -> None:
    """DNS rebinding: a page on evil.example, re-resolved to 127.0.0.1, reaches the port but
    names its own host."""
    seed_problems(redis_url)
    before = snapshot(r)
    for path in ("/dashboard/", "/api/status", "/metrics"):
        answer = client.get(path, headers={"Host": host})
        assert answer.status_code == 403, (path, answer.text)
        assert answer.json()["error"]["type"] == "untrusted_host"
    released = client.post("/api/held/release", headers={"Host": host},
                           json={"target": "travtus", "group": "mass", "digest": "d-mass"})
    assert released.status_code == 403
    assert snapshot(r) == before
    # The webhook and probes do not depend on the name they are reached by.
    assert client.get("/healthz", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8000", "127.8.0.1:1", "localhost",
                                  "LOCALHOST:8000", "[::1]", "[::1]:8000"])
def test_loopback_only_dashboard_answers_loopback_host_names(client: httpx.Client,
                                                             host: str) -> None:
    assert client.get("/api/status", headers={"Host": host}).status_code == 200


def test_a_dashboard_with_a_token_answers_any_host_name(redis_url: str) -> None:
    settings = dashboard_settings(redis_url, dashboard={"token": TOKEN})
    with serve_app(create_app(settings, listen_host="0.0.0.0")) as url, \
            httpx.Client(base_url=url, timeout=10) as http:
        answer = http.get("/api/status", headers={"Host": "bridge.example.com",
                                                  "Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 200


@pytest.mark.parametrize("value", ["", " ", "\t"])
def test_an_empty_token_is_refused_at_load(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_TEST_TOKEN", value)
    with pytest.raises(ConfigError, match=r"dashboard\.token: found .*non-empty token"):
        parse_settings({"webhook": {"secrets": [SECRET]},
                        "dashboard": {"token": "${BRIDGE_TEST_TOKEN}"}})


def test_an_empty_token_never_starts_an_app(redis_url: str) -> None:
    settings = dashboard_settings(redis_url)
    blank = settings.model_copy(update={"dashboard": DashboardSettings.model_construct(token="")})
    with pytest.raises(ConfigError, match=r"\[dashboard\] token is empty"):
        create_app(blank, listen_host="0.0.0.0")


@pytest.mark.processes
def test_bridge_serve_with_an_empty_token_says_so_and_stops(redis_url: str,
                                                           tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(f'redis_url = "{redis_url}"\n[webhook]\nsecrets = ["{SECRET}"]\n'
                      '[dashboard]\ntoken = "${BRIDGE_DASHBOARD_TOKEN}"\n')
    result = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "serve", "--config", str(config), "--host",
         "0.0.0.0", "--port", "1"],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "BRIDGE_DASHBOARD_TOKEN": ""},
    )
    assert result.returncode != 0
    assert "dashboard.token: found ''" in result.stderr
    assert "Traceback" not in result.stderr


def test_token_comparison_refuses_empty_prefix_and_longer_tokens(redis_url: str) -> None:
    assert tokens_match(TOKEN, TOKEN)
    for given in ("", TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
        assert not tokens_match(given, TOKEN), given
    settings = dashboard_settings(redis_url, dashboard={"token": TOKEN})
    with serve_app(create_app(settings, listen_host="0.0.0.0")) as url, \
            httpx.Client(base_url=url, timeout=10) as http:
        for header in ("Bearer", "Basic " + base64.b64encode(b"op:").decode(),
                       f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x"):
            assert http.get("/api/status", headers={"Authorization": header}).status_code \
                == 401, header
        assert http.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}) \
            .status_code == 200


def test_host_and_origin_parsing() -> None:
    assert split_host("[::1]:8000") == ("::1", 8000)
    assert split_host("Localhost") == ("localhost", None)
    assert split_host("a:b") is None and split_host("[::1]x") is None and split_host("") is None
    assert same_origin("http://127.0.0.1:8000", ["127.0.0.1:8000"])
    assert same_origin("https://bridge.example.com", ["bridge.example.com"])
    assert same_origin("https://bridge.example.com:443", ["bridge.example.com"])
    assert not same_origin("http://127.0.0.1:8001", ["127.0.0.1:8000"])
    assert not same_origin("null", ["127.0.0.1:8000"])
    assert not same_origin("https://evil.example", ["127.0.0.1:8000"])
