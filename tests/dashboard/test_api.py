"""The JSON API over real HTTP, against real Redis: reads, actions, and bad input that changes
nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import redis

from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.ledger import Accepted
from tests.conftest import SECRET
from tests.dashboard.conftest import run, seed_drift, seed_problems
from tests.support import crm


def post(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    return client.post(path, json=body)


def snapshot(r: redis.Redis) -> dict[str, Any]:
    """Every key and value the bridge keeps, to prove a refused request changed nothing (but the
    record of the start-up's migration, which an app written by the test may make)."""
    keys = sorted(key for key in r.keys("lb:*") if not key.startswith("lb:migration"))
    return {key: r.dump(key) for key in keys}


def test_overview_counts_events_duplicates_and_rejections(
    client: httpx.Client, folded: Callable[[], int]
) -> None:
    crm.post(client, SECRET, crm.upsert("g1", "apt-1", 1), msg_id="msg_same")
    crm.post(client, SECRET, crm.upsert("g1", "apt-1", 1), msg_id="msg_same")
    crm.post(client, SECRET, crm.upsert("g1", "apt-2", 1), timestamp=1)  # too old
    waiting = client.get("/api/overview", params={"minutes": 5}).json()["inbox"]
    assert waiting["events"] == 2 and 0 <= waiting["oldest_age_ms"] < 10_000
    folded()
    o = client.get("/api/overview", params={"minutes": 5}).json()
    assert o["inbox"] == {"events": 0, "oldest_age_ms": None, "dead": 0, "dead_oldest_at": None}
    assert len(o["minutes"]) == 5 and len(o["events"]["received"]) == 5
    assert o["totals"]["events"]["received"] == 1
    assert o["totals"]["events"]["duplicate"] == 1
    assert sum(o["totals"]["rejected"].values()) == 1
    assert [w["group"] for w in o["waiting"]] == ["g1"] and o["waiting"][0]["reason"] == "changes"
    assert o["latency_ms"] == {"samples": 0, "p50": None, "p95": None, "p99": None}
    assert o["redis"]["maxmemory_policy"] == "noeviction" and o["workers"] == []
    assert set(o["deliveries"]) == {"rentix", "travtus"}


def test_group_search_and_detail_compare_desired_with_accepted(
    client: httpx.Client, redis_url: str, folded: Callable[[], int]
) -> None:
    for ref in ("apt-1", "apt-2"):
        crm.post(client, SECRET, crm.upsert("west-side", ref, 1))
    folded()
    assert client.get("/api/groups", params={"q": "apt-2"}).json()["groups"][0] == {
        "group": "west-side", "matched": "ref", "ref": "apt-2", "listings": 2}
    assert [g["group"] for g in client.get("/api/groups", params={"q": "west"}).json()[
        "groups"]] == ["west-side"]
    detail = client.get("/api/groups/west-side").json()
    want = detail["listings"][0]["targets"]["rentix"]["desired_digest"]
    run(redis_url, lambda ledger: ledger.record_accepted("rentix", "apt-1",
                                                         Accepted(want, None, now_ms())))
    detail = client.get("/api/groups/west-side").json()
    states = {item["ref"]: item["targets"]["rentix"]["status"] for item in detail["listings"]}
    assert states == {"apt-1": "in step", "apt-2": "pending"}
    assert detail["pending"]["first"] > 0 and detail["history"] == []


def test_problems_release_discard_retry(client: httpx.Client, redis_url: str,
                                        r: redis.Redis) -> None:
    seed_problems(redis_url)
    problems = client.get("/api/problems").json()
    assert problems["held"][0]["deletions"] == ["apt-8", "apt-9"]
    assert {q["ref"] for q in problems["quarantined"]} == {"apt-1", "apt-2"}
    released = post(client, "/api/held/release",
                    {"target": "travtus", "group": "mass", "digest": "d-mass"})
    assert released.status_code == 200 and released.json()["released"]["digest"] == "d-mass"
    marker = orjson.loads(r.get(ks().RELEASE + "travtus:mass") or "{}")
    assert marker["digest"] == "d-mass" and r.zscore(ks().DUE, "mass")
    answer = post(client, "/api/quarantine/retry",
                  {"items": [{"target": "travtus", "ref": "apt-1"}]})
    assert answer.json() == {"retried": 1}
    assert not r.hexists(ks().QUARANTINE + "travtus", "apt-1") and r.zscore(ks().DUE, "bad")
    answer = post(client, "/api/quarantine/discard",
                  {"items": [{"target": "travtus", "ref": "apt-2"}]})
    assert answer.json() == {"discarded": 1}
    assert client.get("/api/problems").json()["quarantined"] == []
    discarded = post(client, "/api/held/discard",
                     {"target": "travtus", "group": "mass", "digest": "d-mass"})
    assert discarded.status_code == 200 and client.get("/api/problems").json()["held"] == []


def test_a_release_or_discard_of_a_sync_other_than_the_one_held_changes_nothing(
    client: httpx.Client, redis_url: str, r: redis.Redis
) -> None:
    seed_problems(redis_url)
    before = snapshot(r)
    for action in ("release", "discard"):
        # The operator reviewed an earlier held sync; another one is held now.
        answer = post(client, f"/api/held/{action}",
                      {"target": "travtus", "group": "mass", "digest": "d-reviewed-earlier"})
        assert answer.status_code == 409, answer.text
        body = answer.json()["error"]
        assert body["type"] == "held_sync_changed"
        assert body["held"]["digest"] == "d-mass"
        assert body["held"]["deletions"] == ["apt-8", "apt-9"]
        assert "d-reviewed-earlier" in body["message"] and "d-mass" in body["message"]
        # Naming no digest at all is a plain bad request.
        missing = post(client, f"/api/held/{action}", {"target": "travtus", "group": "mass"})
        assert missing.status_code == 400 and "digest" in missing.json()["error"]["message"]
    assert snapshot(r) == before


def test_pause_and_resume(client: httpx.Client) -> None:
    answer = post(client, "/api/targets/rentix/pause", {"reason": "portal maintenance"})
    assert answer.json() == {"target": "rentix", "state": "paused",
                             "reason": "portal maintenance"}
    targets = {t["name"]: t for t in client.get("/api/targets").json()["targets"]}
    assert targets["rentix"]["state"] == "paused"
    assert targets["rentix"]["paused_reason"] == "portal maintenance"
    assert targets["travtus"]["state"] == "active"
    assert targets["travtus"]["rate_limit"]["available"] == 5
    assert post(client, "/api/targets/rentix/resume", {}).status_code == 200
    targets = {t["name"]: t for t in client.get("/api/targets").json()["targets"]}
    assert targets["rentix"]["state"] == "active"


def test_bad_input_answers_an_error_and_changes_nothing(client: httpx.Client, redis_url: str,
                                                        r: redis.Redis) -> None:
    seed_problems(redis_url)
    before = snapshot(r)
    cases = [
        ("POST", "/api/held/release", {"target": "travtus"}, 400),
        ("POST", "/api/held/release", {"target": "travtus", "group": "mass"}, 400),
        ("POST", "/api/held/release", {"target": "nope", "group": "mass", "digest": "d"}, 404),
        ("POST", "/api/held/release", {"target": "travtus", "group": "other", "digest": "d"},
         404),
        ("POST", "/api/quarantine/retry", {"items": [{"target": "travtus", "ref": "apt-1"},
                                                      {"target": "travtus", "ref": "zzz"}]},
         404),
        ("POST", "/api/quarantine/retry", {"items": []}, 400),
        ("POST", "/api/quarantine/discard", {"items": [{"target": "travtus"}]}, 400),
        ("POST", "/api/quarantine/discard", {"items": ["apt-1"]}, 400),
        ("POST", "/api/targets/nope/pause", {}, 404),
        ("POST", "/api/targets/rentix/pause", {"reason": 5}, 400),
        ("POST", "/api/targets/rentix/pause", [], 400),
        ("GET", "/api/overview?minutes=abc", None, 400),
        ("GET", "/api/overview?minutes=1000", None, 400),
        ("GET", "/api/groups?sort=size", None, 400),
        ("GET", "/api/groups/never-seen", None, 404),
        ("GET", "/api/nothing-here", None, 404),
    ]
    for method, path, body, status in cases:
        answer = client.request(method, path, json=body)
        assert answer.status_code == status, (path, body, answer.text)
        assert set(answer.json()["error"]) >= {"type", "message"}, answer.text
    # A form post (no JSON content type) is refused: another site cannot forge an action.
    form = client.post("/api/held/release", data={"target": "travtus", "group": "mass"})
    assert form.status_code == 400 and form.json()["error"]["type"] == "invalid_request"
    broken = client.post("/api/held/release", content=b"{not json",
                         headers={"content-type": "application/json"})
    assert broken.status_code == 400
    assert snapshot(r) == before


def test_status_matches_the_cli_view(client: httpx.Client, redis_url: str) -> None:
    seed_problems(redis_url)
    status = client.get("/api/status").json()
    assert status["targets"]["travtus"]["held"]["mass"]["deletions"] == ["apt-8", "apt-9"]
    assert status["queued_jobs"] == 0 and status["workers"] == {}
    # A per-listing target's outbox, in both views; a group-sync target has none (null).
    assert status["targets"]["travtus"]["outbox"] is None
    empty = {"depth": 0, "in_flight": 0, "in_flight_since": None, "bulk_per_minute": 28,
             "drain_s": 0.0, "budgets": {"general": None, "bulk": None}}
    assert status["targets"]["rentix"]["outbox"] == empty
    targets = {t["name"]: t for t in client.get("/api/targets").json()["targets"]}
    assert targets["rentix"]["outbox"] == empty and targets["travtus"]["outbox"] is None


def test_drift_lists_each_targets_last_pass_unknown_listings_and_failing_checks(
    client: httpx.Client, redis_url: str
) -> None:
    empty = client.get("/api/drift").json()["drift"]
    assert [(d["target"], d["last_pass"], d["interval_s"]) for d in empty] == [
        ("rentix", None, 86400), ("travtus", None, 86400)]
    seed_drift(redis_url)
    answer = client.get("/api/drift")
    assert answer.status_code == 200
    rentix, travtus = answer.json()["drift"]
    assert rentix["last_pass"]["found"] == {"missing": 0, "drift": 1, "stale": 0, "unknown": 1}
    assert rentix["last_pass"]["repaired"]["drift"] == 1 and rentix["groups"] == 2
    assert rentix["unknown"] == [{"group": "", "ref": "#7", "detail": "made on the portal, not "
                                  "linked to any CRM listing",
                                  "seen_at": rentix["latest"][0]["at"]}]
    assert travtus["failing"] == 1 and travtus["failures"][0]["attempts"] == 1
    # The same view is each target's drift in GET /api/targets and GET /api/status.
    targets = client.get("/api/targets").json()["targets"]
    assert targets[0]["drift"] == rentix
    assert client.get("/api/status").json()["targets"]["travtus"]["drift"] == travtus
