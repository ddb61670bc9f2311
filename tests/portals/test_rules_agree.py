"""Local validation and the sandbox, written independently from the same documents, must
agree: every payload a local rule rejects, the sandbox rejects too, on the same field (Rentix)
or with the same error type (Travtus); and the valid full listing passes both."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.portals import Outcome, RentixAdapter, TravtusAdapter
from tests.portals import test_rentix_mapping as rentix_cases
from tests.portals import test_travtus_mapping as travtus_cases


def _cases(test: Any) -> list[tuple[Any, ...]]:
    [mark] = [m for m in test.pytestmark if m.name == "parametrize"]
    return list(mark.args[1])


@pytest.mark.parametrize("case", _cases(rentix_cases.test_rentix_rules),
                         ids=lambda c: f"{c[1]}:{c[2][:30]}")
async def test_sandbox_rejects_what_rentix_rules_reject(case: tuple[Any, ...],
                                                        rentix: RentixAdapter) -> None:
    payload, field, _ = case
    local = rentix.validate(payload)
    remote = await rentix.upsert(payload, check=False)
    assert remote.outcome is Outcome.DATA_INVALID, remote
    messages = remote.body["message"] if isinstance(remote.body["message"], list) else []
    # the sandbox may name a sub-field (`propertyCoordinates.lat`, `files.0`)
    fields = {m.split(" ", 1)[0].split(".")[0] for m in messages}
    assert field in fields, (local, remote)


@pytest.mark.parametrize("case", _cases(travtus_cases.test_travtus_rules),
                         ids=lambda c: f"{c[1]}:{c[2]}")
async def test_sandbox_rejects_what_travtus_rules_reject(case: tuple[Any, ...],
                                                         travtus: TravtusAdapter) -> None:
    payload, error_type, _ = case
    remote = await travtus.sync("north", [payload], check=False)
    assert (remote.outcome, remote.error_type) == (Outcome.DATA_INVALID, error_type), remote


async def test_both_accept_the_full_listing(rentix: RentixAdapter,
                                            travtus: TravtusAdapter) -> None:
    assert (await rentix.upsert(rentix_cases.VALID, check=False)).ok
    assert (await travtus.sync("north", [travtus_cases.VALID], check=False)).ok
