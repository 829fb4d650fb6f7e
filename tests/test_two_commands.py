"""Two ``flowretail load`` commands started at once, one token, one fresh DAGSTER_HOME: both succeed
and, drawing from the token's one budget, the simulator enforcing that budget answers no 429."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from pipelines.flowretail.simulator import FaultConfig, SimulatorConfig, build_state, running_simulator

ROOT = Path(__file__).resolve().parents[1]
RATE = 20


@pytest.mark.slow  # two whole CLI runs (load and models): minutes on a busy 2-core machine
def test_two_load_commands_at_once_share_the_token_budget(database_url: str, tmp_path: Path) -> None:
    state = build_state(SimulatorConfig(tenants=2, customers=120, groups=4), FaultConfig(rate_limit_rps=RATE))
    with running_simulator(state) as base_url:
        env = {
            **os.environ,
            "FLOWRETAIL_BASE_URL": base_url,
            "FLOWRETAIL_TOKEN": state.token,
            "FLOWRETAIL_TENANT_UIDS": ",".join(state.tenant_uids()),
            "FLOWRETAIL_RATE_LIMIT": str(RATE),
            "FLOWRETAIL_PAGE_SIZE": "10",
            "DATABASE_URL": database_url,
            "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        }
        commands = [
            subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", "load", "--tenant", tenant],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for tenant in state.tenant_uids()
        ]
        outputs = [command.communicate(timeout=240) for command in commands]
        statuses = [r.status for r in state.request_log]
    assert [c.returncode for c in commands] == [0, 0], [err for _, err in outputs]
    assert statuses.count(429) == 0 and len(statuses) > 2 * RATE
    with psycopg.connect(database_url) as conn:
        loads = conn.execute("SELECT tenant_uid, status, rate_limited FROM flowretail.load_runs ORDER BY 1").fetchall()
    assert loads == [(tenant, "succeeded", 0) for tenant in state.tenant_uids()]
