"""Travtus client-credentials tokens: one fetch shared by every concurrent call.

The docs warn that fetching a token per call may get a client throttled, so the token is
cached until shortly before it expires and fetched under a lock.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from bridge.clock import now_ms
from bridge.portals.outcomes import Outcome, Result
from bridge.portals.transport import send
from bridge.portals.travtus_errors import classify

REFRESH_MARGIN_S = 60.0


class TokenError(Exception):
    """The token endpoint refused or failed; `result` says how."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.message)
        self.result = result


class TokenCache:
    def __init__(self, http: httpx.AsyncClient, token_url: str, client_id: str,
                 client_secret: str, timeout: httpx.Timeout | None = None) -> None:
        self._http = http
        self._url = token_url
        self._form = {"grant_type": "client_credentials", "client_id": client_id,
                      "client_secret": client_secret}
        self._timeout = timeout
        self._token: str | None = None
        self._refresh_at = 0.0  # monotonic
        self._lock = asyncio.Lock()
        self.fetches = 0  # how many tokens were requested (observability, tests)
        # When the current token expires (Unix ms; None before the first): the delivery
        # records it in lb:target:{target} for the dashboard, which cannot see this memory.
        self.expires_at: int | None = None

    async def get(self) -> str:
        if self._fresh():
            assert self._token is not None
            return self._token
        async with self._lock:
            if not self._fresh():  # another caller may have fetched while we waited
                await self._fetch()
            assert self._token is not None
            return self._token

    async def replace(self, stale: str) -> str:
        """A fresh token in place of `stale`, fetched once however many callers saw it fail."""
        async with self._lock:
            if self._token == stale or self._token is None:
                await self._fetch()
            assert self._token is not None
            return self._token

    def forget(self, token: str) -> None:
        """Drop a token the portal called invalid, so the next call fetches anew."""
        if self._token == token:
            self._token, self._refresh_at = None, 0.0

    def _fresh(self) -> bool:
        return self._token is not None and time.monotonic() < self._refresh_at

    async def _fetch(self) -> None:
        self.fetches += 1
        sent = await send(self._http, "POST", self._url, data=self._form,
                          headers={"Accept": "application/json"}, http_timeout=self._timeout)
        if sent.failure:
            raise TokenError(sent.failure)
        assert sent.response is not None
        result = classify(sent.response, sent.latency_ms)
        body = result.body if isinstance(result.body, dict) else {}
        if not result.ok or not isinstance(body.get("access_token"), str):
            if result.ok:  # a 2xx without a token: treat the endpoint as broken for now
                result.outcome, result.error_type = Outcome.TRANSIENT, "no_access_token"
            raise TokenError(result)
        expires_in = body.get("expires_in")
        ttl = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
        # Refresh a minute early, or earlier still for short-lived tokens.
        margin = min(REFRESH_MARGIN_S, ttl / 4)
        self._token = body["access_token"]
        self._refresh_at = time.monotonic() + ttl - margin
        self.expires_at = now_ms() + int(ttl * 1000)
