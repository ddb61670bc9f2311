"""Drive the sandbox portals over real HTTP: its admin API as documented in
docs/portal-interpretations.md, and the URLs the adapters need."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx


class Sandbox:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.rentix_url = f"{base_url}/rentix/api/v1"
        self.travtus_url = f"{base_url}/travtus"
        self.token_url = f"{base_url}/travtus/oauth2/token"
        self._http = httpx.AsyncClient(base_url=f"{base_url}/_sandbox", timeout=10)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._http.request(method, path, **kwargs)
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    async def reset(self) -> None:
        await self._call("POST", "/reset")

    async def fault(self, **spec: Any) -> str:
        return (await self._call("POST", "/faults", json=spec))["id"]

    async def clear_faults(self) -> None:
        await self._call("DELETE", "/faults")

    async def seed_rentix(self, listings: list[dict[str, Any]]) -> list[int]:
        return (await self._call("POST", "/rentix/listings", json={"listings": listings}))["ids"]

    async def rentix_listings(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/rentix/listings"))["items"]

    async def seed_travtus(self, group: str, listings: list[dict[str, Any]]) -> list[str]:
        body = {"group": group, "listings": listings}
        return (await self._call("POST", "/travtus/listings", json=body))["identifiers"]

    async def travtus_group_id(self, group: str) -> str:
        """Travtus's own id for a group (the seed answer carries it beside the identifiers;
        not in the documented admin API)."""
        body = {"group": group, "listings": []}
        return (await self._call("POST", "/travtus/listings", json=body))["group_id"]

    async def travtus_listings(self, group: str) -> list[dict[str, Any]]:
        data = await self._call("GET", "/travtus/listings", params={"group": group})
        return data["listings"]

    async def deny_group(self, group: str) -> None:
        await self._call("POST", f"/travtus/groups/{group}/deny")

    async def expire_tokens(self) -> None:
        await self._call("POST", "/travtus/expire-tokens")

    async def credentials(self, **changes: str) -> None:
        await self._call("POST", "/credentials", json=changes)

    async def agency(self, **switches: bool) -> None:
        await self._call("POST", "/rentix/agency", json=switches)

    async def rate_limits(self, **limits: int) -> None:
        await self._call("POST", "/rate-limits", json=limits)

    async def journal(self, portal: str | None = None) -> list[dict[str, Any]]:
        params = {"portal": portal} if portal else {}
        return (await self._call("GET", "/journal", params=params))["requests"]


async def eventually(probe: Callable[[], Awaitable[Any]], within: float = 5.0) -> Any:
    """Await `probe` until it returns something truthy, or fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {probe}")
        await asyncio.sleep(0.02)
