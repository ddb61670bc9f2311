"""The inbox under failure: real ``bridge worker`` processes fold a backlog the webhook stored
while they are killed at any moment, frozen, and while Redis itself is killed and restarted;
every event is folded exactly once (the counters say so), and the state is what the events say."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from bridge.clock import now_ms
from bridge.constants import ks
from bridge.ingest import store
from bridge.ingest.events import ValidEvent
from bridge.packing import unpack
from bridge.settings import Settings, load_settings
from tests.conftest import SECRET
from tests.support.servers import RedisServer, redis_server, wait_until

# The tier of every test here (tests/support/tiers.py).
pytestmark = pytest.mark.processes

LISTINGS = 400
VERSIONS = 25  # per listing: 10,000 events, a few seconds of folding for one worker
# The present, as Redis's clock reads it too: its expiries are judged against it.
T0 = now_ms()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of this test's own, to kill and restart (AOF, appendfsync always)."""
    with redis_server() as server:
        yield server


def config_for(tmp_path: Path, url: str) -> Path:
    """A bridge with no targets: what is measured is the fold, not delivery."""
    path = tmp_path / "bridge.toml"
    path.write_text(f'redis_url = "{url}"\n[webhook]\nsecrets = ["{SECRET}"]\n'
                    "[delivery]\npoll_interval_ms = 20\n")
    return path


def backlog(r: redis.Redis, settings: Settings) -> tuple[int, int]:
    """Every listing's versions in shuffled order, and some redeliveries, stored by the
    webhook's script while no worker runs: (events stored, redeliveries)."""
    rng = random.Random(5)
    stream = [(f"wh-{ref}-{v}", ref, v) for ref in range(LISTINGS) for v in range(VERSIONS)]
    rng.shuffle(stream)
    stream += rng.sample(stream, 200)
    script = r.register_script(store.ACCEPT.source)
    pipe = r.pipeline(transaction=False)
    for n, (webhook_id, ref, version) in enumerate(stream):
        event = ValidEvent("listing.updated", f"g{ref % 20}", T0 + n, [
            (f"apt-{ref}", version, orjson.dumps({"external_ref": f"apt-{ref}", "v": version}))])
        entry = store.entry(webhook_id, T0 + n, event)
        script(keys=store.accept_keys(webhook_id, T0 + n), client=pipe, args=store.accept_args(
            T0 + n, entry, settings.webhook.dedupe_ttl_seconds))
    answers = pipe.execute()
    return sum(a[0] for a in answers), sum(1 - a[0] for a in answers)


def worker(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bridge.cli", "worker", "--config",
                             str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def left(r: redis.Redis) -> int:
    try:
        return int(r.llen(ks().INBOX))
    except redis.ConnectionError:  # restarting
        return -1


def shrinks_by(r: redis.Redis, amount: int) -> bool:
    start = left(r)
    wait_until(lambda: 0 <= left(r) <= start - amount or left(r) == 0, timeout=30,
               what="the inbox to shrink")
    return True


def test_every_stored_event_is_folded_exactly_once_through_kills_freezes_and_restarts(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    config = config_for(tmp_path, own_redis.url)
    settings = load_settings(config)
    r = redis.Redis.from_url(own_redis.url, decode_responses=True)
    stored, redelivered = backlog(r, settings)
    assert stored == LISTINGS * VERSIONS and r.llen(ks().INBOX) == stored + redelivered
    workers: list[subprocess.Popen[bytes]] = []
    try:
        # Killed mid-drain, three times over: a fold is one script, so it ran whole or not.
        for _ in range(3):
            workers.append(first := worker(config))
            shrinks_by(r, 300)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        # Two at once, one of them frozen a while, then Redis killed under them.
        workers += [worker(config), frozen := worker(config)]
        shrinks_by(r, 300)
        frozen.send_signal(signal.SIGSTOP)
        shrinks_by(r, 300)
        own_redis.stop(kill=True)
        frozen.send_signal(signal.SIGCONT)
        own_redis.start()
        wait_until(lambda: left(r) == 0, timeout=120, what="the backlog folded")
    finally:
        for process in workers:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait(timeout=10)

    # The restarted Redis kept what each fold did (AOF) and every event not yet folded.
    # Only the event counters: the hash also holds the flushes' histogram sums (floats).
    metrics = {field: int(v) for field, v in r.hgetall(ks().METRICS).items()
               if field.startswith("webhook_events_total|")}
    assert metrics.get("webhook_events_total|accepted", 0) + metrics.get(
        "webhook_events_total|stale", 0) == stored, metrics
    received = sum(int(r.hget(key, "received") or 0) for key in r.keys(ks().STATS + "*"))
    assert received == stored
    for ref in range(LISTINGS):
        assert r.hget(f"{ks().LISTING}apt-{ref}", "v") == str(VERSIONS - 1)
        body = r.get(f"{ks().BODY}apt-{ref}")  # packed once a flush has claimed it
        assert orjson.loads(unpack(body)) == {"external_ref": f"apt-{ref}", "v": VERSIONS - 1}
    # Each listing's story tells each of its events once, and each redelivery once more.
    told = sum(r.llen(key) for key in r.keys(ks().TRACE + "*"))
    assert told == stored + redelivered
    r.close()
