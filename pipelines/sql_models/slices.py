"""Which tenants' rows a build or a data test covers: one tenant (a tenant's run) or several at once.

A run over several tenants (a partition range: the CLI's models after all its loads, a single-run
backfill) builds each per-tenant table once for all of them instead of once per tenant, so the
fixed cost of a model step (statements, Dagster events) is paid once per run, not once per tenant.
The filter is the same SQL either way; with one tenant it is the ``=`` it always was.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from pipelines.sql_models.config import TENANT_COLUMN


def tenant_condition(tenants: Sequence[str]) -> sql.Composable:
    """``tenant_uid = 'a'`` for one tenant, ``tenant_uid IN ('a', 'b')`` for several.

    Literals, not parameters: the planner then sees the values (and their statistics), and the text
    can sit inside a CTE or a rendered model. Refuses an empty list, which would silently match nothing.
    """
    if isinstance(tenants, str):  # a str is a Sequence[str] of its characters
        raise TypeError(f"tenants must be a list of tenant uids, not the string {tenants!r}")
    if not tenants:
        raise ValueError("a tenant slice needs at least one tenant")
    column = sql.Identifier(TENANT_COLUMN)
    if len(tenants) == 1:
        return sql.SQL("{} = {}").format(column, sql.Literal(tenants[0]))
    return sql.SQL("{} IN ({})").format(column, sql.SQL(", ").join(sql.Literal(t) for t in tenants))


def describe_tenants(tenants: Sequence[str], shown: int = 3) -> str:
    """``tenant 'a'``, ``tenants 'a', 'b'`` or ``50 tenants ('a', 'b', 'c', ...)``: names what a run
    was building in a message that stays one line however many tenants the run covers."""
    if len(tenants) == 1:
        return f"tenant {tenants[0]!r}"
    names = ", ".join(repr(t) for t in tenants[:shown])
    return f"tenants {names}" if len(tenants) <= shown else f"{len(tenants)} tenants ({names}, ...)"
