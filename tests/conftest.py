"""Session-wide real parts: a Redis-compatible server on a free port, and bridge settings."""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from bridge.sandbox.app import SandboxSettings
from bridge.sandbox.app import create_app as create_sandbox
from bridge.settings import Settings, parse_settings
from tests.support import tiers
from tests.support.keyaudit_session import audited
from tests.support.servers import RedisServer, redis_server, serve_app

# LB_KEYAUDIT=0 leaves the audit out (a run that measures the tests' own speed, say).
_AUDIT = os.environ.get("LB_KEYAUDIT", "1") != "0"
SECRET = "whsec_" + base64.b64encode(b"listing-bridge-test-secret-0001").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"listing-bridge-test-secret-0002").decode()


def pytest_configure(config: pytest.Config) -> None:
    tiers.install()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tiers.add_automatic_markers(items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    tiers.running(item)
    try:
        return (yield)
    finally:
        tiers.running(None)


@pytest.fixture(scope="session")
def redis_srv() -> Iterator[RedisServer]:
    """The session's server, every script run on it audited for undeclared keys (keyaudit)."""
    with contextlib.ExitStack() as stack:
        with tiers.session_server():
            server = stack.enter_context(redis_server())
        audit = stack.enter_context(audited(server.port)) if _AUDIT else None
        yield server
        if audit:
            audit.check()


@pytest.fixture
def redis_url(redis_srv: RedisServer) -> Iterator[str]:
    """A clean database on the session's own server (it holds only what tests made)."""
    if redis_srv.process is None or redis_srv.process.poll() is not None:
        with tiers.session_server():
            redis_srv.start()  # a test that stopped Redis must not break the next one
    client = redis.Redis.from_url(redis_srv.url)
    client.flushdb()
    client.close()
    yield redis_srv.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def sandbox_url() -> Iterator[str]:
    """Both sandbox portals, fresh for the test, served over loopback HTTP."""
    with serve_app(create_sandbox(SandboxSettings())) as url:
        yield url


def make_settings(redis_url: str, **overrides: Any) -> Settings:
    data: dict[str, Any] = {
        "redis_url": redis_url,
        "webhook": {"secrets": [SECRET]},
        "debounce": {"window_ms": 200, "max_wait_ms": 1000},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_settings(data)


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return make_settings(redis_url)
