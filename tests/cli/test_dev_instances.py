"""One `bridge dev` per state directory (issue 28, items 1 and 3): a second one refuses at once,
names the running one and changes nothing; one on another state directory but the same port
fails before its banner; a killed one never blocks the next. And the running stack's log, and
`bridge reconcile`'s, carry no per-request lines unless asked (-v, after the command too)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bridge.dev.lock import DevLock, holder_of
from tests.cli.test_commands import BRIDGE, start_dev, stop
from tests.support import crm
from tests.support.servers import free_port, wait_until


def dev_on(state: Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BRIDGE, "dev", "--port", str(port), "--sandbox-port", str(free_port()),
         "--state-dir", str(state)], capture_output=True, text=True, timeout=30)


@pytest.mark.processes
def test_a_second_bridge_dev_refuses_and_the_first_keeps_working(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first, out, port = start_dev(state)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: "dashboard" in out.text, timeout=90,
                   what=lambda: f"the banner:\n{out.text}")
        secret = re.search(r"webhook secret (whsec_\S+)", out.text).group(1)  # type: ignore[union-attr]
        sandbox = re.search(r"sandbox\s+(http://\S+)/rentix", out.text).group(1)  # type: ignore[union-attr]
        written = (state / "dev.toml").read_bytes()

        # The same state directory, other ports: refused at once (the timeout bounds "at
        # once": a second stack would run until stopped), naming the running one.
        second = dev_on(state, free_port())
        assert second.returncode != 0
        assert f"pid {first.pid}" in second.stderr, second.stderr
        assert f"webhook {base}/webhooks/crm" in second.stderr
        assert f"dashboard {base}/dashboard" in second.stderr
        assert "is running" not in second.stdout
        # Another state directory, the same port: no banner (its health check would reach
        # ours), nothing written.
        other = tmp_path / "other"
        third = dev_on(other, port)
        assert third.returncode != 0 and f"port {port} on 127.0.0.1 is in use" in third.stderr
        assert "dashboard" not in third.stdout and not other.exists()
        assert (state / "dev.toml").read_bytes() == written

        # The first still delivers, and its log has no per-request lines.
        with httpx.Client(base_url=base) as client:
            assert crm.post(client, secret, crm.upsert("north", "apt-1", 1)).status_code == 202
        wait_until(lambda: httpx.get(f"{sandbox}/_sandbox/rentix/listings").json()["items"],
                   timeout=60, what=lambda: f"delivery to the sandbox:\n{out.text}")
        wait_until(lambda: httpx.get(f"{sandbox}/_sandbox/travtus/listings",
                                     params={"group": "north"}).json()["listings"],
                   timeout=60, what=lambda: f"the sync to Travtus:\n{out.text}")
        config = str(state / "dev.toml")
        quiet = subprocess.run([*BRIDGE, "reconcile", "--config", config],
                               capture_output=True, text=True, timeout=60)
        verbose = subprocess.run([*BRIDGE, "reconcile", "--config", config, "-v"],
                                 capture_output=True, text=True, timeout=60)
    finally:
        assert stop(first) == 0
    assert "HTTP Request" not in out.finished(), out.text
    assert quiet.returncode == 0, quiet.stderr
    assert "httpx" not in quiet.stderr + quiet.stdout, quiet.stderr
    assert verbose.returncode == 0 and "httpx: HTTP Request: GET" in verbose.stderr


def test_a_killed_holder_never_blocks_the_next(tmp_path: Path) -> None:
    # A process that holds the lock, as `bridge dev` does, then dies without a word.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from bridge.dev.lock import DevLock; "
        "DevLock(Path(sys.argv[1])).acquire(); time.sleep(60)"), str(tmp_path)])
    try:
        wait_until(lambda: holder_of(tmp_path), timeout=20, what="the child's lock")
        assert holder_of(tmp_path) == {"pid": holder.pid}
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    assert holder_of(tmp_path) is None
    lock = DevLock(tmp_path)
    lock.acquire()
    lock.release()
