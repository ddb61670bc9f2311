"""Travtus OAuth2 client-credentials tokens."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from enum import Enum


class TokenState(Enum):
    VALID = "valid"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


@dataclass
class _Token:
    client_id: str
    expires_at: float  # monotonic


class TokenStore:
    def __init__(self) -> None:
        self._tokens: dict[str, _Token] = {}

    def issue(self, client_id: str, ttl_s: float) -> str:
        token = secrets.token_urlsafe(32)
        self._tokens[token] = _Token(client_id, time.monotonic() + ttl_s)
        return token

    def check(self, token: str) -> tuple[TokenState, str | None]:
        """(state, client id) of a presented token."""
        found = self._tokens.get(token)
        if found is None:
            return TokenState.UNKNOWN, None
        if time.monotonic() >= found.expires_at:
            return TokenState.EXPIRED, found.client_id
        return TokenState.VALID, found.client_id

    def expire_all(self) -> int:
        now = time.monotonic()
        for token in self._tokens.values():
            token.expires_at = min(token.expires_at, now)
        return len(self._tokens)

    def forget_all(self) -> None:
        """Credentials changed: every earlier token is now simply invalid."""
        self._tokens.clear()
