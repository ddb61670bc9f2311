"""Redis connections, and the check that the server keeps what a 202 promises.

Every process opens Redis from the one ``redis_url`` with redis-py's URL rules (redis://,
rediss:// with its ssl_* options, unix:///path?db=N, ACL user and %xx-encoded password).
``check_redis`` refuses a server that could drop accepted events (eviction; no AOF, an fsync
policy the webhook cannot wait out, or a WAITAOF that answers before the fsync) and says what
the webhook must wait for after its script calls: a ``Durability``. ``RedisCheck`` runs it for
one client and remembers why it last failed.

Typing note: redis-py annotates its asyncio commands as ``Awaitable[T] | T`` (shared with the
sync client, redis/redis-py#2399), which mypy rejects on ``await``; each such line carries a
targeted ``# type: ignore[misc]``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    RedisError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.constants import PREFIX
from bridge.settings import RedisSettings, Settings, seed_urls

log = logging.getLogger("bridge.connections")

# With any other policy a full Redis silently evicts keys: accepted events, dedupe markers,
# delivery state. The bridge would rather refuse to start.
SAFE_POLICY = "noeviction"

FIX = ('Set appendonly yes and appendfsync always (or everysec on Redis >= 7.2 / Valkey >= 8), '
       'or set [redis] durability = "none" for development.')

# The key the everysec check writes to see WAITAOF at work (a minute's TTL; nothing reads it).
WAITAOF_PROBE = PREFIX + "check:waitaof"
# everysec starts a background fsync at most once per 1,000 ms of the server's cached clock (a
# constant in its flushAppendOnlyFile, not a setting): two writes, the second sent after the
# first was confirmed fsynced, cannot both be fsynced in less. Under 900 ms (a margin for that
# clock, cached once per event-loop cycle) proves the confirmations came before the fsyncs.
EVERYSEC_FSYNC_GAP_MS = 900
# A check on a server whose WAITAOF was seen to wait (its run_id): not tried again on reconnects.
_waitaof_waits: set[str] = set()

# TLS failures that come from the set-up (certificates, protocol), not from a server going away
# mid-handshake: those end as EOF or a reset, and heal by waiting.
_TRANSIENT_TLS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


class UnsafeRedis(RedisError):
    """A Redis the bridge will not use: it cannot keep what a 202 promises, or it refuses the
    bridge (credentials, TLS, permissions). Waiting does not help; the message says what to
    change. A RedisError, so a webhook that meets it answers 503 like any storage failure."""


@dataclass(frozen=True)
class Durability:
    """What the webhook waits for after its script calls before it may answer 202, as the
    start-up check found the server: ``wait_aof`` follows them with ``WAITAOF 1 replicas``
    (group-committed); otherwise ``replicas`` > 0 follows them with ``WAIT replicas``; neither
    when the script's answer already means fsynced (``appendfsync always``) or durability is
    "none"."""

    wait_aof: bool = False
    replicas: int = 0
    timeout_ms: int = 2_000


def redis_client(url: str, socket_timeout: float | None = 5) -> Redis:
    """redis-py's client for ``url``; options in the URL's query (ssl_ca_certs, db, timeouts,
    ...) win over these defaults."""
    # Short timeouts: the webhook must answer 503 quickly when Redis is away, not hang.
    client: Redis = Redis.from_url(  # from_url is unannotated in redis-py
        url,
        socket_connect_timeout=2,
        socket_timeout=socket_timeout,
        retry_on_timeout=False,
        health_check_interval=30,
    )
    return client


def state_client(url: str, cluster: bool, socket_timeout: float | None = 5) -> Redis:
    """The client of the bridge's state: ``redis_client`` on a single Redis; on a Redis
    Cluster (``[redis] cluster``) redis-py's ``RedisCluster`` over the seed nodes, which
    routes each command by its keys' slot and follows MOVED and ASK. It serves the same
    commands for keys of one slot (every script's and pipeline's are one tenant's), so the
    rest of the bridge holds it as a ``Redis``."""
    if not cluster:
        return redis_client(url, socket_timeout)
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    seeds = seed_urls(url)
    others = [ClusterNode(**_host_port(seed)) for seed in seeds[1:]]
    client = RedisCluster.from_url(
        seeds[0], startup_nodes=others or None, socket_connect_timeout=2,
        socket_timeout=socket_timeout, require_full_coverage=False,
        health_check_interval=30)
    manager = cast(Any, client).nodes_manager
    manager.startup_nodes = _KeptNodes(manager.startup_nodes)
    return cast(Redis, client)


class _KeptNodes(dict[str, Any]):
    """redis-py's (5.3) cluster client forgets a node each time a command to it fails to
    connect, and during a failover concurrent commands whose connections it closed make it
    forget the live nodes too (redis/redis-py#3693): once none is left it can never read the
    slot map again ("at least one reachable node: None"), and a worker stops delivering for
    good (seen in tests/cluster/test_faults.py, 2 runs in 20). Its startup nodes therefore
    forget nothing that way; reading the slot map still replaces them with the nodes found."""

    def pop(self, key: str, default: Any = None) -> Any:
        return self.get(key, default)


def _host_port(url: str) -> dict[str, Any]:
    parsed = parse_url(url)
    return {"host": parsed.get("host", "127.0.0.1"), "port": int(parsed.get("port", 6379))}


def node_url(seed: str, host: str, port: int) -> str:
    """The URL of cluster node ``host:port`` with the seed URL's scheme, credentials and
    options (TLS files, timeouts)."""
    scheme, _, rest = seed.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, _ = netloc.rpartition("@")
    return f"{scheme}://{userinfo}{at}{host}:{port}{slash}{tail}"


def address(redis: Redis) -> str:
    """Where ``redis`` connects, without credentials, for messages."""
    pool = getattr(redis, "connection_pool", None)
    if pool is None:  # a RedisCluster: its seed nodes
        seeds = cast(Any, redis).nodes_manager.startup_nodes
        return "the Redis Cluster at " + ", ".join(sorted(seeds))
    return _where(pool.connection_kwargs, issubclass(pool.connection_class, SSLConnection))


def url_address(url: str) -> str:
    """Where ``url`` points, without credentials, for messages (a cluster's: its first seed)."""
    seeds = seed_urls(url)
    if len(seeds) > 1:
        return f"{url_address(seeds[0])} (and {len(seeds) - 1} more seed nodes)"
    kwargs: dict[str, object] = dict(parse_url(url))
    return _where(kwargs, url.startswith("rediss:"))


def _where(kwargs: Mapping[str, object], tls: bool) -> str:
    db = kwargs.get("db", 0)
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={db}"
    scheme = "rediss" if tls else "redis"
    return f"{scheme}://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


def fullest(info: dict[str, Any]) -> tuple[int, int]:
    """``used_memory`` and ``maxmemory`` from ``INFO memory``; from a cluster's client (one
    reading per node), the fullest node's: it refuses writes first."""
    nodes = list(info.values()) if info and all(isinstance(v, dict) for v in info.values()) \
        else [info]
    return max(((int(n["used_memory"]), int(n.get("maxmemory", 0))) for n in nodes),
               key=lambda reading: reading[0] / reading[1] if reading[1] else 0.0)


async def check_state(redis: Redis, settings: Settings) -> None:
    """``check_redis`` on the Redis of the bridge's state: on a cluster, on every master (each
    holds some tenants' events), through a client of that node alone."""
    if not settings.redis.cluster:
        await check_redis(redis, settings.redis)
        return
    assert settings.redis_url
    seed = seed_urls(settings.redis_url)[0]
    for host, port in await masters(redis):
        node = redis_client(node_url(seed, host, port))
        try:
            await check_redis(node, settings.redis)
        finally:
            await node.aclose()


async def masters(redis: Redis) -> list[tuple[str, int]]:
    """The masters of a cluster (``redis``: its RedisCluster client), read afresh."""
    cluster = cast(Any, redis)
    await cluster.nodes_manager.initialize()
    return sorted((node.host, int(node.port)) for node in cluster.get_primaries())


async def check_redis(redis: Redis, settings: RedisSettings) -> Durability:
    """Refuse (UnsafeRedis) a server that could lose accepted events or that refuses the
    bridge; otherwise say what a 202 must wait for. An outage raises redis-py's error."""
    at = address(redis)
    if settings.durability == "none":
        _warn_once(f'[redis] durability = "none": Redis at {at} acknowledges webhooks before '
                   "they are on disk; a Redis crash can lose acknowledged webhooks. For "
                   "development only.")
    try:
        await _refuse_eviction(redis, at)
        if settings.durability == "none":
            return Durability()
        durability = await _fsync_durability(redis, at, settings.min_replicas)
        if settings.min_replicas:
            await _report_replicas(redis, at, settings.min_replicas)
        return durability
    except Exception as exc:
        refused = refusal(exc, at)
        if refused is None:
            raise
        raise refused from None


async def _refuse_eviction(redis: Redis, at: str) -> None:
    info = await redis.info("memory")
    policy = str(info.get("maxmemory_policy", "unknown"))
    if policy != SAFE_POLICY:
        raise UnsafeRedis(
            f"Redis maxmemory-policy is {policy!r}: when memory runs out it may silently evict "
            f"accepted events and delivery state. Set maxmemory-policy to {SAFE_POLICY!r} "
            "(redis.conf, or CONFIG SET maxmemory-policy noeviction) and start again."
        )


async def _fsync_durability(redis: Redis, at: str, replicas: int) -> Durability:
    try:
        config = await redis.config_get("append*")
    except ResponseError:  # CONFIG renamed or forbidden, as managed services do
        return await _durability_without_config(redis, at, replicas)
    appendonly, fsync = config.get("appendonly"), config.get("appendfsync")
    if appendonly != "yes":
        raise UnsafeRedis(f"Redis at {at} has appendonly {appendonly}: a crash loses "
                          f"acknowledged webhooks. {FIX}")
    if fsync == "always":  # the script's answer comes after the fsync
        return Durability(replicas=replicas)
    if fsync == "everysec":
        if await has_waitaof(redis):
            await _refuse_early_waitaof(redis, at)
            return Durability(wait_aof=True, replicas=replicas)
        raise UnsafeRedis(f"Redis at {at} has appendfsync everysec and no WAITAOF to wait for "
                          "the fsync (it came with Redis 7.2 and Valkey 8, and an ACL may forbid "
                          f"it): a crash loses webhooks acknowledged in the last second. {FIX}")
    raise UnsafeRedis(f"Redis at {at} has appendfsync {fsync}: the AOF reaches the disk when the "
                      f"operating system decides, so a crash loses acknowledged webhooks. {FIX}")


async def _durability_without_config(redis: Redis, at: str, replicas: int) -> Durability:
    info = await redis.info("persistence")
    if not int(info.get("aof_enabled", 0)):
        raise UnsafeRedis(f"Redis at {at} has the AOF off (INFO persistence aof_enabled:0): a "
                          f"crash loses acknowledged webhooks. {FIX}")
    if await has_waitaof(redis):  # waits for the fsync whatever the policy is
        return Durability(wait_aof=True, replicas=replicas)
    raise UnsafeRedis(f"Redis at {at} does not allow CONFIG GET, so its appendfsync policy could "
                      "not be read, and it has no WAITAOF (Redis >= 7.2, Valkey >= 8) to wait for "
                      "the fsync instead. Allow the bridge's user CONFIG GET (with appendfsync "
                      'always), use a server with WAITAOF, or set [redis] durability = "none" '
                      "for development.")


async def has_waitaof(redis: Redis) -> bool:
    """Can the bridge run WAITAOF here? Asking for nothing returns at once where it can."""
    try:
        await redis.execute_command("WAITAOF", 0, 0, 0)  # type: ignore[no-untyped-call]
    except ResponseError:  # an unknown command, or one the bridge's user may not run
        return False
    return True


async def _refuse_early_waitaof(redis: Redis, at: str) -> None:
    """On everysec, refuse a server whose WAITAOF confirms writes before their fsync.

    Servers with redis/redis#12622 (2023) and without its fix, redis/redis#13793 (2025), carry
    a bug (Valkey 8.1.8 among them: docs/performance.md, 2026-12-08): in an event-loop cycle
    with nothing to write and no fsync due yet, ``flushAppendOnlyFile`` marks everything
    written as fsynced, so WAITAOF answers 1 at the next idle cycle (within 1000/hz ms) while
    the background fsync comes up to a second later. A crash then loses webhooks acknowledged as
    durable. Two writes, each confirmed before the next is sent, need two background fsyncs, at
    least a second apart on a correct server; in much less they prove the bug. A correct server
    costs this check about a second, once per server process (its run_id). A busy server may hide
    the bug from it (no idle cycle); a correct server is never refused."""
    run_id = str((await redis.info("server")).get("run_id", ""))
    if run_id and run_id in _waitaof_waits:
        return
    started = time.perf_counter()
    for n in range(2):
        # One pipeline, so one connection: WAITAOF waits for its own connection's last write.
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(WAITAOF_PROBE, n, px=60_000)
            pipe.execute_command("WAITAOF", 1, 0, 3_000)
            _, (local, _replicas) = await pipe.execute()
        if not int(local):  # no fsync within 3 s: no proof either way (the webhook's own
            return  # waits fail, 503, while that lasts)
    took_ms = (time.perf_counter() - started) * 1000
    if took_ms >= EVERYSEC_FSYNC_GAP_MS:
        if run_id:
            _waitaof_waits.add(run_id)
        _warn_once(f"Redis at {at} has appendfsync everysec: each 202 waits for the next "
                   f"background fsync, started once a second (these two writes took "
                   f"{took_ms:.0f} ms), so webhooks are answered at about one per concurrent "
                   "sender per second; appendfsync always answers in milliseconds.")
        return
    raise UnsafeRedis(
        f"Redis at {at} has appendfsync everysec, and its WAITAOF confirmed two writes in a "
        f"row as fsynced within {took_ms:.0f} ms, though everysec fsyncs at most once a second: "
        "it answers before the fsync (the bug fixed by redis/redis#13793), so a crash can lose "
        "acknowledged webhooks. Set appendfsync always, or run a Redis/Valkey with that fix, "
        'or set [redis] durability = "none" for development.')


async def _report_replicas(redis: Redis, at: str, wanted: int) -> None:
    info = await redis.info("replication")
    connected = int(info.get("connected_slaves", 0))
    if connected < wanted:
        _warn_once(f"Redis at {at} has {connected} connected replica(s) and [redis] "
                   f"min_replicas is {wanted}: webhooks answer 503 until {wanted} replica(s) "
                   "hold each event.")


def refusal(exc: BaseException, at: str) -> UnsafeRedis | None:
    """The failures waiting does not mend, as one plain line; None for an outage."""
    if isinstance(exc, UnsafeRedis):
        return exc
    if isinstance(exc, (AuthenticationError, AuthorizationError)):
        return UnsafeRedis(f"Redis at {at} refused the bridge's credentials ({plain(exc)}). "
                           "Check the user and password in redis_url (%-encode characters such "
                           "as @ : / in them).")
    if isinstance(exc, NoPermissionError):
        return UnsafeRedis(f"Redis at {at} does not let the bridge's user run a command it needs "
                           f"({plain(exc)}). Grant that user +@all on its keys, or at least the "
                           "commands named.")
    tls = _tls_error(exc)
    if tls is not None:
        return UnsafeRedis(f"TLS to Redis at {at} failed: {plain(tls)}. Check that the "
                           "rediss:// URL names the server's TLS port and that ssl_ca_certs (or "
                           "the system's trust store) holds the CA that signed its certificate.")
    return None


def _tls_error(exc: BaseException | None) -> ssl.SSLError | None:
    # redis-py wraps the ssl module's error in its ConnectionError (as the implicit context).
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, ssl.SSLError):
            return None if isinstance(exc, _TRANSIENT_TLS) else exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def plain(exc: BaseException) -> str:
    """An error as a phrase to quote inside a sentence."""
    return str(exc).rstrip(". ") or type(exc).__name__


class RedisCheck:
    """``check_redis`` for one client, remembering how it last went: ``problem`` says why the
    webhook answers 503 until a check passes (None once one has). Its call is the webhook's
    ``prepare``: run on every (re)connect of its script client."""

    def __init__(self, redis: Redis, settings: RedisSettings) -> None:
        self.redis = redis
        self.settings = settings
        self.problem: str | None = f"Redis at {address(redis)} has not been checked yet"

    async def __call__(self) -> Durability:
        try:
            durability = await check_redis(self.redis, self.settings)
        except (RedisError, OSError) as exc:
            self.problem = (str(exc) if isinstance(exc, UnsafeRedis) else
                            f"Redis at {address(self.redis)} is not reachable: {plain(exc)}")
            raise
        self.problem = None
        return durability

    async def at_start(self) -> None:
        """Raise UnsafeRedis for what waiting does not mend: an unsafe server, refused
        credentials, failed TLS (also a handshake that stalls: a rediss:// URL naming a plain
        port). An outage is only recorded in ``problem``; the caller goes on without Redis."""
        try:
            await self()
        except UnsafeRedis:
            raise
        except (RedisError, OSError) as exc:
            if await _tls_stalls(self.redis, exc):
                at = address(self.redis)
                raise UnsafeRedis(
                    f"TLS to Redis at {at} failed: the port answers in plain text and did not "
                    "complete a TLS handshake. Check that the rediss:// URL names the server's "
                    "TLS port (tls-port), not its plain one."
                ) from None


async def _tls_stalls(redis: Redis, exc: BaseException) -> bool:
    """A rediss:// connection that timed out on a port that answers a plain PING: a TLS client
    talking to a plain port, which waits for the end of a command that never comes."""
    pool = redis.connection_pool
    if not (isinstance(exc, (RedisTimeoutError, TimeoutError))
            and issubclass(pool.connection_class, SSLConnection)):
        return False
    kwargs = pool.connection_kwargs
    try:
        async with asyncio.timeout(1):
            reader, writer = await asyncio.open_connection(kwargs.get("host", "localhost"),
                                                           kwargs.get("port", 6379))
            try:
                writer.write(b"PING\r\n")
                first = await reader.read(1)
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    return first in (b"+", b"-")


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Each check runs on every reconnect; its warnings are worth saying once per process."""
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)
