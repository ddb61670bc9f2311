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

from bridge.constants import ks
from bridge.replies import maybe_text
from bridge.scripts import Script, load

log = logging.getLogger("bridge.delivery.witness")


CHECK = load(__file__, "witness.lua")  # the epoch, checked against the server's run_id


class Witness:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._check = Script(redis, CHECK)
        self._max_token = 0
        # Did the current epoch begin with evidence of lost state (not a first start)?
        self.lost = False

    async def epoch(self) -> str:
        """The current epoch, checking the server's identity first (a flush must not trust a
        ledger that a restore replaced a moment ago). Atomic, so workers starting together
        agree on one epoch: a first start seen half-done must not read as a lost Redis."""
        answer = [maybe_text(x) for x in await self._check(keys=[ks().EPOCH, ks().WITNESS],
                                                      args=[secrets.token_hex(8)])]
        epoch, cause = str(answer[0]), answer[1]
        if len(answer) > 2:
            log.warning("Redis may have lost state (the server's run_id changed from %s to "
                        "%s): every group will be checked against its portal before its next "
                        "sync", answer[3] or "none", answer[2])
        self.lost = cause == "lost"
        return epoch

    @property
    def floor(self) -> int:
        """The highest fencing token this process has seen: take it before asking for a new
        one, and pass it to :meth:`saw_token` with the answer."""
        return self._max_token

    def saw_token(self, token: str, floor: int) -> bool:
        """Record a claim's fencing token; False if it is not above ``floor`` (the highest
        seen before it was asked for: tokens never repeat, so the fence counter went back and
        Redis lost state). Claims of this process that ran meanwhile may have seen higher
        tokens: that is no regression."""
        value = int(token)
        self._max_token = max(self._max_token, value)
        return value > floor

    async def state_lost(self, why: str, lost: bool = True) -> str:
        """Start a new epoch: every group is checked against its portal before its next sync
        (and, when ``lost``, before anything the ledger does not know is created)."""
        epoch = secrets.token_hex(8)
        # The cause first: cut off between the two, the epoch in force counts as lost (every
        # group is read before anything unknown is created), never the other way round. Not
        # a MULTI: a cluster's client has none (both keys are the tenant's, in one slot).
        await self.redis.hset(ks().WITNESS, "cause", "lost" if lost else "first")  # type: ignore[misc]
        await self.redis.set(ks().EPOCH, epoch)
        if lost:
            log.warning("Redis may have lost state (%s): every group will be checked against "
                        "its portal before its next sync", why)
        self.lost = lost
        return epoch
