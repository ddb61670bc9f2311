"""What an event costs Redis while it waits in the inbox, and what a listing costs once folded.

    python -m tests.bench.inbox_memory [--events 5000]

Stores ``events`` generated listing updates (``tests/support/crm.py``'s listing, ~0.9 KB as an
inbox entry), each of a listing of its own, through the real accept script, then folds them with
the real fold script, reading ``used_memory`` before, between and after; on the redis-server on
PATH and on the wheel's Valkey, AOF off. The figures size ``maxmemory`` (README, "Configuration").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
import redis

from bridge.clock import now_ms
from bridge.ingest import store
from bridge.ingest.events import parse_event
from bridge.ingest.inbox import FoldSettings, fold_now
from tests.conftest import make_settings
from tests.support import crm
from tests.support.redis_servers import redis_binary, server, valkey_binary

T0 = now_ms()  # receipt times as the webhook takes them: the present


def used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def measure(binary: str, events: int) -> str:
    with server(binary, aof=None) as srv:
        client = srv.client()
        settings = make_settings(srv.url)
        ttl = settings.webhook.dedupe_ttl_seconds
        before = used(client)
        size = 0
        for n in range(events):
            event = parse_event(orjson.dumps(crm.upsert(f"g{n % 50}", f"apt-{n}", 1)))
            webhook_id = f"msg_{n:032d}"
            entry = store.entry(webhook_id, T0 + n, event)
            size += len(entry)
            store.accept_now(client, webhook_id, T0 + n, entry, ttl)
        waiting = used(client)
        while fold_now(client, FoldSettings.of(settings)).left:
            pass
        folded = used(client)
        client.close()
    return (f"{Path(binary).name}: entry {size // events} B; per event in the inbox (entry and "
            f"dedupe marker) {(waiting - before) // events} B; per listing once folded (state, "
            f"story, dedupe marker) {(folded - before) // events} B")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5_000)
    args = parser.parse_args()
    for binary in (redis_binary(), valkey_binary()):
        print(measure(binary, args.events))


if __name__ == "__main__":
    main()
