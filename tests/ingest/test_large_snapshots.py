"""Large snapshots stay cheap: a fold call reads only the entries it folds, and a redelivery's
inbox entry carries its story, not its bodies again."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
import redis

from bridge.clock import now_ms
from bridge.ingest import store
from bridge.ingest.events import ValidEvent
from tests.conftest import make_settings
from tests.support.ingest import Scripts
from tests.support.redis_servers import Server, server

SNAPSHOTS = 30
BODY = orjson.dumps({"external_ref": "apt", "description": "d" * 900_000})  # ~0.9 MiB


@pytest.fixture
def own() -> Iterator[Server]:
    with server(None, aof=None) as srv:
        yield srv


def snapshot(n: int) -> ValidEvent:
    return ValidEvent("group.snapshot", f"g{n}", now_ms(), [(f"apt-{n}", 1, BODY)])


def accept(r: redis.Redis, scripts: Scripts, webhook_id: str, event: ValidEvent) -> int:
    at = now_ms()
    status, _ = r.eval(scripts.accept, 0, webhook_id, at,  # type: ignore[misc]
                       store.entry(webhook_id, at, event))
    return int(status)


@pytest.mark.servers
def test_each_fold_call_reads_only_the_snapshot_it_folds(own: Server) -> None:
    r = own.client()
    scripts = Scripts(r, make_settings(own.url))
    for n in range(SNAPSHOTS):
        accept(r, scripts, f"wh-{n}", snapshot(n))
    r.config_set("slowlog-max-len", 1_000)
    r.config_set("slowlog-log-slower-than", 0)  # Redis times every call itself
    r.slowlog_reset()
    calls = 0
    while True:  # one snapshot a call: the cap of one listing
        _, _, left = r.eval(scripts.fold, 0, 100, 1)  # type: ignore[misc]
        calls += 1
        if not int(left):
            break
    durations = [entry["duration"] for entry in reversed(r.slowlog_get(1_000))
                 if entry["command"].startswith(b"EVAL ")]
    assert calls == SNAPSHOTS == len(durations)
    # With 30 waiting, as cheap as with the last one alone (reading them all: ~15x).
    assert durations[0] < 3 * durations[-1], durations
    r.close()


@pytest.mark.servers
def test_a_redelivered_snapshot_is_stored_without_its_bodies(own: Server) -> None:
    r = own.client()
    scripts = Scripts(r, make_settings(own.url))
    assert accept(r, scripts, "wh-1", snapshot(1)) == 1
    assert accept(r, scripts, "wh-1", snapshot(1)) == 0
    redelivery = r.lindex("lb:inbox", -1)
    assert isinstance(redelivery, bytes) and len(redelivery) < 200

    scripts.fold_all()
    story = r.lrange("lb:trace:apt-1", 0, -1)
    assert [orjson.loads(entry)[-1] for entry in story] == ["d", "a"]
    r.close()
