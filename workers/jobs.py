"""The arq jobs a worker runs: one flush of one group (``bridge.delivery.flush``)."""

from __future__ import annotations

from typing import Any

from arq.worker import Retry
from redis.exceptions import AuthenticationError, AuthorizationError, WatchError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bridge.delivery.flush import Delivery

# What "Redis is not there" looks like; waiting helps only with these. (TimeoutError and
# ConnectionRefusedError are OSErrors; BusyLoadingError, a Redis replaying its AOF, is a
# ConnectionError.) Credentials that Redis refuses do not heal by waiting.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError,
                                                      OSError)
NOT_TRANSIENT: tuple[type[BaseException], ...] = (AuthenticationError, AuthorizationError)

# An interrupted flush runs again this soon, if Redis is back by then.
INTERRUPTED_RETRY_S = 1.0


def is_connection_failure(exc: BaseException) -> bool:
    if isinstance(exc, WatchError):  # redis-py's word for a connection lost during a WATCH
        return exc.__context__ is not None and is_connection_failure(exc.__context__)
    return isinstance(exc, CONNECTION_ERRORS) and not isinstance(exc, NOT_TRANSIENT)


async def flush_group(ctx: dict[str, Any], group: str) -> str:
    delivery: Delivery = ctx["delivery"]
    try:
        return await delivery.flush(group)
    except Exception as exc:
        if not is_connection_failure(exc):
            raise
        # Lost Redis mid-flush: arq keeps the job and runs it again (one log line, no
        # traceback); if Redis is still away, the worker's supervisor takes over.
        raise Retry(defer=INTERRUPTED_RETRY_S) from exc
