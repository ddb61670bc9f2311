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

from bridge import constants as k
from bridge.delivery.desired import DesiredListing
from bridge.packing import pack
from bridge.scripts import splice

# ARGV: triples of ref, SHA-1 of the plain body, packed body. Returns how many were packed.
# The claim that read the bodies moved any still kept in the listing hash to lb:body:{ref}.
REPACK = splice("""
local packed = 0
for i = 1, #ARGV, 3 do
  local bk = __BODY__ .. ARGV[i]
  local body = redis.call('GET', bk)
  if body and redis.sha1hex(body) == ARGV[i + 1] then
    redis.call('SET', bk, ARGV[i + 2])
    packed = packed + 1
  end
end
return packed
""", {"BODY": k.BODY})


class Repacker:
    def __init__(self, redis: Redis) -> None:
        self._repack = redis.register_script(REPACK)

    async def repack(self, listings: Sequence[DesiredListing]) -> int:
        """Pack the bodies of these claimed listings that are stored plain."""
        args: list[str | bytes] = []
        for listing in listings:
            if listing.body is None or listing.packed:
                continue
            raw = orjson.dumps(listing.body)
            args += [listing.ref, hashlib.sha1(raw, usedforsecurity=False).hexdigest(), pack(raw)]
        if not args:
            return 0
        return int(await self._repack(keys=[], args=args))
