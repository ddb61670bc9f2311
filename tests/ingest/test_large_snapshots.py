"""Large snapshots stay cheap: a fold call reads only the entries it folds, and a redelivery's
inbox entry carries its story, not its bodies again."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import orjson
import pytest
import redis

from bridge.clock import now_ms
from bridge.ingest import store
from bridge.ingest.events import ValidEvent
from bridge.ingest.inbox import FOLD, HEAD, FoldSettings, fold_now
from bridge.settings import Settings
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


def accept(r: redis.Redis, settings: Settings, webhook_id: str, event: ValidEvent) -> int:
    at = now_ms()
    return store.accept_now(r, webhook_id, at, store.entry(webhook_id, at, event),
                            settings.webhook.dedupe_ttl_seconds)


@pytest.mark.servers
def test_each_fold_call_reads_only_the_snapshot_it_folds(own: Server) -> None:
    r = own.client()
    settings = make_settings(own.url)
    for n in range(SNAPSHOTS):
        accept(r, settings, f"wh-{n}", snapshot(n))
    for lua in (HEAD, FOLD):  # loaded: no NOSCRIPT attempt in the log below
        r.script_load(lua.source)
    r.config_set("slowlog-max-len", 100_000)  # the scripts' own commands are logged too
    r.config_set("slowlog-log-slower-than", 0)  # Redis times every call itself
    r.slowlog_reset()
    calls = 0
    while True:  # one snapshot a call: the cap of one listing
        folded = fold_now(r, FoldSettings.of(settings), 100, 1)
        calls += 1
        if not folded.left:
            break
    log = list(reversed(r.slowlog_get(100_000)))
    for lua in (HEAD, FOLD):  # what the fold's caller reads first, and the fold
        sha = hashlib.sha1(lua.source.encode()).hexdigest().encode()
        durations = [entry["duration"] for entry in log
                     if entry["command"].startswith(b"EVALSHA " + sha)]
        assert calls == SNAPSHOTS == len(durations)
        # With 30 waiting, as cheap as with the last one alone (reading them all: ~15x).
        assert durations[0] < 3 * durations[-1], (lua.name, durations)
    r.close()


@pytest.mark.servers
def test_a_redelivered_snapshot_is_stored_without_its_bodies(own: Server) -> None:
    r = own.client()
    scripts = Scripts(r, settings := make_settings(own.url))
    assert accept(r, settings, "wh-1", snapshot(1)) == 1
    assert accept(r, settings, "wh-1", snapshot(1)) == 0
    redelivery = r.lindex("lb:{t:default}:inbox", -1)
    assert isinstance(redelivery, bytes) and len(redelivery) < 200

    scripts.fold_all()
    story = r.lrange("lb:{t:default}:trace:apt-1", 0, -1)
    assert [orjson.loads(entry)[-1] for entry in story] == ["d", "a"]
    r.close()
