"""Fixtures of the SQL model tests: the shipped project, throwaway projects and a loaded warehouse."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pipelines.sql_models import Project, load_project
from tests.sql_models.retail_fixture import load_fixture

SHIPPED_MODELS = Path(__file__).resolve().parents[2] / "dbt_like_sql"

ProjectWriter = Callable[[dict[str, str]], Path]


@pytest.fixture(scope="session")
def shipped_project() -> Project:
    """The project in dbt_like_sql/, loaded once."""
    return load_project(SHIPPED_MODELS)


@pytest.fixture
def write_project(tmp_path: Path) -> ProjectWriter:
    """Write files (relative path -> text) under ``<tmp>/models`` and return that root."""
    root = tmp_path / "models"

    def write(files: dict[str, str]) -> Path:
        for relative, text in files.items():
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, "utf-8")
        root.mkdir(exist_ok=True)
        return root

    return write


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to a fresh, empty database."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def retail_conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to a database holding the retail fixture.

    The session time zone is far from UTC on purpose: day boundaries must not depend on it.
    """
    with psycopg.connect(database_url, autocommit=True, options="-c TimeZone=Pacific/Auckland") as connection:
        load_fixture(connection)
        yield connection
