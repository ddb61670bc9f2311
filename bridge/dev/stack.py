"""``bridge dev``: embedded Redis, web, worker and sandbox on one machine, with no set-up.

Each part runs as its own child process (as in production), dies with this one, and is stopped
in order on SIGINT/SIGTERM. The embedded Redis keeps its data (AOF) under the user's state
directory, so a restart of ``bridge dev`` finds what it had.
"""

from __future__ import annotations

import base64
import logging
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx

from bridge.dev.embedded import EmbeddedRedis, default_state_dir, die_with_parent, state_dir
from bridge.dev.lock import AlreadyRunning, DevLock, holder_of
from bridge.settings import RedisSettings, Settings, load_settings

log = logging.getLogger("bridge.dev")


def dev_secret_file(directory: Path | None = None) -> Path:
    return (directory or state_dir()) / "dev-webhook-secret"


def dev_config_file(directory: Path | None = None) -> Path:
    """The configuration ``bridge dev`` runs its processes with; other commands use the one in
    the default state directory when none is given (``bridge.cli.options.config_file``)."""
    return (directory or default_state_dir()) / "dev.toml"


def dev_secret(directory: Path) -> str:
    """A webhook secret made once and kept, so the CRM side need not change across restarts."""
    path = dev_secret_file(directory)
    if not path.exists():
        path.write_text("whsec_" + base64.b64encode(secrets.token_bytes(24)).decode())
        path.chmod(0o600)
    return path.read_text().strip()


def dev_config(settings: Settings | None, redis_url: str, secret: str, sandbox: str) -> str:
    """The TOML the children run with: the user's settings, or embedded defaults."""
    if settings is not None and settings.targets:
        lines = [f'redis_url = "{redis_url}"']
        return _with_user_sections(settings, lines)
    # The embedded server runs with AOF always, which the default durability check accepts; a
    # user's own Redis keeps the user's [redis] section.
    redis = settings.redis if settings is not None else RedisSettings()
    return "\n".join([
        f'redis_url = "{redis_url}"',
        "[redis]", f'durability = "{redis.durability}"', f"min_replicas = {redis.min_replicas}",
        "[webhook]", f'secrets = ["{secret}"]',
        "[debounce]", "window_ms = 1000", "max_wait_ms = 10000",
        "[[targets]]", 'name = "rentix"', 'kind = "rentix"',
        f'base_url = "{sandbox}/rentix/api/v1"', 'api_key = "sandbox"',
        "[[targets]]", 'name = "travtus"', 'kind = "travtus"',
        f'base_url = "{sandbox}/travtus"', f'token_url = "{sandbox}/travtus/oauth2/token"',
        'client_id = "sandbox"', 'client_secret = "sandbox"',
        "",
    ])


def _with_user_sections(settings: Settings, lines: list[str]) -> str:
    import json

    # TOML accepts JSON-style inline values for every type the settings use.
    data = settings.model_dump(exclude={"redis_url"}, exclude_none=True)
    for key, value in data.items():
        if key == "targets":
            for target in value:
                lines.append("[[targets]]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in target.items()]
        else:
            lines.append(f"[{key}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"


def _spawn(*args: str, log_format: str = "text") -> subprocess.Popen[bytes]:
    verbose = ["-v"] if logging.getLogger().isEnabledFor(logging.DEBUG) else []
    return subprocess.Popen([sys.executable, "-m", "bridge.cli", *verbose, *args,
                             "--log-format", log_format], preexec_fn=die_with_parent)


def _port_taken(host: str, port: int) -> bool:
    """Would a server fail to listen there? (SO_REUSEADDR as uvicorn binds: a port left in
    TIME_WAIT is free, one something listens on is not.)"""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _refuse_if_busy(directory: Path, host: str, port: int, sandbox_port: int) -> None:
    """Before anything is started or written: another ``bridge dev`` on this state directory,
    or anything on our ports (its health check would answer for ours)."""
    holder = holder_of(directory)
    if holder is not None:
        raise click.ClickException(str(AlreadyRunning(directory, holder)))
    for where, number in ((host, port), ("127.0.0.1", sandbox_port)):
        if _port_taken(where, number):
            raise click.ClickException(
                f"port {number} on {where} is in use (another `bridge dev`?); stop it, or "
                "give --port and --sandbox-port that are free")


def _wait_http(url: str, children: list[subprocess.Popen[bytes]],
               timeout: float = 60.0) -> None:
    """Wait for a child to answer; a loaded machine can take tens of seconds to start three
    Python processes (a full test run on two cores once took more than 20). A child that
    exits meanwhile ends the wait: its own message says why."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(child.poll() is not None for child in children):
            raise click.ClickException(f"a bridge process exited before {url} came up")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise click.ClickException(f"{url} did not come up within {timeout:.0f}s")


def run_dev(config_path: str | None, host: str, port: int, sandbox_port: int,
            directory: Path | None, log_format: str = "text") -> int:
    directory = directory or default_state_dir()
    _refuse_if_busy(directory, host, port, sandbox_port)
    directory.mkdir(parents=True, exist_ok=True)
    lock = DevLock(directory)
    try:
        lock.acquire()
    except AlreadyRunning as exc:  # started since the check above
        raise click.ClickException(str(exc)) from None
    try:
        return _run_locked(lock, config_path, host, port, sandbox_port, directory, log_format)
    finally:
        lock.release()


def _run_locked(lock: DevLock, config_path: str | None, host: str, port: int,
                sandbox_port: int, directory: Path, log_format: str) -> int:
    settings = load_settings(config_path) if config_path else None
    redis: EmbeddedRedis | None = None
    if settings is not None and settings.redis_url:
        redis_url = settings.redis_url
    else:
        redis = EmbeddedRedis(directory / "redis")
        redis.start()
        redis_url = redis.url
    secret = settings.webhook.secrets[0] if settings else dev_secret(directory)
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    base = f"http://{host}:{port}"
    lock.record(webhook=f"{base}/webhooks/crm", dashboard=f"{base}/dashboard",
                sandbox=sandbox_url, redis=redis_url)
    config_file = dev_config_file(directory)
    config_file.write_text(dev_config(settings, redis_url, secret, sandbox_url))
    config_file.chmod(0o600)

    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        children.append(_spawn("sandbox", "--port", str(sandbox_port), log_format=log_format))
        children.append(_spawn("serve", "--config", str(config_file), "--host", host,
                               "--port", str(port), log_format=log_format))
        children.append(_spawn("worker", "--config", str(config_file), log_format=log_format))
        _wait_http(f"{base}/healthz", children)
        _wait_http(f"{sandbox_url}/_sandbox/journal", children)
        _print_banner(base, secret, sandbox_url, redis_url, config_file)
        while not stopping:
            if any(child.poll() is not None for child in children):
                log.error("a bridge process exited; stopping the others")
                return 1
            time.sleep(0.2)
        return 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(children):
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        if redis:
            redis.stop()


def _print_banner(base: str, secret: str, sandbox: str, redis_url: str, config: Path) -> None:
    click.echo("")
    click.echo("listing-bridge is running (Ctrl-C stops everything)")
    click.echo(f"  webhook URL    {base}/webhooks/crm")
    click.echo(f"  webhook secret {secret}")
    click.echo(f"  dashboard      {base}/dashboard")
    click.echo(f"  sandbox        {sandbox}/rentix/api/v1  {sandbox}/travtus  "
               f"{sandbox}/_sandbox/journal")
    click.echo(f"  redis          {redis_url}")
    click.echo(f"  configuration  {config}")
    click.echo("  try it         .venv/bin/bridge send --generate 200"  # send defaults to this URL
               + ("" if base == "http://127.0.0.1:8000" else f" --url {base}/webhooks/crm"))
    click.echo("")
    sys.stdout.flush()
