"""Has Redis lost state since the ledger was last checked against the portals?

The ledger says what each portal accepted. After Redis is restored from a backup, fails over to
a lagging replica, or loses its data, the ledger (and the desired state) may lack listings the
portals hold, and a full group sync computed from it would delete them while looking harmless.
Nothing inside Redis can tell, since the evidence rolls back with the data. Two witnesses from
outside the data can:

* the server's ``run_id``: a restore, a failover or a restart gives a new one;
* the fencing tokens this worker has seen: ``lb:fence`` only grows, so a claim returning a token
  lower than one already seen means the counter, and the data with it, went back in time.

Either starts a new *epoch* (``lb:epoch``, a random id). A group-sync target's group counts as
verified only for the epoch in which its portal group was last read or synced
(``lb:verified:{target}``); an unverified group is read from the portal before its next sync, so
listings the bridge does not know are deletions the guards see. A plain restart costs one read
per group; a lost ledger never costs a deletion.
"""

from __future__ import annotations

import logging
import secrets

from redis.asyncio import Redis

from bridge import constants as k

log = logging.getLogger("bridge.delivery.witness")


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class Witness:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._max_token = 0

    async def epoch(self) -> str:
        """The current epoch, checking the server's identity first (one round trip: a flush
        must not trust a ledger that a restore replaced a moment ago)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.info("server")
            pipe.get(k.EPOCH)
            pipe.hget(k.WITNESS, "run_id")
            info, raw_epoch, raw_seen = await pipe.execute()
        run_id = str(info.get("run_id", ""))
        epoch, seen = _text(raw_epoch), _text(raw_seen)
        if epoch is None or seen != run_id:
            why = ("no epoch on record" if epoch is None else
                   f"the server's run_id changed from {seen} to {run_id}")
            epoch = await self.state_lost(why)
            await self.redis.hset(k.WITNESS, "run_id", run_id)  # type: ignore[misc]
        return epoch

    def saw_token(self, token: str) -> bool:
        """Record a claim's fencing token; False if it is not newer than one already seen
        (tokens never repeat, so the fence counter went back: Redis lost state)."""
        value = int(token)
        if value <= self._max_token:
            return False
        self._max_token = value
        return True

    async def state_lost(self, why: str) -> str:
        """Start a new epoch: every group is checked against its portal before its next sync."""
        epoch = secrets.token_hex(8)
        await self.redis.set(k.EPOCH, epoch)
        log.warning("Redis may have lost state (%s): every group will be checked against its "
                    "portal before its next sync", why)
        return epoch
