"""The start-up check against real servers: what a 202 waits for on each Redis (AOF always:
nothing more; everysec: WAITAOF where the server has it and it waits for the fsync), what is
refused and with which message, and clients that read every form of redis_url the same way."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bridge import connections
from bridge.connections import (
    Durability,
    RedisCheck,
    UnsafeRedis,
    address,
    check_redis,
    redis_client,
    url_address,
)
from bridge.settings import RedisSettings
from tests.support.redis_servers import Server, server, valkey_binary
from tests.support.servers import free_port

# Every test here checks a server of its own (module-scoped ones among them).
pytestmark = pytest.mark.servers

FSYNC = RedisSettings()
NONE = RedisSettings(durability="none")


@pytest.fixture(scope="module")
def valkey_everysec() -> Iterator[Server]:
    with server(valkey_binary(), aof="everysec") as srv:
        yield srv


@pytest.fixture(scope="module")
def redis7_everysec() -> Iterator[Server]:
    with server(aof="everysec") as srv:
        yield srv


async def check(url: str, settings: RedisSettings = FSYNC) -> Durability:
    client = redis_client(url)
    try:
        return await check_redis(client, settings)
    finally:
        await client.aclose()


async def refusal(url: str, settings: RedisSettings = FSYNC) -> str:
    with pytest.raises(UnsafeRedis) as err:
        await check(url, settings)
    return str(err.value)


def problem(gate: RedisCheck) -> str | None:
    return gate.problem  # read afresh: a check changes it


async def test_aof_always_needs_no_wait_on_redis_and_valkey() -> None:
    with server(aof="always") as redis7, server(valkey_binary(), aof="always") as valkey:
        assert await check(redis7.url) == Durability(wait_aof=False, replicas=0)
        assert await check(valkey.url) == Durability(wait_aof=False, replicas=0)


async def test_everysec_on_a_valkey_whose_waitaof_answers_before_the_fsync_is_refused(
        valkey_everysec: Server) -> None:
    # The wheel's Valkey 8.1.8 confirms a write at its next idle cycle (hz 10: ~100 ms), though
    # it fsyncs once a second (redis/redis#13793): two confirmed in a row in under 900 ms prove it.
    started = time.monotonic()
    message = await refusal(valkey_everysec.url)
    assert time.monotonic() - started < 2
    assert message.startswith(f"Redis at redis://127.0.0.1:{valkey_everysec.port}/0 has "
                              "appendfsync everysec, and its WAITAOF confirmed two writes in a "
                              "row as fsynced within ")
    assert "it answers before the fsync (the bug fixed by redis/redis#13793)" in message
    assert "Set appendfsync always, or run a Redis/Valkey with that fix" in message
    ttl = valkey_everysec.client().pttl("lb:check:waitaof")
    assert isinstance(ttl, int) and ttl > 0  # its probe key expires


async def test_everysec_whose_waitaof_waits_for_the_fsync_is_used_and_said_to_cost_latency(
        valkey_everysec: Server, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # No server here has the fix; with no gap required, the wheel's Valkey passes as one that
    # waits: used with WAITAOF, the cost said once, and not probed again on a reconnect.
    monkeypatch.setattr(connections, "EVERYSEC_FSYNC_GAP_MS", 0)
    monkeypatch.setattr(connections, "_waitaof_waits", set())
    caplog.set_level(logging.WARNING, "bridge.connections")
    assert await check(valkey_everysec.url) == Durability(wait_aof=True, replicas=0)
    monkeypatch.setattr(connections, "EVERYSEC_FSYNC_GAP_MS", 10_000)  # would refuse now
    started = time.monotonic()
    two = RedisSettings(min_replicas=2)
    assert await check(valkey_everysec.url, two) == Durability(wait_aof=True, replicas=2)
    assert time.monotonic() - started < 0.1  # this server process was probed already
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "has appendfsync everysec: each 202 waits for the next background fsync" in warned
    assert "appendfsync always answers in milliseconds" in warned


async def test_everysec_without_waitaof_is_refused(redis7_everysec: Server) -> None:
    message = await refusal(redis7_everysec.url)
    assert message.startswith(f"Redis at redis://127.0.0.1:{redis7_everysec.port}/0 has "
                              "appendfsync everysec and no WAITAOF")
    assert "acknowledged in the last second" in message
    assert "appendfsync always (or everysec on Redis >= 7.2 / Valkey >= 8)" in message
    assert '[redis] durability = "none"' in message


async def test_aof_off_is_refused_with_what_to_change() -> None:
    with server(aof=None) as srv:
        message = await refusal(srv.url)
    assert message == (
        f"Redis at redis://127.0.0.1:{srv.port}/0 has appendonly no: a crash loses acknowledged "
        "webhooks. Set appendonly yes and appendfsync always (or everysec on Redis >= 7.2 / "
        'Valkey >= 8), or set [redis] durability = "none" for development.')


async def test_appendfsync_no_is_refused_even_with_waitaof() -> None:
    with server(valkey_binary(), aof="no") as srv:
        message = await refusal(srv.url)
    assert "has appendfsync no" in message and "appendonly yes and appendfsync always" in message


async def test_an_evicting_redis_is_still_refused() -> None:
    with server(None, "--maxmemory-policy", "allkeys-lru") as srv:
        message = await refusal(srv.url)
        assert "maxmemory-policy is 'allkeys-lru'" in message and "noeviction" in message
        # ... also when durability is "none".
        assert "maxmemory-policy" in await refusal(srv.url, NONE)


async def test_durability_none_accepts_any_aof_and_warns_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "bridge.connections")
    with server(aof=None) as srv:
        assert await check(srv.url, NONE) == Durability()
        assert await check(srv.url, NONE) == Durability()  # a reconnect: no second warning
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f'[redis] durability = "none": Redis at redis://127.0.0.1:{srv.port}/0 acknowledges '
        "webhooks before they are on disk; a Redis crash can lose acknowledged webhooks. For "
        "development only."]


async def test_min_replicas_are_waited_for_and_missing_ones_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    # With everysec: in the test above.
    caplog.set_level(logging.WARNING, "bridge.connections")
    two = RedisSettings(min_replicas=2)
    with server(aof="always") as srv:
        assert await check(srv.url, two) == Durability(wait_aof=False, replicas=2)
    reported = " ".join(r.getMessage() for r in caplog.records)
    assert "has 0 connected replica(s) and [redis] min_replicas is 2: webhooks answer 503 " \
           "until 2 replica(s) hold each event" in reported


async def test_without_config_get_waitaof_is_used_whatever_the_policy() -> None:
    # Managed services rename or forbid CONFIG: INFO says whether the AOF is on, and WAITAOF
    # waits for its fsync whatever appendfsync is.
    renamed = ("--rename-command", "CONFIG", "")
    with server(valkey_binary(), *renamed, aof="always") as srv:
        assert await check(srv.url) == Durability(wait_aof=True)
    with server(valkey_binary(), *renamed, aof=None) as srv:
        assert "has the AOF off (INFO persistence aof_enabled:0)" in await refusal(srv.url)
    with server(None, *renamed, aof="always") as srv:  # Redis 7.0: no WAITAOF either
        message = await refusal(srv.url)
        assert "does not allow CONFIG GET, so its appendfsync policy could not be read" in message


async def test_an_acl_user_without_waitaof_is_refused_on_everysec() -> None:
    user = ("bridge", "pw")
    with server(valkey_binary(), aof="everysec", user=user) as srv:
        srv.client().acl_setuser("bridge", enabled=True, passwords=["+pw"], keys=["*"],
                                 channels=["*"], commands=["+@all", "-waitaof"])
        message = await refusal(srv.url)
    assert "appendfsync everysec and no WAITAOF" in message and "an ACL may forbid it" in message


async def test_refused_credentials_are_one_plain_line_at_once() -> None:
    with server(password="s3cret") as srv:
        started = time.monotonic()
        wrong = await refusal(srv.url.replace("s3cret", "wrong"))
        missing = await refusal(f"redis://127.0.0.1:{srv.port}/0")
        assert time.monotonic() - started < 1
    assert wrong.startswith(f"Redis at redis://127.0.0.1:{srv.port}/0 refused the bridge's "
                            "credentials (invalid username-password pair")
    assert "Authentication required" in missing
    assert "s3cret" not in wrong


async def test_a_certificate_not_trusted_fails_tls_at_once() -> None:
    with server(tls=True) as srv:
        started = time.monotonic()
        message = await refusal(srv.url.split("?")[0])  # without the test CA
        assert time.monotonic() - started < 1
    assert message.startswith(f"TLS to Redis at rediss://127.0.0.1:{srv.port}/0 failed: ")
    assert "CERTIFICATE_VERIFY_FAILED" in message and "ssl_ca_certs" in message


async def test_tls_to_a_plain_port_is_refused_at_start_not_waited_for() -> None:
    with server(aof="always") as srv:
        client = redis_client(f"rediss://127.0.0.1:{srv.port}/0")
        started = time.monotonic()
        with pytest.raises(UnsafeRedis, match="did not complete a TLS handshake"):
            await RedisCheck(client, FSYNC).at_start()
        assert time.monotonic() - started < 4  # the 2 s connect timeout, then one TCP probe
        await client.aclose()


async def test_an_outage_at_start_is_recorded_not_raised() -> None:
    client = redis_client(f"redis://127.0.0.1:{free_port()}/0")
    gate = RedisCheck(client, FSYNC)
    await gate.at_start()
    assert gate.problem is not None
    assert gate.problem.startswith(f"Redis at {address(client)} is not reachable: ")
    with pytest.raises(redis.ConnectionError):
        await gate()
    await client.aclose()


async def test_a_passing_check_clears_the_problem_and_a_failing_one_names_it() -> None:
    with server(aof="always") as srv:
        client = redis_client(srv.url)
        gate = RedisCheck(client, FSYNC)
        assert gate.problem == f"Redis at {srv.url} has not been checked yet"
        assert await gate() == Durability()
        assert problem(gate) is None
        srv.client().config_set("appendonly", "no")
        with pytest.raises(UnsafeRedis):
            await gate()
        assert "has appendonly no" in str(problem(gate))
        await client.aclose()


async def test_tls_acl_user_and_encoded_password_reach_the_server() -> None:
    user = ("bridge-user", "p@ss:w/rd%+")
    with server(tls=True, user=user, aof="always") as srv:
        assert "p%40ss%3Aw%2Frd%25%2B" in srv.url
        client = redis_client(srv.url)
        assert await check_redis(client, FSYNC) == Durability()
        assert await client.acl_whoami() == "bridge-user"
        await client.aclose()
    assert url_address(srv.url) == f"rediss://127.0.0.1:{srv.port}/0"


async def test_a_unix_socket_url_selects_its_database(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    with server(None, "--unixsocket", str(sock), "--unixsocketperm", "700") as srv:
        url = f"unix://{sock}?db=2"
        client = redis_client(url)
        assert await check_redis(client, FSYNC) == Durability()
        await client.set("here", "2")
        assert address(client) == f"unix://{sock}?db=2" == url_address(url)
        await client.aclose()
        assert srv.client().get("here") is None  # not in db 0
        assert redis.Redis(unix_socket_path=str(sock), db=2).get("here") == b"2"
