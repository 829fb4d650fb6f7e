"""The push's memory and audit trail in Postgres: ownership registry, plans, call log, last pushed state.

Kept for as long as the warehouse keeps it (not 7 or 14 days), with the uids of every batch, so
any push can be traced and reversed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from pipelines.flowretail.errors import ApiStatusError, BadRequestError, FlowRetailError
from pipelines.segment_push.plan import PushHistory, PushOutcome, PushTarget, SegmentPushPlan
from pipelines.segment_push.status import GroupStatus, PushStatus
from pipelines.warehouse.locks import PUSH_TABLES_LOCK, push_group_lock
from pipelines.warehouse.postgres import create_schema_if_missing
from pipelines.warehouse.schema import SCHEMA
from pipelines.warehouse.tables import PUSH_TABLES, Statement, ddl_statements

T = TypeVar("T")
_S = sql.Identifier(SCHEMA)


class PushRefusedError(RuntimeError):
    """This run's plan may not be applied now: another push of the group runs, or the plan is stale."""


# Applied by `flowretail migrate` (pipelines/warehouse/migrate.py), never on a push's path; the
# tables are declared in pipelines/warehouse/tables.py.
PUSH_TABLES_SQL: list[Statement] = ddl_statements(PUSH_TABLES)

BATCH_LIMIT_MAX_AGE_DAYS = 7  # a server may raise its limit: after this, the next push probes again


def insert_into(table: str, row: Mapping[str, object]) -> sql.Composed:
    """``INSERT INTO <table> (<the row's keys>) VALUES (%(key)s, …)``: the row names each column once."""
    return sql.SQL("INSERT INTO {}.{} ({}) VALUES ({})").format(
        _S,
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(map(sql.Placeholder, row)),
    )


def assignments(columns: Iterable[str], *, excluded: bool = False) -> sql.Composed:
    """``column = %(column)s, …``, or with ``excluded`` the upsert's ``column = EXCLUDED.column, …``."""
    value = "EXCLUDED.{0}" if excluded else "{1}"
    return sql.SQL(", ").join(
        sql.SQL("{0} = " + value).format(sql.Identifier(column), sql.Placeholder(column)) for column in columns
    )


def _run_key(run_id: str, plan: SegmentPushPlan) -> dict[str, str]:
    """The primary key of a plan's ``segment_push_runs`` row, as named parameters."""
    return {"run_id": run_id, "tenant_uid": plan.tenant_uid, "segment": plan.target.segment}


def _update_run(
    conn: psycopg.Connection[Any], run_id: str, plan: SegmentPushPlan, values: Mapping[str, object], *, finish: bool
) -> None:
    """Set ``values`` on the plan's run row (and, with ``finish``, its ``finished_at`` to now)."""
    conn.execute(
        sql.SQL(
            "UPDATE {}.segment_push_runs SET {}{} WHERE run_id = %(run_id)s AND tenant_uid = %(tenant_uid)s "
            "AND segment = %(segment)s"
        ).format(_S, assignments(values), sql.SQL(", finished_at = now()" if finish else "")),
        {**values, **_run_key(run_id, plan)},
    )


def read_batch_limit(conn: psycopg.Connection[Any], api_base_url: str, tenant_uid: str) -> tuple[int, int | None]:
    """(largest call size accepted, smallest refused) as a recent push left them, or (0, None)."""
    row = conn.execute(
        sql.SQL(
            "SELECT accepted, refused FROM {}.segment_push_batch_limits WHERE api_base_url = %s AND tenant_uid = %s "
            "AND learned_at > now() - make_interval(days => %s)"
        ).format(_S),
        (api_base_url, tenant_uid, BATCH_LIMIT_MAX_AGE_DAYS),
    ).fetchone()
    return (int(row[0]), row[1]) if row else (0, None)


def record_batch_limit(
    conn: psycopg.Connection[Any], api_base_url: str, tenant_uid: str, accepted: int, refused: int
) -> None:
    """Keep what this push learned about the server's size limit for the next push."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.segment_push_batch_limits (api_base_url, tenant_uid, accepted, refused, learned_at) "
            "VALUES (%s, %s, %s, %s, now()) ON CONFLICT (api_base_url, tenant_uid) DO UPDATE SET "
            "accepted = EXCLUDED.accepted, refused = EXCLUDED.refused, learned_at = EXCLUDED.learned_at"
        ).format(_S),
        (api_base_url, tenant_uid, accepted, refused),
    )


def ensure_push_tables(conn: psycopg.Connection[Any]) -> None:
    """The push tables alone, for tests and benchmarks that use no warehouse load."""
    create_schema_if_missing(conn, SCHEMA)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PUSH_TABLES_LOCK,))
        for statement in PUSH_TABLES_SQL:
            conn.execute(statement)


def read_segment_uids(
    conn: psycopg.Connection[Any], relation_schema: str, segment: str, tenant_uid: str
) -> frozenset[str]:
    """The segment's customers for one tenant, from its built relation in the analytics schema."""
    rows = conn.execute(
        sql.SQL("SELECT DISTINCT customer_uid FROM {}.{} WHERE tenant_uid = %s").format(
            sql.Identifier(relation_schema), sql.Identifier(segment)
        ),
        (tenant_uid,),
    ).fetchall()
    return frozenset(str(r[0]) for r in rows)


def read_history(conn: psycopg.Connection[Any], tenant_uid: str, segment: str, group_uid: str) -> PushHistory:
    owner = conn.execute(
        sql.SQL(
            "SELECT ownership, first_push_done_at IS NOT NULL FROM {}.segment_push_groups "
            "WHERE tenant_uid = %s AND customer_group_uid = %s"
        ).format(_S),
        (tenant_uid, group_uid),
    ).fetchone()
    last_count = conn.execute(
        sql.SQL(
            "SELECT segment_count FROM {}.segment_push_runs WHERE tenant_uid = %s AND segment = %s "
            "AND customer_group_uid = %s AND status = %s AND NOT dry_run ORDER BY finished_at DESC LIMIT 1"
        ).format(_S),
        (tenant_uid, segment, group_uid, PushStatus.VERIFIED),
    ).fetchone()
    members: frozenset[str] | None = None
    if owner is not None and owner[1]:
        members = frozenset(
            r[0]
            for r in conn.execute(
                sql.SQL(
                    "SELECT customer_uid FROM {}.segment_push_members WHERE tenant_uid = %s AND segment = %s "
                    "AND customer_group_uid = %s"
                ).format(_S),
                (tenant_uid, segment, group_uid),
            ).fetchall()
        )
    return PushHistory(
        ownership=owner[0] if owner else None,
        first_push_done=bool(owner[1]) if owner else False,
        last_pushed_uids=members,
        last_segment_count=int(last_count[0]) if last_count else None,
    )


@dataclass(frozen=True)
class PlanRow:
    """A ``segment_push_runs`` row as a plan is recorded: each field is the column of the same name."""

    run_id: str
    tenant_uid: str
    segment: str
    customer_group_uid: str
    status: PushStatus
    dry_run: bool
    plan_hash: str
    group_action: str
    mode: str
    segment_count: int
    live_count: int
    planned_adds: int
    planned_removes: int
    withheld_removes: int
    drift_added: int
    drift_removed: int
    blocked: Jsonb
    plan: Jsonb
    planned_at: datetime

    @classmethod
    def of(cls, run_id: str, plan: SegmentPushPlan, *, dry_run: bool) -> PlanRow:
        status = PushStatus.BLOCKED if plan.blocked else (PushStatus.DRY_RUN if dry_run else PushStatus.PLANNED)
        body = {
            "adds": list(plan.adds),
            "removes": list(plan.removes),
            "withheld_removes": list(plan.withheld_removes),
            "drift_added": list(plan.drift_added),
            "drift_removed": list(plan.drift_removed),
            "live_name": plan.live_name,
            "adopted": plan.adopted,
        }
        return cls(
            **_run_key(run_id, plan),
            customer_group_uid=plan.target.group_uid,
            status=status,
            dry_run=dry_run,
            plan_hash=plan.plan_hash,
            group_action=plan.group_action,
            mode=plan.effective_mode,
            segment_count=plan.segment_count,
            live_count=plan.live_count,
            planned_adds=len(plan.adds),
            planned_removes=len(plan.removes),
            withheld_removes=len(plan.withheld_removes),
            drift_added=len(plan.drift_added),
            drift_removed=len(plan.drift_removed),
            blocked=Jsonb(plan.blocked_reasons),
            plan=Jsonb(body),
            planned_at=datetime.now(UTC),
        )

    def params(self) -> dict[str, object]:
        """Column name to value (not ``asdict``: that would deep-copy every uid list)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def record_plan(conn: psycopg.Connection[Any], run_id: str, plan: SegmentPushPlan, *, dry_run: bool) -> None:
    """Write the plan before the first write call (status planned, blocked or dry_run).

    A plan recorded again by the same run (a retried step) replaces the earlier one's decision.
    """
    row = PlanRow.of(run_id, plan, dry_run=dry_run).params()
    conn.execute(
        insert_into("segment_push_runs", row)
        + sql.SQL(" ON CONFLICT (run_id, tenant_uid, segment) DO UPDATE SET {}").format(
            assignments(["status", "plan_hash", "plan", "blocked", "planned_at"], excluded=True)
        ),
        row,
    )


def log_call(
    conn: psycopg.Connection[Any],
    *,
    run_id: str,
    tenant_uid: str,
    segment: str,
    group_uid: str,
    action: str,
    http_status: int | None,
    error: str | None = None,
    batch_number: int | None = None,
    add_uids: tuple[str, ...] | list[str] = (),
    remove_uids: tuple[str, ...] | list[str] = (),
) -> int:
    """One row per API call, written (autocommit) before the call is sent; returns its id.

    ``http_status`` NULL means the outcome is not known yet (or never became known, if the process
    died mid-call): the uids the call may have applied are on record either way.
    """
    row = {
        "run_id": run_id,
        "tenant_uid": tenant_uid,
        "segment": segment,
        "customer_group_uid": group_uid,
        "action": action,
        "uid_count": len(add_uids) + len(remove_uids),
        "batch_number": batch_number,
        "http_status": http_status,
        "error": error,
        "add_uids": Jsonb(list(add_uids)),
        "remove_uids": Jsonb(list(remove_uids)),
    }
    returned = conn.execute(insert_into("segment_push_log", row) + sql.SQL(" RETURNING id"), row).fetchone()
    assert returned is not None
    return int(returned[0])


async def audited(
    conn: psycopg.Connection[Any], call_id: int, ok_status: int, request: Callable[[], Awaitable[T]]
) -> T:
    """Send a call already logged as ``call_id``; its row gets the HTTP status (or the error) when it ends."""
    try:
        result = await request()
    except ApiStatusError as exc:
        finish_call(conn, call_id, exc.status_code, exc.detail if isinstance(exc, BadRequestError) else str(exc))
        raise
    except FlowRetailError as exc:
        finish_call(conn, call_id, None, str(exc))
        raise
    finish_call(conn, call_id, ok_status, None)
    return result


def finish_call(conn: psycopg.Connection[Any], call_id: int, http_status: int | None, error: str | None) -> None:
    """Record how a logged call ended."""
    conn.execute(
        sql.SQL("UPDATE {}.segment_push_log SET http_status = %s, error = %s, at = now() WHERE id = %s").format(_S),
        (http_status, error, call_id),
    )


def register_group(
    conn: psycopg.Connection[Any], tenant_uid: str, group_uid: str, segment: str, ownership: str
) -> None:
    """Record (or re-activate) a group the product writes to.

    A group the product created (201) is its own from then on, even if it was adopted before and
    deleted out of band since; an adoption never turns an existing row into 'created'. The segment
    is the last one that declared the group (what an orphan report names).
    """
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.segment_push_groups (tenant_uid, customer_group_uid, segment, ownership, since) "
            "VALUES (%(tenant_uid)s, %(group_uid)s, %(segment)s, %(ownership)s, now()) "
            "ON CONFLICT (tenant_uid, customer_group_uid) DO UPDATE SET "
            "segment = EXCLUDED.segment, status = %(active)s, retired_at = NULL, "
            "ownership = CASE WHEN EXCLUDED.ownership = 'created' THEN 'created' "
            "ELSE segment_push_groups.ownership END, "
            "since = CASE WHEN EXCLUDED.ownership = 'created' AND segment_push_groups.ownership <> 'created' "
            "THEN now() ELSE segment_push_groups.since END"
        ).format(_S),
        {
            "tenant_uid": tenant_uid,
            "group_uid": group_uid,
            "segment": segment,
            "ownership": ownership,
            "active": GroupStatus.ACTIVE,
        },
    )


def record_outcome(
    conn: psycopg.Connection[Any], run_id: str, outcome: PushOutcome, live_after: frozenset[str]
) -> None:
    """Finish the run row; only a verified push moves the remembered state and completes adoption."""
    rejected = sorted(outcome.rejected.items())
    finished = {
        "status": PushStatus.VERIFIED if outcome.verified else PushStatus.FAILED,
        "verified": outcome.verified,
        "applied_adds": outcome.applied_adds,
        "applied_removes": outcome.applied_removes,
        "rejected_uids": Jsonb([{"customer_uid": uid, "error": message} for uid, message in rejected]),
        "calls": outcome.calls,
        "duration_seconds": outcome.duration_seconds,
        "error": outcome.error,
    }
    with conn.transaction():
        _update_run(conn, run_id, outcome.plan, finished, finish=True)
        if outcome.verified:
            _remember_pushed(conn, outcome.plan, live_after)


def _remember_pushed(conn: psycopg.Connection[Any], plan: SegmentPushPlan, live_after: frozenset[str]) -> None:
    """After a verified push: the group is (again) active and adopted for good, and its members are
    what the next plan compares the live group with to tell drift."""
    group = {"tenant_uid": plan.tenant_uid, "segment": plan.target.segment, "group_uid": plan.target.group_uid}
    conn.execute(
        sql.SQL(
            "UPDATE {}.segment_push_groups SET first_push_done_at = coalesce(first_push_done_at, now()), "
            "segment = %(segment)s, status = %(active)s, retired_at = NULL "
            "WHERE tenant_uid = %(tenant_uid)s AND customer_group_uid = %(group_uid)s"
        ).format(_S),
        {**group, "active": GroupStatus.ACTIVE},
    )
    conn.execute(
        sql.SQL(
            "DELETE FROM {}.segment_push_members WHERE tenant_uid = %(tenant_uid)s AND segment = %(segment)s "
            "AND customer_group_uid = %(group_uid)s"
        ).format(_S),
        group,
    )
    with (
        conn.cursor() as cur,
        cur.copy(
            sql.SQL(
                "COPY {}.segment_push_members (tenant_uid, segment, customer_group_uid, customer_uid) FROM STDIN"
            ).format(_S)
        ) as copy,
    ):
        for uid in sorted(live_after):
            copy.write_row((plan.tenant_uid, plan.target.segment, plan.target.group_uid, uid))


def load_recorded_plan(
    conn: psycopg.Connection[Any], run_id: str, tenant_uid: str, target: PushTarget
) -> tuple[str, SegmentPushPlan] | None:
    """The plan a run recorded for a segment, rebuilt exactly as it was decided, with its status."""
    row = conn.execute(
        sql.SQL(
            "SELECT status, group_action, mode, segment_count, live_count, plan FROM {}.segment_push_runs "
            "WHERE run_id = %s AND tenant_uid = %s AND segment = %s"
        ).format(_S),
        (run_id, tenant_uid, target.segment),
    ).fetchone()
    if row is None:
        return None
    status, action, mode, segment_count, live_count, body = row
    plan = SegmentPushPlan(
        tenant_uid=tenant_uid,
        target=target,
        group_action=action,
        live_name=body.get("live_name"),
        effective_mode=mode,
        segment_count=int(segment_count),
        live_count=int(live_count),
        adds=tuple(body["adds"]),
        removes=tuple(body["removes"]),
        withheld_removes=tuple(body["withheld_removes"]),
        drift_added=tuple(body["drift_added"]),
        drift_removed=tuple(body["drift_removed"]),
        segment_joined=(),
        segment_left=(),
        adopted=bool(body.get("adopted", False)),
    )
    return str(status), plan


@contextlib.contextmanager
def claim_group(conn: psycopg.Connection[Any], run_id: str, plan: SegmentPushPlan) -> Iterator[None]:
    """Hold the group's push lock while this run's plan is applied, and settle older runs' rows.

    Two pushes into one group never interleave their batches: the second refuses. Holding the
    lock, a row still 'pushing' belongs to a process that died mid-push ('interrupted'), and an
    older plan still 'planned' must never be applied after this newer one ('superseded'); this
    run's own plan must still be 'planned', and becomes 'pushing'.
    """
    tenant, segment = plan.tenant_uid, plan.target.segment
    with group_lock(conn, tenant, plan.target.group_uid):
        with conn.transaction():
            mine = conn.execute(
                sql.SQL(
                    "SELECT status, planned_at FROM {}.segment_push_runs "
                    "WHERE run_id = %(run_id)s AND tenant_uid = %(tenant_uid)s AND segment = %(segment)s FOR UPDATE"
                ).format(_S),
                _run_key(run_id, plan),
            ).fetchone()
            if mine is None or mine[0] != PushStatus.PLANNED:
                state = "missing" if mine is None else mine[0]
                raise PushRefusedError(
                    f"the plan of run {run_id} for segment {segment} of tenant {tenant} is {state}; nothing was written"
                )
            _settle_older_runs(conn, run_id, plan, planned_at=mine[1])
            _update_run(conn, run_id, plan, {"status": PushStatus.PUSHING}, finish=False)
        yield


def _settle_older_runs(conn: psycopg.Connection[Any], run_id: str, plan: SegmentPushPlan, planned_at: datetime) -> None:
    """Under the group's lock: other runs still pushing died; other runs' older plans are never applied."""
    params = {
        "run_id": run_id,
        "tenant_uid": plan.tenant_uid,
        "group_uid": plan.target.group_uid,
        "planned_at": planned_at,
        "pushing": PushStatus.PUSHING,
        "interrupted": PushStatus.INTERRUPTED,
        "planned": PushStatus.PLANNED,
        "superseded": PushStatus.SUPERSEDED,
    }
    conn.execute(
        sql.SQL(
            "UPDATE {}.segment_push_runs SET status = %(interrupted)s, finished_at = now(), "
            "error = 'the push process ended before it finished (killed or lost); "
            "segment_push_log holds the calls it sent' "
            "WHERE tenant_uid = %(tenant_uid)s AND customer_group_uid = %(group_uid)s AND status = %(pushing)s "
            "AND run_id <> %(run_id)s"
        ).format(_S),
        params,
    )
    conn.execute(
        sql.SQL(
            "UPDATE {}.segment_push_runs SET status = %(superseded)s, finished_at = now(), "
            "error = 'run ' || %(run_id)s || ' pushed a newer plan into this group first; this plan is never applied' "
            "WHERE tenant_uid = %(tenant_uid)s AND customer_group_uid = %(group_uid)s AND status = %(planned)s "
            "AND planned_at < %(planned_at)s AND run_id <> %(run_id)s"
        ).format(_S),
        params,
    )


@contextlib.contextmanager
def group_lock(conn: psycopg.Connection[Any], tenant_uid: str, group_uid: str) -> Iterator[None]:
    """The group's write lock: pushes and retirements of one group never interleave their calls."""
    key = push_group_lock(tenant_uid, group_uid)
    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()
    if not (row and row[0]):
        raise PushRefusedError(
            f"another push into group {group_uid} of tenant {tenant_uid} is running; this one refuses so that "
            "their batches cannot interleave (nothing was written)"
        )
    try:
        yield
    finally:
        if not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)
