"""Groups that outlive their segments: find them (orphans) and retire them through the API.

A registered group (``segment_push_groups``) that no current segment declares any more, because the
segment file is gone or its ``push_to_group_uid`` changed, is an orphan: POS staff keep targeting an
audience no one maintains. Every push lists the orphans; nothing is deleted unless an operator
retires a group explicitly. A retirement empties the group in batches through the add/remove call,
then deletes it (unless kept), logging every call in ``segment_push_log`` like a push. Each step
reads the live group first, so a rerun after a crash at any point converges.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import partial
from typing import Any

import psycopg
from psycopg import sql

from pipelines.flowretail.client import AsyncFlowRetailClient
from pipelines.flowretail.errors import NotFoundError
from pipelines.segment_push.audit import assignments, audited, group_lock, insert_into, log_call
from pipelines.segment_push.status import GroupStatus, PushStatus, RetireStatus
from pipelines.warehouse.schema import SCHEMA

_S = sql.Identifier(SCHEMA)


class RetireRefusedError(RuntimeError):
    """The group may not be retired by this product (not its own, or still declared)."""


@dataclass(frozen=True)
class RegisteredGroup:
    """A row of the ownership registry."""

    tenant_uid: str
    group_uid: str
    segment: str
    ownership: str
    status: str
    last_push_at: datetime | None


@dataclass(frozen=True)
class OrphanGroup:
    """A registered, not retired group that no segment declares; ``live_size`` None = gone from the API."""

    tenant_uid: str
    group_uid: str
    segment: str
    ownership: str
    live_size: int | None
    last_push_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def registered_groups(conn: psycopg.Connection[Any], tenant_uid: str) -> list[RegisteredGroup]:
    """The tenant's registry rows with the time of each group's last verified push."""
    rows = conn.execute(
        sql.SQL(
            "SELECT g.tenant_uid, g.customer_group_uid, g.segment, g.ownership, g.status, "
            "(SELECT max(r.finished_at) FROM {}.segment_push_runs r WHERE r.tenant_uid = g.tenant_uid "
            "AND r.customer_group_uid = g.customer_group_uid AND r.status = %s AND NOT r.dry_run) "
            "FROM {}.segment_push_groups g WHERE g.tenant_uid = %s ORDER BY g.customer_group_uid"
        ).format(_S, _S),
        (PushStatus.VERIFIED, tenant_uid),
    ).fetchall()
    return [RegisteredGroup(*row) for row in rows]


def orphan_candidates(registry: Iterable[RegisteredGroup], declared_group_uids: Iterable[str]) -> list[RegisteredGroup]:
    """Active registered groups whose uid no current segment declares (pure)."""
    declared = set(declared_group_uids)
    return [g for g in registry if g.status == GroupStatus.ACTIVE and g.group_uid not in declared]


async def find_orphans(
    client: AsyncFlowRetailClient, conn: psycopg.Connection[Any], tenant_uid: str, declared_group_uids: Iterable[str]
) -> list[OrphanGroup]:
    """The tenant's orphans with their live size read from the API (reads only)."""
    orphans = []
    for group in orphan_candidates(registered_groups(conn, tenant_uid), declared_group_uids):
        try:
            size: int | None = len(await client.fetch_group_member_uids(tenant_uid, group.group_uid))
        except NotFoundError:
            size = None
        orphans.append(
            OrphanGroup(tenant_uid, group.group_uid, group.segment, group.ownership, size, group.last_push_at)
        )
    return orphans


def record_orphans(conn: psycopg.Connection[Any], run_id: str, tenant_uid: str, orphans: list[OrphanGroup]) -> None:
    """What this run found, so the CLI summary reads it back like the pushes."""
    with conn.transaction():
        conn.execute(
            sql.SQL("DELETE FROM {}.segment_push_orphans WHERE run_id = %s AND tenant_uid = %s").format(_S),
            (run_id, tenant_uid),
        )
        for orphan in orphans:
            row = _row(run_id, orphan)
            conn.execute(insert_into("segment_push_orphans", row), row)


def _row(run_id: str, record: OrphanGroup | Retirement) -> dict[str, Any]:
    """A run's record as its table row: the dataclass fields are the columns, the group uid's aside."""
    row = {"run_id": run_id, **asdict(record)}
    row["customer_group_uid"] = row.pop("group_uid")
    return row


@dataclass
class Retirement:
    """What a retirement did (or, dry, would do) to one group of one tenant."""

    tenant_uid: str
    group_uid: str
    segment: str | None
    dry_run: bool
    keep_group: bool
    status: RetireStatus = RetireStatus.FAILED
    live_before: int | None = None
    removed: int = 0
    deleted: bool = False
    detail: str = ""


def check_retirable(
    registered: RegisteredGroup | None, tenant_uid: str, group_uid: str, declared: dict[str, str]
) -> None:
    """Refuse a group the product did not create, or one a segment still pushes to (pure)."""
    where = f"group {group_uid} of tenant {tenant_uid}"
    if registered is None:
        raise RetireRefusedError(
            f"{where} is not in flowretail.segment_push_groups: this product never created it, so it will not "
            "empty or delete it (nothing was written)"
        )
    if registered.ownership != "created":
        raise RetireRefusedError(
            f"{where} was {registered.ownership}, not created, by this product: retire deletes only groups the "
            "product created; remove it in Flow Retail if it is no longer wanted (nothing was written)"
        )
    if group_uid in declared:
        raise RetireRefusedError(
            f"{where} is still declared by segment {declared[group_uid]} (push_to_group_uid): remove or change "
            "that first, or the next push recreates it (nothing was written)"
        )


def _registered(conn: psycopg.Connection[Any], tenant_uid: str, group_uid: str) -> RegisteredGroup | None:
    return next((g for g in registered_groups(conn, tenant_uid) if g.group_uid == group_uid), None)


async def retire_group(
    client: AsyncFlowRetailClient,
    conn: psycopg.Connection[Any],
    run_id: str,
    tenant_uid: str,
    group_uid: str,
    *,
    declared: dict[str, str],
    batch_size: int,
    dry_run: bool = False,
    keep_group: bool = False,
) -> Retirement:
    """Empty the group in batches, delete it unless ``keep_group``, mark the registry row retired.

    ``declared`` maps every group uid a current segment pushes to onto that segment. The outcome
    (also a refusal or a failure) is recorded in ``segment_push_retirements``.
    """
    registered = _registered(conn, tenant_uid, group_uid)
    result = Retirement(tenant_uid, group_uid, registered.segment if registered else None, dry_run, keep_group)
    try:
        check_retirable(registered, tenant_uid, group_uid, declared)
        with group_lock(conn, tenant_uid, group_uid):
            await _retire_locked(client, conn, run_id, result, batch_size)
    except Exception as exc:
        result.status = RetireStatus.REFUSED if isinstance(exc, RetireRefusedError) else RetireStatus.FAILED
        result.detail = str(exc)
        raise
    finally:
        _record_retirement(conn, run_id, result)
    return result


async def _retire_locked(
    client: AsyncFlowRetailClient, conn: psycopg.Connection[Any], run_id: str, result: Retirement, batch_size: int
) -> None:
    tenant, group = result.tenant_uid, result.group_uid

    async def call(
        action: str,
        ok: int,
        request: Callable[[], Awaitable[None]],
        batch: int | None = None,
        remove: list[str] | None = None,
    ) -> None:
        call_id = log_call(
            conn,
            run_id=run_id,
            tenant_uid=tenant,
            segment=result.segment or "",
            group_uid=group,
            action=action,
            http_status=None,
            batch_number=batch,
            remove_uids=remove or [],
        )
        await audited(conn, call_id, ok, request)

    try:
        members = sorted(await client.fetch_group_member_uids(tenant, group))
    except NotFoundError:
        members = None
    result.live_before = None if members is None else len(members)
    if result.dry_run:
        result.status = RetireStatus.DRY_RUN
        result.detail = _describe(result, members, batch_size)
        return
    for number, start in enumerate(range(0, len(members or ()), batch_size), start=1):
        batch = (members or [])[start : start + batch_size]
        await call(
            "retire_remove", 204, partial(client.update_group_customers, tenant, group, [], batch), number, batch
        )
        result.removed += len(batch)
    if members is not None and not result.keep_group:
        # A 404: deleted meanwhile (out of band, or by a lost answer of this very call); the goal is reached.
        with contextlib.suppress(NotFoundError):
            await call("delete", 204, partial(client.delete_customer_group, tenant, group))
        result.deleted = True
    _mark_retired(conn, tenant, group)
    result.status = RetireStatus.RETIRED
    result.detail = _describe(result, members, batch_size)


def _describe(result: Retirement, members: list[str] | None, batch_size: int) -> str:
    if members is None:
        return "the group no longer exists in Flow Retail; registry row marked retired"
    calls = -(-len(members) // batch_size)
    verb = "would remove" if result.dry_run else "removed"
    end = "keep the empty group" if result.keep_group else "delete the group"
    return f"{verb} {len(members)} members in {calls} call(s), then {end}"


def _mark_retired(conn: psycopg.Connection[Any], tenant_uid: str, group_uid: str) -> None:
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "UPDATE {}.segment_push_groups SET status = %s, retired_at = now() "
                "WHERE tenant_uid = %s AND customer_group_uid = %s"
            ).format(_S),
            (GroupStatus.RETIRED, tenant_uid, group_uid),
        )
        conn.execute(
            sql.SQL("DELETE FROM {}.segment_push_members WHERE tenant_uid = %s AND customer_group_uid = %s").format(_S),
            (tenant_uid, group_uid),
        )


def _record_retirement(conn: psycopg.Connection[Any], run_id: str, r: Retirement) -> None:
    row = _row(run_id, r)
    outcome = ["status", "live_before", "removed", "deleted", "detail"]
    conn.execute(
        insert_into("segment_push_retirements", row)
        + sql.SQL(" ON CONFLICT (run_id, tenant_uid, customer_group_uid) DO UPDATE SET {}, at = now()").format(
            assignments(outcome, excluded=True)
        ),
        row,
    )
