"""Delivery end to end: signed webhook -> Redis -> arq worker process -> sandbox over HTTP."""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge import constants as k
from bridge.constants import ks
from bridge.sandbox.app import SandboxSettings
from tests.support import crm
from tests.support.servers import RedisServer
from tests.support.stack import Stack, running_stack

# The tier of every test here (tests/support/tiers.py).
pytestmark = pytest.mark.processes


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", *args, "--config",
                           str(stack.config)], capture_output=True, text=True, timeout=30)


def syncs(stack: Stack, group: str) -> list[dict[str, Any]]:
    return [r for r in stack.writes("travtus", "/listing/sync/")
            if (r["body"] or {}).get("group_external_ref") == group]


def puts(stack: Stack, ref: str | None = None) -> list[dict[str, Any]]:
    return [r for r in stack.writes("rentix", "/listings")
            if r["method"] == "PUT" and (ref is None or r["body"]["externalId"] == ref)]


def fault(stack: Stack, **spec: Any) -> None:
    assert stack.sandbox.post("/_sandbox/faults", json=spec).status_code in (200, 201)


def status(stack: Stack) -> dict[str, Any]:
    import json

    result = cli(stack, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# Debounce per group ------------------------------------------------------------------------

def test_continuous_changes_flush_at_least_every_max_wait_one_at_a_time(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path, workers=2,
                       debounce={"window_ms": 300, "max_wait_ms": 1000}) as stack:
        # Both workers up first: a slow start on a busy machine would eat the 3.5 s.
        beats = redis.Redis.from_url(redis_url)
        stack.wait(lambda: beats.hlen(k.WORKERS) == 2, timeout=30, what="two workers up")
        beats.close()
        # Slow syncs make overlapping flushes visible in the journal, if there were any.
        fault(stack, portal="travtus", path="/listing/sync", latency_ms=250)
        started = time.monotonic()
        version = 0
        while time.monotonic() - started < 3.5:  # a change every 100 ms: never quiet
            version += 1
            stack.post(crm.upsert("busy", "apt-1", version, deposit=version))
            time.sleep(0.1)
        seen = syncs(stack, "busy")
        # Within 3.5 s of continuous change, max_wait (1 s) forced flushes regardless.
        assert len(seen) >= 2, seen
        stack.wait(lambda: syncs(stack, "busy")[-1]["body"]["listings"][0]["lease_terms"][0][
            "deposit"] == version, what="the last change delivered")
        times = [_at(r) for r in syncs(stack, "busy")]
        spans = [(t, t + r["duration_ms"] / 1000) for t, r in zip(times, syncs(stack, "busy"),
                                                                   strict=True)]
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end - 0.005, "two flushes of one group overlapped"


def _at(request: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(request["at"].replace("Z", "+00:00")).timestamp()


def test_a_quiet_group_waits_for_the_window(redis_url: str, tmp_path: Path) -> None:
    with running_stack(redis_url, tmp_path,
                       debounce={"window_ms": 800, "max_wait_ms": 5000}) as stack:
        sent = time.monotonic()
        stack.post(crm.upsert("calm", "apt-1", 1))
        stack.wait(lambda: syncs(stack, "calm"), what="the sync")
        assert time.monotonic() - sent >= 0.75  # not before the trailing window


# Coalescing -----------------------------------------------------------------------------------

def test_200_updates_to_10_listings_become_1_sync_and_10_puts(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path,
                       debounce={"window_ms": 2500, "max_wait_ms": 10000}) as stack:
        latest: dict[str, int] = {}
        for n in range(200):
            ref = f"apt-{n % 10}"
            latest[ref] = n
            stack.post(crm.upsert("coalesce", ref, n, bedrooms=n % 7, deposit=n))
        stack.wait(lambda: len(puts(stack)) >= 10 and syncs(stack, "coalesce"),
                   what="the flush")
        time.sleep(0.5)  # allow any (wrong) extra write to show up in the journal
        assert len(syncs(stack, "coalesce")) == 1
        assert len(puts(stack)) == 10
        sync = syncs(stack, "coalesce")[0]["body"]["listings"]
        assert {item["external_reference"]: item["lease_terms"][0]["deposit"] for item in sync} \
            == {ref: float(n) for ref, n in latest.items()}
        listings = stack.rentix_listings()
        assert {ref: listings[ref]["formData"]["announcementValue"] for ref in latest} == \
            dict.fromkeys(latest, 500.0)
        # The same content again (a new webhook id, a new version) sends nothing.
        before = len(stack.journal())
        stack.post(crm.upsert("coalesce", "apt-3", 1000, bedrooms=latest["apt-3"] % 7,
                              deposit=latest["apt-3"]))
        stack.wait(lambda: not redis.Redis.from_url(redis_url).zscore(ks().DUE, "coalesce"),
                   timeout=10, what="the flush of the unchanged listing")
        assert len(stack.journal()) == before


# Level-triggered planning; targets progress independently -----------------------------------

def test_one_portal_down_never_delays_the_other_and_nothing_stale_is_sent(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        fault(stack, portal="travtus", path="/listing/sync", status=503, duration_s=3)
        stack.post(crm.upsert("ind", "apt-1", 1, bedrooms=1))
        stack.wait(lambda: puts(stack, "apt-1"), what="rentix while travtus is down")
        assert stack.travtus_listings("ind") == {}
        stack.post(crm.upsert("ind", "apt-1", 2, bedrooms=2))
        stack.wait(lambda: stack.travtus_listings("ind").get("apt-1", {}).get("bedrooms") == 2,
                   timeout=20, what="travtus after the outage")
        accepted = [r for r in syncs(stack, "ind") if r["status"] == 200]
        # After recovery only the latest state went out; the stale version 1 never did.
        assert [s["body"]["listings"][0]["bedrooms"] for s in accepted] == [2]
        assert [p["body"]["announcementValue"] for p in puts(stack, "apt-1")] == [500.0, 500.0] \
            or len(puts(stack, "apt-1")) >= 1


# Deletions and moves ------------------------------------------------------------------------

def test_deletion_hides_on_rentix_and_leaves_travtus_sync(redis_url: str, tmp_path: Path) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        for i in range(6):
            stack.post(crm.upsert("del", f"apt-{i}", 1))
        stack.wait(lambda: len(stack.travtus_listings("del")) == 6, what="created")
        stack.post(crm.event("listing.deleted", "del", listing={"external_ref": "apt-0",
                                                                "version": 2}))
        stack.wait(lambda: "apt-0" not in stack.travtus_listings("del"), what="left out")
        stack.wait(lambda: stack.rentix_listings()["apt-0"]["formData"]["announcementStatus"]
                   == "hidden", what="hidden on rentix")
        assert len(stack.rentix_listings()) == 6  # hidden, not deleted


def test_a_listing_that_moves_leaves_one_sync_and_joins_the_other(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        for i in range(6):
            stack.post(crm.upsert("west", f"w-{i}", 1))
        stack.post(crm.upsert("east", "e-0", 1))
        stack.wait(lambda: len(stack.travtus_listings("west")) == 6
                   and stack.travtus_listings("east") and len(stack.rentix_listings()) == 7,
                   what="first syncs")
        rentix_puts = len(puts(stack))
        stack.post(crm.upsert("east", "w-0", 2))
        stack.wait(lambda: "w-0" in stack.travtus_listings("east")
                   and "w-0" not in stack.travtus_listings("west"), what="the move")
        assert len(puts(stack)) == rentix_puts  # same content: Rentix has no groups


# Idempotency ----------------------------------------------------------------------------------

def test_same_content_same_key_after_retry_new_content_new_key(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        fault(stack, portal="rentix", method="PUT", path="/listings", status=500, count=2)
        stack.post(crm.upsert("idem", "apt-1", 1))
        stack.wait(lambda: [p for p in puts(stack) if p["status"] == 200], what="delivered")
        attempts = puts(stack, "apt-1")
        assert [a["status"] for a in attempts] == [500, 500, 200]
        stack.wait(lambda: stack.travtus_listings("idem"), what="travtus")
        assert len({a["idempotency_key"] for a in attempts}) == 1
        assert all(a["idempotency_key"] for a in stack.writes("travtus", "/listing/sync/"))
        stack.post(crm.upsert("idem", "apt-1", 2,
                              price={"amount": 650, "currency": "EUR", "period": "monthly"}))
        stack.wait(lambda: len(puts(stack, "apt-1")) == 4, what="the new content")
        assert puts(stack, "apt-1")[-1]["idempotency_key"] != attempts[0]["idempotency_key"]


def test_returning_to_earlier_content_is_applied_not_replayed(
    redis_url: str, tmp_path: Path
) -> None:
    """A, then B, then A again: the third write must change the portal back, so it cannot
    reuse the first write's key (the portal would replay its stored answer and do nothing)."""
    price = {"currency": "EUR", "period": "monthly"}
    with running_stack(redis_url, tmp_path) as stack:
        for version, amount in enumerate((1440, 1490, 1440), start=1):
            stack.post(crm.upsert("aba", "apt-1", version, price={**price, "amount": amount}))
            stack.wait(lambda n=version: len(puts(stack, "apt-1")) == n
                       and len(syncs(stack, "aba")) == n, what=f"write {version}")
        assert stack.rentix_listings()["apt-1"]["formData"]["announcementValue"] == 1440
        assert stack.travtus_listings("aba")["apt-1"]["lease_terms"][0]["rent"] == 1440
        keys = [p["idempotency_key"] for p in puts(stack, "apt-1")]
        assert len(set(keys)) == 3 and not any(p["replayed"] for p in puts(stack, "apt-1"))
        assert len({s["idempotency_key"] for s in syncs(stack, "aba")}) == 3


# Failures -------------------------------------------------------------------------------------

def test_rentix_rate_limit_waits_for_the_reset(redis_url: str, tmp_path: Path) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        stack.sandbox.post("/_sandbox/rate-limits", json={"rentix_per_minute": 3})
        for i in range(5):
            stack.post(crm.upsert("rl", f"apt-{i}", 1))
        def waiting_for_the_window() -> int | None:
            """When the writes left wait until: the target blocked after a 429, or (the
            general budget recorded as spent from the PUTs' answers) the rest queued in the
            outbox, which sends nothing before the window resets."""
            rentix = status(stack)["targets"]["rentix"]
            if rentix["state"] == "rate-limited":
                client = redis.Redis.from_url(redis_url, decode_responses=True)
                return int(client.hget(ks().TARGET + "rentix", "blocked_until") or 0)
            general = rentix["outbox"]["budgets"]["general"]
            if rentix["outbox"]["depth"] == 2 and general and general["remaining"] == 0:
                return int(general["reset"])
            return None

        until = stack.wait(waiting_for_the_window,
                           what="the target to wait for the portal's window")
        # Held until the portal's window resets (up to a minute away), not a short backoff.
        assert until > time.time() * 1000 + 5_000
        # Watch for a while: a bridge that merely backed off would try again within ~1 s.
        # It stops when X-RateLimit-Remaining reaches 0, or at the latest at the first 429.
        time.sleep(3)
        assert [p["status"] for p in puts(stack)] in ([200] * 3, [200] * 3 + [429])
        stack.wait(lambda: len(stack.travtus_listings("rl")) == 5, what="travtus unaffected")


def test_a_429_holds_the_target_until_x_ratelimit_reset(redis_url: str, tmp_path: Path) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        reset = int(time.time()) + 20
        fault(stack, portal="rentix", method="PUT", path="/listings", status=429, count=1,
              headers={"X-RateLimit-Reset": str(reset), "X-RateLimit-Remaining": "0"})
        stack.post(crm.upsert("r429", "apt-1", 1))
        stack.wait(lambda: puts(stack), what="the refused PUT")
        stack.post(crm.upsert("r429", "apt-2", 1))
        stack.wait(lambda: len(stack.travtus_listings("r429")) == 2, what="travtus flows")
        time.sleep(2)  # a bridge that ignored the reset would have retried by now
        assert [p["status"] for p in puts(stack)] == [429]
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        assert int(client.hget(ks().TARGET + "rentix", "blocked_until") or 0) == reset * 1000


def test_an_expired_token_is_refreshed_once(redis_url: str, tmp_path: Path) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        stack.post(crm.upsert("tok", "apt-1", 1))
        stack.wait(lambda: stack.travtus_listings("tok"), what="first sync")
        stack.sandbox.post("/_sandbox/travtus/expire-tokens")
        stack.post(crm.upsert("tok", "apt-1", 2, bedrooms=4))
        stack.wait(lambda: stack.travtus_listings("tok")["apt-1"]["bedrooms"] == 4,
                   what="sync after expiry")
        tokens = [r for r in stack.journal("travtus") if r["path"] == "/oauth2/token"]
        assert len(tokens) == 2
        # The refused attempt's body is not journaled (auth fails first): count every sync.
        statuses = [r["status"] for r in stack.writes("travtus", "/listing/sync/")]
        assert statuses == [200, 401, 200]


def test_invalid_credentials_pause_the_target_until_resumed(redis_url: str, tmp_path: Path) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        stack.sandbox.post("/_sandbox/credentials", json={"rentix_api_key": "rotated"})
        stack.post(crm.upsert("cred", "apt-1", 1))
        stack.wait(lambda: status(stack)["targets"]["rentix"]["state"].startswith("paused"),
                   what="paused")
        stack.wait(lambda: stack.travtus_listings("cred"), what="travtus unaffected")
        stack.post(crm.upsert("cred", "apt-1", 2, bedrooms=3))
        stack.post(crm.upsert("cred", "apt-2", 1))
        time.sleep(0.5)
        assert len(puts(stack)) == 1  # only the refused attempt; changes accumulate
        stack.sandbox.post("/_sandbox/credentials", json={"rentix_api_key": "sandbox"})
        assert cli(stack, "target", "resume", "rentix").returncode == 0
        stack.wait(lambda: set(stack.rentix_listings()) == {"apt-1", "apt-2"},
                   what="accumulated changes flow")


def test_an_invalid_listing_is_quarantined_for_travtus_only_and_keeps_its_last_version(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        stack.post(crm.upsert("bad", "apt-1", 1, bedrooms=1))
        stack.post(crm.upsert("bad", "apt-2", 1))
        stack.wait(lambda: len(stack.travtus_listings("bad")) == 2, what="first sync")
        stack.post(crm.upsert("bad", "apt-1", 2, property_subtype="house", bedrooms=3))
        stack.post(crm.upsert("bad", "apt-2", 2, bedrooms=5))
        stack.wait(lambda: stack.travtus_listings("bad")["apt-2"]["bedrooms"] == 5,
                   what="the rest flows")
        travtus = stack.travtus_listings("bad")
        assert travtus["apt-1"]["bedrooms"] == 1  # kept at its last accepted version
        quarantined = status(stack)["targets"]["travtus"]["quarantined"]["apt-1"]
        assert quarantined["error_type"] == "invalid_unit_type"
        assert quarantined["field"] == "unit_type"
        stack.wait(lambda: stack.rentix_listings()["apt-1"]["formData"][
            "propertySecondaryType"] == "house", what="rentix takes it")


def test_an_operator_retry_of_a_refused_listing_gets_a_fresh_key(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        refusal = {"statusCode": 400, "message": ["propertyArea must be a number"],
                   "error": "Bad Request"}
        fault(stack, portal="rentix", method="PUT", path="/listings", status=400, body=refusal,
              count=1)
        stack.post(crm.upsert("retry", "apt-1", 1))
        stack.wait(lambda: status(stack)["targets"]["rentix"]["quarantined"].get("apt-1"),
                   what="quarantined")
        entry = status(stack)["targets"]["rentix"]["quarantined"]["apt-1"]
        assert entry["error_type"] and entry["field"] == "propertyArea"
        assert "apt-1" not in stack.rentix_listings()
        result = cli(stack, "quarantine", "retry", "--target", "rentix", "apt-1")
        assert result.returncode == 0, result.stderr
        stack.wait(lambda: "apt-1" in stack.rentix_listings(), what="the retry lands")
        first, second = puts(stack, "apt-1")
        assert first["idempotency_key"] != second["idempotency_key"]
        assert not status(stack)["targets"]["rentix"]["quarantined"]


# Guards against destructive syncs ------------------------------------------------------------

def test_a_mass_deletion_is_held_until_released(redis_url: str, tmp_path: Path) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        for i in range(10):
            stack.post(crm.upsert("mass", f"apt-{i}", 1))
        stack.wait(lambda: len(stack.travtus_listings("mass")) == 10, what="first sync")
        snapshot = crm.event("group.snapshot", "mass", occurred_at=crm.at(3600),
                             listings=[crm.listing("apt-0", 2), crm.listing("apt-1", 2)])
        stack.post(snapshot)
        stack.wait(lambda: status(stack)["targets"]["travtus"]["held"].get("mass"),
                   what="held")
        held = status(stack)["targets"]["travtus"]["held"]["mass"]
        assert held["deletions"] == [f"apt-{i}" for i in range(2, 10)]
        assert "max_delete_count" in held["reason"]
        assert len(stack.travtus_listings("mass")) == 10  # nothing deleted meanwhile
        assert {c["cause"] for c in held["causes"]} == {"inferred"}
        # Without --digest the CLI shows the held sync and asks; no answer, nothing sent.
        unanswered = cli(stack, "held", "release", "--target", "travtus", "mass")
        assert unanswered.returncode != 0 and held["digest"] in unanswered.stdout
        assert len(stack.travtus_listings("mass")) == 10
        result = cli(stack, "held", "release", "--target", "travtus", "mass",
                     "--digest", held["digest"])
        assert result.returncode == 0, result.stderr
        assert "apt-9" in result.stdout
        stack.wait(lambda: set(stack.travtus_listings("mass")) == {"apt-0", "apt-1"},
                   what="released sync")


def test_inferring_too_large_a_fraction_of_deletions_is_held_and_a_discard_keeps_them(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        for i in range(4):
            stack.post(crm.upsert("frac", f"apt-{i}", 1))
        stack.wait(lambda: len(stack.travtus_listings("frac")) == 4, what="first sync")
        # A snapshot without apt-0 and apt-1: deletions the bridge infers, 2 of 4 > 0.2.
        stack.post(crm.event("group.snapshot", "frac", occurred_at=crm.at(3600),
                             listings=[crm.listing("apt-2", 2), crm.listing("apt-3", 2)]))
        stack.wait(lambda: status(stack)["targets"]["travtus"]["held"].get("frac"),
                   what="held")
        held = status(stack)["targets"]["travtus"]["held"]["frac"]
        assert "max_delete_fraction" in held["reason"]
        assert {c["ref"]: c["cause"] for c in held["causes"]} == {
            "apt-0": "inferred", "apt-1": "inferred"}
        result = cli(stack, "held", "discard", "--target", "travtus", "frac",
                     "--digest", held["digest"])
        assert result.returncode == 0, result.stderr
        time.sleep(0.5)
        assert len(stack.travtus_listings("frac")) == 4
        assert not status(stack)["targets"]["travtus"]["held"]


def test_explicit_deletions_in_a_small_group_are_not_held_by_the_fraction_guard(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        for i in range(6):
            stack.post(crm.upsert("small", f"apt-{i}", 1))
        stack.wait(lambda: len(stack.travtus_listings("small")) == 6, what="first sync")
        # One deletion and one move out: 2 of 6 > 0.2, but both are what the CRM asked for.
        stack.post(crm.event("listing.deleted", "small",
                             listing={"external_ref": "apt-0", "version": 2}))
        stack.post(crm.upsert("other", "apt-1", 2))
        stack.wait(lambda: set(stack.travtus_listings("small")) == {
            f"apt-{i}" for i in range(2, 6)}, what="the sync with both deletions")
        stack.wait(lambda: set(stack.travtus_listings("other")) == {"apt-1"},
                   what="the moved listing in its new group")
        assert not status(stack)["targets"]["travtus"]["held"]


def test_a_storm_of_explicit_deletions_is_still_held_by_the_count_guard(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        for i in range(10):
            stack.post(crm.upsert("storm", f"apt-{i}", 1))
        stack.wait(lambda: len(stack.travtus_listings("storm")) == 10, what="first sync")
        for i in range(7):
            stack.post(crm.event("listing.deleted", "storm",
                                 listing={"external_ref": f"apt-{i}", "version": 2}))
        stack.wait(lambda: status(stack)["targets"]["travtus"]["held"].get("storm"),
                   what="held")
        held = status(stack)["targets"]["travtus"]["held"]["storm"]
        assert "max_delete_count" in held["reason"]
        assert {c["cause"] for c in held["causes"]} == {"explicit"}
        assert len(stack.travtus_listings("storm")) == 10


def test_a_sync_that_would_be_empty_is_held(redis_url: str, tmp_path: Path) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        stack.post(crm.upsert("empty", "apt-0", 1))
        stack.wait(lambda: stack.travtus_listings("empty"), what="first sync")
        stack.post(crm.upsert("empty", "apt-0", 2, status="hidden"))
        stack.wait(lambda: status(stack)["targets"]["travtus"]["held"].get("empty"),
                   what="held")
        assert "empty" in status(stack)["targets"]["travtus"]["held"]["empty"]["reason"]
        assert stack.travtus_listings("empty")


def test_a_first_sync_that_would_delete_listings_unknown_to_the_bridge_is_held(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        seeded = stack.sandbox.post("/_sandbox/travtus/listings", json={
            "group": "legacy", "listings": [
                {"external_reference": "hand-1", "unit_type": "apartment",
                 "listing_url": "https://x.example/1", "number_of_bathrooms": 1}]})
        assert seeded.status_code in (200, 201)
        stack.post(crm.upsert("legacy", "apt-1", 1))
        stack.wait(lambda: status(stack)["targets"]["travtus"]["held"].get("legacy"),
                   what="held")
        held = status(stack)["targets"]["travtus"]["held"]["legacy"]
        assert held["deletions"] == ["hand-1"] and "never heard of" in held["reason"]
        assert set(stack.travtus_listings("legacy")) == {"hand-1"}


# Crash safety ---------------------------------------------------------------------------------

def test_a_worker_killed_mid_flush_is_recovered_with_the_same_keys(
    redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path, workers=0) as stack:
        fault(stack, portal="rentix", method="PUT", path="/listings", latency_ms=1500, count=1)
        victim = stack.start_worker()
        for i in range(3):
            stack.post(crm.upsert("crash", f"apt-{i}", 1))
        client = redis.Redis.from_url(redis_url)
        # Mid-flush: the flush holds the group's lease while the first PUT is answered slowly.
        stack.wait(lambda: client.exists(ks().LEASE + "crash"), what="the flush to be running")
        stack.kill(victim)
        killed_at = time.monotonic()
        stack.start_worker()
        stack.wait(lambda: set(stack.rentix_listings()) == {"apt-0", "apt-1", "apt-2"}
                   and len(stack.travtus_listings("crash")) == 3,
                   timeout=stack.settings.delivery.job_timeout_s + 15, what="recovery")
        assert time.monotonic() - killed_at < stack.settings.delivery.job_timeout_s + 15
        keys = stack.keys_per_listing("rentix", "/listings", "externalId")
        assert all(len(k) == 1 for k in keys.values())  # same content, same key


def test_a_redis_restart_loses_nothing_accepted(
    redis_srv: RedisServer, redis_url: str, tmp_path: Path
) -> None:
    with running_stack(redis_url, tmp_path, workers=0,
                       debounce={"window_ms": 100, "max_wait_ms": 500}) as stack:
        for i in range(5):
            stack.post(crm.upsert("aof", f"apt-{i}", 1))
        redis_srv.restart()  # AOF replayed on start
        stack.start_worker()
        stack.wait(lambda: len(stack.travtus_listings("aof")) == 5
                   and len(stack.rentix_listings()) == 5, timeout=20, what="delivery")


# History and `bridge status` -----------------------------------------------------------------

def test_attempts_are_recorded_and_status_summarises_them(redis_url: str, tmp_path: Path) -> None:
    with running_stack(redis_url, tmp_path) as stack:
        stack.post(crm.upsert("hist", "apt-1", 1))
        stack.wait(lambda: stack.travtus_listings("hist") and stack.rentix_listings(),
                   what="delivery")
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        import orjson

        history = [orjson.loads(h) for h in client.lrange(ks().HISTORY + ":hist", 0, -1)]
        assert {(h["target"], h["operation"], h["outcome"]) for h in history} == {
            ("rentix", "upsert", "ok"), ("travtus", "sync", "ok")}
        for entry in history:
            assert entry["idempotency_key"].startswith("lb-") and entry["attempt"] == 1
            assert entry["listings"] == ["apt-1"] and entry["latency_ms"] >= 0
        text = cli(stack, "status")
        assert text.returncode == 0 and "target rentix (rentix): active" in text.stdout


@pytest.fixture(autouse=True)
def _fast_sandbox() -> SandboxSettings:
    return SandboxSettings()
