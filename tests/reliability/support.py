"""Shared helpers of the reliability suite: simulator states, in-process loads and pushes, exact table
snapshots, ASGI wrappers that act between requests, and helpers for processes run in the background.

Everything talks to loopback only: the simulator in-process (``httpx.ASGITransport``) or on a
127.0.0.1 port, PostgreSQL over its Unix socket.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import psycopg
from psycopg import sql
from pydantic import SecretStr

from pipelines.flowretail.client import AsyncFlowRetailClient
from pipelines.flowretail.config import ClientConfig
from pipelines.flowretail.deviations import remove_nul
from pipelines.flowretail.simulator import SimulatorConfig, SimulatorState, build_state, create_app
from pipelines.segment_push.apply import PushOutcome, execute_plan, plan_and_record
from pipelines.segment_push.plan import PushTarget, SegmentPushPlan
from pipelines.warehouse.frames import row_hash
from pipelines.warehouse.load import TenantLoadResult, load_tenant
from pipelines.warehouse.locks import TENANT_LOAD_NAMESPACE as LOAD_LOCK_NAMESPACE

T = TypeVar("T")

TOKEN = "tok_reliability_91c2e"
REPO_ROOT = Path(__file__).resolve().parents[2]

DATA_TABLES = (
    "customer_groups",
    "customer_group_memberships",
    "customer_group_membership_history",
    "customer_snapshots",
)
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


# ------------------------------------------------------------------ simulator and client


def make_state(*, tenants: int = 1, customers: int = 240, groups: int = 5, **config: Any) -> SimulatorState:
    """A small deterministic tenant; the hostile strings of the generator stay on."""
    state = build_state(SimulatorConfig(tenants=tenants, customers=customers, groups=groups, **config))
    state.token = TOKEN
    return state


def client_config(**overrides: Any) -> ClientConfig:
    """Client settings for in-process runs: no client-side rate limit, millisecond backoff."""
    values: dict[str, Any] = {
        "base_url": "http://127.0.0.1/v2",
        "token": SecretStr(TOKEN),
        "rate_limit_per_second": None,
        "backoff_initial": 0.001,
        "backoff_max": 0.01,
        "max_total_wait": 30.0,
    }
    values.update(overrides)
    return ClientConfig(**values)


def tenant_of(state: SimulatorState) -> str:
    return state.tenant_uids()[0]


def asgi(state: SimulatorState, app: ASGIApp | None = None) -> httpx.ASGITransport:
    return httpx.ASGITransport(app=app if app is not None else create_app(state))


def run_load(
    state: SimulatorState,
    database_url: str,
    run_id: str,
    *,
    tenant: str | None = None,
    app: ASGIApp | None = None,
    before_merge: Callable[[], Awaitable[None]] | None = None,
    settle: bool = True,
    **config: Any,
) -> TenantLoadResult:
    """One tenant load through the real client and loader against the in-process simulator.

    With ``settle`` (the default) it first waits until no backend holds a tenant load lock any more:
    a finished load's backend can keep its advisory lock for a moment after the client closed (the
    bug shown by test_a_finished_load_does_not_block_the_next), and back-to-back runs here must not
    trip over it.
    """
    if settle:
        wait_until(lambda: not _advisory_locks_held(database_url), timeout=30, what="earlier load locks to be released")

    async def main() -> TenantLoadResult:
        async with AsyncFlowRetailClient(client_config(**config), transport=asgi(state, app)) as client:
            return await load_tenant(
                client, database_url, tenant or tenant_of(state), run_id, before_merge=before_merge
            )

    return asyncio.run(main())


def _advisory_locks_held(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::bigint::oid "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (LOAD_LOCK_NAMESPACE,),
        ).fetchone()
    return int(row[0]) if row else 0


def run_client(state: SimulatorState, call: Callable[[AsyncFlowRetailClient], Awaitable[T]], **config: Any) -> T:
    async def main() -> T:
        async with AsyncFlowRetailClient(client_config(**config), transport=asgi(state)) as client:
            return await call(client)

    return asyncio.run(main())


def run_push(
    state: SimulatorState,
    conn: psycopg.Connection[Any],
    target: PushTarget,
    segment: Iterable[str],
    *,
    run_id: str,
    tenant: str | None = None,
    batch_size: int = 500,
    allow: bool = False,
    app: ASGIApp | None = None,
    **config: Any,
) -> tuple[SegmentPushPlan, PushOutcome | None]:
    """Plan, record and (unless blocked) apply one segment push in-process."""
    uids = frozenset(segment)

    async def main() -> tuple[SegmentPushPlan, PushOutcome | None]:
        async with AsyncFlowRetailClient(client_config(**config), transport=asgi(state, app)) as client:
            plan = await plan_and_record(
                client,
                conn,
                run_id,
                tenant or tenant_of(state),
                target,
                uids,
                allow_large_removal=allow,
                allow_large_addition=allow,
            )
            if plan.blocked:
                return plan, None
            return plan, await execute_plan(client, conn, run_id, plan, uids, batch_size)

    return asyncio.run(main())


# ------------------------------------------------------------------ ASGI wrappers


class Interceptor:
    """Wraps the simulator app: runs ``before`` hooks when a request arrives and ``after`` hooks
    once its response was sent, each keyed by (method, operation path kind).

    Hooks receive the request count of their kind so far (1 for the first) and the raw path.
    """

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.app = create_app(state)
        self.before: list[Callable[[str, str, int], None]] = []
        self.after: list[Callable[[str, str, int], None]] = []
        self.counts: dict[tuple[str, str], int] = {}

    @staticmethod
    def kind(path: str) -> str:
        parts = path.split("/")
        if len(parts) == 5:
            return "groups"
        if len(parts) == 6:
            return "group"
        return "members"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        key = (scope["method"], self.kind(path))
        self.counts[key] = self.counts.get(key, 0) + 1
        number = self.counts[key]
        for hook in self.before:
            hook(f"{key[0]} {key[1]}", path, number)
        await self.app(scope, receive, send)
        for hook in self.after:
            hook(f"{key[0]} {key[1]}", path, number)


# ------------------------------------------------------------------ exact table contents


def dump_tables(
    database_url: str, tables: Iterable[str] = DATA_TABLES, schema: str = "flowretail"
) -> dict[str, list[str]]:
    """Every row of the tables as JSON text, sorted: the exact content, for before/after comparison."""
    out: dict[str, list[str]] = {}
    with psycopg.connect(database_url) as conn:
        for table in tables:
            exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.{table}",)).fetchone()
            if exists is None or exists[0] is None:
                out[table] = []
                continue
            rows = conn.execute(
                sql.SQL("SELECT row_to_json(t)::text FROM {}.{} t").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
            ).fetchall()
            out[table] = sorted(r[0] for r in rows)
    return out


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class Current:
    """The current state of one tenant: groups, memberships and current customer versions (by hash)."""

    groups: frozenset[tuple[Any, ...]]
    memberships: frozenset[tuple[str, str]]
    customers: frozenset[tuple[str, str]]

    def rows(self) -> int:
        return len(self.groups) + len(self.memberships) + len(self.customers)

    def missing_from(self, actual: Current) -> int:
        """Rows of this (expected) state that ``actual`` lacks or holds differently."""
        return (
            len(self.groups - actual.groups)
            + len(self.memberships - actual.memberships)
            + len(self.customers - actual.customers)
        )


def as_loaded(customer: dict[str, Any]) -> dict[str, Any]:
    """A served customer as the load keeps it: U+0000 removed (PostgreSQL cannot store it)."""
    items = [customer]
    remove_nul("", items, None, strict=False)
    return items[0]


def expected_current(state: SimulatorState, tenant: str | None = None) -> Current:
    tenant = tenant or tenant_of(state)
    groups = state.groups(tenant)
    memberships = {
        (g["customerGroupUid"], uid) for g in groups for uid in state.member_uids(tenant, g["customerGroupUid"])
    }
    customers = {(uid, row_hash(as_loaded(state.customer(tenant, uid)))) for uid in {u for _, u in memberships}}
    return Current(
        frozenset(
            (
                g["customerGroupUid"],
                g["name"],
                g["createdBy"],
                _ts(g["createdAt"]),
                g["lastModifiedBy"],
                _ts(g["lastModifiedAt"]),
            )
            for g in groups
        ),
        frozenset(memberships),
        frozenset(customers),
    )


def actual_current(database_url: str, tenant: str) -> Current:
    with psycopg.connect(database_url) as conn:
        exists = conn.execute("SELECT to_regclass('flowretail.customer_groups')").fetchone()
        if exists is None or exists[0] is None:
            return Current(frozenset(), frozenset(), frozenset())
        groups = conn.execute(
            "SELECT customer_group_uid, name, created_by, created_at, last_modified_by, last_modified_at "
            "FROM flowretail.customer_groups WHERE tenant_uid = %s",
            (tenant,),
        ).fetchall()
        memberships = conn.execute(
            "SELECT customer_group_uid, customer_uid FROM flowretail.customer_group_memberships WHERE tenant_uid = %s",
            (tenant,),
        ).fetchall()
        customers = conn.execute(
            "SELECT customer_uid, row_hash FROM flowretail.customer_snapshots WHERE tenant_uid = %s AND valid_to IS NULL",
            (tenant,),
        ).fetchall()
    return Current(frozenset(groups), frozenset(memberships), frozenset(customers))


def load_runs(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT run_id, tenant_uid, status, error FROM flowretail.load_runs ORDER BY started_at, run_id"
        ).fetchall()


def change_everything(state: SimulatorState, tenant: str | None = None) -> None:
    """Out-of-band changes touching every table a load writes, so a half-applied load would show."""
    tenant = tenant or tenant_of(state)
    groups = state.groups(tenant)
    for g in groups:
        state.rename_group(tenant, g["customerGroupUid"], f"{g['name']} (changed)")
    populated = [g["customerGroupUid"] for g in groups if state.member_uids(tenant, g["customerGroupUid"])]
    first = populated[0]
    members = state.member_uids(tenant, first)
    state.remove_members(tenant, first, members[:2])
    outsiders = [u for u in state.customer_uids(tenant) if u not in set(members)]
    state.add_members(tenant, first, outsiders[:3])
    state.update_customer(tenant, members[-1], city="Hammerfest")
    state.delete_group(tenant, populated[-1])


# ------------------------------------------------------------------ background processes


def wait_until(predicate: Callable[[], T | None], *, timeout: float = 60.0, interval: float = 0.05, what: str) -> T:
    """Poll until ``predicate`` returns something truthy; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(interval)


@dataclass
class Worker:
    """A ``python -m tests.reliability.worker`` process, its output kept in files."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    env: dict[str, str] = field(default_factory=dict)

    def kill(self) -> int:
        self.proc.kill()
        return self.proc.wait(timeout=30)

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout=timeout)

    def stdout(self) -> str:
        return self.out.read_text("utf-8", "replace")

    def stderr(self) -> str:
        return self.err.read_text("utf-8", "replace")


def spawn_worker(args: list[str], env: dict[str, str], workdir: Path) -> Worker:
    """Start the worker in its own process group with only the given environment (plus PATH)."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / f"worker-{len(list(workdir.glob('worker-*.out')))}.out"
    err = out.with_suffix(".err")
    full_env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1", **env}
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.worker", *args],
            cwd=REPO_ROOT,
            env=full_env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    return Worker(proc, out, err, full_env)


def backend_activity(database_url: str) -> list[tuple[Any, ...]]:
    """(pid, state, wait_event_type, query) of the other sessions on the test database."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            "SELECT pid, state, wait_event_type, query FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchall()


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


# ------------------------------------------------------------------ exact checks that also feed the report


def check_unchanged(scenario: Any, before: dict[str, list[str]], database_url: str) -> None:
    """The warehouse holds exactly what it held before the failed run (else a partial state)."""
    after = dump_tables(database_url)
    if after != before:
        scenario.partial()
    assert after == before


def check_final(scenario: Any, state: SimulatorState, database_url: str, tenant: str | None = None) -> Current:
    """The warehouse equals the simulator's current data exactly; missing rows are counted as lost."""
    tenant = tenant or tenant_of(state)
    expected = expected_current(state, tenant)
    actual = actual_current(database_url, tenant)
    scenario.lost(expected.missing_from(actual))
    assert actual == expected
    return actual


def prime(state: SimulatorState, database_url: str) -> dict[str, list[str]]:
    """A successful first load, then out-of-band changes: the state a failed second load must keep."""
    run_load(state, database_url, "run-0")
    change_everything(state)
    return dump_tables(database_url)


def failed_run_row(database_url: str, run_id: str) -> tuple[str, str | None]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status, error FROM flowretail.load_runs WHERE run_id = %s", (run_id,)).fetchone()
    assert row is not None, f"no load_runs row for {run_id}"
    return str(row[0]), row[1]


def check_groups_and_members(
    scenario: Any, state: SimulatorState, database_url: str, tenant: str | None = None
) -> None:
    """Groups, memberships and the set of current customers exact (customer content not compared)."""
    tenant = tenant or tenant_of(state)
    expected = expected_current(state, tenant)
    actual = actual_current(database_url, tenant)
    wanted = Current(expected.groups, expected.memberships, frozenset((u, "") for u, _ in expected.customers))
    got = Current(actual.groups, actual.memberships, frozenset((u, "") for u, _ in actual.customers))
    scenario.lost(wanted.missing_from(got))
    assert got == wanted


class PromiseBroken(AssertionError):
    """Raised only by ``promise``: a strict xfail with ``raises=PromiseBroken`` then fails for exactly
    the documented bug, never because a precondition of the scenario went wrong."""


def promise(ok: bool, message: str) -> None:
    if not ok:
        raise PromiseBroken(message)


def pause_in_copy(nth: int, pause: Any) -> Any:
    """A replacement for ``_Stager.copy`` whose ``nth`` call sends half its rows and then awaits
    ``pause(backend_pid)`` inside the open COPY; every other call behaves as the original."""
    from psycopg import sql

    from pipelines.warehouse import load as load_module

    original = load_module._Stager.copy
    calls = 0

    async def copy(self: Any, table: str, frames: list[Any]) -> None:
        nonlocal calls
        calls += 1
        if calls != nth:
            await original(self, table, frames)
            return
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in frames[0].columns)
        )
        rows = [row for frame in frames for row in frame.itertuples(index=False, name=None)]
        async with self.conn.cursor() as cur, cur.copy(statement) as writer:
            for row in rows[: max(1, len(rows) // 2)]:
                await writer.write_row(row)
            await pause(self.conn.info.backend_pid)
            for row in rows[max(1, len(rows) // 2) :]:
                await writer.write_row(row)

    return copy
