"""Redis connections, and the start-up check that the server will not drop our data.

Typing note: redis-py annotates its asyncio commands as ``Awaitable[T] | T`` (shared with the
sync client, redis/redis-py#2399), which mypy rejects on ``await``; each such line carries a
targeted ``# type: ignore[misc]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

# With any other policy a full Redis silently evicts keys: accepted events, dedupe markers,
# delivery state. The bridge would rather refuse to start.
SAFE_POLICY = "noeviction"


class UnsafeRedis(Exception):
    pass


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


def redis_client(url: str) -> Redis:
    # Short timeouts: the webhook must answer 503 quickly when Redis is away, not hang.
    client: Redis = Redis.from_url(  # from_url is unannotated in redis-py
        url,
        socket_connect_timeout=2,
        socket_timeout=5,
        retry_on_timeout=False,
        health_check_interval=30,
    )
    return client


async def check_redis(redis: Redis) -> None:
    """Refuse a server whose eviction policy could silently drop the bridge's data."""
    info = await redis.info("memory")
    policy = str(info.get("maxmemory_policy", "unknown"))
    if policy != SAFE_POLICY:
        raise UnsafeRedis(
            f"Redis maxmemory-policy is {policy!r}: when memory runs out it may silently evict "
            f"accepted events and delivery state. Set maxmemory-policy to {SAFE_POLICY!r} "
            "(redis.conf, or CONFIG SET maxmemory-policy noeviction) and start again."
        )
