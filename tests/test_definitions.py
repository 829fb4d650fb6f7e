"""The whole code location loads, and the jobs run end to end against the simulator and Postgres."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import psycopg
import pytest

from pipelines.flowretail.simulator import FaultConfig, SimulatorConfig, SimulatorState, build_state, running_simulator
from tests.warehouse.test_spec_deviations import COUNTS


def test_definitions_load_with_every_asset_job_schedule_and_check() -> None:
    from pipelines.definitions import build_defs

    defs = build_defs()
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {
        "flowretail/customer_groups",
        "flowretail/customer_group_memberships",
        "flowretail/customer_group_membership_history",
        "flowretail/customer_snapshots",
        "flowretail/load_runs",
        "analytics/stg_customers",
        "analytics/newsletter_subscribers",
        "analytics/segment_membership",
        "flowretail_push_plan/newsletter_subscribers",
        "flowretail_push/newsletter_subscribers",
    } <= keys
    assert defs.resolve_job_def("warehouse_load") is not None
    assert defs.resolve_job_def("segment_push") is not None
    assert defs.resolve_schedule_def("warehouse_load_daily").cron_schedule == "0 3 * * *"
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, f"{key.to_user_string()} has no description"
        assert node.owners, f"{key.to_user_string()} has no owners"
    upstream = graph.get(dg.AssetKey(["analytics", "newsletter_subscribers"])).parent_keys
    assert upstream, "segments must depend on their staging models"


@pytest.fixture
def simulator(monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[tuple[SimulatorState, str]]:
    state = build_state(SimulatorConfig(tenants=2, customers=300, groups=6))
    with running_simulator(state) as base_url:
        monkeypatch.setenv("FLOWRETAIL_BASE_URL", base_url)
        monkeypatch.setenv("FLOWRETAIL_TOKEN", state.token)
        monkeypatch.setenv("FLOWRETAIL_TENANT_UIDS", ",".join(state.tenant_uids()))
        monkeypatch.setenv("DATABASE_URL", database_url)
        yield state, database_url


def _resources(base_url: str, token: str, database_url: str) -> dict[str, Any]:
    from pipelines.resources import FlowRetailResource, WarehouseResource

    return {
        "flowretail": FlowRetailResource(base_url=base_url, token=token, rate_limit=1000),
        "warehouse": WarehouseResource(database_url=database_url),
    }


def test_materialize_load_models_and_push_for_one_tenant(simulator: tuple[SimulatorState, str]) -> None:
    from pipelines.definitions import build_defs

    defs = build_defs()
    state, database_url = simulator
    tenant = state.tenant_uids()[0]
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("tenants", [tenant])
    load = defs.resolve_job_def("warehouse_load").execute_in_process(partition_key=tenant, instance=instance)
    assert load.success
    checks = {
        e.event_specific_data.check_name: e.event_specific_data
        for e in load.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    # The simulator's five customers that break the spec are loaded; the non-blocking check shows them.
    true_to_spec = checks.pop("true_to_spec")
    assert checks and all(c.passed for c in checks.values())
    assert (true_to_spec.passed, true_to_spec.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert true_to_spec.metadata["by_field"].value == COUNTS
    assert true_to_spec.metadata["deviating_values"].value == 12
    push = defs.resolve_job_def("segment_push").execute_in_process(partition_key=tenant, instance=instance)
    assert push.success
    materialized = [e for r in (load, push) for e in r.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
    assert len({e.asset_key for e in materialized}) == len(defs.resolve_asset_graph().get_all_asset_keys())
    for event in materialized:
        metadata = event.event_specific_data.materialization.metadata
        assert metadata["dagster/column_schema"].value.columns, event.asset_key.to_user_string()
    with psycopg.connect(database_url) as conn:
        segments = conn.execute(
            "SELECT segment, target_group_uid, array_agg(customer_uid ORDER BY customer_uid) "
            "FROM analytics.segment_membership WHERE tenant_uid = %s GROUP BY 1, 2",
            (tenant,),
        ).fetchall()
        statuses = conn.execute(
            "SELECT segment, status FROM flowretail.segment_push_runs WHERE tenant_uid = %s", (tenant,)
        ).fetchall()
    assert segments
    for segment, group_uid, members in segments:
        assert sorted(state.member_uids(tenant, group_uid)) == members, segment
    assert {status for _, status in statuses} == {"verified"}


def test_a_failing_data_test_fails_its_asset_check_and_blocks_downstream(simulator: tuple[SimulatorState, str]) -> None:
    from pipelines.definitions import build_defs

    defs = build_defs()
    state, database_url = simulator
    tenant = state.tenant_uids()[0]
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("tenants", [tenant])
    assert defs.resolve_job_def("warehouse_load").execute_in_process(partition_key=tenant, instance=instance).success
    with psycopg.connect(database_url) as conn:
        uid = conn.execute(
            "SELECT customer_uid FROM flowretail.customer_snapshots WHERE valid_to IS NULL "
            "ORDER BY customer_uid LIMIT 1"
        ).fetchone()[0]
        conn.execute("UPDATE flowretail.customer_snapshots SET customer_type = 'ALIEN' WHERE customer_uid = %s", (uid,))
    result = defs.resolve_job_def("warehouse_load").execute_in_process(
        partition_key=tenant, instance=instance, raise_on_error=False
    )
    assert not result.success
    evaluations = {
        e.event_specific_data.check_name: e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    failed = evaluations["accepted_values_stg_customers_customer_type"]
    assert not failed.passed
    assert failed.metadata["failing_rows"].value == 1
    built = {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert "analytics/stg_customers" in built
    assert "analytics/newsletter_subscribers" not in built


def test_the_push_follows_each_successful_load_of_the_same_tenant() -> None:
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

    from pipelines.reverse_etl.assets import push_after_warehouse_load

    instance = dg.DagsterInstance.ephemeral()

    finished = DagsterRun(
        job_name="warehouse_load",
        run_id="r-123",
        status=DagsterRunStatus.SUCCESS,
        tags={"dagster/partition": "tenant-2"},
    )
    event = dg.DagsterEvent(event_type_value="PIPELINE_SUCCESS", job_name="warehouse_load")
    context = dg.build_run_status_sensor_context(
        sensor_name="push_after_warehouse_load", dagster_instance=instance, dagster_run=finished, dagster_event=event
    )
    requests = list(push_after_warehouse_load(context))
    assert [(r.partition_key, r.run_key) for r in requests] == [("tenant-2", "push-after-r-123")]


def test_no_push_follows_a_load_that_built_no_segment() -> None:
    """The CLI's loads are warehouse_load runs of the ingest assets only; pushing after one would push
    the segments as they were before it. The models run after them (and the CLI pushes itself)."""
    from pipelines.reverse_etl.assets import built_segments
    from pipelines.transform.assets import model_key

    assert built_segments(None)
    assert built_segments({model_key("newsletter_subscribers"), dg.AssetKey(["flowretail", "customer_groups"])})
    assert not built_segments({dg.AssetKey(["flowretail", "customer_groups"]), model_key("stg_customers")})


def test_a_run_over_several_tenants_covers_consecutive_partitions() -> None:
    from dagster._core.storage import tags

    from pipelines.partitions import (
        PARTITION_RANGE_END_TAG,
        PARTITION_RANGE_START_TAG,
        consecutive_tenants,
        partition_range_tags,
    )

    assert (PARTITION_RANGE_START_TAG, PARTITION_RANGE_END_TAG) == (
        tags.ASSET_PARTITION_RANGE_START_TAG,
        tags.ASSET_PARTITION_RANGE_END_TAG,
    )
    registered = ["a", "b", "c", "d", "e"]
    assert consecutive_tenants(registered, set(registered)) == [registered]
    assert consecutive_tenants(registered, {"a", "b", "d", "e"}) == [["a", "b"], ["d", "e"]]
    assert consecutive_tenants(registered, {"c", "x"}) == [["c"]]
    assert consecutive_tenants(registered, set()) == []
    assert partition_range_tags(["b", "c", "d"]) == {PARTITION_RANGE_START_TAG: "b", PARTITION_RANGE_END_TAG: "d"}


def test_a_run_over_two_tenants_builds_both_slices_and_materializes_each_partition(
    simulator: tuple[SimulatorState, str],
) -> None:
    """The CLI's models after its loads: one warehouse_load run of the model assets over a range of
    tenant partitions; each partition is materialized, with the run's row count (not the partition's)."""
    from pipelines.definitions import build_defs
    from pipelines.partitions import partition_range_tags
    from pipelines.transform.assets import TENANT_GROUP

    defs = build_defs()
    state, database_url = simulator
    tenants = state.tenant_uids()[:2]
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("tenants", tenants)
    job = defs.resolve_job_def("warehouse_load")
    for tenant in tenants:
        ingest = dg.AssetSelection.groups("ingest").resolve(defs.resolve_asset_graph())
        assert job.execute_in_process(partition_key=tenant, instance=instance, asset_selection=list(ingest)).success
    models = list(dg.AssetSelection.groups(TENANT_GROUP).resolve(defs.resolve_asset_graph()))

    result = job.execute_in_process(instance=instance, asset_selection=models, tags=partition_range_tags(tenants))

    assert result.success
    counted = {
        e.event_specific_data.materialization.partition: {
            name: value.value for name, value in e.event_specific_data.materialization.metadata.items() if "row" in name
        }
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION" and e.asset_key == dg.AssetKey(["analytics", "stg_customers"])
    }
    with psycopg.connect(database_url) as conn:
        in_table = dict(conn.execute("SELECT tenant_uid, count(*) FROM analytics.stg_customers GROUP BY 1").fetchall())
    assert set(in_table) == set(tenants) and all(in_table.values())
    assert counted == {tenant: {"rows_of_run": sum(in_table.values())} for tenant in tenants}
    failed = [
        e
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.event_specific_data.passed
    ]
    assert failed == []


def _reshuffle(state: SimulatorState, tenant: str, round_number: int) -> None:
    """Change a tenant's groups between loads: one group deleted, one created, members moved."""
    groups = [group["customerGroupUid"] for group in state.groups(tenant)]
    customers = state.customer_uids(tenant)
    state.delete_group(tenant, groups[0])
    created = state.create_group(tenant, f"round {round_number}")["customerGroupUid"]
    state.add_members(tenant, created, customers[round_number::7])
    state.remove_members(tenant, groups[-1], state.member_uids(tenant, groups[-1])[::3])


def _load_in_thread(job: Any, tenant: str, outcomes: dict[str, Any]) -> None:
    """One tenant's run with an instance of its own (as a process of its own would have)."""
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("tenants", [tenant])
        outcomes[tenant] = job.execute_in_process(partition_key=tenant, instance=instance, raise_on_error=False)


@pytest.mark.slow
def test_two_tenants_loading_at_once_never_fail_each_others_checks(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    """The schedule starts every tenant's run at once. Each run builds and tests its own tenant's
    slices, so another tenant's run, a step ahead or behind (the server's rate limit spreads them
    unevenly), can never make a check fail."""
    import threading

    from pipelines.definitions import build_defs

    defs = build_defs()
    state = build_state(
        SimulatorConfig(tenants=2, customers=400, groups=8),
        FaultConfig(rate_limit_rps=25, latency_ms=2, latency_jitter_ms=15, seed=7),
    )
    job = defs.resolve_job_def("warehouse_load")
    with running_simulator(state) as base_url:
        monkeypatch.setenv("FLOWRETAIL_BASE_URL", base_url)
        monkeypatch.setenv("FLOWRETAIL_TOKEN", state.token)
        monkeypatch.setenv("DATABASE_URL", database_url)
        for round_number in range(5):
            for tenant in state.tenant_uids():
                _reshuffle(state, tenant, round_number)
            outcomes: dict[str, Any] = {}
            threads = [
                threading.Thread(target=_load_in_thread, args=(job, tenant, outcomes)) for tenant in state.tenant_uids()
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=300)
            assert set(outcomes) == set(state.tenant_uids())
            for tenant, result in outcomes.items():
                failed = [
                    e.event_specific_data.check_name
                    for e in result.all_events
                    if e.event_type_value == "ASSET_CHECK_EVALUATION"
                    and not e.event_specific_data.passed
                    and e.event_specific_data.severity == dg.AssetCheckSeverity.ERROR
                ]
                assert (round_number, tenant, result.success, failed) == (round_number, tenant, True, [])
        with psycopg.connect(database_url) as conn:
            for tenant in state.tenant_uids():
                built = conn.execute(
                    "SELECT customer_group_uid, member_count FROM analytics.dim_customer_groups WHERE tenant_uid = %s",
                    (tenant,),
                ).fetchall()
                live = {
                    g["customerGroupUid"]: len(state.member_uids(tenant, g["customerGroupUid"]))
                    for g in state.groups(tenant)
                }
                assert dict(built) == live


def test_per_tenant_models_are_partitioned_like_the_loads_and_pushes() -> None:
    from pipelines.definitions import build_defs
    from pipelines.partitions import tenant_partitions

    defs = build_defs()
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert graph.get(key).partitions_def == tenant_partitions, key.to_user_string()
    job = defs.resolve_job_def("warehouse_load")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} >= {
        "flowretail/customer_snapshots",
        "analytics/stg_customers",
        "analytics/newsletter_subscribers",
    }
    plan = graph.get(dg.AssetKey(["flowretail_push_plan", "newsletter_subscribers"]))
    assert dg.AssetKey(["analytics", "newsletter_subscribers"]) in plan.parent_keys
    # No shipped model spans tenants, so there is nothing to build once per tick.
    assert [job.name for job in defs.jobs or []] == ["warehouse_load", "segment_push", "retire_group"]


def test_the_schedule_tags_each_tenant_run_with_its_tick() -> None:
    from pipelines.ingest.jobs import TICK_TAG, warehouse_load_schedule
    from pipelines.partitions import TOKEN_TAG
    from pipelines.settings import load_settings

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenants", ["tenant-1", "tenant-2"])
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2026, 11, 30, 3, tzinfo=UTC)
        )
        requests = list(warehouse_load_schedule(load_settings())(context))

    assert [(r.partition_key, r.tags[TICK_TAG], r.tags[TOKEN_TAG]) for r in requests] == [
        ("tenant-1", "2026-11-30T03:00:00+00:00", "default"),
        ("tenant-2", "2026-11-30T03:00:00+00:00", "default"),
    ]


def test_a_tenant_with_its_own_token_is_queued_under_its_token_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.ingest.jobs import warehouse_load_schedule
    from pipelines.partitions import TOKEN_TAG
    from pipelines.settings import load_settings

    monkeypatch.setenv("FLOWRETAIL_TENANT_TOKENS", "tenant-2=FLOWRETAIL_TOKEN_SOUTH")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenants", ["tenant-1", "tenant-2"])
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2026, 11, 30, 3, tzinfo=UTC)
        )
        requests = list(warehouse_load_schedule(load_settings())(context))

    assert [(r.partition_key, r.tags[TOKEN_TAG]) for r in requests] == [
        ("tenant-1", "default"),
        ("tenant-2", "FLOWRETAIL_TOKEN_SOUTH"),
    ]


def test_models_spanning_tenants_wait_for_every_tenant_run_of_their_tick() -> None:
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

    from pipelines.ingest.jobs import TICK_TAG, finished_ticks

    def run(tick: str, tenant: str, status: DagsterRunStatus) -> DagsterRun:
        return DagsterRun(job_name="warehouse_load", status=status, tags={TICK_TAG: tick, "dagster/partition": tenant})

    runs = [
        run("a", "t1", DagsterRunStatus.SUCCESS),
        run("a", "t2", DagsterRunStatus.FAILURE),
        run("b", "t1", DagsterRunStatus.SUCCESS),
        run("b", "t2", DagsterRunStatus.STARTED),
        run("c", "t1", DagsterRunStatus.SUCCESS),
    ]

    assert finished_ticks(runs, ["t1", "t2"]) == ["a"]


def test_a_model_spanning_tenants_is_an_unpartitioned_asset(tmp_path: Any) -> None:
    from pipelines.sql_models import load_project
    from pipelines.transform.assets import ALL_TENANTS_GROUP, model_definitions

    (tmp_path / "marts").mkdir()
    (tmp_path / "marts" / "mine.sql").write_text(
        "{{ config(materialized='incremental') }} select 't' as tenant_uid, 1 as n"
    )
    (tmp_path / "marts" / "everyone.sql").write_text(
        "{{ config(materialized='table', tenant_scope='all') }} select sum(n) as n from {{ ref('mine') }}"
    )
    assets, _ = model_definitions(load_project(tmp_path))

    specs = {spec.key.path[-1]: spec for asset in assets for spec in asset.specs}
    assert specs["mine"].partitions_def is not None
    assert (specs["everyone"].partitions_def, specs["everyone"].group_name) == (None, ALL_TENANTS_GROUP)


def _freshness_outcomes(instance: dg.DagsterInstance) -> dict[str, bool]:
    from pipelines.ingest.assets import RAW_TABLES, raw_freshness_checks, raw_key

    job = dg.define_asset_job("raw_freshness", selection=dg.AssetSelection.all_asset_checks())
    specs = [dg.AssetSpec(raw_key(table)) for table in RAW_TABLES]
    defs = dg.Definitions(assets=specs, asset_checks=raw_freshness_checks, jobs=[job])
    result = defs.resolve_job_def("raw_freshness").execute_in_process(instance=instance)
    return {
        e.event_specific_data.asset_key.to_user_string(): e.event_specific_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_raw_table_freshness_fails_when_loads_stop() -> None:
    """The daemon's freshness sensor evaluates these checks on its own, so they fail when no load ran."""
    from datetime import UTC, datetime, timedelta

    from dagster._core.test_utils import freeze_time

    from pipelines.definitions import build_defs
    from pipelines.ingest.assets import FRESHNESS_WINDOW, RAW_TABLES, raw_freshness_sensor, raw_key

    assert build_defs().resolve_sensor_def("raw_tables_freshness") is not None
    assert raw_freshness_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    tables = {raw_key(t).to_user_string() for t in RAW_TABLES}
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("tenants", ["tenant-1"])
    assert _freshness_outcomes(instance) == dict.fromkeys(tables, False)
    for table in RAW_TABLES:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=raw_key(table), partition="tenant-1"))
    assert _freshness_outcomes(instance) == dict.fromkeys(tables, True)
    with freeze_time(datetime.now(UTC) + FRESHNESS_WINDOW + timedelta(minutes=5)):
        assert _freshness_outcomes(instance) == dict.fromkeys(tables, False)
