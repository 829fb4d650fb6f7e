"""A spec-faithful Flow Retail API v2 simulator (CustomerGroup operations), served over HTTP or in-process.

It exists so the client, the warehouse load and the push-back can be tested against large,
hostile, deterministic data and every failure mode of the real API without a real tenant.
It never imports dagster: the project CLI and the tests use it as a plain library.
"""

from __future__ import annotations

from pipelines.flowretail.simulator.app import SimulatorApp, create_app
from pipelines.flowretail.simulator.config import FaultConfig, SimulatorConfig
from pipelines.flowretail.simulator.faults import OUTCOMES, SimulatedConnectionDrop
from pipelines.flowretail.simulator.server import running_simulator, serve_forever
from pipelines.flowretail.simulator.state import (
    DEFAULT_TOKEN,
    PageRequest,
    RequestRecord,
    SimulatorError,
    SimulatorState,
    build_state,
)

__all__ = [
    "DEFAULT_TOKEN",
    "OUTCOMES",
    "FaultConfig",
    "PageRequest",
    "RequestRecord",
    "SimulatedConnectionDrop",
    "SimulatorApp",
    "SimulatorConfig",
    "SimulatorError",
    "SimulatorState",
    "build_state",
    "create_app",
    "running_simulator",
    "serve_forever",
]
