"""A small dbt-compatible runner for the SQL models in ``dbt_like_sql/``.

A plain library (no Dagster): the orchestration layer wraps it. ``load_project`` checks a model
folder without a database; ``build_model`` builds a model into PostgreSQL, whole
(atomic swap) or for one tenant (that tenant's slice, replaced in one transaction);
``run_data_test`` runs the dbt-style tests of ``schema.yml``, on all rows or on one tenant's. The model folder keeps
dbt's Jinja (``ref``, ``source``, ``config``) and ``schema.yml`` format so it can move to dbt.
"""

from __future__ import annotations

from pipelines.sql_models.config import ModelConfig, SegmentPushConfig, parse_model_config
from pipelines.sql_models.data_tests import DataTest
from pipelines.sql_models.database import (
    BuildResult,
    DataTestResult,
    RelationColumn,
    build_model,
    relation_columns,
    run_data_test,
    run_data_tests_of_model,
)
from pipelines.sql_models.errors import (
    DataTestError,
    DependencyCycleError,
    DuplicateModelError,
    ModelBuildError,
    ModelConfigError,
    ModelDiscoveryError,
    ModelStatementError,
    ModelTemplateError,
    SchemaFileError,
    SqlModelError,
    UnknownModelError,
    UnknownRefError,
    UnknownSourceError,
)
from pipelines.sql_models.project import (
    DEFAULT_TARGET_SCHEMA,
    Layer,
    Model,
    ModelFile,
    Project,
    discover_model_files,
    load_project,
    render,
)
from pipelines.sql_models.schema_file import (
    ColumnDocs,
    DeclaredTest,
    ModelDocs,
    ModelRef,
    SchemaFile,
    Source,
    SourceRef,
    SourceTable,
    parse_schema_file,
)
from pipelines.sql_models.templating import SegmentDeclaration

__all__ = [
    "DEFAULT_TARGET_SCHEMA",
    "BuildResult",
    "ColumnDocs",
    "DataTest",
    "DataTestError",
    "DataTestResult",
    "DeclaredTest",
    "DependencyCycleError",
    "DuplicateModelError",
    "Layer",
    "Model",
    "ModelBuildError",
    "ModelConfig",
    "ModelConfigError",
    "ModelDiscoveryError",
    "ModelDocs",
    "ModelFile",
    "ModelRef",
    "ModelStatementError",
    "ModelTemplateError",
    "Project",
    "RelationColumn",
    "SchemaFile",
    "SchemaFileError",
    "SegmentDeclaration",
    "SegmentPushConfig",
    "Source",
    "SourceRef",
    "SourceTable",
    "SqlModelError",
    "UnknownModelError",
    "UnknownRefError",
    "UnknownSourceError",
    "build_model",
    "discover_model_files",
    "load_project",
    "parse_model_config",
    "parse_schema_file",
    "relation_columns",
    "render",
    "run_data_test",
    "run_data_tests_of_model",
]
