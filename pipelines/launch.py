"""Launch the product's Dagster jobs in-process and summarise them from the warehouse: a load run and
a push run per tenant, and one models run for all the tenants that loaded (see ``_run_tenants``).

The summary is read back from ``load_runs`` and ``segment_push_runs`` (what the runs recorded),
not from the process's memory, so the CLI shows exactly what an analyst would find in SQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from tabulate import tabulate

from pipelines.progress import progress_logger
from pipelines.runtime import Environment
from pipelines.segment_push.plan import override_hint
from pipelines.segment_push.status import PushStatus, RetireStatus
from pipelines.warehouse.migrate import MigrationError, ensure_current_schema
from pipelines.warehouse.schema import SCHEMA


@dataclass
class RunSummary:
    """Per-tenant loads, segment sizes and pushes of one CLI invocation, plus one line per problem."""

    database_url_masked: str
    loads: list[dict[str, Any]] = field(default_factory=list)
    segments: list[dict[str, Any]] = field(default_factory=list)
    pushes: list[dict[str, Any]] = field(default_factory=list)
    orphans: list[dict[str, Any]] = field(default_factory=list)
    retirements: list[dict[str, Any]] = field(default_factory=list)
    stale_models: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    report_path: str | None = None
    embedded_postgres: bool = False

    @property
    def query_hint(self) -> str:
        if self.embedded_postgres:
            return ".venv/bin/flowretail psql   (or `make psql`; starts the embedded PostgreSQL and opens psql)"
        return f"psql '{self.database_url_masked}'"

    def as_dict(self) -> dict[str, Any]:
        return {
            "warehouse": self.database_url_masked,
            "loads": self.loads,
            "segments": self.segments,
            "pushes": self.pushes,
            "orphans": self.orphans,
            "retirements": self.retirements,
            "stale_models": self.stale_models,
            "problems": self.problems,
            "report": self.report_path,
        }

    def render(self) -> str:
        """Plain-text tables of what the runs recorded (each only when it has a row), then where to look next."""
        stale = [{**r, "relation": f"{r['schema']}.{r['name']}"} for r in self.stale_models]
        tables = [
            _table("Loads", _LOAD_COLUMNS, self.loads),
            _table("Segment sizes", _SEGMENT_COLUMNS, self.segments),
            _table("Pushes", _PUSH_COLUMNS, self.pushes),
            _table(
                "Orphan groups (no segment declares them; retire: flowretail push --retire GROUP --tenant T)",
                _ORPHAN_COLUMNS,
                self.orphans,
            ),
            _table("Retirements", _RETIREMENT_COLUMNS, self.retirements),
            _table(
                "Stale model relations (model file gone; drop: flowretail run --drop-stale-models)",
                _STALE_COLUMNS,
                stale,
            ),
        ]
        lines = [table for table in tables if table]
        lines.append(f"Query the warehouse: {self.query_hint}")
        if self.report_path:
            lines.append(f"Charts of the recorded runs: file://{self.report_path}")
        return "\n\n".join(lines)


# The summary's tables: (column header, key of the summary row shown in that column).
_LOAD_COLUMNS = (
    ("tenant", "tenant_uid"),
    ("status", "status"),
    ("groups", "groups_rows"),
    ("memberships", "memberships_rows"),
    ("customers", "customers_rows"),
    ("pages", "pages"),
    ("requests", "requests"),
    ("retries", "retries"),
    ("seconds", "seconds"),
)
_SEGMENT_COLUMNS = (("tenant", "tenant_uid"), ("segment", "segment"), ("customers", "customers"))
_PUSH_COLUMNS = (
    ("tenant", "tenant_uid"),
    ("segment", "segment"),
    ("group", "customer_group_uid"),
    ("status", "status"),
    ("added", "applied_adds"),
    ("removed", "applied_removes"),
    ("withheld", "withheld_removes"),
    ("rejected", "rejected"),
    ("verified", "verified"),
    ("calls", "calls"),
)
_ORPHAN_COLUMNS = (
    ("tenant", "tenant_uid"),
    ("group", "customer_group_uid"),
    ("last segment", "segment"),
    ("live size", "live_size"),
    ("last push", "last_push_at"),
)
_RETIREMENT_COLUMNS = (
    ("tenant", "tenant_uid"),
    ("group", "customer_group_uid"),
    ("status", "status"),
    ("removed", "removed"),
    ("deleted", "deleted"),
    ("detail", "detail"),
)
_STALE_COLUMNS = (("relation", "relation"), ("kind", "kind"), ("built at", "built_at"), ("dropped", "dropped"))


def _table(title: str, columns: Sequence[tuple[str, str]], rows: Sequence[Mapping[str, Any]]) -> str:
    """``rows`` under ``title`` as a plain-text table, values as printed (``None`` blank); "" without rows."""
    if not rows:
        return ""
    cells = [["" if row[key] is None else str(row[key]) for _, key in columns] for row in rows]
    body = tabulate(cells, headers=[header for header, _ in columns], tablefmt="simple", disable_numparse=True)
    return f"{title}\n{body}"


def _failure_messages(result: Any, *, report_blocked_checks: bool = True) -> list[str]:
    """One line per failed step; push guards that blocked are reported from segment_push_runs instead."""
    messages = []
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE":
            continue
        error = event.step_failure_data.error
        if error is not None and error.cls_name == "DagsterAssetCheckFailedError" and not report_blocked_checks:
            continue
        cause = error.cause.message.strip() if error and error.cause else ""
        text = " ".join((cause or (error.message.strip() if error else "step failed")).split())
        if error is not None and error.cls_name == "DagsterAssetCheckFailedError":
            text = text.split(": ", 1)[-1]  # Dagster's class path says nothing the check names do not
        messages.append(f"{event.step_key}: {text}")
    return messages


def _unsynced_local_run_history(dagster_home: Path) -> None:
    """Commit this process's writes to the SQLite run history under ``dagster_home`` without fsync.

    Dagster's SQLite event log opens a connection per event and commits it (the run's shard, and
    the index shard for asset and check events): about 10 fsyncs per event, 6,700 for a second
    `flowretail run` on the demo data, the largest fixed cost of the command once its steps run in
    process. ``synchronous=OFF`` keeps every write that reached the OS (a killed process loses
    nothing); only an OS crash can lose the local run history, which is a view for the UI: the
    warehouse keeps its own record (``load_runs``, ``segment_push_runs``) in PostgreSQL.
    A deployment keeps its run storage in PostgreSQL and never reaches this.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    home = str(dagster_home.resolve())

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        if not isinstance(dbapi_connection, sqlite3.Connection):
            return
        files = [row[2] for row in dbapi_connection.execute("PRAGMA database_list")]
        if any(str(f).startswith(home) for f in files):
            dbapi_connection.execute("PRAGMA synchronous=OFF")

    if home not in _LISTENERS:
        _LISTENERS[home] = on_connect
        event.listen(Engine, "connect", on_connect)


_LISTENERS: dict[str, Any] = {}  # one listener per run history, however often launch() runs


def _failed(what: str, result: Any) -> list[str]:
    """``<what> failed: <step>: <error>`` per failed step of a failed run; one bare line without any."""
    return [f"{what} failed: {m}" for m in _failure_messages(result)] or [f"{what} failed"]


@dataclass
class _TenantRuns:
    """What one tenant's runs left for the summary: their run ids and one line per problem."""

    load_run_id: str | None = None
    push_run_id: str | None = None
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _TenantWork:
    """What ``launch`` asks of each tenant: the same for all of them."""

    defs: Any
    instance: Any
    command: str
    segments: list[str] | None
    dry_run: bool
    overrides: Collection[str]
    quiet: dict[str, Any]
    ingest_keys: list[Any]
    model_keys: list[Any]


def _load_tenant(work: _TenantWork, tenant_uid: str, runs: _TenantRuns) -> None:
    """The tenant's raw tables: the ingest assets of ``warehouse_load`` and their checks, for its partition."""
    progress_logger.info("%s: loading", tenant_uid)
    result = work.defs.resolve_job_def("warehouse_load").execute_in_process(
        partition_key=tenant_uid,
        instance=work.instance,
        raise_on_error=False,
        run_config=work.quiet,
        asset_selection=work.ingest_keys,
    )
    runs.load_run_id = result.run_id
    if not result.success:
        runs.problems += _failed(f"load of tenant {tenant_uid}", result)


def _build_models(work: _TenantWork, tenants: list[str], outcomes: Mapping[str, _TenantRuns]) -> None:
    """The per-tenant models and their tests for ``tenants`` (consecutive partitions) in ONE run.

    One run per model step for all of them: the steps' fixed cost (statements, Dagster events) is
    paid once, not once per tenant. When that run fails, its tenants are split in halves and each
    half is built again, down to single tenants: the tenants that fail are the ones reported, and
    every other tenant's models are built and pushed as if each tenant had its own run.
    """
    from pipelines.partitions import partition_range_tags

    if len(tenants) == 1:
        progress_logger.info("%s: building the models", tenants[0])
        options: dict[str, Any] = {"partition_key": tenants[0]}
    else:
        progress_logger.info("building the models of %d tenants (%s to %s)", len(tenants), tenants[0], tenants[-1])
        options = {"tags": partition_range_tags(tenants)}
    result = work.defs.resolve_job_def("warehouse_load").execute_in_process(
        instance=work.instance,
        raise_on_error=False,
        run_config=work.quiet,
        asset_selection=work.model_keys,
        **options,
    )
    if result.success:
        return
    if len(tenants) == 1:
        outcomes[tenants[0]].problems += _failed(f"models of tenant {tenants[0]}", result)
        return
    progress_logger.info("the models of %d tenants failed together; building them in halves", len(tenants))
    half = len(tenants) // 2
    _build_models(work, tenants[:half], outcomes)
    _build_models(work, tenants[half:], outcomes)


def _push_tenant(work: _TenantWork, tenant_uid: str, runs: _TenantRuns) -> None:
    from pipelines.reverse_etl.assets import STEPS_IN_PROCESS_TAG, push_run_config, push_selection

    progress_logger.info("%s: planning%s pushes", tenant_uid, " (dry run)" if work.dry_run else " and applying")
    # In process, one step at a time with the whole client budget: a step process per segment
    # costs a Dagster import (3-4 CPU-s) for pushes that take well under a second here.
    pushed = work.defs.resolve_job_def("segment_push").execute_in_process(
        partition_key=tenant_uid,
        instance=work.instance,
        tags={STEPS_IN_PROCESS_TAG: "true"},
        raise_on_error=False,
        run_config={
            **push_run_config(dry_run=work.dry_run, overrides=work.overrides).to_config_dict(),
            **work.quiet,
        },
        asset_selection=push_selection(work.segments, dry_run=work.dry_run),
    )
    runs.push_run_id = pushed.run_id
    failures = [] if pushed.success else _failure_messages(pushed, report_blocked_checks=False)
    runs.problems += [f"push for tenant {tenant_uid} failed: {m}" for m in failures]


def _run_tenants(work: _TenantWork, selected: list[str], registered: list[str]) -> dict[str, _TenantRuns]:
    """Each tenant's load, then the models of every tenant that loaded (one run per consecutive
    range of them), then the push of each tenant whose load and models succeeded.

    One tenant after another: Dagster's in-process runs are not thread-safe (a run's start
    reconfigures logging while another run logs), and a process per tenant costs a Dagster import
    each. A deployment runs each tenant's ``warehouse_load`` (load and models) and push in its own
    runs, at once through its run queue, so a push there never waits for another tenant's load.
    """
    from pipelines.partitions import consecutive_tenants

    outcomes = {tenant_uid: _TenantRuns() for tenant_uid in selected}
    if work.command in ("load", "run"):
        for tenant_uid in selected:
            _load_tenant(work, tenant_uid, outcomes[tenant_uid])
        loaded = {tenant_uid for tenant_uid, runs in outcomes.items() if not runs.problems}
        for tenants in consecutive_tenants(registered, loaded):
            _build_models(work, tenants, outcomes)
    if work.command in ("push", "run"):
        for tenant_uid in selected:
            if not outcomes[tenant_uid].problems:
                _push_tenant(work, tenant_uid, outcomes[tenant_uid])
    return outcomes


def launch(
    env: Environment,
    *,
    command: str,
    tenants: list[str] | None,
    segments: list[str] | None = None,
    dry_run: bool = False,
    overrides: Collection[str] = (),
    drop_stale_models: bool = False,
    verbose: bool = False,
) -> RunSummary:
    """Run ``load`` (warehouse_load), ``push`` (segment_push) or ``run`` (both) for the tenants."""
    import dagster as dg

    from pipelines.definitions import build_defs
    from pipelines.ingest.assets import INGEST_GROUP
    from pipelines.ingest.jobs import cross_tenant_jobs
    from pipelines.partitions import sync_tenant_partitions
    from pipelines.runtime import initialised_instance
    from pipelines.transform.assets import TENANT_GROUP

    defs = build_defs()
    _unsynced_local_run_history(env.dagster_home)
    with initialised_instance() as instance:
        known = sync_tenant_partitions(instance).registered
    selected = list(tenants or known)
    unknown = [t for t in selected if t not in known]
    summary = RunSummary(env.masked_database_url, embedded_postgres=env.embedded_postgres)
    if unknown:
        summary.problems.append(f"unknown tenant(s) {', '.join(unknown)}; configured: {', '.join(known)}")
        return summary
    try:
        ensure_current_schema(env.database_url)  # once, before any job: the loads then run no DDL
    except MigrationError as exc:
        summary.problems.append(str(exc))
        return summary
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL" if not verbose else "INFO"}}}}
    graph = defs.resolve_asset_graph()
    work = _TenantWork(
        defs,
        instance,
        command,
        segments,
        dry_run,
        overrides,
        quiet,
        ingest_keys=list(dg.AssetSelection.groups(INGEST_GROUP).resolve(graph)),
        model_keys=list(dg.AssetSelection.groups(TENANT_GROUP).resolve(graph)),
    )
    outcomes = list(_run_tenants(work, selected, known).values())
    for outcome in outcomes:
        summary.problems += outcome.problems
    load_run_ids = [o.load_run_id for o in outcomes if o.load_run_id is not None]
    push_run_ids = [o.push_run_id for o in outcomes if o.push_run_id is not None]
    if command in ("load", "run") and load_run_ids and cross_tenant_jobs:
        # Models declared tenant_scope='all' read every tenant: once, after all the loads.
        progress_logger.info("building the models spanning tenants")
        across = defs.resolve_job_def("warehouse_models_all_tenants").execute_in_process(
            instance=instance, raise_on_error=False, run_config=quiet
        )
        summary.problems += [f"models spanning tenants failed: {m}" for m in _failure_messages(across)]
    try:
        with psycopg.connect(env.database_url) as conn:
            _read_summary(conn, summary, load_run_ids, push_run_ids, selected)
            _read_orphans(conn, summary, push_run_ids)
            _stale_models(conn, summary, drop=drop_stale_models)
    except psycopg.Error as exc:  # reported after the runs' own problems, never instead of them
        summary.problems.append(f"could not read the run summary from the warehouse: {' '.join(str(exc).split())}")
    return summary


# What the summary shows of each run: column names, or an expression with the key it is shown as.
LOAD_COLUMNS: list[str | sql.Composable] = [
    "tenant_uid",
    "status",
    "groups_rows",
    "memberships_rows",
    "customers_rows",
    "pages",
    "requests",
    "retries",
    sql.SQL("round(extract(epoch FROM finished_at - started_at)::numeric, 1) AS seconds"),
]
PUSH_COLUMNS: list[str | sql.Composable] = [
    "tenant_uid",
    "segment",
    "customer_group_uid",
    "status",
    "applied_adds",
    "applied_removes",
    "withheld_removes",
    sql.SQL("jsonb_array_length(rejected_uids) AS rejected"),
    "verified",
    "calls",
    "blocked",
    "planned_adds",
    "planned_removes",
]
ORPHAN_COLUMNS = ["tenant_uid", "customer_group_uid", "segment", "ownership", "live_size", "last_push_at"]
RETIREMENT_COLUMNS = [
    "tenant_uid",
    "customer_group_uid",
    "segment",
    "dry_run",
    "keep_group",
    "status",
    "live_before",
    "removed",
    "deleted",
    "detail",
]


def _rows_of_runs(
    conn: psycopg.Connection[Any],
    table: str,
    columns: Sequence[str | sql.Composable],
    run_ids: list[str],
    order_by: list[str],
) -> list[dict[str, Any]]:
    """The rows that the given runs wrote into one of the run tables, as dicts of ``columns``."""
    query = sql.SQL("SELECT {} FROM {}.{} WHERE run_id = ANY(%s) ORDER BY {}").format(
        sql.SQL(", ").join(sql.Identifier(c) if isinstance(c, str) else c for c in columns),
        sql.Identifier(SCHEMA),
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, order_by)),
    )
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(query, (run_ids,)).fetchall()


def _read_orphans(conn: psycopg.Connection[Any], summary: RunSummary, push_run_ids: list[str]) -> None:
    if push_run_ids:
        summary.orphans = _rows_of_runs(
            conn, "segment_push_orphans", ORPHAN_COLUMNS, push_run_ids, ["tenant_uid", "customer_group_uid"]
        )


def _stale_models(conn: psycopg.Connection[Any], summary: RunSummary, *, drop: bool) -> None:
    """List (and on request drop) relations the runner built for models that no longer exist."""
    from pipelines.sql_models.built import drop_stale_relations, stale_relations
    from pipelines.transform.assets import project

    stale = stale_relations(conn, project.target_schema, project.models)
    dropped: set[str] = set()
    if drop and stale:
        try:
            dropped = set(drop_stale_relations(conn, project.target_schema, project.models))
        except psycopg.Error as exc:
            conn.rollback()
            summary.problems.append(
                f"dropping stale model relations failed, none dropped: {' '.join(str(exc).split())}"
            )
        conn.commit()
    summary.stale_models = [
        {"schema": r.schema, "name": r.name, "kind": r.kind, "built_at": r.built_at, "dropped": r.name in dropped}
        for r in stale
    ]


def retire(
    env: Environment,
    *,
    group_uid: str,
    tenants: list[str] | None,
    dry_run: bool = False,
    keep_group: bool = False,
    verbose: bool = False,
) -> RunSummary:
    """Run ``retire_group`` for the group in each chosen tenant (default: where the product registered it)."""
    from pipelines.definitions import build_defs
    from pipelines.partitions import sync_tenant_partitions
    from pipelines.runtime import initialised_instance

    defs = build_defs()
    with initialised_instance() as instance:
        known = sync_tenant_partitions(instance).registered
    summary = RunSummary(env.masked_database_url, embedded_postgres=env.embedded_postgres)
    unknown = [t for t in tenants or [] if t not in known]
    if unknown:
        summary.problems.append(f"unknown tenant(s) {', '.join(unknown)}; configured: {', '.join(known)}")
        return summary
    with psycopg.connect(env.database_url) as conn:
        selected = tenants or _registered_tenants(conn, group_uid) or known
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL" if not verbose else "INFO"}}}}
    config = {"group_uid": group_uid, "dry_run": dry_run, "keep_group": keep_group}
    run_ids = []
    for tenant_uid in selected:
        progress_logger.info("%s: retiring group %s%s", tenant_uid, group_uid, " (dry run)" if dry_run else "")
        result = defs.resolve_job_def("retire_group").execute_in_process(
            partition_key=tenant_uid,
            instance=instance,
            raise_on_error=False,
            run_config={"ops": {"retire_customer_group": {"config": config}}, **quiet},
        )
        run_ids.append(result.run_id)
    with psycopg.connect(env.database_url) as conn:
        summary.retirements = _rows_of_runs(
            conn, "segment_push_retirements", RETIREMENT_COLUMNS, run_ids, ["tenant_uid"]
        )
    summary.problems += [
        f"retire of {r['customer_group_uid']} for tenant {r['tenant_uid']} {r['status']}: {r['detail']}"
        for r in summary.retirements
        if r["status"] in (RetireStatus.REFUSED, RetireStatus.FAILED)
    ]
    return summary


def _registered_tenants(conn: psycopg.Connection[Any], group_uid: str) -> list[str]:
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.segment_push_groups",)).fetchone()
    if not (exists and exists[0]):
        return []
    rows = conn.execute(
        sql.SQL("SELECT tenant_uid FROM {}.segment_push_groups WHERE customer_group_uid = %s ORDER BY 1").format(
            sql.Identifier(SCHEMA)
        ),
        (group_uid,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _read_summary(
    conn: psycopg.Connection[Any],
    summary: RunSummary,
    load_run_ids: list[str],
    push_run_ids: list[str],
    tenants: list[str],
) -> None:
    if load_run_ids:
        summary.loads = _rows_of_runs(conn, "load_runs", LOAD_COLUMNS, load_run_ids, ["tenant_uid"])
    summary.segments = _segment_sizes(conn, tenants)
    if push_run_ids:
        summary.pushes = _rows_of_runs(conn, "segment_push_runs", PUSH_COLUMNS, push_run_ids, ["tenant_uid", "segment"])
        summary.problems += _push_problems(summary.pushes)


def _segment_sizes(conn: psycopg.Connection[Any], tenants: list[str]) -> list[dict[str, Any]]:
    exists = conn.execute("SELECT to_regclass('analytics.segment_membership') IS NOT NULL").fetchone()
    if not (exists and exists[0]):
        return []
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(
            "SELECT tenant_uid, segment, count(*) AS customers FROM analytics.segment_membership "
            "WHERE tenant_uid = ANY(%s) GROUP BY 1, 2 ORDER BY 1, 2",
            (tenants,),
        ).fetchall()


def _push_problems(pushes: list[dict[str, Any]]) -> list[str]:
    problems = []
    for push in pushes:
        if push["status"] == PushStatus.BLOCKED:
            problems.append(
                f"push of {push['segment']} for tenant {push['tenant_uid']} blocked: {'; '.join(push['blocked'])}"
                + override_hint(push["blocked"])
            )
        elif push["status"] == PushStatus.FAILED:
            problems.append(f"push of {push['segment']} for tenant {push['tenant_uid']} was not verified")
    return problems
