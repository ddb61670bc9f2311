"""`bridge held release|discard GROUP` and `bridge status` with a change the guards hold on
both targets (issue 26): the status text names the digest once per group; release needs no
--target, and the contract's form with --target still works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.ledger import Held, Ledger
from tests.dashboard.conftest import run
from tests.support.stack import stack_config

BRIDGE = [sys.executable, "-m", "bridge.cli"]
pytestmark = pytest.mark.processes  # each test runs the bridge command


def bridge(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BRIDGE, *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=30)


def held_on_both(redis_url: str, tmp_path: Path) -> Path:
    async def seed(ledger: Ledger) -> None:
        entry = Held("d-west", "it would delete 2 listings", ["apt-8", "apt-9"], 0, now_ms())
        for target in ("rentix", "travtus"):
            await ledger.hold(target, "west", entry)

    run(redis_url, seed)
    config = tmp_path / "bridge.toml"
    config.write_text(stack_config(redis_url, "http://127.0.0.1:9"))
    return config


def test_status_names_the_digest_and_release_needs_no_target(redis_url: str,
                                                              tmp_path: Path) -> None:
    config = held_on_both(redis_url, tmp_path)
    status = bridge(config, "status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert "HELD west on rentix, travtus: it would delete 2 listings" in lines
    assert any("--digest d-west west" in line for line in lines)
    released = bridge(config, "held", "release", "--digest", "d-west", "west")
    assert released.returncode == 0, released.stderr
    assert "released west on rentix, travtus" in released.stdout
    r = redis.Redis.from_url(redis_url)
    assert r.exists(ks().RELEASE + "rentix:west") and r.exists(ks().RELEASE + "travtus:west")
    r.close()


def test_the_contracts_form_with_target_discards_on_that_target_alone(
    redis_url: str, tmp_path: Path
) -> None:
    config = held_on_both(redis_url, tmp_path)
    result = bridge(config, "held", "discard", "--target", "travtus", "--digest", "d-west",
                    "west")
    assert result.returncode == 0, result.stderr
    assert "discarded the held change of west on travtus" in result.stdout
    r = redis.Redis.from_url(redis_url)
    assert r.hexists(ks().HELD + "rentix", "west") and not r.hexists(ks().HELD + "travtus", "west")
    r.close()
