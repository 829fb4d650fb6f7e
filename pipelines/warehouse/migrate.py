"""The warehouse's schema lifecycle: ``flowretail migrate``, run once before a tick's loads or at deploy.

Why a step of its own: DDL takes strong locks. ``ALTER TABLE`` holds ACCESS EXCLUSIVE (every
reader and writer queues behind it) and even ``CREATE INDEX IF NOT EXISTS`` takes a SHARE lock
before it sees that the index exists. Run inside each load, they made every tenant's merge and
every analyst's query wait for the slowest load. So the loads run no DDL at all, and this step:

- creates a product schema only when the catalog lacks it (PostgreSQL checks CREATE on the
  database before it checks whether ``CREATE SCHEMA IF NOT EXISTS`` has anything to do), after
  checking the role's privileges, so a missing one stops the run with one line;
- applies the idempotent statements of ``ddl_steps()`` under ``lock_timeout`` when the schema is
  behind: the marker ``flowretail.schema_version`` holds a hash of those statements, so a load's
  check costs one indexed read, and declaring a table or column in tables.py is all it needs;
- promotes API fields the loads registered (``customer_fields``, status ``pending``) to columns of
  ``customer_snapshots``, at most ``MAX_PROMOTED_FIELDS`` of them, moving their values out of
  ``extra_fields``; later fields stay in ``extra_fields`` for good.

Loads hold ``MIGRATE_LOCK`` shared for their whole run; this step takes it exclusively, waiting for
running loads when tables must change, and leaving promotions for the next run rather than
waiting when loads are running.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pipelines.sql_models.project import DEFAULT_TARGET_SCHEMA
from pipelines.warehouse.locks import MIGRATE_LOCK
from pipelines.warehouse.postgres import create_schema_if_missing, mask_url, masked_database_url
from pipelines.warehouse.schema import EXTRA_FIELDS_COLUMN, MAX_PROMOTED_FIELDS, SCHEMA, customer_field_columns
from pipelines.warehouse.tables import (
    Statement,
    column_name_for_field,
    ddl_statements,
    snapshot_bookkeeping_columns,
)

logger = logging.getLogger(__name__)

DDL_LOCK_TIMEOUT = "5s"
GRANTS_HINT = "a DBA grants it with deploy/grants/etl_role.sql (see README, Least privilege)"


class MigrationError(RuntimeError):
    """The schema could not be brought up to date; the message is one line, safe to print."""


class PrivilegeError(MigrationError):
    """The role lacks a privilege the product needs; the message names privilege, object and role."""


def product_schemas() -> tuple[str, ...]:
    """The schemas the product writes: raw tables and push audit, then the SQL models."""
    return (SCHEMA, DEFAULT_TARGET_SCHEMA)


def ddl_steps() -> list[Statement]:
    """Every idempotent DDL statement of the warehouse, in order, rendered from its table declarations
    (pipelines/warehouse/tables.py): declare a table or column there, not here."""
    return ddl_statements()


def ddl_fingerprint(steps: list[Statement] | None = None) -> str:
    """The schema version: a hash of the statements, so any declared change makes the schema 'behind'.

    A new SQLAlchemy release that renders the same DDL differently changes it too; the statements
    are idempotent, so that costs one migrate and changes nothing."""
    text = "\n;\n".join(step.as_string(None) for step in (ddl_steps() if steps is None else steps))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


@dataclass(frozen=True)
class Privileges:
    """What the connected role may do: on the database, and per product schema (None: schema missing)."""

    role: str
    database: str
    create_on_database: bool
    temporary_on_database: bool
    create_in_schema: dict[str, bool | None]


def missing_privileges(p: Privileges) -> str | None:
    """One line naming each missing privilege with its object and the role, or None when all are there."""
    missing = [
        f'CREATE on database "{p.database}" (schema "{schema}" is missing and must be created)'
        for schema, can_create in p.create_in_schema.items()
        if can_create is None and not p.create_on_database
    ]
    missing += [
        f'USAGE and CREATE on schema "{schema}" (or its ownership)'
        for schema, can_create in p.create_in_schema.items()
        if can_create is False
    ]
    if not p.temporary_on_database:
        missing.append(f'TEMPORARY on database "{p.database}" (the load stages pages in temporary tables)')
    if not missing:
        return None
    return f'missing privilege for role "{p.role}": {"; ".join(missing)}; {GRANTS_HINT}'


def _read_privileges(conn: psycopg.Connection[Any], schemas: tuple[str, ...]) -> Privileges:
    row = conn.execute(
        "SELECT current_user, current_database(), has_database_privilege(current_database(), 'CREATE'), "
        "has_database_privilege(current_database(), 'TEMPORARY')"
    ).fetchone()
    assert row is not None
    found = dict(
        conn.execute(
            "SELECT nspname, has_schema_privilege(oid, 'USAGE') AND has_schema_privilege(oid, 'CREATE') "
            "FROM pg_namespace WHERE nspname = ANY(%s)",
            (list(schemas),),
        ).fetchall()
    )
    return Privileges(str(row[0]), str(row[1]), bool(row[2]), bool(row[3]), {s: found.get(s) for s in schemas})


@dataclass(frozen=True)
class Promotion:
    """A registered field that becomes a column (``new_column``) or binds to one an older release added."""

    api_field: str
    pg_type: str
    column_name: str
    new_column: bool = True


def plan_promotions(
    pending: list[tuple[str, str]],
    field_columns: dict[str, str],
    claimed: set[str],
    *,
    cap: int = MAX_PROMOTED_FIELDS,
) -> tuple[list[Promotion], list[str]]:
    """Which pending fields (oldest first) become columns, and which stay in extra_fields for good.

    ``field_columns`` are the table's field columns (name -> type), ``claimed`` the names that
    already hold a field. Columns beyond the spec's count against ``cap``; a column an older
    release added for the field is bound to it without adding one.
    """
    spec = {c.name for c in customer_field_columns()}
    added = sum(1 for name in field_columns if name not in spec)
    claimed = set(claimed)
    promote: list[Promotion] = []
    keep: list[str] = []
    for api_field, pg_type in pending:
        name = column_name_for_field(api_field)
        if name in claimed:
            keep.append(api_field)
        elif name in field_columns:
            promote.append(Promotion(api_field, field_columns[name], name, new_column=False))
        elif added < cap:
            promote.append(Promotion(api_field, pg_type, name))
            added += 1
        else:
            keep.append(api_field)
        claimed.add(name)
    return promote, keep


_BACKFILL_FITS = {
    "jsonb": "true",
    "text": "true",
    "boolean": "jsonb_typeof({e} -> {k}) = 'boolean'",
    "bigint": "jsonb_typeof({e} -> {k}) = 'number' AND ({e} ->> {k}) ~ '^-?[0-9]{{1,18}}$'",
    "numeric": "jsonb_typeof({e} -> {k}) = 'number'",
}
_BACKFILL_VALUE = {
    "jsonb": "{e} -> {k}",
    # as the load writes text columns: strings as they are, anything else as its JSON text
    "text": "CASE WHEN jsonb_typeof({e} -> {k}) = 'string' THEN {e} ->> {k} ELSE ({e} -> {k})::text END",
}


def promotion_statements(p: Promotion) -> list[sql.Composed]:
    """Add the column (when new), move the field's values that fit its type out of extra_fields,
    and mark the field promoted. Values of another type stay in extra_fields."""
    table = sql.Identifier(SCHEMA, "customer_snapshots")
    fmt = {"e": sql.Identifier(EXTRA_FIELDS_COLUMN), "k": sql.Literal(p.api_field)}
    fits = sql.SQL(_BACKFILL_FITS.get(p.pg_type, "false")).format(**fmt)
    value = sql.SQL(_BACKFILL_VALUE.get(p.pg_type, "({e} ->> {k})::" + p.pg_type)).format(**fmt)
    statements = []
    if p.new_column:
        statements.append(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                table, sql.Identifier(p.column_name), sql.SQL(p.pg_type)
            )
        )
    statements += [
        sql.SQL("UPDATE {t} SET {c} = {v}, {e} = nullif({e} - {k}, '{{}}') WHERE {e} ? {k} AND {f}").format(
            t=table, c=sql.Identifier(p.column_name), v=value, f=fits, **fmt
        ),
        sql.SQL(
            "UPDATE {}.customer_fields SET status = 'column', column_name = %s, decided_at = now() WHERE api_field = %s"
        ).format(sql.Identifier(SCHEMA)),
    ]
    return statements


@dataclass
class MigrationReport:
    """What one migrate did, for the CLI and the logs."""

    created_schemas: list[str] = field(default_factory=list)
    ddl_applied: bool = False
    promoted: list[Promotion] = field(default_factory=list)
    kept_in_extra: list[str] = field(default_factory=list)
    deferred: str | None = None

    def lines(self) -> list[str]:
        lines = [f"created schema {s}" for s in self.created_schemas]
        lines.append("schema brought up to date" if self.ddl_applied else "schema already up to date")
        lines += [f"promoted field {p.api_field} to column {p.column_name} ({p.pg_type})" for p in self.promoted]
        if self.kept_in_extra:
            lines.append(
                f"kept in {EXTRA_FIELDS_COLUMN} for good (over the cap of {MAX_PROMOTED_FIELDS} new columns or a name "
                f"clash): {', '.join(self.kept_in_extra)}"
            )
        if self.deferred:
            lines.append(self.deferred)
        return lines


def _schema_state(conn: psycopg.Connection[Any]) -> tuple[str | None, int, int]:
    """(marker fingerprint or None, pending fields, product schemas present): one cheap round trip or two."""
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL, (SELECT count(*) FROM pg_namespace WHERE nspname = ANY(%s))",
        (f'"{SCHEMA}".schema_version', list(product_schemas())),
    ).fetchone()
    assert row is not None
    if not row[0]:
        return None, 0, int(row[1])
    state = conn.execute(
        sql.SQL(
            "SELECT (SELECT fingerprint FROM {s}.schema_version), "
            "(SELECT count(*) FROM {s}.customer_fields WHERE status = 'pending')"
        ).format(s=sql.Identifier(SCHEMA))
    ).fetchone()
    assert state is not None
    return state[0], int(state[1]), int(row[1])


def ensure_current_schema(database_url: str) -> MigrationReport | None:
    """The check every load makes: nothing (one cheap read) when the schema is current, else migrate."""
    with _connect(database_url) as conn:
        fingerprint, pending, schemas = _schema_state(conn)
        if fingerprint == ddl_fingerprint() and not pending and schemas == len(product_schemas()):
            return None
        return migrate_on(conn, force=False)


def migrate(database_url: str, *, force: bool = False) -> MigrationReport:
    """Bring the schema up to date; ``force`` re-runs every idempotent statement whatever the marker says."""
    with _connect(database_url) as conn:
        return migrate_on(conn, force=force)


def _connect(database_url: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(database_url, autocommit=True)
    except psycopg.OperationalError as exc:
        detail = mask_url(" ".join(str(exc).split()))
        raise MigrationError(f"DATABASE_URL: cannot connect to {masked_database_url(database_url)}: {detail}") from None


def migrate_on(conn: psycopg.Connection[Any], *, force: bool = False) -> MigrationReport:
    """Migrate on an open connection (autocommit, or a test's transaction)."""
    report = MigrationReport()
    privileges = _read_privileges(conn, product_schemas())
    problem = missing_privileges(privileges)
    if problem:
        raise PrivilegeError(problem)
    fingerprint = ddl_fingerprint()
    missing_schema = None in privileges.create_in_schema.values()
    behind = force or missing_schema or _schema_state(conn)[0] != fingerprint
    if behind:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
    else:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATE_LOCK,)).fetchone()
        if not (row and row[0]):
            report.deferred = (
                f"fields stay pending in {EXTRA_FIELDS_COLUMN}: loads or another migrate are running; "
                "the next migrate promotes them"
            )
            return report
    try:
        for schema, can_create in privileges.create_in_schema.items():
            if can_create is None and create_schema_if_missing(conn, schema):
                report.created_schemas.append(schema)
        if force or _schema_state(conn)[0] != fingerprint:
            _apply_ddl(conn, privileges.role, fingerprint)
            report.ddl_applied = True
        _promote_fields(conn, report)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))
    for line in report.lines():
        logger.info("migrate: %s", line)
    return report


def _apply_ddl(conn: psycopg.Connection[Any], role: str, fingerprint: str) -> None:
    step: Statement | None = None
    try:
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(DDL_LOCK_TIMEOUT)))
            for step in ddl_steps():
                conn.execute(step)
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.schema_version (singleton, fingerprint, migrated_at) VALUES (true, %s, now()) "
                    "ON CONFLICT (singleton) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, "
                    "migrated_at = EXCLUDED.migrated_at"
                ).format(sql.Identifier(SCHEMA)),
                (fingerprint,),
            )
    except psycopg.errors.InsufficientPrivilege as exc:
        statement = step.as_string(None).split("(")[0].strip() if step is not None else "migrate"
        raise PrivilegeError(
            f'missing privilege for role "{role}": {" ".join(str(exc).split())} (while running {statement}); {GRANTS_HINT}'
        ) from None
    except psycopg.errors.LockNotAvailable as exc:
        raise MigrationError(
            f"migrate could not take a lock within lock_timeout {DDL_LOCK_TIMEOUT}: {' '.join(str(exc).split())}; "
            "a long query or transaction holds the table, rerun when it ends"
        ) from None


def _promote_fields(conn: psycopg.Connection[Any], report: MigrationReport) -> None:
    """Decide every pending field; promotions that cannot lock the table in time stay pending."""
    s = sql.Identifier(SCHEMA)
    pending = [
        (str(a), str(t))
        for a, t in conn.execute(
            sql.SQL(
                "SELECT api_field, pg_type FROM {}.customer_fields WHERE status = 'pending' "
                "ORDER BY first_seen_at, api_field"
            ).format(s)
        ).fetchall()
    ]
    if not pending:
        return
    catalog = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
        "AND attnum > 0 AND NOT attisdropped",
        (f'"{SCHEMA}".customer_snapshots',),
    ).fetchall()
    field_columns = {str(n): str(t) for n, t in catalog if n not in snapshot_bookkeeping_columns()}
    registered = conn.execute(
        sql.SQL("SELECT column_name FROM {}.customer_fields WHERE column_name IS NOT NULL").format(s)
    ).fetchall()
    claimed = {c.name for c in customer_field_columns()} | {str(r[0]) for r in registered}
    promote, keep = plan_promotions(pending, field_columns, claimed)
    try:
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(DDL_LOCK_TIMEOUT)))
            for promotion in promote:
                *changes, mark = promotion_statements(promotion)
                for statement in changes:
                    conn.execute(statement)
                conn.execute(mark, (promotion.column_name, promotion.api_field))
            conn.execute(
                sql.SQL(
                    "UPDATE {}.customer_fields SET status = 'extra', decided_at = now() WHERE api_field = ANY(%s)"
                ).format(s),
                (keep,),
            )
    except psycopg.errors.LockNotAvailable:
        report.deferred = (
            f"fields stay pending in {EXTRA_FIELDS_COLUMN}: {SCHEMA}.customer_snapshots was busy for longer than "
            f"lock_timeout {DDL_LOCK_TIMEOUT}; the next migrate promotes them"
        )
        return
    report.promoted, report.kept_in_extra = promote, keep
