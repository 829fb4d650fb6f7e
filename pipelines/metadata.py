"""Dagster metadata read from the warehouse's catalog, shared by the asset stages."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import dagster as dg
import psycopg
from tabulate import tabulate


def table_schema(conn: psycopg.Connection[Any], schema: str, table: str) -> dg.TableSchema:
    """The column schema of a real table, as the UI shows it (``dagster/column_schema``)."""
    rows = conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
        (schema, table),
    ).fetchall()
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, data_type, constraints=dg.TableColumnConstraints(nullable=nullable == "YES"))
            for name, data_type, nullable in rows
        ]
    )


# CommonMark lets any ASCII punctuation be backslash-escaped; these are the characters that can start
# markup (emphasis, links, HTML, headings, lists, tables, entities) in a cell of a metadata table.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~&])")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")


def md_escape(value: object) -> str:
    """Text from the API (group names, uids, messages) as literal Markdown: no markup, no raw HTML, one line.

    Group names are typed by store staff; unescaped, a name like ``<img src=x onerror=...>`` or
    ``| x |`` would render as HTML or break the table in the Dagster UI.
    """
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _LINE_BREAKS.sub(" ", "" if value is None else str(value)))


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown (GitHub) table whose every cell is escaped with :func:`md_escape`.

    Cells are text as they are: no number parsing, so "007" or "1e3" stay as written.
    """
    return tabulate(
        [[md_escape(cell) for cell in row] for row in rows],
        headers=[md_escape(h) for h in header],
        tablefmt="github",
        disable_numparse=True,
    )
