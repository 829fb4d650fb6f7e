"""Transform stage: one Dagster asset per dbt-like SQL model, with its data tests as asset checks.

Per-tenant models (the default ``tenant_scope='tenant'``) are partitioned by tenant like the raw
tables they read: a tenant's run builds that tenant's slice of each table and runs the data tests on
that slice, so it depends on that tenant's load only and never waits for another tenant's run (no
global lock; see ``pipelines.sql_models.database``). A run over a range of tenant partitions (the
CLI's models after all of its loads) builds and tests the slices of all its tenants in each step at
once, so the fixed cost of a step is paid once per run rather than once per tenant (see
``_row_counts`` for what its materializations record). Models declared ``tenant_scope='all'`` are
unpartitioned assets in the group ``transform_all_tenants``, built whole once per tick after the
loads (``pipelines.ingest.jobs``).

No ``from __future__ import annotations`` here: Dagster inspects the ``context`` annotation at
definition time and needs the real class, not a string.
"""

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from dagster import AssetExecutionContext

from pipelines.partitions import tenant_partitions
from pipelines.resources import WarehouseResource
from pipelines.sql_models.data_tests import DataTest
from pipelines.sql_models.database import DataTestResult, build_model, run_data_test, run_data_tests_of_model
from pipelines.sql_models.project import Model, Project, load_project
from pipelines.sql_models.schema_file import ModelRef, SourceRef
from pipelines.sql_models.slices import describe_tenants

SQL_ROOT = Path(__file__).resolve().parents[2] / "dbt_like_sql"
OWNERS = ["team:analytics-engineering"]
TENANT_GROUP = "transform"
ALL_TENANTS_GROUP = "transform_all_tenants"

project: Project = load_project(SQL_ROOT)


def model_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([project.target_schema, name])


def relation_key(relation: ModelRef | SourceRef) -> dg.AssetKey:
    if isinstance(relation, ModelRef):
        return model_key(relation.name)
    return dg.AssetKey([relation.source_name, relation.table_name])


def _deps(model: Model) -> list[dg.AssetKey]:
    return [model_key(ref) for ref in model.refs] + [relation_key(source) for source in model.sources]


def _reads_other_relation(test: DataTest) -> bool:
    """A relationships test reads a second relation, so it runs as its own check after both exist."""
    return test.references is not None and relation_key(test.references) != model_key(test.model)


def _per_tenant(model: Model) -> bool:
    return model.config.tenant_scope == "tenant"


def _run_tenants(context: AssetExecutionContext | dg.AssetCheckExecutionContext, model: Model) -> list[str] | None:
    """The tenant slices a step covers: its run's partition, every partition of a range run, or
    ``None`` (all rows) for a model declared ``tenant_scope='all'``."""
    return list(context.partition_keys) if _per_tenant(model) else None


def _check_result(test: DataTest, outcome: DataTestResult) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=test.name,
        passed=outcome.passed,
        metadata={"failing_rows": outcome.failing_rows, "sample": dg.MetadataValue.json(outcome.sample)},
    )


def _static_metadata(model: Model) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "file": dg.MetadataValue.path(model.label),
        "layer": model.layer,
        "materialized": model.config.materialized,
        "tenant_scope": model.config.tenant_scope,
    }
    if model.docs and model.docs.columns:
        metadata["dagster/column_schema"] = dg.TableSchema(
            columns=[dg.TableColumn(c.name, "", description=c.description) for c in model.docs.columns]
        )
    push = model.config.push
    if push is not None:
        metadata.update(
            {
                "push_to_group_uid": push.group_uid,
                "push_group_name": push.group_name,
                "push_mode": push.mode,
                "max_remove_fraction": push.max_remove_fraction,
                "adopt_existing": push.adopt_existing,
            }
        )
    return metadata


def _row_counts(tenants: list[str] | None, row_count: int) -> dict[str, int]:
    """The row count a materialization shows: the partition's own in a tenant's run (or the whole
    relation's), the run's total in a run over several tenants.

    A run over a range records one materialization per partition with the same metadata; giving each
    its own count (``add_asset_metadata`` per partition) costs a lookup of the instance's partitions
    per call, most of a 50-tenant run's model time. Each tenant's rows are one GROUP BY away in SQL.
    """
    if tenants is not None and len(tenants) > 1:
        return {"rows_of_run": row_count, "tenants_of_run": len(tenants)}
    return {"dagster/row_count": row_count}


def _column_schema(model: Model, columns: Any) -> dg.TableSchema:
    described = {d.name: d.description for d in (model.docs.columns if model.docs else ())}
    return dg.TableSchema(
        columns=[dg.TableColumn(c.name, c.data_type, description=described.get(c.name)) for c in columns]
    )


def _model_asset(project: Project, model: Model) -> dg.AssetsDefinition:
    key = model_key(model.name)
    tests = [test for test in project.tests_for(model.name) if not _reads_other_relation(test)]
    per_tenant = _per_tenant(model)

    @dg.asset(
        key=key,
        deps=_deps(model),
        description=model.description or f"SQL model {model.label}",
        group_name=TENANT_GROUP if per_tenant else ALL_TENANTS_GROUP,
        partitions_def=tenant_partitions if per_tenant else None,
        owners=OWNERS,
        kinds={"postgres", "sql"},
        metadata=_static_metadata(model),
        check_specs=[
            dg.AssetCheckSpec(
                test.name, asset=key, description=f"{test.kind} on {test.column} ({test.defined_in})", blocking=True
            )
            for test in tests
        ],
    )
    def build(context: AssetExecutionContext, warehouse: WarehouseResource) -> Iterator[Any]:
        tenants = _run_tenants(context, model)
        with warehouse.connect(autocommit=True) as conn:
            result = build_model(conn, model, project, tenants)
            scope = f" for {describe_tenants(tenants)}" if tenants else ""
            context.log.info(f"built {project.target_schema}.{model.name}{scope}: {result.row_count} rows")
            yield dg.MaterializeResult(
                metadata={
                    **_row_counts(tenants, result.row_count),
                    "duration_seconds": round(result.duration_seconds, 3),
                    "dagster/column_schema": _column_schema(model, result.columns),
                }
            )
            for test, outcome in zip(tests, run_data_tests_of_model(conn, tests, tenants=tenants), strict=True):
                yield _check_result(test, outcome)

    return build


def _upstream_models(project: Project, name: str) -> set[str]:
    seen: set[str] = set()
    stack = list(project.models[name].refs)
    while stack:
        ref = stack.pop()
        if ref not in seen:
            seen.add(ref)
            stack.extend(project.models[ref].refs)
    return seen


def _relationship_check(project: Project, test: DataTest) -> dg.AssetChecksDefinition:
    """Its own check, run once both relations exist; blocking unless the other relation is built from
    this model (blocking would then wait on itself). Per tenant, like its model."""
    assert test.references is not None
    other = test.references
    built_from_this = isinstance(other, ModelRef) and test.model in _upstream_models(project, other.name)
    model = project.models[test.model]
    per_tenant = _per_tenant(model)

    @dg.asset_check(
        asset=model_key(test.model),
        name=test.name,
        additional_deps=[relation_key(other)],
        blocking=not built_from_this,
        description=f"{test.kind} on {test.column} ({test.defined_in})",
        partitions_def=tenant_partitions if per_tenant else None,
    )
    def check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        with warehouse.connect(autocommit=True) as conn:
            return _check_result(test, run_data_test(conn, test, tenants=_run_tenants(context, model)))

    return check


def model_definitions(project: Project) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    """The assets and the separate relationships checks of a model project."""
    assets = [_model_asset(project, model) for model in project.build_order()]
    with warnings.catch_warnings():
        # A partitioned asset check is a Dagster preview; the relationships checks need it to run per
        # tenant slice, and its warning on every command would only be noise to the user.
        warnings.filterwarnings("ignore", category=dg.PreviewWarning)
        checks = [_relationship_check(project, test) for test in project.tests if _reads_other_relation(test)]
    return assets, checks


model_assets, model_checks = model_definitions(project)
