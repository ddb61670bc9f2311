"""A real sandbox server (uvicorn on loopback) shared by the HTTP tests, reset before each."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from bridge.portals import RentixAdapter, TravtusAdapter
from tests.support.sandbox import Sandbox
from tests.support.servers import serve_app

API_KEY = CLIENT_ID = CLIENT_SECRET = "sandbox"


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    # Imported here so the mapping tests run even while the sandbox is being written.
    from bridge.sandbox.app import SandboxSettings, create_app

    app = create_app(SandboxSettings(publish_delay_s=0))
    with serve_app(app) as url:
        yield url


@pytest.fixture
async def sandbox(sandbox_url: str) -> AsyncIterator[Sandbox]:
    box = Sandbox(sandbox_url)
    await box.reset()
    yield box
    await box.aclose()


@pytest.fixture
async def rentix(sandbox: Sandbox) -> AsyncIterator[RentixAdapter]:
    adapter = RentixAdapter("rentix", sandbox.rentix_url, API_KEY)
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def travtus(sandbox: Sandbox) -> AsyncIterator[TravtusAdapter]:
    adapter = TravtusAdapter("travtus", sandbox.travtus_url, sandbox.token_url,
                             CLIENT_ID, CLIENT_SECRET)
    yield adapter
    await adapter.aclose()
