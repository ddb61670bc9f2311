"""A deployment of several tenants for end-to-end tests (contract section 4a, issue 31): each
tenant's own sandbox portals (a sandbox app of its own, on its own port, with its own Rentix API
key and Travtus client), its configuration (a ``[[tenants]]`` entry or a file of
``tenants_dir``), signed webhooks to ``/webhooks/crm/{tenant}``, and the real processes
(``bridge serve``, ``bridge worker``) with their logs, for tests that signal them."""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

from bridge import constants as k
from bridge import tenancy
from bridge.sandbox import SandboxSettings
from bridge.sandbox.app import create_app as create_sandbox
from tests.conftest import OTHER_SECRET, SECRET
from tests.support import crm
from tests.support.servers import free_port, serve_app, wait_until

BRIDGE = [sys.executable, "-m", "bridge.cli"]

# Each tenant's webhook secret and dashboard token; the top level's (tenant ``default``).
SECRETS = {
    "north": SECRET,
    "south": OTHER_SECRET,
    "west": "whsec_" + base64.b64encode(b"listing-bridge-test-secret-west").decode(),
    tenancy.DEFAULT: "whsec_" + base64.b64encode(b"listing-bridge-test-secret-dflt").decode(),
}
TOKENS = {"north": "north-dashboard-token-0001", "south": "south-dashboard-token-0002"}
DEPLOYMENT_TOKEN = "deployment-dashboard-token-0003"

# Each tenant's Rentix takes a steady stream of new listings without making the bridge wait
# for its budget: these tests are about tenants, not about Rentix's rate limits (at the
# documented 300 a minute, a stream of 25 new listings a second keeps the jobs waiting for
# rate slots, some past the 5 s job timeout below).
RENTIX_PER_MINUTE = 6000
RENTIX_BULK_PER_MINUTE = 600

# Quick flushes and retries: the tests wait on the portals, not on the defaults.
DEBOUNCE = {"window_ms": 150, "max_wait_ms": 1000}
DELIVERY = {"job_timeout_s": 5, "retry_base_s": 0.2, "retry_max_s": 1.0,
            "poll_interval_ms": 20}


# -- the portals ---------------------------------------------------------------------------------

@dataclass
class Portals:
    """One tenant's sandbox: both portals, with credentials no other tenant holds."""

    tenant: str
    url: str
    admin: httpx.Client
    settings: SandboxSettings

    def targets(self) -> list[dict[str, Any]]:
        """The tenant's [[targets]] on these portals, within their (generous) Rentix budgets."""
        return [
            {"name": "rentix", "kind": "rentix", "base_url": f"{self.url}/rentix/api/v1",
             "api_key": self.settings.rentix_api_key,
             "requests_per_minute": RENTIX_PER_MINUTE - RENTIX_PER_MINUTE // 10,
             "bulk_per_minute": RENTIX_BULK_PER_MINUTE - RENTIX_BULK_PER_MINUTE // 10},
            {"name": "travtus", "kind": "travtus", "base_url": f"{self.url}/travtus",
             "token_url": f"{self.url}/travtus/oauth2/token",
             "client_id": self.settings.travtus_client_id,
             "client_secret": self.settings.travtus_client_secret},
        ]

    def journal(self, portal: str | None = None) -> list[dict[str, Any]]:
        params = {"portal": portal} if portal else {}
        requests: list[dict[str, Any]] = self.admin.get("/_sandbox/journal",
                                                       params=params).json()["requests"]
        return requests

    def rentix(self) -> dict[str, dict[str, Any]]:
        """Rentix's listings by externalId (the ones the bridge made)."""
        items = self.admin.get("/_sandbox/rentix/listings").json()["items"]
        return {item["externalId"]: item for item in items if item.get("externalId")}

    def travtus(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Travtus's listings by (group, external_reference)."""
        listings = self.admin.get("/_sandbox/travtus/listings").json()["listings"]
        return {(item["group_external_ref"], item["external_reference"]): item
                for item in listings}

    def descriptions(self) -> tuple[dict[str, tuple[str, str]], dict[tuple[str, str], str]]:
        """What each portal shows of each listing: Rentix (status, description) by ref,
        Travtus's description by (group, ref) of its live listings."""
        rentix = {ref: (item["formData"]["announcementStatus"],
                        item["formData"].get("announcementDescription", ""))
                  for ref, item in self.rentix().items()}
        travtus = {key: item.get("description", "") for key, item in self.travtus().items()
                   if not item.get("inactive_date")}
        return rentix, travtus


@contextlib.contextmanager
def portals(tenant: str) -> Iterator[Portals]:
    """A fresh sandbox for ``tenant``, over loopback HTTP, on credentials named after it."""
    settings = SandboxSettings(rentix_api_key=f"{tenant}-rentix-key",
                               travtus_client_id=f"{tenant}-travtus-client",
                               travtus_client_secret=f"{tenant}-travtus-secret",
                               rentix_per_minute=RENTIX_PER_MINUTE,
                               rentix_bulk_per_minute=RENTIX_BULK_PER_MINUTE)
    with serve_app(create_sandbox(settings)) as url, \
            httpx.Client(base_url=url, timeout=10) as admin:
        yield Portals(tenant, url, admin, settings)


# -- the configuration ---------------------------------------------------------------------------

def _value(value: Any) -> str:
    """A TOML value: JSON's strings, numbers, booleans and arrays of them are TOML's too."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_value(v)}" for key, v in value.items()) + " }"
    return json.dumps(value)


def _pairs(values: dict[str, Any]) -> list[str]:
    return [f"{key} = {_value(value)}" for key, value in values.items()]


def tenant_entry(tenant: str, sandbox: Portals, token: bool = True,
                 **extra: Any) -> dict[str, Any]:
    """Tenant ``tenant`` on ``sandbox``: its own secret (and dashboard token)."""
    entry: dict[str, Any] = {"name": tenant, "webhook_secrets": [SECRETS[tenant]]}
    if token and tenant in TOKENS:
        entry["dashboard_token"] = TOKENS[tenant]
    return {**entry, **extra, "targets": sandbox.targets()}


def tenant_file(entry: dict[str, Any]) -> str:
    """A file of tenants_dir: the entry's keys, its targets as [[targets]]."""
    lines = _pairs({key: value for key, value in entry.items() if key != "targets"})
    for target in entry["targets"]:
        lines += ["", "[[targets]]", *_pairs(target)]
    return "\n".join(lines) + "\n"


def config_text(redis_url: str, tenants: list[dict[str, Any]] | None = None,
                tenants_dir: str | None = None, default: Portals | None = None,
                dashboard_token: str | None = None) -> str:
    """The main file: Redis, quick debounce and delivery, ``tenants`` as [[tenants]],
    ``tenants_dir``; with ``default``, the top level is tenant ``default`` on those portals."""
    lines = [f"redis_url = {_value(redis_url)}"]
    if tenants_dir is not None:
        lines.append(f"tenants_dir = {_value(tenants_dir)}")
    if default is not None:
        lines += ["[webhook]", f"secrets = {_value([SECRETS[tenancy.DEFAULT]])}"]
    lines += ["[debounce]", *_pairs(DEBOUNCE), "[delivery]", *_pairs(DELIVERY)]
    if dashboard_token is not None:
        lines += ["[dashboard]", f"token = {_value(dashboard_token)}"]
    for target in default.targets() if default is not None else []:
        lines += ["[[targets]]", *_pairs(target)]
    for entry in tenants or []:
        lines += ["[[tenants]]", *_pairs({key: value for key, value in entry.items()
                                          if key != "targets"})]
        for target in entry["targets"]:
            lines += ["[[tenants.targets]]", *_pairs(target)]
    return "\n".join(lines) + "\n"


# -- the webhook ---------------------------------------------------------------------------------

def post(client: httpx.Client, tenant: str | None, payload: Any, msg_id: str | None = None,
         secret: str | None = None) -> httpx.Response:
    """``payload`` signed with ``tenant``'s secret (or ``secret``), posted to the tenant's
    webhook (``tenant`` None: ``/webhooks/crm``)."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    secret = secret or SECRETS[tenant or tenancy.DEFAULT]
    path = "/webhooks/crm" if tenant is None else f"/webhooks/crm/{tenant}"
    return client.post(path, content=body, headers=crm.signed_headers(secret, body, msg_id))


def upsert(tenant: str, group: str, ref: str, version: int, **fields: Any) -> dict[str, Any]:
    """A change of ``ref`` whose content names its tenant and version (description, price)."""
    base = 500 if tenant == "north" else 900
    return crm.upsert(group, ref, version, description=content(tenant, ref, version),
                      price={"amount": base + version, "currency": "EUR", "period": "monthly"},
                      **fields)


def content(tenant: str, ref: str, version: int) -> str:
    """The description ``upsert`` gives that version (Rentix wants 40 characters or more)."""
    return f"{tenant} {ref} v{version}: a bright two-room flat, renovated this year"


# -- Redis ---------------------------------------------------------------------------------------

def tenant_keys(client: redis.Redis, tenant: str) -> set[str]:
    """Every key of ``tenant`` (``lb:{t:NAME}:*``)."""
    pattern = tenancy.prefix(tenant).replace("{", "[{]").replace("}", "[}]") + "*"
    return {key.decode() if isinstance(key, bytes) else key
            for key in client.scan_iter(match=pattern, count=1000)}


def workers_up(client: redis.Redis, count: int = 1) -> bool:
    """At least ``count`` workers beat (lb:workers): their signal handlers are installed."""
    return int(client.hlen(k.WORKERS)) >= count


# -- the processes -------------------------------------------------------------------------------

@dataclass
class Processes:
    """``bridge serve`` and ``bridge worker`` processes on ``config``, each logging to a file
    beside it (a pipe nobody reads would block it once full)."""

    config: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)
    urls: dict[int, str] = field(default_factory=dict)

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.config.with_name(f"{name}-{len(self.started) + 1}.log")
        with log.open("wb") as stderr:
            process = subprocess.Popen([*BRIDGE, *args, "--config", str(self.config)],
                                       stdout=subprocess.DEVNULL, stderr=stderr)
        self.started.append(process)
        self.logs[process.pid] = log
        return process

    def worker(self) -> subprocess.Popen[bytes]:
        return self._start("worker", "worker")

    def serve(self) -> subprocess.Popen[bytes]:
        port = free_port()
        process = self._start("serve", "serve", "--port", str(port))
        self.urls[process.pid] = f"http://127.0.0.1:{port}"
        return process

    def url(self, process: subprocess.Popen[bytes]) -> str:
        return self.urls[process.pid]

    def wait_serving(self, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
        """Until the web process answers (its lifespan has started: SIGHUP is handled)."""
        def answers() -> bool:
            assert process.poll() is None, f"bridge serve ended:\n{self.log(process)}"
            try:
                return httpx.get(f"{self.url(process)}/readyz", timeout=1).is_success
            except httpx.HTTPError:
                return False

        wait_until(answers, timeout=timeout, what=lambda: f"bridge serve:\n{self.log(process)}")

    def log(self, process: subprocess.Popen[bytes]) -> str:
        return self.logs[process.pid].read_text(errors="replace")

    def hangup(self, *processes: subprocess.Popen[bytes]) -> None:
        for process in processes:
            assert process.poll() is None, f"ended before the SIGHUP:\n{self.log(process)}"
            process.send_signal(signal.SIGHUP)

    def wait_logged(self, process: subprocess.Popen[bytes], found: Callable[[str], bool],
                    what: str, timeout: float = 10) -> str:
        """Until ``found`` holds of the process's log; the log."""
        wait_until(lambda: found(self.log(process)), timeout=timeout,
                   what=lambda: f"{what} in the log of {process.args!r}:\n{self.log(process)}")
        return self.log(process)

    def stop(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


@contextlib.contextmanager
def processes(config: Path) -> Iterator[Processes]:
    running = Processes(config)
    try:
        yield running
    finally:
        running.stop()


def reloads(count: int, tenants: str) -> Callable[[str], bool]:
    """The log holds ``count`` successful reloads, the last one naming ``tenants``."""
    def found(log: str) -> bool:
        lines = [line for line in log.splitlines() if "SIGHUP: configuration reloaded" in line]
        return len(lines) >= count and lines[-1].endswith(f"; tenants: {tenants}")
    return found


def refusals(count: int, file_name: str) -> Callable[[str], bool]:
    """The log holds ``count`` refused reloads, the last one naming ``file_name``."""
    def found(log: str) -> bool:
        lines = [line for line in log.splitlines()
                 if "SIGHUP: configuration not reloaded" in line]
        return len(lines) >= count and file_name in lines[-1]
    return found


# -- a steady stream -----------------------------------------------------------------------------

@dataclass
class Sent:
    """One event of a stream and the answer it got (status 0: no answer, the error)."""

    webhook_id: str
    group: str
    ref: str
    status: int
    answer: Any


class Stream:
    """Posts a new listing of ``tenant`` every ``every_s`` seconds, in a thread, until stopped:
    event n is listing ``{prefix}{n}`` of group ``branch-{n % 3}``, version 1, with the
    tenant's content. Each answer is kept; none is asserted here."""

    def __init__(self, url: str, tenant: str, every_s: float = 0.04,
                 prefix: str = "apt-") -> None:
        self.url, self.tenant, self.every_s, self.prefix = url, tenant, every_s, prefix
        self.sent: list[Sent] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"stream-{tenant}")

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Sent]:
        self._stop.set()
        self._thread.join(timeout=15)
        assert not self._thread.is_alive(), f"{self.tenant}'s stream did not stop"
        return self.sent

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            n = 0
            while not self._stop.is_set():
                ref, group = f"{self.prefix}{n}", f"branch-{n % 3}"
                webhook_id = f"{self.tenant}-{ref}"
                try:
                    response = post(client, self.tenant, upsert(self.tenant, group, ref, 1),
                                    webhook_id)
                    sent = Sent(webhook_id, group, ref, response.status_code, response.json())
                except (httpx.HTTPError, ValueError) as exc:
                    sent = Sent(webhook_id, group, ref, 0, repr(exc))
                self.sent.append(sent)
                n += 1
                self._stop.wait(self.every_s)

    def count(self) -> int:
        return len(self.sent)


def on_portals(sandbox: Portals, sent: list[Sent]) -> bool:
    """Every listing of ``sent`` on both of ``sandbox``'s portals with its tenant's content,
    and nothing else there."""
    rentix, travtus = sandbox.descriptions()
    tenant = sandbox.tenant
    return (rentix == {s.ref: ("active", content(tenant, s.ref, 1)) for s in sent}
            and travtus == {(s.group, s.ref): content(tenant, s.ref, 1) for s in sent})
