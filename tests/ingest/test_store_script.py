"""The ingest script's key names and settings, and the splicing helper every script uses."""

from __future__ import annotations

import pytest
import redis

from bridge import constants as k
from bridge.ingest import store
from bridge.ingest.events import ValidEvent
from bridge.ingest.script_client import _bulks
from bridge.ingest.store import ingest_script
from bridge.scripts import ScriptError, placeholders, splice
from bridge.settings import Settings

T0 = 1_700_000_000_000


def test_ingest_script_has_every_placeholder_replaced(settings: Settings) -> None:
    script = ingest_script(settings.webhook, settings.debounce)

    assert not placeholders(script)
    assert "__" not in script


def test_ingest_script_left_only_the_settings_for_construction() -> None:
    assert placeholders(store.INGEST) == {"TTL", "WINDOW", "MAXWAIT", "TRACE_TTL", "HORIZON"}


def test_ingest_script_writes_the_keys_bridge_constants_names(
    r: redis.Redis, settings: Settings
) -> None:
    script = ingest_script(settings.webhook, settings.debounce)

    r.eval(script, 0, "wh-1", T0, "u", "g1", T0, "apt-1", 4, '{"rent": 900}')

    assert r.ttl(k.SEEN + "wh-1") == settings.webhook.dedupe_ttl_seconds
    assert r.hgetall(k.LISTING + "apt-1") == {
        "g": "g1", "v": "4", "t": str(T0), "d": "0", "at": str(T0)}
    assert r.get(k.BODY + "apt-1") == '{"rent": 900}'
    assert r.object("encoding", k.LISTING + "apt-1") == "listpack"  # short values only
    assert r.smembers(k.MEMBERS + "g1") == {"apt-1"}
    assert r.hgetall(k.DIRTY + "g1") == {"apt-1": "1"}  # changed at the group's seq 1
    assert r.smembers(k.GROUPS) == {"g1"}
    assert r.hgetall(k.PENDING + "g1") == {"first": str(T0), "last": str(T0), "seq": "1"}
    assert r.zscore(k.DUE, "g1") == T0 + settings.debounce.window_ms
    stats = f"{k.STATS}{T0 // 60_000}"
    assert r.hgetall(stats) == {"received": "1"}
    assert 0 < r.ttl(stats) <= k.STATS_TTL_S
    # The listing's story (bridge trace) holds the event, for [trace] retention_days.
    assert 0 < r.pttl(k.TRACE + "apt-1") <= settings.trace.retention_ms
    assert r.hgetall(k.METRICS) == {"webhook_events_total|accepted": "1"}
    assert set(r.keys("*")) == {k.SEEN + "wh-1", k.LISTING + "apt-1", k.BODY + "apt-1",
                                k.MEMBERS + "g1",
                                k.GROUPS, k.PENDING + "g1", k.DUE, stats, k.TRACE + "apt-1",
                                k.METRICS, k.DIRTY + "g1"}


# The splicing helper ----------------------------------------------------------------------

def test_splice_renders_strings_integers_and_lists_as_lua_literals(r: redis.Redis) -> None:
    awkward = 'quote " backslash \\ newline \n done'
    script = splice("return {__TEXT__, __NUMBER__, __LIST__}",
                    {"TEXT": awkward, "NUMBER": 42, "LIST": ("a", "b")})

    assert r.eval(script, 0) == [awkward, 42, "a", "b"]


def test_splice_raises_on_a_misspelt_placeholder() -> None:
    with pytest.raises(ScriptError, match="no value for: PENDNG; no placeholder for: PENDING"):
        splice("return __PENDNG__", {"PENDING": k.PENDING})


def test_splice_raises_on_a_value_without_its_placeholder() -> None:
    with pytest.raises(ScriptError, match="no placeholder for: DUE"):
        splice("return __PENDING__", {"PENDING": k.PENDING, "DUE": k.DUE})


def test_splice_raises_on_a_lower_case_placeholder() -> None:
    with pytest.raises(ScriptError, match="no value for: due"):
        splice("return __due__", {})


def test_splice_raises_on_a_malformed_placeholder() -> None:
    with pytest.raises(ScriptError, match="malformed placeholder"):
        splice("return __DUE_", {})


def test_splice_leaves_later_placeholders_and_a_second_splice_needs_them_all() -> None:
    first = splice("return {__KEY__, __TTL__}", {"KEY": k.DUE}, later=("TTL",))

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
    args: list[bytes | str | int] = ["wh-1", T0 + 5, store._KIND[event.type], event.group,
                                     event.occurred_ms]
    for listing in event.listings:
        args += listing

    assert store.script_arguments("wh-1", T0 + 5, event) == (len(args), _bulks(args))


def test_group_membership_follows_moves_and_stays_exact_over_repeated_changes(
    r: redis.Redis, settings: Settings
) -> None:
    script = ingest_script(settings.webhook, settings.debounce)

    def upsert(n: int, group: str) -> None:
        r.eval(script, 0, f"wh-{n}", T0 + n, "u", group, T0 + n, "apt-1", n, "{}")

    upsert(1, "g1")
    upsert(2, "g1")
    assert r.smembers(k.MEMBERS + "g1") == {"apt-1"}
    upsert(3, "g2")
    assert not r.exists(k.MEMBERS + "g1") and r.smembers(k.MEMBERS + "g2") == {"apt-1"}
    upsert(4, "g2")
    upsert(5, "g1")
    assert r.smembers(k.MEMBERS + "g1") == {"apt-1"} and not r.exists(k.MEMBERS + "g2")
    r.eval(script, 0, "wh-6", T0 + 6, "d", "g1", T0 + 6, "apt-1", 6, "")
    assert r.smembers(k.MEMBERS + "g1") == {"apt-1"}, "a deleted listing stays until compacted"
