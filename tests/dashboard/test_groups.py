"""The Groups page and GET /api/groups without a search: every group, a page at a time, sorted
by name, pending, held or last change; bad parameters answer 400 naming the parameter; a search
with ``q`` works as before; and a page costs Redis the same few commands however many groups
there are."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from bridge.clock import now_ms
from bridge.constants import ks
from bridge.delivery.ledger import Held, Ledger
from bridge.ops.reads import REST_BY_NAME
from tests.conftest import SECRET
from tests.dashboard.conftest import run
from tests.support import crm
from tests.support.servers import wait_until

# Received in this order, one listing each but "cedar" (two).
GROUPS = ("delta", "alpha", "echo", "cedar", "bravo")


def seed(client: httpx.Client, r: redis.Redis, redis_url: str,
         folded: Callable[[], int]) -> None:
    """The groups' changes through the webhook, each received after the one before; then
    "echo" flushed (nothing pending, not due) and a change of "bravo" held on both targets."""
    for group in GROUPS:
        before = now_ms()
        crm.post(client, SECRET, crm.upsert(group, f"{group}-1", 1))
        wait_until(lambda before=before: now_ms() > before, timeout=1, what="the next ms")
    crm.post(client, SECRET, crm.upsert("cedar", "cedar-2", 1))
    folded()
    # As a flush that settled every change of "echo" leaves it.
    r.zrem(ks().DUE, "echo")
    r.hdel(f"{ks().PENDING}echo", "first")
    r.delete(f"{ks().DIRTY}echo")

    async def hold(ledger: Ledger) -> None:
        for target in ("rentix", "travtus"):
            await ledger.hold(target, "bravo", Held("d-bravo", "max_delete_count: 1 > 0",
                                                    ["bravo-1"], 0, now_ms()))

    run(redis_url, hold)


def listed(client: httpx.Client, **params: Any) -> dict[str, Any]:
    answer = client.get("/api/groups", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def names(page: dict[str, Any]) -> list[str]:
    return [g["group"] for g in page["groups"]]


def test_the_api_lists_every_group_sorted_and_paged(client: httpx.Client, r: redis.Redis,
                                                    redis_url: str,
                                                    folded: Callable[[], int]) -> None:
    seed(client, r, redis_url, folded)
    first = listed(client)
    assert (first["sort"], first["page"], first["per_page"], first["total"]) == \
        ("name", 1, 50, 5)
    assert names(first) == sorted(GROUPS)
    cedar = next(g for g in first["groups"] if g["group"] == "cedar")
    assert cedar["listings"] == 2 and cedar["pending"] == 2 and cedar["held"] == []
    assert cedar["pending_since"] and cedar["last_change"] and cedar["due_in_ms"] is not None
    echo = next(g for g in first["groups"] if g["group"] == "echo")
    assert (echo["pending"], echo["pending_since"], echo["due_in_ms"]) == (0, None, None)

    assert names(listed(client, per_page=2, page=2)) == ["cedar", "delta"]
    assert names(listed(client, per_page=2, page=4)) == []
    # Last change: the newest first ("cedar" changed last).
    assert names(listed(client, sort="last_change")) == ["cedar", "bravo", "echo", "alpha",
                                                         "delta"]
    # Pending: the groups due for a flush, soonest due first; then the rest by name.
    pending = listed(client, sort="pending")
    assert names(pending) == ["delta", "alpha", "bravo", "cedar", "echo"]
    assert names(listed(client, sort="pending", per_page=2, page=3)) == ["echo"]
    # Held: groups holding a change first, with the targets holding it; the rest by name.
    held = listed(client, sort="held", per_page=3)
    assert names(held) == ["bravo", "alpha", "cedar"]
    assert held["groups"][0]["held"] == ["rentix", "travtus"]
    assert names(listed(client, sort="held", per_page=3, page=2)) == ["delta", "echo"]

    # A search still answers as it did.
    found = listed(client, q="cedar-2")["groups"]
    assert found == [{"group": "cedar", "matched": "ref", "ref": "cedar-2", "listings": 2}]


@pytest.mark.parametrize(("params", "named"), [
    ({"sort": "size"}, "'sort' must be one of name, pending, held, last_change"),
    ({"page": "0"}, "'page' must be between 1 and"),
    ({"page": "two"}, "'page' must be a whole number"),
    ({"per_page": "500"}, "'per_page' must be between 1 and 200"),
    ({"q": " "}, "'q' must name a group"),
])
def test_bad_parameters_answer_400_naming_them(client: httpx.Client, params: dict[str, str],
                                               named: str) -> None:
    answer = client.get("/api/groups", params=params)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request"
    assert named in answer.json()["error"]["message"]


def test_the_page_lists_groups_with_sort_links_and_pages(client: httpx.Client,
                                                         r: redis.Redis, redis_url: str,
                                                         folded: Callable[[], int]) -> None:
    seed(client, r, redis_url, folded)
    page = client.get("/dashboard/groups").text
    assert all(f'href="/dashboard/groups/{g}"' in page for g in GROUPS)
    assert "5 group(s)" in page and "2 listing(s)" in page
    assert 'href="/dashboard/groups?sort=pending&amp;page=1&amp;per_page=50"' in page
    held = client.get("/dashboard/groups", params={"sort": "held", "per_page": 2}).text
    assert held.index('data-group="bravo"') < held.index('data-group="alpha"')
    assert "rentix, travtus" in held and "Page 1 of 3" in held
    assert 'rel="next" href="/dashboard/groups?sort=held&amp;page=2&amp;per_page=2"' in held
    live = client.get("/dashboard/groups", params={"sort": "pending"},
                      headers={"X-Live": "1"}).text
    assert "<html" not in live and 'data-sort="pending"' in live
    bad = client.get("/dashboard/groups", params={"sort": "size"})
    assert bad.status_code == 400 and "&#39;sort&#39; must be one of" in bad.text
    search = client.get("/dashboard/groups", params={"q": "cedar-2"}).text
    assert "listing cedar-2" in search


def test_a_page_reads_only_its_own_groups(client: httpx.Client, r: redis.Redis) -> None:
    """A page of 20, in every order, takes the same handful of commands with 10,100 groups as
    with 100 (the details of the page alone; the sorting is Redis's own)."""
    sorts = ("name", "pending", "held", "last_change")

    def commands_for(sort: str) -> int:
        listed(client, sort=sort, per_page=20, page=3)  # its script loaded, if any
        r.config_resetstat()
        listed(client, sort=sort, per_page=20, page=3)
        stats: dict[str, Any] = r.info("commandstats")
        # Not INFO, nor the PING with which redis-py checks a connection idle for 30 s (a
        # slow run's): the page's own commands.
        return sum(int(v["calls"]) for name, v in stats.items()
                   if name not in ("cmdstat_info", "cmdstat_ping"))

    r.sadd(ks().GROUPS, *[f"g{n:05d}" for n in range(100)])
    r.zadd(ks().DUE, {f"g{n:05d}": now_ms() + n for n in range(30)})
    few = {sort: commands_for(sort) for sort in sorts}
    r.sadd(ks().GROUPS, *[f"g{n:05d}" for n in range(100, 10_100)])
    many = {sort: commands_for(sort) for sort in sorts}
    assert many == few, (few, many)
    assert max(many.values()) <= 4 * 20 + 10, many


def test_the_rest_by_name_is_a_plain_sort_without_the_first(r: redis.Redis) -> None:
    """Past the groups listed first, the rest comes by name, as SORT ALPHA orders them."""
    r.sadd(ks().GROUPS, *[f"x{n}" for n in range(40)])
    rest = r.register_script(REST_BY_NAME.source)
    plain = [g for g in r.sort(ks().GROUPS, alpha=True) if g not in ("x7", "x33")]
    assert rest(keys=[ks().GROUPS], args=[5, 10, "x7", "x33"]) == plain[5:15]
