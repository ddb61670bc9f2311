"""Hypothesis profiles for the model-based test (tests/model/test_state_machine.py).

``ci`` (the default here): few, derandomized examples, so CI is reproducible and quick.
``long``: hundreds of examples with fresh randomness; choose it with
``--hypothesis-profile=long`` (Hypothesis's own pytest option).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

_SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]

settings.register_profile(
    "ci", max_examples=30, stateful_step_count=20, deadline=None, derandomize=True,
    database=None, print_blob=True, suppress_health_check=_SLOW_IS_FINE)
settings.register_profile(
    "long", max_examples=400, stateful_step_count=40, deadline=None, database=None,
    print_blob=True, suppress_health_check=_SLOW_IS_FINE)


@pytest.fixture
def model_profile(request: pytest.FixtureRequest) -> settings:
    """The profile named by --hypothesis-profile, else ``ci`` (without touching the
    session's default profile, which other tests may rely on)."""
    name = request.config.getoption("hypothesis_profile", default=None) or "ci"
    return settings.get_profile(name)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long profile runs for many minutes: its own timeout, past the module's."""
    if config.getoption("hypothesis_profile", default=None) == "long":
        for item in items:
            item.add_marker(pytest.mark.timeout(3600))
