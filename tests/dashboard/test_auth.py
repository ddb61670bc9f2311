"""Who may see and act: a token (bearer, or basic auth password) unless loopback-only; the
webhook never needs it."""

from __future__ import annotations

import base64

import httpx
import pytest

from bridge.app import create_app
from bridge.dashboard.auth import is_loopback
from bridge.settings import ConfigError
from tests.conftest import SECRET
from tests.dashboard.conftest import TOKEN, dashboard_settings
from tests.support import crm
from tests.support.servers import serve_app

PROTECTED = ["/dashboard/", "/dashboard/problems", "/api/overview", "/api/targets", "/metrics"]


def test_exposed_without_a_token_refuses_to_start(redis_url: str) -> None:
    with pytest.raises(ConfigError, match=r"0\.0\.0\.0.*no token.*\[dashboard\] token"):
        create_app(dashboard_settings(redis_url), listen_host="0.0.0.0")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "bridge.internal"])
def test_exposed_hosts(host: str) -> None:
    assert not is_loopback(host)


def test_exposed_with_a_token_requires_it_but_not_on_the_webhook(redis_url: str) -> None:
    settings = dashboard_settings(redis_url, dashboard={"token": TOKEN})
    with serve_app(create_app(settings, listen_host="0.0.0.0")) as url, \
            httpx.Client(base_url=url, timeout=10) as http:
        for path in PROTECTED:
            refused = http.get(path)
            assert refused.status_code == 401, path
            assert refused.json()["error"]["type"] == "unauthorized"
            assert refused.headers["www-authenticate"].startswith("Basic")
            wrong = http.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert http.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code \
                == 200, path
            basic = base64.b64encode(f"operator:{TOKEN}".encode()).decode()
            assert http.get(path, headers={"Authorization": f"Basic {basic}"}).status_code \
                == 200, path
        action = http.post("/api/targets/rentix/pause", json={})
        assert action.status_code == 401
        assert crm.post(http, SECRET, crm.upsert("g", "apt-1", 1)).status_code == 202
        assert http.get("/healthz").status_code == 200


def test_loopback_only_is_open(client: httpx.Client) -> None:
    for path in PROTECTED:
        assert client.get(path).status_code == 200, path
