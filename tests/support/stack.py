"""The whole bridge for end-to-end tests: sandbox and web on real uvicorn, workers as real
``bridge worker`` processes (so a test can SIGKILL one), all against the session's Redis."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bridge.app import create_app
from bridge.sandbox.app import SandboxSettings
from bridge.sandbox.app import create_app as create_sandbox
from bridge.settings import Settings, load_settings
from tests.conftest import SECRET
from tests.support import crm
from tests.support.servers import serve_app, wait_until


def stack_config(redis_url: str, sandbox: str, rentix_per_minute: int | None = None, *,
                 bulk_per_minute: int | None = None, **sections: dict[str, Any]) -> str:
    """The TOML of a bridge on ``sandbox``; ``bulk_per_minute`` (None: the setting's default)
    applies to the default Rentix target, ``targets`` replaces both default targets."""
    base: dict[str, dict[str, Any]] = {
        "webhook": {"secrets": [SECRET]},
        "debounce": {"window_ms": 150, "max_wait_ms": 1000},
        "delivery": {"job_timeout_s": 5, "retry_base_s": 0.2, "retry_max_s": 1.0,
                     "poll_interval_ms": 20},
    }
    targets = sections.pop("targets", None)
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    lines = [f'redis_url = "{redis_url}"']
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    if targets is None:
        targets = [
            {"name": "rentix", "kind": "rentix", "base_url": f"{sandbox}/rentix/api/v1",
             "api_key": "sandbox", "requests_per_minute": rentix_per_minute or 280,
             **({} if bulk_per_minute is None else {"bulk_per_minute": bulk_per_minute})},
            {"name": "travtus", "kind": "travtus", "base_url": f"{sandbox}/travtus",
             "token_url": f"{sandbox}/travtus/oauth2/token", "client_id": "sandbox",
             "client_secret": "sandbox"},
        ]
    for target in targets:
        lines.append("[[targets]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in target.items()]
    return "\n".join(lines) + "\n"


class Stack:
    def __init__(self, settings: Settings, config: Path, bridge: httpx.Client,
                 sandbox: httpx.Client) -> None:
        self.settings = settings
        self.config = config
        self.bridge = bridge
        self.sandbox = sandbox
        self.workers: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}

    def start_worker(self) -> subprocess.Popen[bytes]:
        """A `bridge worker` process; its log goes to worker-N.log beside the configuration
        (a file: a pipe nobody reads would block it once full)."""
        log = self.config.with_name(f"worker-{len(self.workers) + 1}.log")
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "bridge.cli", "worker", "--config", str(self.config)],
                stdout=subprocess.DEVNULL, stderr=stderr,
            )
        self.workers.append(process)
        self._logs[process.pid] = log
        return process

    def log_of(self, process: subprocess.Popen[bytes]) -> str:
        """What a worker has logged so far."""
        return self._logs[process.pid].read_text(errors="replace")

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop_workers(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.workers:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()

    def post(self, payload: Any, msg_id: str | None = None) -> httpx.Response:
        response = crm.post(self.bridge, SECRET, payload, msg_id)
        assert response.status_code in (200, 202), response.text
        return response

    # -- the sandbox as witness --

    def journal(self, portal: str | None = None) -> list[dict[str, Any]]:
        params = {"portal": portal} if portal else {}
        return self.sandbox.get("/_sandbox/journal", params=params).json()["requests"]

    def writes(self, portal: str, path: str, cut_off: bool = False) -> list[dict[str, Any]]:
        """The writes to `path` whose body arrived whole, or (`cut_off`) those whose client went
        away before it did: a worker killed mid-send (nothing applied, no body to read)."""
        return [r for r in self.journal(portal)
                if r["method"] in ("PUT", "POST", "DELETE") and r["path"].endswith(path)
                and r["cut_off"] is cut_off]

    def keys_per_listing(self, portal: str, path: str, field: str,
                         method: str = "PUT") -> dict[str, set[str]]:
        """The Idempotency-Keys each listing's writes carried (by the body's `field`). A write
        cut off mid-send has no body to name its listing: its key must be one that a whole
        write carried, since the intent it belonged to is retried with the same key."""
        keys: dict[str, set[str]] = {}
        for write in self.writes(portal, path):
            if write["method"] != method:
                continue
            keys.setdefault(write["body"][field], set()).add(write["idempotency_key"])
        whole = set().union(*keys.values())
        lost = {w["idempotency_key"] for w in self.writes(portal, path, cut_off=True)} - whole
        assert not lost, f"writes cut off mid-send whose key no whole write carried: {lost}"
        return keys

    def rentix_listings(self) -> dict[str, dict[str, Any]]:
        items = self.sandbox.get("/_sandbox/rentix/listings").json()["items"]
        return {item["externalId"]: item for item in items if item.get("externalId")}

    def travtus_listings(self, group: str) -> dict[str, dict[str, Any]]:
        listings = self.sandbox.get("/_sandbox/travtus/listings",
                                    params={"group": group}).json()["listings"]
        return {item["external_reference"]: item for item in listings}

    def wait(self, predicate: Any, timeout: float = 15.0, what: str = "") -> Any:
        return wait_until(predicate, timeout=timeout, what=what)


@contextlib.contextmanager
def running_stack(redis_url: str, tmp_path: Path, workers: int = 1,
                  sandbox_settings: SandboxSettings | None = None,
                  **sections: Any) -> Iterator[Stack]:
    sandbox_app = create_sandbox(sandbox_settings or SandboxSettings())
    with serve_app(sandbox_app) as sandbox_url:
        config = tmp_path / "bridge.toml"
        config.write_text(stack_config(redis_url, sandbox_url, **sections))
        settings = load_settings(config)
        with serve_app(create_app(settings)) as bridge_url, \
                httpx.Client(base_url=bridge_url, timeout=10) as bridge, \
                httpx.Client(base_url=sandbox_url, timeout=10) as sandbox:
            stack = Stack(settings, config, bridge, sandbox)
            for _ in range(workers):
                stack.start_worker()
            try:
                yield stack
            finally:
                stack.stop_workers()
