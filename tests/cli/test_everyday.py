"""Everyday commands as processes: `bridge send` keeps to its progress bar and summary, commands
find the configuration `bridge dev` wrote, `bridge status` tells a running flush from a waiting
one, and `--log-format json` writes one JSON object per line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from redis.asyncio import Redis

from bridge.app import create_app
from bridge.clock import now_ms
from bridge.delivery import budget
from bridge.delivery.claims import Flushes
from bridge.delivery.outbox import put_commands
from bridge.settings import DebounceSettings
from tests.conftest import SECRET, make_settings
from tests.ops.test_outbox_view import entry
from tests.support import crm
from tests.support.ingest import fold
from tests.support.output import Output
from tests.support.servers import free_port, serve_app, wait_until

# The tier of every test here (tests/support/tiers.py).
pytestmark = pytest.mark.processes

BRIDGE = [sys.executable, "-m", "bridge.cli"]
JSON_KEYS = {"time", "level", "logger", "message"}
UNREACHABLE_RENTIX = ('[[targets]]\nname = "rentix"\nkind = "rentix"\n'
                      'base_url = "http://127.0.0.1:9/rentix/api/v1"\napi_key = "k"\n')


def environment(state_home: Path) -> dict[str, str]:
    """A user whose state directory (where `bridge dev` writes) is ``state_home``, and who
    names no configuration."""
    env = {**os.environ, "XDG_STATE_HOME": str(state_home)}
    env.pop("BRIDGE_CONFIG", None)
    env.pop("BRIDGE_LOG_FORMAT", None)
    return env


def write_config(tmp_path: Path, redis_url: str, extra: str = "") -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(f'redis_url = "{redis_url}"\n[webhook]\nsecrets = ["{SECRET}"]\n{extra}')
    return path


def only_json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON log object; fails on the first line that is not one."""
    entries = []
    for line in text.splitlines():
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}\nin:\n{text}")
        assert isinstance(entry, dict) and set(entry) >= JSON_KEYS, line
        entries.append(entry)
    return entries


# bridge send ---------------------------------------------------------------------------------

def test_bridge_send_logs_no_request_lines_unless_verbose(redis_url: str) -> None:
    with serve_app(create_app(make_settings(redis_url))) as url:
        def send(*flags: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*BRIDGE, *flags, "send", "--url", f"{url}/webhooks/crm", "--secret", SECRET,
                 "--generate", "20", "--groups", "2", "--listings-per-group", "5"],
                capture_output=True, text=True, timeout=60)

        quiet = send()
        verbose = send("-v")
    assert quiet.returncode == 0, quiet.stderr
    assert "sent 20 events" in quiet.stdout and "202: 20" in quiet.stdout
    assert "HTTP Request" not in quiet.stderr + quiet.stdout
    assert "sending" in quiet.stderr  # the progress bar
    assert len(quiet.stderr.splitlines()) < 5, quiet.stderr
    assert verbose.returncode == 0, verbose.stderr
    assert verbose.stderr.count("HTTP Request: POST") == 20


# the configuration bridge dev wrote ----------------------------------------------------------

def test_commands_without_a_configuration_say_how_to_give_one(tmp_path: Path) -> None:
    result = subprocess.run([*BRIDGE, "status"], capture_output=True, text=True, timeout=30,
                            env=environment(tmp_path / "state"))
    assert result.returncode != 0
    assert "no configuration: pass --config FILE or set BRIDGE_CONFIG" in result.stderr
    assert "bridge dev" in result.stderr and "Traceback" not in result.stderr


def test_after_bridge_dev_commands_use_its_configuration_and_name_it(tmp_path: Path) -> None:
    env = environment(tmp_path / "state")
    written = tmp_path / "state" / "listing-bridge" / "dev.toml"
    port = free_port()
    dev = subprocess.Popen(
        [*BRIDGE, "dev", "--port", str(port), "--sandbox-port", str(free_port()),
         "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    out, err = Output(dev.stdout), Output(dev.stderr)
    try:
        wait_until(lambda: "dashboard" in out.text, timeout=40,
                   what=lambda: f"the banner:\n{out.text}\n{err.text}")
        assert f"configuration  {written}" in out.text
        status = subprocess.run([*BRIDGE, "status"], capture_output=True, text=True,
                                timeout=30, env=env)
        assert status.returncode == 0, status.stderr
        assert f"using {written}, the configuration `bridge dev` wrote" in status.stderr
        assert "groups known:" in status.stdout and "target rentix (rentix)" in status.stdout
        # A configuration named outright wins, and nothing is said about it.
        named = subprocess.run([*BRIDGE, "status", "--config", str(written)],
                               capture_output=True, text=True, timeout=30, env=env)
        assert named.returncode == 0 and "using" not in named.stderr
    finally:
        dev.send_signal(signal.SIGTERM)
        assert dev.wait(timeout=30) == 0
    # Its processes logged in JSON, as asked: the worker's start at least.
    entries = only_json_lines(err.finished())
    assert any(entry["logger"].startswith("arq") for entry in entries), err.text


# bridge status -------------------------------------------------------------------------------

def test_bridge_status_tells_a_running_flush_from_a_waiting_one(redis_url: str, tmp_path: Path,
                                                                r: redis.Redis) -> None:
    settings = make_settings(redis_url, debounce={"window_ms": 600_000, "max_wait_ms": 600_000})
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        for group in ("calm", "busy"):
            assert crm.post(client, SECRET, crm.upsert(group, f"{group}-1", 1)) \
                    .status_code == 202
    config = write_config(tmp_path, redis_url, UNREACHABLE_RENTIX)
    unfolded = subprocess.run([*BRIDGE, "status", "--config", str(config)],
                              capture_output=True, text=True, timeout=30)
    assert "received, not yet folded by a worker: 2 event(s), the oldest for " in \
        unfolded.stdout, unfolded.stdout
    fold(r, settings)

    async def claim() -> None:  # a worker's flush of "busy" starts, under a 60 s lease
        client = Redis.from_url(redis_url)
        try:
            flushes = Flushes(client, 60_000, DebounceSettings(window_ms=0, max_wait_ms=0))
            assert await flushes.claim("busy", now_ms()) is not None
        finally:
            await client.aclose()

    asyncio.run(claim())
    # Rentix's outbox: three writes waiting, and the general budget as the portal reported it.
    now = now_ms()
    reported = budget.command("rentix", {"general": budget.Budget(300, 299, now + 45_000, now)})
    assert reported is not None
    with r.pipeline(transaction=True) as pipe:
        for command in put_commands("rentix", [entry(f"o-{i}", now) for i in range(3)], now):
            pipe.execute_command(*command)
        pipe.execute_command(*reported)
        pipe.execute()
    result = subprocess.run([*BRIDGE, "status", "--config", str(config)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "groups waiting: 1   due now: 0   flushing: 1" in lines, result.stdout
    [busy] = [line for line in lines if line.startswith("  busy:")]
    [calm] = [line for line in lines if line.startswith("  calm:")]
    assert busy.startswith("  busy: flushing, lease until ") and "UTC" in busy, busy
    assert calm.startswith("  calm: flush in 5") or calm.startswith("  calm: flush in 6"), calm
    # One bulk at 28 a minute: about 2 s.
    assert "  outbox: 3 waiting; expected to drain in 2s at 28 bulk/min" in lines, result.stdout
    [budgets] = [line for line in lines if line.startswith("  portal budgets: ")]
    assert budgets.startswith("  portal budgets: general 299/300, resets in 4"), budgets  # 44-45s
    assert budgets.endswith("; bulk not reported yet"), budgets
    as_json = subprocess.run([*BRIDGE, "status", "--config", str(config), "--json"],
                             capture_output=True, text=True, timeout=30)
    due = {d["group"]: d for d in orjson.loads(as_json.stdout)["due"]}
    assert due["busy"]["flushing_until"] == int(r.zscore("lb:{t:default}:flushing", "busy") or 0)
    assert due["calm"]["flushing_until"] is None


# --log-format json ---------------------------------------------------------------------------

def test_a_worker_with_json_logs_writes_only_json_lines(redis_url: str, tmp_path: Path,
                                                        r: redis.Redis) -> None:
    config = write_config(tmp_path, redis_url, UNREACHABLE_RENTIX)
    worker = subprocess.Popen([*BRIDGE, "worker", "--config", str(config), "--log-format",
                               "json"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    err = Output(worker.stderr)
    try:
        settings = make_settings(redis_url, debounce={"window_ms": 0, "max_wait_ms": 0})
        with serve_app(create_app(settings)) as url, httpx.Client(base_url=url) as client:
            crm.post(client, SECRET, crm.upsert("north", "apt-1", 1))
        # The portal does not answer: the flush backs off, and says so about its group.
        wait_until(lambda: '"group":"north"' in err.text, timeout=20,
                   what=lambda: f"a log line about the group:\n{err.text}")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
    entries = only_json_lines(err.finished())
    [failed] = [e for e in entries if e.get("group") == "north"][:1]
    assert failed["target"] == "rentix" and failed["logger"] == "bridge.delivery.flush"
    assert failed["level"] == "INFO" and "next try in" in failed["message"]
    assert failed["time"].endswith("Z")


def test_serve_with_json_logs_names_the_group_and_listing_of_a_refused_webhook(
    tmp_path: Path
) -> None:
    # No Redis at all: the server waits for it, and answers webhooks 503 meanwhile.
    config = write_config(tmp_path, f"redis://127.0.0.1:{free_port()}/0")
    port = free_port()
    serve = subprocess.Popen([*BRIDGE, "serve", "--config", str(config), "--port", str(port),
                              "--log-format", "json"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = Output(serve.stderr)
    try:
        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success
            except httpx.HTTPError:
                return False

        wait_until(answers, timeout=20, what=lambda: f"the web process:\n{err.text}")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            refused = crm.post(client, SECRET, crm.upsert("south", "apt-9", 1))
        assert refused.status_code == 503
        wait_until(lambda: '"listing":"apt-9"' in err.text, timeout=10,
                   what=lambda: f"the refusal's log line:\n{err.text}")
    finally:
        serve.send_signal(signal.SIGTERM)
        # uvicorn stops gracefully, then re-raises the signal it caught (exit status -15).
        assert serve.wait(timeout=20) in (0, -signal.SIGTERM)
    entries = only_json_lines(err.finished())
    [refusal] = [e for e in entries if e.get("listing") == "apt-9"]
    assert refusal["group"] == "south" and refusal["level"] == "WARNING"
    assert refusal["logger"] == "bridge.ingest.webhook"
