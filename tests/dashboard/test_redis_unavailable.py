"""The operator's window while Redis is away or frozen: every page, API call and scrape answers
503 saying which Redis and why, within the 5 s read deadline, and works again once Redis is
back. A Redis server of the test's own, stopped and frozen (SIGSTOP) for real."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from bridge.app import create_app
from tests.dashboard.conftest import dashboard_settings
from tests.support.redis_servers import Server, server
from tests.support.servers import serve_app, wait_until

PATHS = ("/api/overview", "/metrics", "/dashboard/")
# The clients' read deadline (bridge.connections.redis_client), with room for a loaded machine.
ANSWER_WITHIN_S = 5 + 3


@pytest.fixture
def own_redis() -> Iterator[Server]:
    with server() as srv:
        yield srv


@pytest.fixture
def dashboard(own_redis: Server) -> Iterator[httpx.Client]:
    with serve_app(create_app(dashboard_settings(own_redis.url))) as url, \
            httpx.Client(base_url=url, timeout=30) as http:
        yield http


def works(dashboard: httpx.Client) -> bool:
    return all(dashboard.get(path).status_code == 200 for path in PATHS)


def assert_unavailable(response: httpx.Response, own_redis: Server) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    said = f"Redis at redis://127.0.0.1:{own_redis.port}/0 is not reachable or did not answer"
    if response.request.url.path.startswith("/dashboard"):
        assert response.headers["content-type"].startswith("text/html")
        assert said in response.text
    else:
        problem = response.json()["error"]
        assert problem["type"] == "storage_unavailable"
        assert problem["message"].startswith(said), problem


@pytest.mark.servers
def test_pages_api_and_metrics_say_redis_is_down_and_work_again_once_it_is_back(
    dashboard: httpx.Client, own_redis: Server
) -> None:
    assert works(dashboard)
    own_redis.stop()
    for path in PATHS:
        response = dashboard.get(path)
        assert_unavailable(response, own_redis)
        assert "(ConnectionError: " in response.text
    own_redis.start()
    wait_until(lambda: works(dashboard), what="the dashboard to work again")


@pytest.mark.servers
def test_a_frozen_redis_gets_a_503_within_the_read_deadline_not_a_hang(
    dashboard: httpx.Client, own_redis: Server
) -> None:
    assert works(dashboard)
    assert own_redis.process is not None
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = dashboard.get("/api/overview")
        took = time.monotonic() - started
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    assert_unavailable(response, own_redis)
    assert "(TimeoutError: " in response.json()["error"]["message"]
    assert took < ANSWER_WITHIN_S, took
    wait_until(lambda: works(dashboard), what="the dashboard to work again")
