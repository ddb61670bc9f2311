"""The script client's tests' script (calls.lua) and a client that gives each call its key."""

from __future__ import annotations

from typing import Any

from bridge.ingest.script_client import ScriptBatcher
from bridge.scripts import load

# Appends its argument to a list: what ran, in which order, in which database.
SCRIPT = load(__file__, "calls.lua")
CALLS = "lb:test:calls"


class Calls(ScriptBatcher):
    """The client with calls.lua, each call given its one key."""

    async def call(self, args: list[bytes | str | int],
                   keys: list[bytes | str | int] | None = None) -> Any:
        return await super().call(args, keys=keys or [CALLS])
