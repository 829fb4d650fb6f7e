"""Whole-project builds and test runs for the SQL model tests.

The product never builds a project in one call: its Dagster assets build and test model by model
(``build_model``, ``run_data_test``), so these loops live with the tests that want a project built.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from pipelines.sql_models import BuildResult, DataTestResult, Project, build_model, run_data_test


def build_project(
    conn: psycopg.Connection[Any],
    project: Project,
    selection: Iterable[str] | None = None,
    tenants: Sequence[str] | None = None,
) -> list[BuildResult]:
    """Build the selected models (all by default) in dependency order; stop at the first failure.

    With ``tenants``, models declared ``tenant_scope='all'`` are left out (they are built without a
    tenant), as the tenant runs leave them out.
    """
    models = project.build_order(selection)
    if tenants is not None:
        models = [model for model in models if model.config.tenant_scope == "tenant"]
    return [build_model(conn, model, project, tenants) for model in models]


def run_data_tests(
    conn: psycopg.Connection[Any],
    project: Project,
    selection: Iterable[str] | None = None,
    sample_size: int = 5,
    tenants: Sequence[str] | None = None,
) -> dict[str, DataTestResult]:
    """Run the data tests of the selected models (all by default), keyed by test name; with a
    ``tenants``, on those tenants' slice (tests of ``tenant_scope='all'`` models are left out)."""
    models = {model.name for model in project.build_order(selection)}
    return {
        test.name: run_data_test(conn, test, sample_size, tenants)
        for test in project.tests
        if test.model in models and (tenants is None or test.tenant_scoped)
    }
