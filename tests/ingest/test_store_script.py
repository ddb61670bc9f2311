"""The ingest scripts' key names and settings, and the splicing helper every script uses."""

from __future__ import annotations

import msgspec
import pytest
import redis

from bridge import constants as k
from bridge.clock import now_ms
from bridge.constants import ks
from bridge.ingest import store
from bridge.ingest.events import ValidEvent
from bridge.ingest.inbox import (
    DISCARD_DEAD,
    FOLD,
    HEAD,
    RETRY_DEAD,
    STATE,
    FoldSettings,
    fold_now,
)
from bridge.ingest.script_client import _bulks
from bridge.scripts import Lua, ScriptError, placeholders, splice
from bridge.settings import Settings
from tests.support.ingest import Scripts

# The present, as Redis's clock reads it too: its expiries are judged against it.
T0 = now_ms()


@pytest.mark.parametrize("lua", [store.ACCEPT, FOLD, HEAD, STATE, RETRY_DEAD, DISCARD_DEAD])
def test_ingest_scripts_have_every_placeholder_replaced(lua: Lua) -> None:
    assert not placeholders(lua.source)
    assert "__" not in lua.source


def test_ingest_scripts_take_their_keys_in_keys_and_their_settings_in_argv() -> None:
    """No key name or setting is spliced in: names arrive in KEYS (or, for the fold's keys that
    depend on data, as prefixes in ARGV, each name checked against KEYS before use)."""
    for lua in (store.ACCEPT, FOLD, HEAD, STATE, RETRY_DEAD, DISCARD_DEAD):
        assert f'"{k.PREFIX}' not in lua.source and f"'{k.PREFIX}" not in lua.source, lua.name
    assert store.ACCEPT.keys[0].startswith("seen") and len(store.ACCEPT.keys) == 5
    assert FOLD.more_keys and FOLD.source.startswith("#!lua flags=allow-oom\n")
    assert len(FOLD.argv) == 14


def test_the_fold_stops_before_an_entry_whose_keys_it_was_not_given(
    r: redis.Redis, settings: Settings
) -> None:
    """Declare or bail: given only the fixed keys, it takes nothing and names what it lacks;
    the wrapper, reading first, folds it."""
    now = now_ms()
    event = ValidEvent("listing.updated", "g1", now, [("apt-1", 1, b"{}")])
    store.accept_now(r, "wh-1", now, store.entry("wh-1", now, event),
                     settings.webhook.dedupe_ttl_seconds)
    keys = ks()
    fixed = [keys.INBOX, keys.DUE, keys.GROUPS, keys.METRICS, keys.TOMBSTONES, keys.INBOX_DEAD,
             keys.INBOX_RETRIES]
    args = [100, 1_000, 10, 20, 10**12, 10**9, keys.LISTING, keys.BODY, keys.TRACE, keys.STATS,
            keys.MEMBERS, keys.PENDING, keys.DIRTY, keys.SETTLED]
    folded, applied, left, listings, aside, missing = r.register_script(FOLD.source)(
        keys=fixed, args=args)
    assert (folded, applied, left, listings, aside) == (0, 0, 1, 0, [])
    assert set(missing) >= {ks().TRACE + "apt-1", ks().LISTING + "apt-1", ks().MEMBERS + "g1"}
    assert not r.exists(ks().LISTING + "apt-1")
    assert fold_now(r, FoldSettings.of(settings)).events == 1
    assert r.hget(ks().LISTING + "apt-1", "g") == "g1"


def test_the_webhook_script_only_stores_the_event_for_the_fold(
    r: redis.Redis, redis_url: str, settings: Settings
) -> None:
    event = ValidEvent("listing.updated", "g1", T0, [("apt-1", 4, b'{"rent": 900}')])
    ttl = settings.webhook.dedupe_ttl_seconds

    entry = store.entry("wh-1", T0 + 5, event)

    assert store.accept_now(r, "wh-1", T0 + 5, entry, ttl) == 1
    assert set(r.keys("*")) == {ks().SEEN + "wh-1", ks().INBOX, k.WAKE}
    assert r.ttl(ks().SEEN + "wh-1") == settings.webhook.dedupe_ttl_seconds
    with redis.Redis.from_url(redis_url) as raw:  # msgpack: bytes, not text
        assert raw.lrange(ks().INBOX, 0, -1) == [entry]
        # A redelivery is answered as one and queued marked, for its listings' stories (which
        # tell no body: it is left out).
        assert store.accept_now(r, "wh-1", T0 + 9, entry, ttl) == 0
        story = msgspec.msgpack.encode(["wh-1", str(T0 + 5), "u", "g1", str(T0), "apt-1", "4",
                                        ""])
        assert raw.lrange(ks().INBOX, 0, -1) == [entry, b"D" + story]
        assert store.received_at(raw.lindex(ks().INBOX, 1)) == T0 + 5
    assert r.hgetall(ks().METRICS) == {"webhook_events_total|duplicate": "1"}


def test_ingest_scripts_write_the_keys_bridge_constants_names(
    r: redis.Redis, settings: Settings
) -> None:
    Scripts(r, settings)("wh-1", T0, "u", "g1", T0, "apt-1", 4, '{"rent": 900}')

    assert r.ttl(ks().SEEN + "wh-1") == settings.webhook.dedupe_ttl_seconds
    assert r.hgetall(ks().LISTING + "apt-1") == {
        "g": "g1", "v": "4", "t": str(T0), "d": "0", "at": str(T0), k.LISTING_SOURCES: "wh-1"}
    assert r.get(ks().BODY + "apt-1") == '{"rent": 900}'
    assert r.object("encoding", ks().LISTING + "apt-1") == "listpack"  # short values only
    assert r.smembers(ks().MEMBERS + "g1") == {"apt-1"}
    assert r.hgetall(ks().DIRTY + "g1") == {"apt-1": "1"}  # changed at the group's seq 1
    assert r.smembers(ks().GROUPS) == {"g1"}
    assert r.hgetall(ks().PENDING + "g1") == {"first": str(T0), "last": str(T0), "seq": "1"}
    assert r.zscore(ks().DUE, "g1") == T0 + settings.debounce.window_ms
    stats = f"{ks().STATS}{T0 // 60_000}"
    assert r.hgetall(stats) == {"received": "1"}
    assert 0 < r.ttl(stats) <= k.STATS_TTL_S
    # The listing's story (bridge trace) holds the event, for [trace] retention_days.
    assert 0 < r.pttl(ks().TRACE + "apt-1") <= settings.trace.retention_ms
    assert r.hgetall(ks().METRICS) == {"webhook_events_total|accepted": "1"}
    assert set(r.keys("*")) == {ks().SEEN + "wh-1", ks().LISTING + "apt-1", ks().BODY + "apt-1",
                                ks().MEMBERS + "g1", ks().GROUPS, ks().PENDING + "g1", ks().DUE,
                                stats, ks().TRACE + "apt-1", ks().METRICS, ks().DIRTY + "g1",
                                k.WAKE}


# The splicing helper ----------------------------------------------------------------------

def test_splice_renders_strings_integers_and_lists_as_lua_literals(r: redis.Redis) -> None:
    awkward = 'quote " backslash \\ newline \n done'
    script = splice("return {__TEXT__, __NUMBER__, __LIST__}",
                    {"TEXT": awkward, "NUMBER": 42, "LIST": ("a", "b")})

    assert r.eval(script, 0) == [awkward, 42, "a", "b"]


def test_splice_raises_on_a_misspelt_placeholder() -> None:
    with pytest.raises(ScriptError, match="no value for: PENDNG; no placeholder for: PENDING"):
        splice("return __PENDNG__", {"PENDING": ks().PENDING})


def test_splice_raises_on_a_value_without_its_placeholder() -> None:
    with pytest.raises(ScriptError, match="no placeholder for: DUE"):
        splice("return __PENDING__", {"PENDING": ks().PENDING, "DUE": ks().DUE})


def test_splice_raises_on_a_lower_case_placeholder() -> None:
    with pytest.raises(ScriptError, match="no value for: due"):
        splice("return __due__", {})


def test_splice_raises_on_a_malformed_placeholder() -> None:
    with pytest.raises(ScriptError, match="malformed placeholder"):
        splice("return __DUE_", {})


def test_splice_leaves_later_placeholders_and_a_second_splice_needs_them_all() -> None:
    first = splice("return {__KEY__, __TTL__}", {"KEY": ks().DUE}, later=("TTL",))

    assert placeholders(first) == {"TTL"}
    with pytest.raises(ScriptError, match="no value for: TTL"):
        splice(first, {})


def test_splice_refuses_a_bool() -> None:
    with pytest.raises(ScriptError, match="bool"):
        splice("return __FLAG__", {"FLAG": True})


# What the webhook sends the script --------------------------------------------------------

@pytest.mark.parametrize("event", [
    ValidEvent("listing.updated", "g1", T0, [("apt-1", 4, b'{"rent":900}')]),
    ValidEvent("listing.deleted", "Zürich Süd", T0, [("wohnung-ä", -1, b"")]),
    ValidEvent("group.snapshot", "g1", T0, [("a", 1, b"{}"), ("b", -1, b'{"x":"\\u00e9"}')]),
    ValidEvent("group.snapshot", "g1", T0, []),
])
def test_the_packed_script_arguments_are_the_generic_packers(event: ValidEvent) -> None:
    fields: list[str] = ["wh-1", str(T0 + 5), store._KIND[event.type], event.group,
                         str(event.occurred_ms)]
    for ref, version, body in event.listings:
        fields += (ref, str(version), body.decode())
    entry = store.entry("wh-1", T0 + 5, event)

    assert msgspec.msgpack.decode(entry) == fields
    keys = store.accept_keys("wh-1", T0 + 5)
    assert store.AcceptCall(86_400).pack("wh-1", T0 + 5, event) == _bulks(
        [*keys, *store.accept_args(T0 + 5, entry, 86_400)])
    call = store.AcceptCall(86_400, 50)
    assert call.pack("wh-1", T0 + 5, event) == _bulks(
        [*keys, *store.accept_args(T0 + 5, entry, 86_400, 50)])
    assert call.count == len(keys) + 5


def test_group_membership_follows_moves_and_stays_exact_over_repeated_changes(
    r: redis.Redis, settings: Settings
) -> None:
    ingest = Scripts(r, settings)

    def upsert(n: int, group: str) -> None:
        ingest(f"wh-{n}", T0 + n, "u", group, T0 + n, "apt-1", n, "{}")

    upsert(1, "g1")
    upsert(2, "g1")
    assert r.smembers(ks().MEMBERS + "g1") == {"apt-1"}
    upsert(3, "g2")
    assert not r.exists(ks().MEMBERS + "g1") and r.smembers(ks().MEMBERS + "g2") == {"apt-1"}
    upsert(4, "g2")
    upsert(5, "g1")
    assert r.smembers(ks().MEMBERS + "g1") == {"apt-1"} and not r.exists(ks().MEMBERS + "g2")
    ingest("wh-6", T0 + 6, "d", "g1", T0 + 6, "apt-1", 6, "")
    assert r.smembers(ks().MEMBERS + "g1") == {"apt-1"}, "a deleted listing stays until compacted"
