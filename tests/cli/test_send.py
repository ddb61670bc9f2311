"""`bridge send` as a newcomer meets it (issue 28, item 2): refusals in the bridge's own words,
a secret that cannot sign refused before anything is sent, ``-v`` after the command, and a
second generated run that is newer than the first."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from bridge.app import create_app
from tests.conftest import SECRET, make_settings
from tests.support import crm
from tests.support.ingest import fold
from tests.support.servers import serve_app

pytestmark = pytest.mark.processes

BRIDGE = [sys.executable, "-m", "bridge.cli"]


def send(url: str, *args: str, secret: str = SECRET) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BRIDGE, "send", "--url", f"{url}/webhooks/crm", "--secret", secret,
                           *args], capture_output=True, text=True, timeout=60)


def test_refusals_are_summarised_in_the_bridges_words(redis_url: str, tmp_path: Path) -> None:
    negative = crm.upsert("g", "a-1", 1)
    negative["listing"]["price"]["amount"] = -5
    events = [negative, crm.upsert("g", "a-2", 1), crm.upsert("g", "a-3", 1)]
    negative_too = crm.upsert("g", "a-4", 1)
    negative_too["listing"]["price"]["amount"] = -1
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in [*events, negative_too]) + b"\n")
    with serve_app(create_app(make_settings(redis_url))) as url:
        result = send(url, "--file", str(path))
    assert result.returncode == 1
    assert "202: 2" in result.stdout and "400: 2" in result.stdout, result.stdout
    assert ("  2 x 400 invalid_event: listing.price.amount: Input should be greater than or "
            "equal to 0") in result.stdout.splitlines(), result.stdout


@pytest.mark.parametrize("secret", ["nope", "whsec_not base64!", "whsec_"])
def test_a_secret_that_cannot_sign_is_refused_before_any_request(secret: str) -> None:
    with socket.socket() as listening:  # where the request would go: nobody may connect
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        url = f"http://127.0.0.1:{listening.getsockname()[1]}"
        result = subprocess.run(
            [*BRIDGE, "send", "--url", f"{url}/webhooks/crm", "--secret", secret,
             "--generate", "1"], capture_output=True, text=True, timeout=15)
        listening.setblocking(False)
        with pytest.raises(BlockingIOError):
            listening.accept()
    assert result.returncode == 2, result.stderr
    assert "Invalid value for --secret" in result.stderr and "whsec_" in result.stderr


def test_verbose_after_the_command_logs_every_request(redis_url: str) -> None:
    with serve_app(create_app(make_settings(redis_url))) as url:
        result = send(url, "--generate", "5", "-v")
    assert result.returncode == 0, result.stderr
    assert "202: 5" in result.stdout
    assert result.stderr.count("HTTP Request: POST") == 5, result.stderr


def test_a_second_generated_run_is_newer_than_the_first(redis_url: str,
                                                        r: redis.Redis) -> None:
    settings = make_settings(redis_url)
    args = ("--generate", "10", "--groups", "1", "--listings-per-group", "5",
            "--concurrency", "1")  # in order: each event newer than the one before
    with serve_app(create_app(settings)) as url:
        first = send(url, *args)
        assert first.returncode == 0, first.stderr
        assert fold(r, settings) == 10
        second = send(url, *args)
        assert second.returncode == 0, second.stderr
        # Every event of the second run is newer than the first's: none stale.
        assert fold(r, settings) == 10
    assert "--seed" in second.stdout and "versions from" in second.stdout
