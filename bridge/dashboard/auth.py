"""Dashboard, API and metrics need the configured token (as a bearer token, or as the password
of HTTP basic auth, any user name) unless the server listens on loopback only."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.responses import error
from bridge.settings import ConfigError, Settings


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def require_safe_exposure(settings: Settings, listen_host: str) -> None:
    if settings.dashboard.token is None and not is_loopback(listen_host):
        raise ConfigError(
            f"the server would listen on {listen_host}, beyond this machine, and the dashboard "
            "has no token: anyone who can reach it could release held syncs and pause targets. "
            "Set [dashboard] token = \"...\" in the configuration, or listen on 127.0.0.1."
        )


def presented_token(authorization: str) -> str | None:
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


class Protected:
    """An ASGI wrapper: passes through when no token is configured (loopback-only server)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        response = error(401, "unauthorized",
                         "send the dashboard token as 'Authorization: Bearer <token>' or as "
                         "the password of HTTP basic auth",
                         headers={"WWW-Authenticate": 'Basic realm="listing-bridge"'})
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        assert self.token is not None
        headers = dict(scope.get("headers") or [])
        given = presented_token(headers.get(b"authorization", b"").decode("latin-1"))
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())
