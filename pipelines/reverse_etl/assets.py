"""Reverse ETL stage: push each declared segment into its Flow Retail customer group.

Two assets per segment, so the guards are real Dagster blocking checks that stand between the
plan and the first write:
- ``flowretail_push_plan/<segment>`` reads the group's live members, plans, records the plan and
  evaluates the guards (blocking checks);
- ``flowretail_push/<segment>`` applies the recorded plan, logs every call and verifies.
Both are partitioned by tenant. A dry run materializes only the plans.

No ``from __future__ import annotations`` here: Dagster inspects the ``context`` annotation at
definition time and needs the real class, not a string.
"""

import asyncio
from collections.abc import Collection, Iterator
from typing import Any

import dagster as dg
import psycopg
from dagster import AssetExecutionContext

from pipelines.ingest.jobs import warehouse_load_job
from pipelines.metadata import md_table, table_schema
from pipelines.partitions import DEFAULT_TOKEN_NAME, TOKEN_TAG, tenant_partitions, tenant_run_tags
from pipelines.resources import FlowRetailResource, WarehouseResource
from pipelines.segment_push.apply import execute_plan, plan_and_record
from pipelines.segment_push.audit import (
    load_recorded_plan,
    read_segment_uids,
)
from pipelines.segment_push.plan import GUARDS, PushOutcome, PushTarget, SegmentPushPlan
from pipelines.segment_push.status import PushStatus
from pipelines.settings import load_settings
from pipelines.sql_models.project import Model
from pipelines.transform.assets import model_key, project
from pipelines.warehouse.migrate import ensure_current_schema
from pipelines.warehouse.schema import SCHEMA

OWNERS = ["team:crm"]
# Segments are pushed in parallel step processes; each gets this share of the client's rate limit
# and concurrency, so together they stay within FLOWRETAIL_RATE_LIMIT and FLOWRETAIL_CONCURRENCY.
PUSH_PARALLELISM = 3
# The per-tenant orphan report (reverse_etl/lifecycle.py) runs with every push, dry or not.
ORPHANS_KEY = dg.AssetKey(["flowretail_push_orphans"])
# Set on a run whose steps run one at a time in one process (the CLI's ``execute_in_process``): each
# step then has the whole budget to itself.
STEPS_IN_PROCESS_TAG = "flowretail/steps_in_process"


class PushPlanConfig(dg.Config):  # type: ignore[misc]
    """Run config of a plan asset: a dry run records the plan only; each allow flag overrides the guards
    that name it in ``segment_push.plan.GUARDS`` (a test keeps the two in step)."""

    dry_run: bool = False
    allow_large_removal: bool = False
    allow_large_addition: bool = False


def push_targets() -> list[tuple[Model, PushTarget]]:
    out = []
    for model in project.segments():
        push = model.config.push
        if push is None:
            continue
        out.append(
            (
                model,
                PushTarget(
                    model.name,
                    push.group_uid,
                    push.group_name,
                    push.mode,
                    push.max_remove_fraction,
                    push.adopt_existing,
                    push.rename_adopted,
                    push.max_add_fraction,
                ),
            )
        )
    return out


def client_share(context: AssetExecutionContext) -> int:
    """How many push steps share the client budget at once: the executor's parallelism, or 1 in process."""
    return 1 if context.run.tags.get(STEPS_IN_PROCESS_TAG) == "true" else PUSH_PARALLELISM


def plan_key(segment: str) -> dg.AssetKey:
    return dg.AssetKey(["flowretail_push_plan", segment])


def push_key(segment: str) -> dg.AssetKey:
    return dg.AssetKey(["flowretail_push", segment])


def _plan_markdown(plan: SegmentPushPlan) -> str:
    rows = [
        ("group", f"{plan.target.group_uid} ({plan.group_action})"),
        ("name", plan.live_name if plan.live_name is not None else plan.target.group_name),
        ("mode", plan.effective_mode + (" (adopted)" if plan.adopted else "")),
        ("segment / live", f"{plan.segment_count} / {plan.live_count}"),
        ("adds", str(len(plan.adds))),
        ("removes", str(len(plan.removes))),
        ("withheld removes", str(len(plan.withheld_removes))),
        ("drift (added / removed out of band)", f"{len(plan.drift_added)} / {len(plan.drift_removed)}"),
        ("blocked", "; ".join(plan.blocked_reasons) or "no"),
        ("first adds", ", ".join(plan.adds[:5]) or "-"),
        ("first removes", ", ".join(plan.removes[:5]) or "-"),
    ]
    return md_table(["", ""], rows)


def _stage_asset(key: dg.AssetKey, dep: dg.AssetKey, description: str, check_specs: list[dg.AssetCheckSpec]) -> Any:
    """The ``@dg.asset`` of one push stage of a segment: what the plan and the push asset share."""
    return dg.asset(
        key=key,
        deps=[dep],
        partitions_def=tenant_partitions,
        group_name="reverse_etl",
        owners=OWNERS,
        kinds={"python", "postgres"},
        description=description,
        check_specs=check_specs,
    )


def _plan_metadata(plan: SegmentPushPlan, config: PushPlanConfig, plan_schema: dg.TableSchema) -> dict[str, Any]:
    return {
        "plan": dg.MetadataValue.md(_plan_markdown(plan)),
        "plan_hash": plan.plan_hash,
        "dry_run": config.dry_run,
        "planned_adds": len(plan.adds),
        "planned_removes": len(plan.removes),
        "withheld_removes": len(plan.withheld_removes),
        "drift_added": len(plan.drift_added),
        "drift_removed": len(plan.drift_removed),
        "segment_count": plan.segment_count,
        "live_count": plan.live_count,
        "dagster/column_schema": plan_schema,
    }


def _guard_results(plan: SegmentPushPlan) -> Iterator[dg.AssetCheckResult]:
    """One blocking check result per guard: a tripped guard the caller did not allow fails its check."""
    for guard in plan.guards:
        yield dg.AssetCheckResult(
            check_name=guard.name,
            passed=not guard.blocked,
            metadata={"tripped": guard.tripped, "allowed_by_caller": guard.allowed, "detail": guard.detail},
        )


def _plan_asset(model: Model, target: PushTarget) -> dg.AssetsDefinition:
    key = plan_key(model.name)

    @_stage_asset(
        key,
        model_key(model.name),
        f"The plan that makes Flow Retail group `{target.group_uid}` match segment `{model.name}` "
        "for one tenant: computed from the group's live members, recorded in "
        "flowretail.segment_push_runs before any write, and held back by the guard checks.",
        [dg.AssetCheckSpec(guard.name, asset=key, description=guard.description, blocking=True) for guard in GUARDS],
    )
    def plan_push(
        context: AssetExecutionContext,
        config: PushPlanConfig,
        flowretail: FlowRetailResource,
        warehouse: WarehouseResource,
    ) -> Iterator[Any]:
        tenant_uid = context.partition_key
        ensure_current_schema(warehouse.database_url)
        with warehouse.connect(autocommit=True) as conn:
            segment_uids = read_segment_uids(conn, project.target_schema, model.name, tenant_uid)

            async def make_plan() -> SegmentPushPlan:
                async with flowretail.make_client(tenant_uid, share=client_share(context)) as client:
                    return await plan_and_record(
                        client,
                        conn,
                        context.run.run_id,
                        tenant_uid,
                        target,
                        segment_uids,
                        allow_large_removal=config.allow_large_removal,
                        allow_large_addition=config.allow_large_addition,
                        dry_run=config.dry_run,
                    )

            plan = asyncio.run(make_plan())
            plan_schema = table_schema(conn, SCHEMA, "segment_push_runs")
        context.log.info(f"push plan for {model.name} / {tenant_uid}: {plan.summary()}")
        yield dg.MaterializeResult(metadata=_plan_metadata(plan, config, plan_schema))
        yield from _guard_results(plan)

    return plan_push


def _planned(
    conn: psycopg.Connection[Any], run_id: str, tenant_uid: str, model: Model, target: PushTarget
) -> SegmentPushPlan:
    """This run's recorded plan for the segment, which must still be waiting for its push."""
    recorded = load_recorded_plan(conn, run_id, tenant_uid, target)
    if recorded is None:
        raise dg.Failure(
            f"no push plan for {model.name} in this run; materialize {plan_key(model.name).to_user_string()} with it"
        )
    status, plan = recorded
    if status != PushStatus.PLANNED:
        raise dg.Failure(f"the plan for {model.name} is {status}; nothing was written")
    return plan


def _push_metadata(plan: SegmentPushPlan, outcome: PushOutcome, log_schema: dg.TableSchema) -> dict[str, Any]:
    counts = {
        "added": outcome.applied_adds,
        "removed": outcome.applied_removes,
        "withheld": len(plan.withheld_removes),
        "rejected": len(outcome.rejected),
        "calls": outcome.calls,
        "verified": outcome.verified,
    }
    return {
        "added": outcome.applied_adds,
        "removed": outcome.applied_removes,
        "withheld_removes": len(plan.withheld_removes),
        "rejected_uids": len(outcome.rejected),
        "calls": outcome.calls,
        "verified": outcome.verified,
        "group_size_after": outcome.live_after_count,
        "duration_seconds": round(outcome.duration_seconds, 3),
        "result": dg.MetadataValue.md(md_table(list(counts), [list(counts.values())])),
        "notes": "; ".join(outcome.notes) or "none",
        "dagster/column_schema": log_schema,
    }


def _push_asset(model: Model, target: PushTarget) -> dg.AssetsDefinition:
    key = push_key(model.name)

    @_stage_asset(
        key,
        plan_key(model.name),
        f"Flow Retail customer group `{target.group_uid}` ({target.group_name!r}) made to contain segment "
        f"`{model.name}` ({target.mode}): applies this run's recorded plan in batches, logs each call "
        "to flowretail.segment_push_log and verifies by reading the group back.",
        [
            dg.AssetCheckSpec(
                "live_matches_segment",
                asset=key,
                description="The group's live membership equals the segment after the push.",
            )
        ],
    )
    def push(
        context: AssetExecutionContext, flowretail: FlowRetailResource, warehouse: WarehouseResource
    ) -> Iterator[Any]:
        tenant_uid = context.partition_key
        with warehouse.connect(autocommit=True) as conn:
            plan = _planned(conn, context.run.run_id, tenant_uid, model, target)
            segment_uids = read_segment_uids(conn, project.target_schema, model.name, tenant_uid)

            async def apply() -> PushOutcome:
                async with flowretail.make_client(tenant_uid, share=client_share(context)) as client:
                    return await execute_plan(
                        client, conn, context.run.run_id, plan, segment_uids, flowretail.push_batch_size
                    )

            outcome = asyncio.run(apply())
            log_schema = table_schema(conn, SCHEMA, "segment_push_log")
        for note in outcome.notes:
            context.log.warning(note)
        yield dg.MaterializeResult(metadata=_push_metadata(plan, outcome, log_schema))
        yield dg.AssetCheckResult(
            check_name="live_matches_segment",
            passed=outcome.verified,
            metadata={"group_size_after": outcome.live_after_count, "rejected_uids": len(outcome.rejected)},
        )

    return push


_targets = push_targets()
plan_assets: list[dg.AssetsDefinition] = [_plan_asset(model, target) for model, target in _targets]
push_assets: list[dg.AssetsDefinition] = [_push_asset(model, target) for model, target in _targets]

segment_push_job = dg.define_asset_job(
    "segment_push",
    selection=dg.AssetSelection.groups("reverse_etl"),
    executor_def=dg.multiprocess_executor.configured({"max_concurrent": PUSH_PARALLELISM}),
    description="Plan, guard, apply and verify every declared segment push for one tenant.",
    tags={TOKEN_TAG: DEFAULT_TOKEN_NAME},
)


def push_run_config(*, dry_run: bool, overrides: Collection[str] = ()) -> dg.RunConfig:
    """Run config of every plan asset; ``overrides`` are the allow flags (``GuardSpec.override``) set."""
    config = PushPlanConfig(dry_run=dry_run, **{name: True for name in overrides})
    return dg.RunConfig(ops={plan_key(model.name).to_python_identifier(): config for model, _ in _targets})


def push_selection(segments: list[str] | None, *, dry_run: bool) -> list[dg.AssetKey]:
    """Plan (and, unless dry, push) assets of the chosen segments; an unknown name is an error."""
    names = [model.name for model, _ in _targets]
    unknown = sorted(set(segments or []) - set(names))
    if unknown:
        raise ValueError(f"unknown segment(s) {', '.join(unknown)}; pushed segments: {', '.join(names)}")
    chosen = segments or names
    keys = [ORPHANS_KEY] + [plan_key(name) for name in chosen]
    return keys if dry_run else keys + [push_key(name) for name in chosen]


def built_segments(asset_selection: Collection[dg.AssetKey] | None) -> bool:
    """Whether a ``warehouse_load`` run with this selection built the pushed segments (pure): the
    whole job does; a subset of only its ingest assets (the CLI's loads) does not, and pushing after
    it would push the segments as they were before the load."""
    return asset_selection is None or any(model_key(model.name) in asset_selection for model, _ in _targets)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="push_after_warehouse_load",
    monitored_jobs=[warehouse_load_job],
    request_job=segment_push_job,
    description="After a tenant's warehouse_load succeeds, push that tenant's segments.",
)
def push_after_warehouse_load(context: dg.RunStatusSensorContext) -> Iterator[dg.RunRequest]:
    run = context.dagster_run
    partition = run.tags.get("dagster/partition")
    if partition and built_segments(run.asset_selection):
        yield dg.RunRequest(
            run_key=f"push-after-{run.run_id}",
            partition_key=partition,
            tags=tenant_run_tags(partition, load_settings().tenant_tokens),
        )
