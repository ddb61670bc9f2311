"""Dashboard, API and metrics need the configured token (as a bearer token, or as the password
of HTTP basic auth, any user name) unless the server listens on loopback only.

Beyond who may ask, :class:`Protected` checks where a request comes from:

- with no token (loopback only), the ``Host`` header must name this machine, so a page whose
  DNS name is rebound to 127.0.0.1 cannot read or act through the operator's browser;
- a request that changes state must come from the server's own pages (``Origin`` is its own
  origin, ``Sec-Fetch-Site`` is ``same-origin``) or from a client that sends neither header
  (curl, scripts): a page on another site the operator visits cannot act with the browser's
  cached basic-auth credentials;
- and it must carry a JSON body (``Content-Type: application/json``), which no plain HTML form
  can send; a ``DELETE`` may carry no body at all (browsers send a cross-site ``DELETE`` only
  after a CORS preflight, which this server never grants).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from bridge.responses import JSONResponse, error
from bridge.settings import ConfigError, Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Sec-Fetch-Site values that mean "not one of this server's own pages".
FOREIGN_SITES = frozenset({"cross-site", "same-site"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_token(token: str | None) -> None:
    """A token that is set must be something: an empty one would let ``Bearer `` in."""
    if token is not None and not token.strip():
        raise ConfigError(
            "[dashboard] token is empty (is the environment variable it names set but empty?): "
            "set it to a long random secret, or leave the token out to serve the dashboard on "
            "loopback only."
        )


def require_safe_exposure(settings: Settings, listen_host: str) -> None:
    check_token(settings.dashboard.token)
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


def tokens_match(given: str, token: str) -> bool:
    """Constant-time, and blind to length too: both sides are hashed to 32 bytes first."""
    if not given:
        return False
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(),
                               hashlib.sha256(token.encode()).digest())


def split_host(value: str) -> tuple[str, int | None] | None:
    """``Host`` (or an origin's netloc) as (name, port); None when it is not one."""
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:]
    elif value.count(":") > 1:
        return value, None  # a bare IPv6 address (no browser sends one)
    else:
        name, _, port_text = value.partition(":")
    if port_text and not port_text.isdigit():
        return None
    return (name, int(port_text) if port_text else None) if name else None


def host_is_loopback(host: str) -> bool:
    parts = split_host(host)
    return parts is not None and is_loopback(parts[0])


def same_origin(origin: str, hosts: list[str]) -> bool:
    """Does ``Origin`` name the server as one of ``hosts`` (Host, X-Forwarded-Host) names it?"""
    parsed = urlsplit(origin.strip())
    theirs = split_host(parsed.netloc) if parsed.scheme in DEFAULT_PORTS else None
    if theirs is None:
        return False  # "null" (a sandboxed frame, a file) or not an origin at all
    name, port = theirs[0], theirs[1] or DEFAULT_PORTS[parsed.scheme]
    for host in hosts:
        ours = split_host(host)
        if ours is not None and ours[0] == name and (ours[1] or port) == port:
            return True
    return False


def is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/json"


class Protected:
    """An ASGI wrapper: passes the token check through when no token is configured
    (loopback-only server); the origin checks apply either way."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        check_token(token)
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
        else:
            await refusal(scope, receive, send)

    def refusal(self, scope: Scope) -> JSONResponse | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers") or []}
        method = scope["method"]
        host = headers.get("host", "")
        if self.token is None and not host_is_loopback(host):
            return error(403, "untrusted_host",
                         f"this dashboard serves only requests addressed to this machine "
                         f"(Host 127.0.0.1, ::1 or localhost), not {host!r}; to reach it by "
                         "another name, set [dashboard] token and send it")
        if method not in SAFE_METHODS:
            foreign = self.foreign(headers)
            if foreign is not None:
                return error(403, "cross_site_request", foreign)
        if self.token is not None and not self._allowed(headers):
            return error(401, "unauthorized",
                         "send the dashboard token as 'Authorization: Bearer <token>' or as "
                         "the password of HTTP basic auth",
                         headers={"WWW-Authenticate": 'Basic realm="listing-bridge"'})
        if method not in SAFE_METHODS and not self.json_or_nothing(method, headers):
            return error(400, "invalid_request",
                         "send a JSON object with Content-Type: application/json")
        return None

    @staticmethod
    def foreign(headers: dict[str, str]) -> str | None:
        """Why a state-changing request is not from this server's own pages, or None."""
        fetch_site = headers.get("sec-fetch-site", "").strip().lower()
        if fetch_site in FOREIGN_SITES:
            return (f"the browser says this request comes from another site (Sec-Fetch-Site: "
                    f"{fetch_site}); actions are taken only from the dashboard's own pages")
        origin = headers.get("origin")
        if origin is None:
            return None  # not a browser, or a browser that says nothing: curl, scripts
        hosts = [headers.get("host", ""),
                 *(h for h in headers.get("x-forwarded-host", "").split(",") if h.strip())]
        if not same_origin(origin, hosts):
            return (f"this request comes from {origin!r}, not from this server's own pages; "
                    "actions are taken only from the dashboard (behind a proxy that rewrites "
                    "Host, have it send X-Forwarded-Host)")
        return None

    @staticmethod
    def json_or_nothing(method: str, headers: dict[str, str]) -> bool:
        if is_json(headers.get("content-type", "")):
            return True
        no_body = ("content-type" not in headers and "transfer-encoding" not in headers
                   and headers.get("content-length", "0").strip() == "0")
        return method == "DELETE" and no_body

    def _allowed(self, headers: dict[str, str]) -> bool:
        assert self.token is not None
        given = presented_token(headers.get("authorization", ""))
        return given is not None and tokens_match(given, self.token)
