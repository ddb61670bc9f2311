"""The key audit (tests/support/keyaudit.py) finds what it is for: a script touching a key it was
not given, by a command whose keys sit at fixed places or move (ZUNIONSTORE), and nothing else."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from tests.support.keyaudit_session import Audit, audited
from tests.support.servers import redis_server

pytestmark = pytest.mark.servers


@pytest.fixture
def watched() -> Iterator[tuple[redis.Redis, Audit]]:
    with redis_server() as server, audited(server.port) as audit:
        client = redis.Redis.from_url(server.url)
        yield client, audit
        client.close()


def findings(audit: Audit) -> list[dict[str, object]]:
    return [json.loads(line) for line in audit.findings.read_text().splitlines()]


def test_a_script_touching_only_its_keys_passes(watched: tuple[redis.Redis, Audit]) -> None:
    client, audit = watched
    client.eval("redis.call('SET', KEYS[1], ARGV[1]); redis.call('TIME');"
                "return redis.call('MGET', KEYS[1], KEYS[2])", 2, "a", "b", "x")
    client.zadd("z1", {"m": 1})
    client.eval("return redis.call('ZUNIONSTORE', KEYS[1], 1, KEYS[2])", 2, "z2", "z1")
    audit.check()


@pytest.mark.parametrize(("script", "stray"), [
    ("redis.call('SET', KEYS[1], 1); return redis.call('GET', 'elsewhere')", "elsewhere"),
    ("return redis.call('ZUNIONSTORE', KEYS[1], 1, 'elsewhere')", "elsewhere"),
    ("return redis.call('DEL', KEYS[1], 'lb:' .. 'spliced')", "lb:spliced"),
])
def test_a_script_touching_a_key_it_was_not_given_fails_the_audit(
        watched: tuple[redis.Redis, Audit], script: str, stray: str) -> None:
    client, audit = watched
    client.eval(script, 1, "given")
    with pytest.raises(AssertionError, match="touched keys not passed in KEYS"):
        audit.check()
    assert [f["undeclared"] for f in findings(audit)] == [[stray]]


def test_a_script_given_keys_of_two_tenants_fails_the_audit(
        watched: tuple[redis.Redis, Audit]) -> None:
    """No script may span two tenants: on a Redis Cluster their keys live in different slots."""
    client, audit = watched
    client.eval("return redis.call('MGET', KEYS[1], KEYS[2], KEYS[3])", 3,
                "lb:{t:north}:due", "lb:{t:north}:inbox", "lb:wake")
    audit.check()  # one tenant's keys, and a deployment-wide one
    client.eval("return redis.call('MGET', KEYS[1], KEYS[2])", 2,
                "lb:{t:north}:due", "lb:{t:south}:due")
    with pytest.raises(AssertionError, match="keys of two tenants"):
        audit.check()
    assert [f["tenants"] for f in findings(audit)] == [["north", "south"]]
