"""Dashboard, API and metrics need a token (as a bearer token, or as the password of HTTP basic
auth, any user name) unless the server listens on loopback only and ``[dashboard] token`` is not
set. Who asks decides which tenants they reach (contract section 4a):

- the deployment's ``[dashboard] token`` (or no token, on a loopback-only server) reaches every
  tenant: ``?tenant=NAME`` picks one; without it, ``default`` when that tenant is configured;
- a tenant's own ``dashboard_token`` reaches that tenant only, and names it: ``?tenant=`` naming
  any other answers 404 exactly as a tenant that does not exist, so a token never learns which
  other tenants there are.

The tokens are read from ``app.state.settings`` at each request: serve and worker replace it when
SIGHUP reloads the tenants. The rest of the request runs under ``tenancy.use(tenant)``.

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
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from bridge import tenancy
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


def tenant_tokens(settings: Settings) -> dict[str, str]:
    """tenant -> its ``dashboard_token``, for the tenants that have one."""
    tokens = {name: settings.tenant_token(name) for name in settings.tenant_names()}
    return {name: token for name, token in tokens.items() if token is not None}


def require_safe_exposure(settings: Settings, listen_host: str) -> None:
    check_token(settings.dashboard.token)
    # Tenant tokens alone are enough: then only their holders get in (no one reaches every
    # tenant).
    if settings.dashboard.token is None and not tenant_tokens(settings) \
            and not is_loopback(listen_host):
        raise ConfigError(
            f"the server would listen on {listen_host}, beyond this machine, and the dashboard "
            "has no token: anyone who can reach it could release held syncs and pause targets. "
            "Set [dashboard] token = \"...\" in the configuration (or a dashboard_token for "
            "each tenant), or listen on 127.0.0.1."
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


@dataclass(frozen=True)
class Access:
    """Who asked, and the tenant the request works for (None: a route that takes every tenant,
    asked by the deployment: /metrics, the static files)."""

    tenant: str | None
    everyone: bool  # the deployment's token (or loopback without one): every tenant is theirs
    chosen: bool  # ``?tenant=`` named it: links between pages keep it

    def query(self) -> dict[str, str]:
        """What a link to another page adds to keep this tenant."""
        return {"tenant": self.tenant} if self.chosen and self.tenant else {}


def access(request: Request) -> Access:
    """The request's access, as :class:`Protected` decided it (before it decided: nobody's
    tenant, nothing to keep in links)."""
    found: Access | None = getattr(request.state, "access", None)
    return found if found is not None else Access(None, everyone=False, chosen=False)


def settings_of(request: Request) -> Settings:
    """The settings the request started with (a SIGHUP may replace the app's meanwhile)."""
    found: Settings | None = getattr(request.state, "settings", None)
    return found if found is not None else request.app.state.settings


class Answers:
    """How a protected route answers a request for a tenant it may not reach, or naming none
    where it must: JSON for the API and /metrics (the pages answer in HTML)."""

    async def unknown(self, request: Request, name: str) -> Response:
        # The same whether the tenant exists or not: a tenant's token learns nothing of others.
        return error(404, "not_found", f"no tenant named {name!r}")

    async def missing(self, request: Request, names: list[str]) -> Response:
        return error(400, "invalid_request",
                     "name the tenant with the 'tenant' parameter (?tenant=NAME); configured: "
                     + (", ".join(names) or "none"))


@dataclass(frozen=True)
class Holder:
    """Whose token the request carries: a tenant's, or (None) the deployment's."""

    tenant: str | None


DEPLOYMENT = Holder(None)
# The last settings seen and their tenants' token digests (hashed once per configuration).
_digests: list[tuple[Settings, list[tuple[bytes, str]]]] = []


def tenant_digests(settings: Settings) -> list[tuple[bytes, str]]:
    if not _digests or _digests[0][0] is not settings:
        _digests[:] = [(settings, [(hashlib.sha256(token.encode()).digest(), name)
                                   for name, token in tenant_tokens(settings).items()])]
    return _digests[0][1]


def holder_of(settings: Settings, given: str) -> Holder | None:
    """The holder of the token ``given``; None when it is nobody's."""
    deployment = settings.dashboard.token
    if deployment is not None and tokens_match(given, deployment):
        return DEPLOYMENT
    digest = hashlib.sha256(given.encode()).digest()
    found = None
    for theirs, name in tenant_digests(settings):  # every one compared: constant time
        if hmac.compare_digest(digest, theirs) and found is None:
            found = name
    return None if found is None else Holder(found)


class Protected:
    """An ASGI wrapper: decides who asks (a token, or no token on a loopback-only server) and
    for which tenant, checks where a state-changing request comes from, then runs the app
    under ``tenancy.use(tenant)`` with :class:`Access` in ``request.state.access``.

    ``every_tenant``: the deployment asking without ``?tenant=`` gets the app with no tenant
    set (it reads every tenant itself: /metrics), instead of ``default`` or ``answers.missing``.
    """

    def __init__(self, app: ASGIApp, answers: Answers | None = None, *,
                 every_tenant: bool = False) -> None:
        self.app = app
        self.answers = answers or Answers()
        self.every_tenant = every_tenant

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        # At each request: serve replaces the settings when SIGHUP reloads the tenants.
        settings: Settings = request.app.state.settings
        holder = self.refusal(request, settings)
        decided = holder if isinstance(holder, JSONResponse) else \
            await self.choose(request, settings, holder)
        if isinstance(decided, Response):
            await decided(scope, receive, send)
            return
        scope["state"] = {**scope.get("state", {}), "access": decided, "settings": settings}
        if decided.tenant is None:
            await self.app(scope, receive, send)
            return
        with tenancy.use(decided.tenant):  # holds for the handler: it runs in this context
            await self.app(scope, receive, send)

    async def choose(self, request: Request, settings: Settings, holder: Holder
                     ) -> Access | Response:
        named = request.query_params.get("tenant") or None
        if holder.tenant is not None:  # a tenant's token names its tenant, and only it
            if named is not None and named != holder.tenant:
                return await self.answers.unknown(request, named)
            return Access(holder.tenant, everyone=False, chosen=named is not None)
        names = settings.tenant_names()
        if named is not None:
            if named not in names:
                return await self.answers.unknown(request, named)
            return Access(named, everyone=True, chosen=True)
        if self.every_tenant:
            return Access(None, everyone=True, chosen=False)
        if tenancy.DEFAULT in names:
            return Access(tenancy.DEFAULT, everyone=True, chosen=False)
        return await self.answers.missing(request, names)

    def refusal(self, request: Request, settings: Settings) -> JSONResponse | Holder:
        """Who asks, or why they are refused."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        method = request.method
        holder = self.holder(request, settings, headers)
        if isinstance(holder, JSONResponse):
            return holder
        if method not in SAFE_METHODS:
            foreign = self.foreign(headers)
            if foreign is not None:
                return error(403, "cross_site_request", foreign)
        if holder is None:
            return error(401, "unauthorized",
                         "send the dashboard token (the deployment's, or your tenant's "
                         "dashboard_token) as 'Authorization: Bearer <token>' or as the "
                         "password of HTTP basic auth",
                         headers={"WWW-Authenticate": 'Basic realm="listing-bridge"'})
        if method not in SAFE_METHODS and not self.json_or_nothing(method, headers):
            return error(400, "invalid_request",
                         "send a JSON object with Content-Type: application/json")
        return holder

    @staticmethod
    def holder(request: Request, settings: Settings, headers: dict[str, str]
               ) -> Holder | JSONResponse | None:
        """The token's holder; without a known token, the deployment when the server is
        loopback-only and has no ``[dashboard] token`` (None: nobody)."""
        given = presented_token(headers.get("authorization", ""))
        found = holder_of(settings, given) if given else None
        if found is not None:
            return found
        listen_host = getattr(request.app.state, "listen_host", None)
        if settings.dashboard.token is not None or not is_loopback(listen_host or ""):
            return None
        host = headers.get("host", "")
        if not host_is_loopback(host):
            return error(403, "untrusted_host",
                         f"this dashboard serves only requests addressed to this machine "
                         f"(Host 127.0.0.1, ::1 or localhost), not {host!r}; to reach it by "
                         "another name, set [dashboard] token and send it")
        return DEPLOYMENT

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

