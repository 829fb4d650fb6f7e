"""Two `flowretail` commands started at the same moment on one machine, sharing one fresh DAGSTER_HOME
(SQLite storage), both succeed: the instance's first use is serialised by a file lock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipelines.flowretail.simulator import SimulatorConfig, build_state, running_simulator
from tests.ui.webserver import REPO, kill_process_group, prepare_dagster_home, product_env


def test_two_loads_started_at_once_on_one_fresh_dagster_home_both_succeed(database_url: str, tmp_path: Path) -> None:
    state = build_state(SimulatorConfig(tenants=2, customers=200, groups=4))
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
    for uid, summary in outputs.items():
        assert [(load["tenant_uid"], load["status"]) for load in summary["loads"]] == [(uid, "succeeded")]
        assert summary["problems"] == []
