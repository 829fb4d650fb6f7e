"""Fixtures for the simulator tests: a small fresh state per test and an in-process API on it."""

from __future__ import annotations

import pytest

from pipelines.flowretail.simulator import SimulatorState, build_state
from tests.simulator.helpers import Api, small_config


@pytest.fixture
def state() -> SimulatorState:
    return build_state(small_config())


@pytest.fixture
def api(state: SimulatorState) -> Api:
    return Api(state)
