"""External-ID linking end to end: sandbox and web on real uvicorn, `bridge worker` processes,
`bridge link` commands; the sandbox's listings and journal are the witness.

The Rentix target points at a sandbox of our own, so it can be configured with
``adopt = true``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.sandbox.app import SandboxSettings
from bridge.sandbox.app import create_app as create_sandbox
from tests.support import crm
from tests.support.servers import serve_app
from tests.support.stack import Stack, running_stack

# The tier of every test here (tests/support/tiers.py).
pytestmark = pytest.mark.processes

COLUMNA = {**crm.listing("x")["address"], "lat": None, "lng": None}




def crm_listing(ref: str, line1: str, line2: str, **fields: Any) -> dict[str, Any]:
    return crm.listing(ref, address={**COLUMNA, "line1": line1, "line2": line2}, **fields)


class Portal:
    """Our Rentix sandbox, seen through its admin API."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def seed(self, *forms: dict[str, Any]) -> list[int]:
        response = self.client.post("/_sandbox/rentix/listings", json={"listings": list(forms)})
        assert response.status_code == 200, response.text
        return list(response.json()["ids"])

    def listings(self) -> dict[int, dict[str, Any]]:
        items = self.client.get("/_sandbox/rentix/listings").json()["items"]
        return {item["id"]: item for item in items}

    def puts(self, ref: str | None = None) -> list[dict[str, Any]]:
        journal = self.client.get("/_sandbox/journal", params={"portal": "rentix"}).json()
        return [r for r in journal["requests"] if r["method"] == "PUT"
                and (ref is None or (r["body"] or {}).get("externalId") == ref)]

    def price(self, pid: int) -> Any:
        return self.listings()[pid]["formData"].get("announcementValue")


@contextlib.contextmanager
def stack_with_portal(redis_url: str, tmp_path: Path, adopt: bool) -> Iterator[tuple[Stack,
                                                                                    Portal]]:
    with serve_app(create_sandbox(SandboxSettings())) as url, \
            httpx.Client(base_url=url, timeout=10) as client:
        target = {"name": "rentix", "kind": "rentix", "base_url": f"{url}/rentix/api/v1",
                  "api_key": "sandbox", "adopt": adopt}
        with running_stack(redis_url, tmp_path, targets=[target]) as stack:
            yield stack, Portal(client)


def link_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "link", *args, "--config",
                             str(stack.config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


# After linking, the next change updates the hand-made listing in place ----------------------

def test_after_linking_the_next_crm_change_updates_the_hand_made_listing_in_place(
    redis_url: str, tmp_path: Path
) -> None:
    with stack_with_portal(redis_url, tmp_path, adopt=False) as (stack, portal):
        [pid] = portal.seed(crm.hand_made("Chișinău, str. Columna 81, ap. 12"))
        linked = link_cli(stack, "add", "--target", "rentix", str(pid), "apt-1")
        assert linked.stdout.strip() == f"linked rentix listing #{pid} to apt-1"

        stack.post(crm.upsert("office", "apt-1", 1, price={"amount": 777, "currency": "EUR",
                                                           "period": "monthly"}))
        stack.wait(lambda: portal.price(pid) == 777, what="the hand-made listing updated")
        [put] = portal.puts("apt-1")
        assert put["status"] == 200
        listings = portal.listings()
        assert list(listings) == [pid], "exactly one listing on the portal for apt-1"
        assert listings[pid]["externalId"] == "apt-1"


# Adoption: no creates until the hand-made listings are linked; never a duplicate ------------

def test_adoption_holds_creates_until_scan_apply_links_and_ends_it(
    redis_url: str, tmp_path: Path
) -> None:
    with stack_with_portal(redis_url, tmp_path, adopt=True) as (stack, portal):
        a, b, c, d = portal.seed(
            crm.hand_made("Chișinău, strada Columna 81, ap. 12"),
            crm.hand_made("Chisinau, str. Columna 81, ap.14"),
            crm.hand_made("Chișinău, str. Ismail 10, ap. 3", externalId="apt-3"),  # linked by hand
            crm.hand_made("Chișinău, str. Tighina 5, ap. 2"),  # on the portal only
        )
        price = {"amount": 510, "currency": "EUR", "period": "monthly"}
        stack.post(crm.event("group.snapshot", "office", listings=[
            crm_listing("apt-1", "str. Columna 81", "ap. 12", price=price),
            crm_listing("apt-2", "str. Columna 81", "ap. 14", price=price),
            crm_listing("apt-3", "str. Ismail 10", "ap. 3", price=price),
            crm_listing("apt-4", "str. Tighina 20", "ap. 5"),  # new: a create
        ]))

        # The ref Rentix already holds is updated; the others are held, nothing is created.
        stack.wait(lambda: portal.price(c) == 510, what="the linked listing updated")
        status = stack.wait(lambda: _held(stack, 3), what="three creates held")
        assert [h["ref"] for h in status["held_creates"]] == ["apt-1", "apt-2", "apt-4"]
        assert status["active"] is True
        assert [p["body"]["externalId"] for p in portal.puts()] == ["apt-3"]
        assert len(portal.listings()) == 4

        scan = link_cli(stack, "scan", "--target", "rentix", "--apply", "--out",
                        str(tmp_path / "reports"))
        assert f"#{a} -> apt-1" in scan.stdout and f"#{b} -> apt-2" in scan.stdout
        assert "Linked now: 2" in scan.stdout
        assert "Adoption: ended; held creates flow now (1 group(s) due)" in scan.stdout

        # Held creates flow: apt-1 and apt-2 update the hand-made listings, apt-4 is created.
        stack.wait(lambda: portal.price(a) == 510 and portal.price(b) == 510
                   and len(portal.listings()) == 5, what="held writes delivered")
        later = crm.at(60)  # after the snapshot
        stack.post(crm.event("listing.updated", "office", later, listing=crm_listing(
            "apt-1", "str. Columna 81", "ap. 12", price={**price, "amount": 520})))
        stack.wait(lambda: portal.price(a) == 520, what="the next change in place")

        listings = portal.listings()
        by_ref = {item["externalId"]: pid for pid, item in listings.items()}
        assert by_ref == {"apt-1": a, "apt-2": b, "apt-3": c, None: d,
                          "apt-4": max(listings)}
        assert len(listings) == 5, "no duplicate was ever created"
        assert all(p["status"] == 200 for p in portal.puts())
        after = link_cli(stack, "adopt", "status", "--target", "rentix")
        assert "adoption ended" in after.stdout and "0 create(s) held" in after.stdout


def _held(stack: Stack, count: int) -> dict[str, Any] | None:
    import json

    status = json.loads(link_cli(stack, "adopt", "status", "--json").stdout)
    return status if len(status["held_creates"]) == count else None
