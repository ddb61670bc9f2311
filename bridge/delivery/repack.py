"""Packing listing bodies once the worker has them: the webhook stores a body as it came (its
path does no more than verify, validate and store), and the flush that claims it writes it back
packed (``bridge/packing.py``, about a fifth of its size), unless the listing changed since.

The write is exact or nothing: the script replaces a body only if its SHA-1 is that of the JSON
the flush packed, so a newer event's body is never replaced by an older one's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import orjson
from redis.asyncio import Redis

from bridge.constants import ks
from bridge.delivery.desired import DesiredListing
from bridge.packing import pack
from bridge.scripts import Script, load

REPACK = load(__file__, "repack.lua")


class Repacker:
    def __init__(self, redis: Redis) -> None:
        self._repack = Script(redis, REPACK)

    async def repack(self, listings: Sequence[DesiredListing]) -> int:
        """Pack the bodies of these claimed listings that are stored plain."""
        keys: list[str] = []
        args: list[str | bytes] = []
        for listing in listings:
            if listing.body is None or listing.packed:
                continue
            raw = orjson.dumps(listing.body)
            keys.append(ks().BODY + listing.ref)
            args += [hashlib.sha1(raw, usedforsecurity=False).hexdigest(), pack(raw)]
        if not keys:
            return 0
        return int(await self._repack(keys=keys, args=args))
