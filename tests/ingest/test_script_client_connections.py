"""The webhook's script client (ScriptBatcher) on every production redis_url, and the durability
promise, against real servers (tests/support/redis_servers.py): TLS with an ACL user, a
password-only URL, a unix socket with ?db=; failures named at once (credentials, TLS either way
round, an untrusted CA, a refused port, an unknown host); WAITAOF and WAIT after the script,
group-committed; the ``prepare`` check on every connection; the webhook's 503 and its log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import pytest
import redis
import redis.asyncio
import trustme
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from bridge.connections import Durability, UnsafeRedis
from bridge.ingest.script_client import NotDurable, ScriptBatcher, StorageUnavailable
from bridge.ingest.signatures import Verifier
from bridge.ingest.store import EventStore
from bridge.ingest.webhook import WebhookEndpoint
from tests.conftest import SECRET, make_settings
from tests.ingest.calls import CALLS, SCRIPT, Calls
from tests.support import crm
from tests.support.redis_servers import (
    Server,
    server,
    valkey_binary,
    wait_for_fsync_policy,
)
from tests.support.servers import free_port, wait_until

# "Well under a second": a named failure, not a timeout (the call deadline is 5 s).
AT_ONCE_S = 0.5


@contextlib.asynccontextmanager
async def batcher(url: str, **kwargs: Any) -> AsyncIterator[ScriptBatcher]:
    client = Calls(url, SCRIPT, **kwargs)
    try:
        yield client
    finally:
        await client.aclose()


async def fails_at_once(url: str, match: str) -> RedisConnectionError:
    """A call on ``url`` fails with a ConnectionError naming ``match``, well within a second;
    so does the next one (the cause is named again, not turned into a timeout)."""
    async with batcher(url) as client:
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(RedisConnectionError, match=match) as failure:
                await client.call(["x"])
            assert time.monotonic() - started < AT_ONCE_S
    return failure.value


def durability(value: Durability) -> Callable[[], Awaitable[Durability]]:
    async def prepare() -> Durability:
        return value
    return prepare


def calls_of(srv: Server, db: int = 0) -> list[str]:
    """What ran in database ``db`` (other than 0 only on a plain server without a password)."""
    admin = (srv.client(decode_responses=True) if db == 0 else
             redis.Redis(port=srv.port, db=db, decode_responses=True))
    with admin:
        return cast(list[str], admin.lrange(CALLS, 0, -1))


def command_calls(admin: redis.Redis, command: str) -> int:
    stats = cast(dict[str, Any], admin.info("commandstats"))
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


# -- every production URL ----------------------------------------------------------------------

@pytest.mark.servers
async def test_tls_with_an_acl_user_whose_password_has_escapes_runs_as_that_user() -> None:
    user = ("bridge-ingest", "p@ss:w/rd%41+é?#")  # (redis-server splits its arguments at spaces)
    with server(tls=True, user=user) as srv:
        assert srv.url.startswith("rediss://bridge-ingest:p%40ss%3Aw%2Frd%2541")
        async with batcher(srv.url) as client:
            assert await client.call(["one"]) == [b"one", 1]
            with srv.client(decode_responses=True) as admin:
                ours = [c for c in admin.client_list() if c["cmd"] == "evalsha"]
            assert [c["user"] for c in ours] == ["bridge-ingest"]
        assert calls_of(srv) == ["one"]


@pytest.mark.servers
async def test_tls_options_in_the_url_are_read_as_redis_py_reads_them() -> None:
    # Only a CA that signed the server's certificate is trusted; ssl_cert_reqs=none trusts any.
    with server(tls=True) as srv:
        plain_options = srv.url.split("?")[0]
        async with batcher(plain_options + "?ssl_cert_reqs=none") as client:
            assert await client.call(["unverified"]) == [b"unverified", 1]


@pytest.mark.servers
async def test_a_password_only_url_authenticates_the_default_user() -> None:
    with server(password="s3cret/%:@+x") as srv:
        assert "%25" in srv.url  # the password travels escaped, and is sent decoded
        async with batcher(srv.url) as client:
            assert await client.call(["one"]) == [b"one", 1]
        assert calls_of(srv) == ["one"]


@pytest.mark.servers
async def test_a_unix_socket_url_with_db_writes_that_database(tmp_path: Path) -> None:
    socket_path = tmp_path / "r.sock"
    with server(None, "--unixsocket", str(socket_path), "--unixsocketperm", "700") as srv:
        async with batcher(f"unix://{socket_path}?db=2") as client:
            assert await client.call(["two"]) == [b"two", 1]
        assert calls_of(srv, db=2) == ["two"]
        assert calls_of(srv, db=0) == []


@pytest.mark.servers
async def test_a_tcp_url_selects_its_database_as_redis_py_does() -> None:
    # The path names the database, unless ?db= does: that wins, as in redis-py.
    with server(aof=None) as srv:
        for suffix, arg in (("/3", "path"), ("/3?db=4", "query")):
            async with batcher(f"redis://127.0.0.1:{srv.port}{suffix}") as client:
                assert await client.call([arg]) == [arg.encode(), 1]
        assert (calls_of(srv, db=3), calls_of(srv, db=4)) == (["path"], ["query"])
        assert calls_of(srv, db=0) == []


# -- failures named at once --------------------------------------------------------------------

@pytest.mark.servers
async def test_a_wrong_password_fails_at_once_naming_the_credentials() -> None:
    with server(password="right-password", user=("bridge", "right-too")) as srv:
        base = f"127.0.0.1:{srv.port}/0"
        error = await fails_at_once(f"redis://:not-the-password-123@{base}",
                                    "Redis refused the credentials in redis_url")
        assert "WRONGPASS" in str(error) and "not-the-password-123" not in str(error)
        await fails_at_once(f"redis://bridge:not-the-password-123@{base}",
                            r"refused the credentials in redis_url \(WRONGPASS")
        await fails_at_once(f"redis://{base}", r"Redis requires credentials.*NOAUTH")


@pytest.mark.servers
async def test_tls_to_a_plain_port_fails_at_once_naming_tls() -> None:
    with server(aof=None) as plain, server(aof=None, tls=True) as tls:
        url = tls.url.replace(f":{tls.port}/", f":{plain.port}/")  # TLS options, plain port
        await fails_at_once(url, r"TLS handshake with Redis at 127\.0\.0\.1:\d+ failed: the "
                                 "port speaks plain text")


@pytest.mark.servers
async def test_plain_text_to_a_tls_port_fails_at_once_naming_tls() -> None:
    with server(aof=None, tls=True) as tls:
        await fails_at_once(f"redis://127.0.0.1:{tls.port}/0",
                            r"closed the connection .*only TLS, use rediss://")


@pytest.mark.servers
async def test_a_ca_that_does_not_trust_the_server_fails_naming_the_certificate(
    tmp_path: Path,
) -> None:
    stranger = tmp_path / "stranger-ca.crt"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    with server(aof=None, tls=True) as tls:
        await fails_at_once(f"rediss://127.0.0.1:{tls.port}/0?ssl_ca_certs={stranger}",
                            r"TLS handshake with Redis at 127\.0\.0\.1:\d+ failed: "
                            "certificate verify failed")


async def test_a_refused_port_and_an_unknown_host_fail_at_once_naming_them() -> None:
    await fails_at_once(f"redis://127.0.0.1:{free_port()}/0", "connection refused")
    await fails_at_once("redis://no-such-host.invalid:6379/0",
                        "unknown host 'no-such-host.invalid'")


def test_a_url_that_cannot_be_used_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"redis://, rediss:// or unix://"):
        ScriptBatcher("https://cache.example:6379/0", SCRIPT)
    with pytest.raises(ValueError, match="TLS options"):
        ScriptBatcher(f"rediss://h:6379/0?ssl_ca_certs={tmp_path}/missing.crt", SCRIPT)
    with pytest.raises(ValueError, match="socket's path"):
        ScriptBatcher("unix://?db=2", SCRIPT)


# -- durability: WAITAOF / WAIT after the script -----------------------------------------------

@pytest.mark.servers
async def test_with_wait_aof_a_call_fails_when_no_fsync_comes_and_succeeds_once_it_does() -> None:
    wait = Durability(wait_aof=True, replicas=0, timeout_ms=1000)
    checks = 0

    async def prepare() -> Durability:
        nonlocal checks
        checks += 1
        return wait

    with server(valkey_binary(), aof="everysec") as srv, srv.client() as admin:
        async with batcher(srv.url, prepare=prepare) as client:
            assert await client.call(["a"]) == [b"a", 1]
            assert command_calls(admin, "waitaof") >= 1

            admin.config_set("appendfsync", "no")  # Redis never fsyncs: WAITAOF times out
            wait_for_fsync_policy(admin, "no")
            started = time.monotonic()
            with pytest.raises(NotDurable, match="not fsynced to its AOF") as failure:
                await client.call(["b"])
            assert 0.9 < time.monotonic() - started < 2.5  # the WAITAOF timeout, not 5 s
            assert isinstance(failure.value, RedisConnectionError)  # the webhook answers 503
            assert checks == 1

            admin.config_set("appendfsync", "everysec")
            wait_for_fsync_policy(admin, "everysec")
            # "b" ran, unconfirmed (the CRM's retry would be a deduped duplicate, now fsynced).
            assert await client.call(["c"]) == [b"c", 3]
            assert checks == 2  # a shortfall has the server checked again
        assert calls_of(srv) == ["a", "b", "c"]


@pytest.mark.servers
async def test_wait_aof_is_group_committed() -> None:
    # Under steady writes everysec fsyncs about once a second: a WAITAOF may wait that long.
    wait = Durability(wait_aof=True, replicas=0, timeout_ms=3000)
    with server(valkey_binary(), aof="everysec") as srv, srv.client() as admin:
        async with batcher(srv.url, prepare=durability(wait)) as client:
            assert await client.call(["warm"]) == [b"warm", 1]  # connected, script loaded

            # Calls made in one loop turn share one WAITAOF.
            before = command_calls(admin, "waitaof")
            replies = await asyncio.gather(*(client.call([f"c{i}"]) for i in range(200)))
            assert replies == [[f"c{i}".encode(), i + 2] for i in range(200)]
            assert 1 <= command_calls(admin, "waitaof") - before <= 3

            # Calls written while a WAITAOF is out (blocked: no fsync yet) share the next one,
            # one loop turn apart or not.
            admin.config_set("appendfsync", "no")
            before = command_calls(admin, "waitaof")
            first = asyncio.ensure_future(client.call(["first"]))
            for _ in range(3):
                await asyncio.sleep(0)  # the call, then its WAITAOF, are written
            later = []
            for i in range(50):
                later.append(asyncio.ensure_future(client.call([f"later{i}"])))
                await asyncio.sleep(0)
            admin.config_set("appendfsync", "everysec")  # the fsync comes
            assert await first == [b"first", 202]
            assert [reply[0] for reply in await asyncio.gather(*later)] == [
                f"later{i}".encode() for i in range(50)]
            assert command_calls(admin, "waitaof") - before == 2


@pytest.mark.servers
async def test_with_replicas_a_call_waits_for_them_and_fails_without_them() -> None:
    # No diskless-sync delay: the replica is in sync at once.
    with server(None, "--repl-diskless-sync-delay", "0", aof="always") as primary, \
            primary.client() as admin:
        alone = Durability(wait_aof=False, replicas=1, timeout_ms=300)
        async with batcher(primary.url, prepare=durability(alone)) as client:
            started = time.monotonic()
            with pytest.raises(NotDurable, match="held by 0 of 1 replicas"):
                await client.call(["alone"])
            assert time.monotonic() - started < 1.5

        with server(None, "--replicaof", "127.0.0.1", str(primary.port), aof=None) as copy, \
                copy.client(decode_responses=True) as replica:
            wait_until(lambda: replica.info("replication").get("master_link_status") == "up",
                       what="the replica to sync")
            held = Durability(wait_aof=False, replicas=1, timeout_ms=3000)
            async with batcher(primary.url, prepare=durability(held)) as client:
                assert (await client.call(["warm"]))[0] == b"warm"
                before = command_calls(admin, "wait")
                replies = await asyncio.gather(*(client.call([f"r{i}"]) for i in range(20)))
                assert [reply[0] for reply in replies] == [f"r{i}".encode() for i in range(20)]
                assert 1 <= command_calls(admin, "wait") - before <= 2
            # Answered only once the replica held them: no waiting needed to read them there.
            assert replica.lrange(CALLS, 0, -1)[-20:] == [f"r{i}" for i in range(20)]


# -- prepare: on every connection, before any script call --------------------------------------

async def call_after_restart(client: ScriptBatcher, arg: str) -> Any:
    """The first call after a restart may meet the old connection's end (every call in flight
    then fails); the next one reconnects."""
    try:
        return await client.call([arg])
    except RedisConnectionError:
        return await client.call([arg])


@pytest.mark.servers
async def test_prepare_runs_before_the_first_script_call_and_again_on_every_reconnect() -> None:
    with server(aof="always") as srv:
        found: list[int] = []  # scripts that had run when each check ran

        async def prepare() -> Durability:
            with srv.client() as admin:
                found.append(int(admin.llen(CALLS)))
            return Durability()

        async with batcher(srv.url, prepare=prepare) as client:
            replies = await asyncio.gather(*(client.call([f"a{i}"]) for i in range(10)))
            assert [n for _, n in replies] == list(range(1, 11))
            assert await client.call(["b"]) == [b"b", 11]
            assert found == [0]  # once, before any script call went out; not per call

            srv.stop()
            srv.start()  # AOF always: the calls are still there
            assert await call_after_restart(client, "c") == [b"c", 12]
            assert found == [0, 11]
            assert await client.call(["d"]) == [b"d", 13]
            assert found == [0, 11]


class CheckFailed(Exception):
    pass


@pytest.mark.servers
async def test_a_failing_prepare_fails_the_waiting_calls_and_the_next_call_runs_it_again() -> None:
    with server(aof=None) as srv:
        runs = 0

        async def prepare() -> Durability:
            nonlocal runs
            runs += 1
            if runs == 1:  # not a Redis error: it reaches the calls as StorageUnavailable
                raise CheckFailed("Redis maxmemory-policy is 'allkeys-lru'")
            if runs == 2:
                raise UnsafeRedis("Redis appendonly is 'no'")
            return Durability()

        async with batcher(srv.url, prepare=prepare) as client:
            started = time.monotonic()
            results = await asyncio.gather(*(client.call([f"a{i}"]) for i in range(10)),
                                           return_exceptions=True)
            assert time.monotonic() - started < AT_ONCE_S
            for result in results:
                assert isinstance(result, StorageUnavailable), result
                assert "allkeys-lru" in str(result)
                assert isinstance(result.__cause__, CheckFailed)

            results = await asyncio.gather(*(client.call([f"b{i}"]) for i in range(10)),
                                           return_exceptions=True)
            for result in results:  # a RedisError (the webhook answers 503): as it is
                assert isinstance(result, RedisError), result
                assert "appendonly is 'no'" in str(result)
            assert calls_of(srv) == []  # nothing ran on an unchecked connection

            assert await client.call(["c"]) == [b"c", 1]
            assert runs == 3


# -- the webhook: 503, and the cause logged once -----------------------------------------------

@pytest.mark.servers
async def test_the_webhook_answers_503_and_logs_the_cause_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with server(aof="always", password="only-the-admin-knows") as srv, srv.client() as admin:
        url = f"redis://127.0.0.1:{srv.port}/0"  # no credentials: Redis asks for them
        settings = make_settings(url)
        client = redis.asyncio.Redis.from_url(url)
        store = EventStore(client, url, settings.webhook, settings.debounce)
        endpoint = WebhookEndpoint({"default": Verifier([SECRET], 300)}, store, 1 << 20)
        transport = httpx.ASGITransport(app=endpoint)
        caplog.set_level(logging.DEBUG, logger="bridge.ingest.webhook")
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://bridge") as http:
                async def post(version: int) -> httpx.Response:
                    body = orjson.dumps(crm.upsert("g", "a", version))
                    return await http.post("/webhooks/crm", content=body,
                                           headers=crm.signed_headers(SECRET, body))

                for version in range(1, 6):
                    response = await post(version)
                    assert response.status_code == 503
                    assert response.headers["retry-after"] == "5"
                    assert response.json()["error"] == {
                        "type": "storage_unavailable",
                        "message": "the event could not be stored; retry later"}
                warnings = [r.getMessage() for r in caplog.records
                            if r.levelno == logging.WARNING]
                assert len(warnings) == 1
                assert "Redis requires credentials" in warnings[0]
                assert "NOAUTH" in warnings[0]

                admin.config_set("requirepass", "")
                assert (await post(6)).status_code == 202
                assert any("stores events again" in r.getMessage() for r in caplog.records)
        finally:
            await store.aclose()
            await client.aclose()
