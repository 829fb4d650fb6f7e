"""The `flowretail` command end to end: exit codes, one line per problem, JSON summaries."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from pipelines.cli import main
from pipelines.flowretail.simulator import SimulatorConfig, SimulatorState, build_state, running_simulator


@contextmanager
def simulated_product(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[SimulatorState]:
    """The environment `flowretail` commands read, pointed at a fresh two-tenant simulator and a
    private DAGSTER_HOME under ``tmp_path``; DATABASE_URL is left to the caller."""
    state = build_state(SimulatorConfig(tenants=2, customers=300, groups=5))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    with running_simulator(state) as base_url:
        monkeypatch.setenv("FLOWRETAIL_BASE_URL", base_url)
        monkeypatch.setenv("FLOWRETAIL_TOKEN", state.token)
        monkeypatch.setenv("FLOWRETAIL_TENANT_UIDS", ",".join(state.tenant_uids()))
        monkeypatch.setenv("FLOWRETAIL_RATE_LIMIT", "1000")
        yield state


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str) -> Iterator[tuple[SimulatorState, str]]:
    with simulated_product(monkeypatch, tmp_path) as state:
        monkeypatch.setenv("DATABASE_URL", database_url)
        yield state, database_url


def test_load_then_push_then_nothing_to_push(
    env: tuple[SimulatorState, str], capsys: pytest.CaptureFixture[str]
) -> None:
    state, _database_url = env
    assert main(["load", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [(r["tenant_uid"], r["status"]) for r in summary["loads"]] == [
        ("tenant-1", "succeeded"),
        ("tenant-2", "succeeded"),
    ]
    assert summary["problems"] == []
    assert _warehouse_load_runs() == [
        ("tenant-1", None, "ingest"),
        ("tenant-2", None, "ingest"),
        (None, ("tenant-1", "tenant-2"), "models"),
    ]
    assert main(["push", "--json"]) == 0
    pushed = json.loads(capsys.readouterr().out)["pushes"]
    assert {p["status"] for p in pushed} == {"verified"}
    for p in pushed:
        assert len(state.member_uids(p["tenant_uid"], p["customer_group_uid"])) == p["applied_adds"]
    _assert_push_steps_ran_in_this_process_one_at_a_time()
    state.clear_log()
    assert main(["push", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["pushes"]
    assert [(p["applied_adds"], p["applied_removes"], p["calls"]) for p in again] == [(0, 0, 0)] * len(again)
    assert [r for r in state.request_log if r.method != "GET"] == []


def _warehouse_load_runs() -> list[tuple[str | None, tuple[str, str] | None, str]]:
    """The CLI's warehouse_load runs, oldest first: (partition, partition range, what they built:
    "ingest" with the checks of the loaded rows and their freshness, "models", or something else)."""
    import dagster as dg

    instance = dg.DagsterInstance.get()

    def built(run: dg.DagsterRun) -> str:
        schemas = {key.path[0] for key in run.asset_selection or ()}
        checks = {
            record.dagster_event.event_specific_data.check_name
            for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
            if record.dagster_event is not None
        }
        if schemas == {"flowretail"} and checks == {
            "references_loaded_rows",
            "counts_match_api",
            "true_to_spec",
            "freshness_check",
        }:
            return "ingest"
        return "models" if schemas == {"analytics"} else f"{sorted(schemas)} {sorted(checks)}"

    runs = instance.get_runs(filters=dg.RunsFilter(job_name="warehouse_load"))
    return [
        (
            run.tags.get("dagster/partition"),
            (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"])
            if "dagster/asset_partition_range_start" in run.tags
            else None,
            built(run),
        )
        for run in reversed(runs)
    ]


def test_a_tenant_whose_models_fail_holds_back_only_its_own_push(
    env: tuple[SimulatorState, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The models of both tenants run together; when that run fails, each half runs again, so the
    failing tenant is named and the other tenant's models and pushes go ahead."""
    state, database_url = env
    assert main(["load"]) == 0
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE flowretail.customer_snapshots SET customer_type = 'ALIEN' WHERE customer_uid = "
            "(SELECT min(customer_uid) FROM flowretail.customer_snapshots WHERE tenant_uid = 'tenant-1') "
            "AND tenant_uid = 'tenant-1'"
        )
    capsys.readouterr()
    before = len(_warehouse_load_runs())
    state.clear_log()

    assert main(["run", "--json"]) == 1

    summary = json.loads(capsys.readouterr().out)
    assert summary["problems"] == [
        "models of tenant tenant-1 failed: analytics__stg_customers: 1 blocking asset check failed with "
        "ERROR severity: analytics/stg_customers: accepted_values_stg_customers_customer_type"
    ]
    assert {p["tenant_uid"] for p in summary["pushes"]} == {"tenant-2"}
    assert {p["status"] for p in summary["pushes"]} == {"verified"}
    writes = {r.path.split("/")[3] for r in state.request_log if r.method != "GET"}
    assert writes == {"tenant-2"}
    assert _warehouse_load_runs()[before:] == [
        ("tenant-1", None, "ingest"),
        ("tenant-2", None, "ingest"),
        (None, ("tenant-1", "tenant-2"), "models"),
        ("tenant-1", None, "models"),
        ("tenant-2", None, "models"),
    ]


def _assert_push_steps_ran_in_this_process_one_at_a_time() -> None:
    """The CLI's last segment_push run ran its steps in the CLI's own process (no step process to
    import Dagster), one after another, and is tagged so that each step takes the whole client budget;
    the job itself keeps its multiprocess executor for Dagster's daemon and UI."""
    import dagster as dg

    from pipelines.definitions import build_defs
    from pipelines.reverse_etl.assets import STEPS_IN_PROCESS_TAG

    instance = dg.DagsterInstance.get()
    run = instance.get_runs(filters=dg.RunsFilter(job_name="segment_push"), limit=1)[0]
    assert run.tags[STEPS_IN_PROCESS_TAG] == "true"
    spans: dict[str, list[float]] = {}
    pids = set()
    for record in instance.all_logs(run.run_id):
        event = record.dagster_event
        if event and record.step_key and event.event_type_value in ("STEP_START", "STEP_SUCCESS"):
            spans.setdefault(record.step_key, []).append(record.timestamp)
            pids.add(event.pid)
    intervals = sorted((min(t), max(t)) for t in spans.values())
    assert len(intervals) == 7  # plan and push of three segments, and the orphan listing
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(intervals))
    assert pids == {os.getpid()}
    assert build_defs().resolve_job_def("segment_push").executor_def.name == "multiprocess"


def test_dry_run_and_guards_exit_non_zero_with_one_line_each(
    env: tuple[SimulatorState, str], capsys: pytest.CaptureFixture[str]
) -> None:
    state, database_url = env
    assert main(["run", "--tenant", "tenant-1"]) == 0
    capsys.readouterr()
    group = "segment-newsletter-subscribers"
    members = state.member_uids("tenant-1", group)
    outsiders = [u for u in state.customer_uids("tenant-1") if u not in members][: len(members)]
    state.add_members("tenant-1", group, outsiders)
    state.clear_log()
    assert main(["push", "--tenant", "tenant-1", "--dry-run", "--segment", "newsletter_subscribers"]) == 1
    captured = capsys.readouterr()
    assert [r for r in state.request_log if r.method != "GET"] == []
    assert captured.err.strip().splitlines() == [
        f"error: push of newsletter_subscribers for tenant tenant-1 blocked: max_remove_fraction: {len(outsiders)} "
        f"removals of {len(members) + len(outsiders)} live members exceed max_remove_fraction 0.2 "
        f"({0.2 * (len(members) + len(outsiders)):g} allowed) (rerun with --allow-large-removal to push anyway)"
    ]
    assert main(["push", "--tenant", "tenant-1", "--segment", "newsletter_subscribers"]) == 1
    assert [r for r in state.request_log if r.method != "GET"] == []
    assert set(state.member_uids("tenant-1", group)) == set(members) | set(outsiders)
    capsys.readouterr()
    assert main(["push", "--tenant", "tenant-1", "--segment", "newsletter_subscribers", "--allow-large-removal"]) == 0
    assert state.member_uids("tenant-1", group) == members
    with psycopg.connect(database_url) as conn:
        statuses = [
            r[0]
            for r in conn.execute(
                "SELECT status FROM flowretail.segment_push_runs WHERE segment = 'newsletter_subscribers' "
                "AND tenant_uid = 'tenant-1' ORDER BY planned_at"
            ).fetchall()
        ]
    assert statuses == ["verified", "blocked", "blocked", "verified"]


def test_unknown_tenant_and_bad_config(
    env: tuple[SimulatorState, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["load", "--tenant", "nope"]) == 1
    assert "unknown tenant(s) nope; configured: tenant-1, tenant-2" in capsys.readouterr().err
    monkeypatch.setenv("FLOWRETAIL_BASE_URL", "http://example.com/v2")
    assert main(["load"]) == 2
    assert capsys.readouterr().err.strip() == (
        "configuration error: FLOWRETAIL_BASE_URL: must use https unless the host is loopback, "
        "got 'http://example.com/v2'"
    )


def test_a_revoked_token_fails_the_load_with_a_clear_line(
    env: tuple[SimulatorState, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWRETAIL_TOKEN", "wrong-token-xyz")
    assert main(["load", "--tenant", "tenant-1"]) == 1
    err = capsys.readouterr().err
    assert "load of tenant tenant-1 failed" in err and "check FLOWRETAIL_TOKEN" in err
    assert "wrong-token-xyz" not in err
