"""What the model runner built, so a model that no longer exists can be found and dropped safely.

The runner records every relation it builds in ``<target schema>._sql_model_relations``. A recorded
relation that still exists but whose model file is gone is *stale*: listed by every run, dropped
only on request (``flowretail run --drop-stale-models``), and only if the runner built it; a
relation someone else created in the schema is never touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from pipelines.warehouse.locks import MODEL_REGISTRY_LOCK
from pipelines.warehouse.tables import model_relations, table_ddl

REGISTRY = model_relations.name
_KINDS = {"r": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "p": "TABLE"}


@dataclass(frozen=True)
class StaleRelation:
    """A relation the runner built for a model that the project no longer has."""

    schema: str
    name: str
    kind: str
    built_at: datetime


def record_built(conn: psycopg.Connection[Any], schema: str, name: str, materialized: str) -> None:
    """Remember that the runner built ``schema.name`` (called after each successful build)."""
    registry = sql.Identifier(schema, REGISTRY)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MODEL_REGISTRY_LOCK,))
        for statement in table_ddl(model_relations, schema):
            conn.execute(statement)
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (name, materialized, built_at) VALUES (%s, %s, now()) "
                "ON CONFLICT (name) DO UPDATE SET materialized = EXCLUDED.materialized, built_at = now()"
            ).format(registry),
            (name, materialized),
        )


def stale_relations(conn: psycopg.Connection[Any], schema: str, model_names: Iterable[str]) -> list[StaleRelation]:
    """Relations the runner built in ``schema`` that still exist but belong to no current model."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}"."{REGISTRY}"',)).fetchone()
    if not (exists and exists[0]):
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT r.name, c.relkind::text, r.built_at FROM {} r JOIN pg_class c ON c.relname = r.name "
            "JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = %s "
            "WHERE NOT (r.name = ANY(%s)) ORDER BY r.name"
        ).format(sql.Identifier(schema, REGISTRY)),
        (schema, sorted(set(model_names))),
    ).fetchall()
    return [StaleRelation(schema, name, _KINDS.get(kind, "TABLE"), built_at) for name, kind, built_at in rows]


def drop_stale_relations(conn: psycopg.Connection[Any], schema: str, model_names: Iterable[str]) -> list[str]:
    """Drop the stale relations (views first, never CASCADE) and forget them; returns their names.

    A relation something else still depends on makes the database refuse the drop, and that error
    propagates: nothing outside the runner's own relations is ever removed.
    """
    stale = stale_relations(conn, schema, model_names)
    with conn.transaction():
        for relation in sorted(stale, key=lambda r: (r.kind == "TABLE", r.name)):
            conn.execute(sql.SQL("DROP {} {}").format(sql.SQL(relation.kind), sql.Identifier(schema, relation.name)))
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE name = %s").format(sql.Identifier(schema, REGISTRY)), (relation.name,)
            )
    return [r.name for r in stale]
