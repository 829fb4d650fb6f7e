"""Two `flowretail load` commands started at the same moment on one machine, with one token and one
fresh DAGSTER_HOME (SQLite storage), both succeed: the instance's first use is serialised by a file
lock, and both draw from the token's one budget in the warehouse, so the simulator enforcing that
budget answers no 429. (One test for what tests/test_two_commands.py and this file used to check
separately, each starting two whole CLI loads.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg

from pipelines.flowretail.simulator import FaultConfig, SimulatorConfig, build_state, running_simulator
from pipelines.warehouse.api_budget import token_key
from tests.ui.webserver import REPO, kill_process_group, prepare_dagster_home, product_env

RATE = 20
"""FLOWRETAIL_RATE_LIMIT of both commands and the rate the simulator enforces: the token's budget."""


def test_two_loads_at_once_on_one_fresh_dagster_home_both_succeed_within_the_token_budget(
    database_url: str, tmp_path: Path
) -> None:
    state = build_state(SimulatorConfig(tenants=2, customers=200, groups=4), FaultConfig(rate_limit_rps=RATE))
    home = prepare_dagster_home(tmp_path / "dagster_home")
    assert sorted(p.name for p in home.iterdir()) == ["dagster.yaml"]
    with running_simulator(state) as base_url:
        env = product_env(
            base_url=base_url,
            token=state.token,
            tenant_uids=state.tenant_uids(),
            database_url=database_url,
            dagster_home=home,
        )
        env.update(FLOWRETAIL_RATE_LIMIT=str(RATE), FLOWRETAIL_PAGE_SIZE="10")
        procs = {
            uid: subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", "load", "--tenant", uid, "--json"],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            for uid in state.tenant_uids()
        }
        outputs = {}
        for uid, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=240)
            finally:
                kill_process_group(proc, grace=5.0)
            assert proc.returncode == 0, f"{uid}: exit {proc.returncode}\n{err.decode()[-3000:]}"
            outputs[uid] = json.loads(out)
        statuses = [r.status for r in state.request_log]
    for uid, summary in outputs.items():
        assert [(load["tenant_uid"], load["status"]) for load in summary["loads"]] == [(uid, "succeeded")]
        assert summary["problems"] == []
    # Both pages ran against one budget: no 429 over more than two seconds' worth of requests.
    assert statuses.count(429) == 0 and len(statuses) > 2 * RATE
    with psycopg.connect(database_url) as conn:
        loads = conn.execute("SELECT tenant_uid, status, rate_limited FROM flowretail.load_runs ORDER BY 1").fetchall()
        budgets = [r[0] for r in conn.execute("SELECT token_key FROM flowretail.api_budgets")]
    assert loads == [(tenant, "succeeded", 0) for tenant in state.tenant_uids()]
    assert budgets == [token_key(state.token)]
