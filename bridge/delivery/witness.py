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
        # Did the current epoch begin with evidence of lost state (not a first start)?
        self.lost = False

    async def epoch(self) -> str:
        """The current epoch, checking the server's identity first (one round trip: a flush
        must not trust a ledger that a restore replaced a moment ago)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.info("server")
            pipe.get(k.EPOCH)
            pipe.hmget(k.WITNESS, ["run_id", "cause"])
            info, raw_epoch, (raw_seen, raw_cause) = await pipe.execute()
        run_id = str(info.get("run_id", ""))
        epoch, seen = _text(raw_epoch), _text(raw_seen)
        if epoch is None:
            # A first start, or a Redis that lost everything: nothing tells them apart here.
            epoch = await self.state_lost("no epoch on record", lost=False)
            await self.redis.hset(k.WITNESS, "run_id", run_id)  # type: ignore[misc]
        elif seen != run_id:
            epoch = await self.state_lost(f"the server's run_id changed from {seen} to "
                                          f"{run_id}")
            await self.redis.hset(k.WITNESS, "run_id", run_id)  # type: ignore[misc]
        else:
            self.lost = _text(raw_cause) == "lost"
        return epoch

    def saw_token(self, token: str) -> bool:
        """Record a claim's fencing token; False if it is not newer than one already seen
        (tokens never repeat, so the fence counter went back: Redis lost state)."""
        value = int(token)
        if value <= self._max_token:
            return False
        self._max_token = value
        return True

    async def state_lost(self, why: str, lost: bool = True) -> str:
        """Start a new epoch: every group is checked against its portal before its next sync
        (and, when ``lost``, before anything the ledger does not know is created)."""
        epoch = secrets.token_hex(8)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(k.EPOCH, epoch)
            pipe.hset(k.WITNESS, "cause", "lost" if lost else "first")
            await pipe.execute()
        if lost:
            log.warning("Redis may have lost state (%s): every group will be checked against "
                        "its portal before its next sync", why)
        self.lost = lost
        return epoch
