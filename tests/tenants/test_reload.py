"""Tenants added and removed by a SIGHUP while events flow (contract section 4a, issue 31):
``bridge serve`` and ``bridge worker`` as real processes on a configuration whose tenants are
files of ``tenants_dir``, each tenant on its own sandbox portals. A tenant added by a reload is
served from then on, while a steady stream to another tenant goes on with nothing refused or
lost; an invalid tenant file is refused by name and changes nothing; a tenant removed by a
reload is refused from then on, and the others go on."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from tests.support.servers import wait_until
from tests.tenants.deployment import (
    Portals,
    Processes,
    Sent,
    Stream,
    config_text,
    on_portals,
    portals,
    post,
    processes,
    refusals,
    reloads,
    tenant_entry,
    tenant_file,
    tenant_keys,
    upsert,
    workers_up,
)

# The tier of every test here (tests/support/tiers.py).
pytestmark = pytest.mark.processes


def write_tenant(tenants_dir: Path, sandbox: Portals) -> Path:
    """Tenant ``sandbox.tenant``'s file in tenants_dir, on its sandbox (read at the next
    start or SIGHUP)."""
    path = tenants_dir / f"{sandbox.tenant}.toml"
    path.write_text(tenant_file(tenant_entry(sandbox.tenant, sandbox)))
    return path


@dataclass
class Running:
    tenants_dir: Path
    portals: dict[str, Portals]
    processes: Processes
    serve: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]
    bridge: httpx.Client
    redis: redis.Redis

    @property
    def url(self) -> str:
        return self.processes.url(self.serve)

    def add(self, tenant: str) -> Path:
        return write_tenant(self.tenants_dir, self.portals[tenant])

    def hangup(self) -> None:
        """SIGHUP to both processes."""
        self.processes.hangup(self.serve, self.worker)

    def wait_logged(self, found: Callable[[str], bool], what: str) -> None:
        """Until both processes' logs satisfy ``found``."""
        for process in (self.serve, self.worker):
            self.processes.wait_logged(process, found, what)

    def send(self, tenant: str, ref: str, group: str = "branch-x") -> Sent:
        """One new listing of ``tenant``, posted to its webhook, and the answer."""
        webhook_id = f"{tenant}-{ref}"
        response = post(self.bridge, tenant, upsert(tenant, group, ref, 1), webhook_id)
        return Sent(webhook_id, group, ref, response.status_code, response.json())

    def logs(self) -> str:
        return "\n".join(self.processes.log(p) for p in (self.serve, self.worker))

    def delivered(self, tenant: str, sent: list[Sent]) -> None:
        """Until every listing of ``sent`` is on ``tenant``'s portals, and nothing else."""
        sandbox = self.portals[tenant]
        wait_until(lambda: on_portals(sandbox, sent), timeout=20,
                   what=lambda: f"{len(sent)} listings of {tenant} on its portals; they show "
                   f"{[len(found) for found in sandbox.descriptions()]}; worker:\n"
                   f"{self.processes.log(self.worker)}")


@contextlib.contextmanager
def running(redis_url: str, tmp_path: Path, configured: tuple[str, ...],
            sandboxes: tuple[str, ...] = ("north", "south")) -> Iterator[Running]:
    """``bridge serve`` and one ``bridge worker`` on a configuration whose tenants_dir holds a
    file for each of ``configured``; a sandbox for each of ``sandboxes``."""
    with contextlib.ExitStack() as stack:
        found = {name: stack.enter_context(portals(name)) for name in sandboxes}
        tenants_dir = tmp_path / "tenants.d"
        tenants_dir.mkdir()
        for tenant in configured:
            write_tenant(tenants_dir, found[tenant])
        config = tmp_path / "bridge.toml"
        config.write_text(config_text(redis_url, tenants_dir="tenants.d"))
        client = stack.enter_context(contextlib.closing(redis.Redis.from_url(
            redis_url, decode_responses=True)))
        started = stack.enter_context(processes(config))
        serve, worker = started.serve(), started.worker()
        # Both have installed their SIGHUP handlers once they answer (serve) and beat (worker).
        started.wait_serving(serve)
        wait_until(lambda: workers_up(client), timeout=20,
                   what=lambda: f"the worker:\n{started.log(worker)}")
        bridge = stack.enter_context(httpx.Client(base_url=started.url(serve), timeout=10))
        yield Running(tenants_dir, found, started, serve, worker, bridge, client)


def accepted(sent: list[Sent]) -> list[tuple[str, int, object]]:
    """What ``sent`` should have been answered: each 202, accepted."""
    return [(s.webhook_id, 202, {"accepted": True, "id": s.webhook_id}) for s in sent]


def answers(sent: list[Sent]) -> list[tuple[str, int, object]]:
    return [(s.webhook_id, s.status, s.answer) for s in sent]


def refused(sent: Sent) -> bool:
    """Answered 401 invalid_signature, as a wrong secret is."""
    return sent.status == 401 and isinstance(sent.answer, dict) \
        and sent.answer["error"]["type"] == "invalid_signature"


def nothing_of_another(sandbox: Portals, other: str) -> None:
    """Every call ``sandbox`` received came with its tenant's credentials and carried nothing
    of tenant ``other``."""
    journal = sandbox.journal()
    assert journal and not [(e["method"], e["path"], e["status"]) for e in journal
                            if e["status"] in (401, 403)]
    assert other not in orjson.dumps([e["body"] for e in journal]).decode()


def test_a_tenant_added_by_sighup_is_served_while_another_streams_and_nothing_is_lost(
    redis_url: str, tmp_path: Path
) -> None:
    with running(redis_url, tmp_path, configured=("north",)) as run:
        before = run.send("south", "early")
        with Stream(run.url, "north") as north:
            wait_until(lambda: north.count() >= 25, timeout=10, what="north's stream under way")
            run.add("south")
            # The file alone changes nothing: the tenants are read again on SIGHUP.
            unread = run.send("south", "unread")
            hangup_at = north.count()
            run.hangup()
            run.wait_logged(reloads(1, "north, south"), "the reload adding south")
            reloaded_at = north.count()
            with Stream(run.url, "south", prefix="flat-") as south:
                wait_until(lambda: south.count() >= 40 and north.count() >= reloaded_at + 40,
                           timeout=15, what="both streams after the reload")
        # North's stream ran before, across and after the reload: every event was accepted.
        assert 25 <= hangup_at <= reloaded_at <= north.count() - 40
        assert answers(north.sent) == accepted(north.sent)
        assert refused(before) and refused(unread)
        assert answers(south.sent) == accepted(south.sent)
        # Every one reached its own tenant's portals (south's refused two never did).
        run.delivered("north", north.sent)
        run.delivered("south", south.sent)
        nothing_of_another(run.portals["north"], "south")
        nothing_of_another(run.portals["south"], "north")
        assert "Traceback" not in run.logs()


def test_an_invalid_tenant_file_is_refused_by_name_and_the_tenants_keep_working(
    redis_url: str, tmp_path: Path
) -> None:
    with running(redis_url, tmp_path, configured=("north", "south")) as run:
        first = {tenant: run.send(tenant, "apt-1") for tenant in ("north", "south")}
        bad = run.tenants_dir / "west.toml"
        bad.write_text('webhook_secrets = ["not-a-secret"]\n')
        run.hangup()
        run.wait_logged(refusals(1, "west.toml"), "the refusal naming west.toml")
        for process in (run.serve, run.worker):
            [line] = [line for line in run.processes.log(process).splitlines()
                      if "SIGHUP: configuration not reloaded" in line]
            assert f"{bad.resolve()}: webhook_secrets: found ['not-a-secret']" in line, line
        # Nothing changed: west is unknown, north and south are served and delivered.
        assert refused(run.send("west", "apt-1"))
        then = {tenant: run.send(tenant, "apt-2") for tenant in ("north", "south")}
        for tenant in ("north", "south"):
            sent = [first[tenant], then[tenant]]
            assert answers(sent) == accepted(sent)
            run.delivered(tenant, sent)
        # Once the file is gone, a reload works again.
        bad.unlink()
        run.hangup()
        run.wait_logged(reloads(1, "north, south"), "a reload without west.toml")


def test_a_tenant_removed_by_a_reload_is_refused_while_the_other_goes_on(
    redis_url: str, tmp_path: Path
) -> None:
    with running(redis_url, tmp_path, configured=("north", "south")) as run:
        with Stream(run.url, "north") as north:
            south = [run.send("south", f"flat-{n}", f"branch-{n % 3}") for n in range(6)]
            assert answers(south) == accepted(south)
            run.delivered("south", south)
            wait_until(lambda: north.count() >= 25, timeout=10, what="north's stream under way")
            (run.tenants_dir / "south.toml").unlink()
            run.hangup()
            run.wait_logged(reloads(1, "north"), "the reload removing south")
            reloaded_at = north.count()
            late = run.send("south", "late")
            wait_until(lambda: north.count() >= reloaded_at + 40, timeout=15,
                       what="north's stream after the reload")
        assert refused(late)
        assert answers(north.sent) == accepted(north.sent)
        run.delivered("north", north.sent)
        # South's portals hold what it sent while it was configured, and nothing since; its
        # data stays in Redis (for `bridge tenant purge`).
        assert on_portals(run.portals["south"], south)
        assert tenant_keys(run.redis, "south")
        nothing_of_another(run.portals["north"], "south")
        assert "Traceback" not in run.logs()
