"""``schema.yml`` in dbt's format, parsed into typed objects.

It declares the sources models may read (so ``source()`` calls can be checked) and documents models
and columns, with the four dbt generic tests: ``unique``, ``not_null``, ``accepted_values`` and
``relationships``. Tests go under ``tests:`` or dbt 1.8's ``data_tests:``. A test on a model
(rather than a column) takes ``column_name:``, which may be a SQL expression: dbt's documented way to
check that a combination such as ``tenant_uid || ':' || customer_uid`` is unique without adding a
surrogate key column to the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from pipelines.sql_models.errors import SchemaFileError

DataTestKind = Literal["unique", "not_null", "accepted_values", "relationships"]
DATA_TEST_KINDS: tuple[DataTestKind, ...] = ("unique", "not_null", "accepted_values", "relationships")
AcceptedValue = str | int | float | bool

_TEST_ARGUMENTS: dict[DataTestKind, frozenset[str]] = {
    "unique": frozenset({"column_name"}),
    "not_null": frozenset({"column_name"}),
    "accepted_values": frozenset({"column_name", "values"}),
    "relationships": frozenset({"column_name", "to", "field"}),
}
_REF_CALL = re.compile(r"""\s*ref\(\s*(['"])([^'"]+)\1\s*\)\s*""")
_SOURCE_CALL = re.compile(r"""\s*source\(\s*(['"])([^'"]+)\1\s*,\s*(['"])([^'"]+)\3\s*\)\s*""")


@dataclass(frozen=True)
class ModelRef:
    """A relation given as ``ref('model')``."""

    name: str


@dataclass(frozen=True)
class SourceRef:
    """A relation given as ``source('source', 'table')``."""

    source_name: str
    table_name: str


RelationRef = ModelRef | SourceRef


@dataclass(frozen=True)
class DeclaredTest:
    """One generic test as written in ``schema.yml``.

    ``column`` is the tested column's name, or for a model-level test its ``column_name``, which
    may be a SQL expression.
    """

    kind: DataTestKind
    column: str
    accepted_values: tuple[AcceptedValue, ...] = ()
    to: RelationRef | None = None
    field: str | None = None


@dataclass(frozen=True)
class ColumnDocs:
    """A documented column of a model and the tests on it."""

    name: str
    description: str | None = None
    tests: tuple[DeclaredTest, ...] = ()


@dataclass(frozen=True)
class ModelDocs:
    """A model's documentation: description, columns in documented order, model-level tests."""

    name: str
    description: str | None = None
    columns: tuple[ColumnDocs, ...] = ()
    tests: tuple[DeclaredTest, ...] = ()

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    @property
    def all_tests(self) -> tuple[DeclaredTest, ...]:
        """Column tests in column order, then model-level tests."""
        return tuple(test for column in self.columns for test in column.tests) + self.tests


@dataclass(frozen=True)
class SourceTable:
    """A declared table of a source."""

    name: str
    description: str | None = None


@dataclass(frozen=True)
class Source:
    """A source: a database schema owned by the loader, and the tables models may read from it."""

    name: str
    schema: str
    description: str | None = None
    tables: Mapping[str, SourceTable] = field(default_factory=dict)


@dataclass(frozen=True)
class SchemaFile:
    """Everything ``schema.yml`` declares; empty when the project has no such file."""

    path: Path | None = None
    sources: Mapping[str, Source] = field(default_factory=dict)
    models: Mapping[str, ModelDocs] = field(default_factory=dict)


class _Context:
    """Carries the file's label and path so every message names the file and the spot in it."""

    def __init__(self, path: Path, label: str) -> None:
        self.path = path
        self.label = label

    def error(self, where: str, message: str) -> SchemaFileError:
        location = f" {where}:" if where else ""
        return SchemaFileError(f"{self.label}:{location} {message}", (self.path,))

    def mapping(self, value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where, f"expected a mapping, got {type(value).__name__}")
        return cast(dict[str, Any], value)

    def sequence(self, value: object, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(where, f"expected a list, got {type(value).__name__}")
        return value

    def name(self, entry: Mapping[str, Any], where: str) -> str:
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise self.error(where, "every entry needs a non-empty 'name'")
        return name

    def description(self, entry: Mapping[str, Any], where: str) -> str | None:
        description = entry.get("description")
        if description is not None and not isinstance(description, str):
            raise self.error(where, "'description' must be a string")
        return description

    def only_keys(self, entry: Mapping[str, Any], allowed: set[str], where: str) -> None:
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise self.error(where, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")


def _relation(text: object, context: _Context, where: str) -> RelationRef:
    if isinstance(text, str):
        ref = _REF_CALL.fullmatch(text)
        if ref:
            return ModelRef(ref.group(2))
        source = _SOURCE_CALL.fullmatch(text)
        if source:
            return SourceRef(source.group(2), source.group(4))
    raise context.error(where, f"relationships 'to' must be ref('model') or source('source', 'table'), got {text!r}")


def _test(entry: object, column: str | None, context: _Context, where: str) -> DeclaredTest:
    if isinstance(entry, str):
        kind_name, arguments = entry, {}
    elif isinstance(entry, dict) and len(entry) == 1:
        kind_name, raw_arguments = next(iter(entry.items()))
        arguments = dict(context.mapping(raw_arguments or {}, where))
        # dbt 1.10 nests a test's arguments under "arguments:".
        arguments.update(context.mapping(arguments.pop("arguments", None) or {}, where))
    else:
        raise context.error(where, f"a test is a name or a one-key mapping, got {entry!r}")
    if kind_name not in DATA_TEST_KINDS:
        raise context.error(where, f"unknown test {kind_name!r} (supported: {', '.join(DATA_TEST_KINDS)})")
    kind = cast(DataTestKind, kind_name)
    where = f"{where} {kind}"
    unknown = sorted(set(arguments) - _TEST_ARGUMENTS[kind])
    if unknown:
        raise context.error(where, f"unknown argument {unknown[0]!r}")
    column_name = arguments.get("column_name")
    if column is None:
        if not isinstance(column_name, str) or not column_name.strip():
            raise context.error(where, "a model-level test needs 'column_name' (a column or SQL expression)")
        column = column_name.strip()
    elif column_name is not None:
        raise context.error(where, "'column_name' is only for model-level tests")
    if kind == "accepted_values":
        values = arguments.get("values")
        if not isinstance(values, list) or not values:
            raise context.error(where, "accepted_values needs a non-empty 'values' list")
        for value in values:
            if not isinstance(value, str | int | float | bool):
                raise context.error(where, f"accepted value {value!r} is not a string, number or boolean")
        return DeclaredTest(kind, column, accepted_values=tuple(values))
    if kind == "relationships":
        target_field = arguments.get("field")
        if not isinstance(target_field, str) or not target_field:
            raise context.error(where, "relationships needs 'field' (the column of the referenced relation)")
        return DeclaredTest(kind, column, to=_relation(arguments.get("to"), context, where), field=target_field)
    return DeclaredTest(kind, column)


def _tests(entry: Mapping[str, Any], column: str | None, context: _Context, where: str) -> tuple[DeclaredTest, ...]:
    written = context.sequence(entry.get("tests"), where) + context.sequence(entry.get("data_tests"), where)
    return tuple(_test(test, column, context, where) for test in written)


def _column(entry: object, context: _Context, where: str) -> ColumnDocs:
    column = context.mapping(entry, where)
    name = context.name(column, where)
    where = f"{where} {name!r}"
    context.only_keys(column, {"name", "description", "tests", "data_tests", "data_type"}, where)
    return ColumnDocs(name, context.description(column, where), _tests(column, name, context, where))


def _model(entry: object, context: _Context, index: int) -> ModelDocs:
    model = context.mapping(entry, f"models[{index}]")
    name = context.name(model, f"models[{index}]")
    where = f"model {name}"
    context.only_keys(model, {"name", "description", "columns", "tests", "data_tests"}, where)
    columns: dict[str, ColumnDocs] = {}
    for column_entry in context.sequence(model.get("columns"), where):
        column = _column(column_entry, context, f"{where} column")
        if column.name in columns:
            raise context.error(where, f"column {column.name!r} is documented twice")
        columns[column.name] = column
    return ModelDocs(
        name=name,
        description=context.description(model, where),
        columns=tuple(columns.values()),
        tests=_tests(model, None, context, where),
    )


def _source(entry: object, context: _Context, index: int) -> Source:
    source = context.mapping(entry, f"sources[{index}]")
    name = context.name(source, f"sources[{index}]")
    where = f"source {name}"
    context.only_keys(source, {"name", "schema", "description", "tables"}, where)
    schema = source.get("schema", name)
    if not isinstance(schema, str) or not schema:
        raise context.error(where, "'schema' must be a non-empty string")
    tables: dict[str, SourceTable] = {}
    for table_entry in context.sequence(source.get("tables"), where):
        table = context.mapping(table_entry, f"{where} table")
        table_name = context.name(table, f"{where} table")
        context.only_keys(table, {"name", "description"}, f"{where} table {table_name!r}")
        if table_name in tables:
            raise context.error(where, f"table {table_name!r} is declared twice")
        tables[table_name] = SourceTable(table_name, context.description(table, f"{where} table {table_name!r}"))
    return Source(name, schema, context.description(source, where), tables)


def parse_schema_file(text: str, *, path: Path, label: str) -> SchemaFile:
    """Parse the text of ``schema.yml``; ``label`` is how messages name the file."""
    context = _Context(path, label)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise context.error("", f"is not valid YAML: {error}") from error
    if document is None:
        return SchemaFile(path)
    top = context.mapping(document, "")
    context.only_keys(top, {"version", "sources", "models"}, "")
    if top.get("version") != 2:
        raise context.error("", f"expected 'version: 2' (dbt's format), got {top.get('version')!r}")
    sources: dict[str, Source] = {}
    for index, entry in enumerate(context.sequence(top.get("sources"), "sources")):
        source = _source(entry, context, index)
        if source.name in sources:
            raise context.error("", f"source {source.name!r} is declared twice")
        sources[source.name] = source
    models: dict[str, ModelDocs] = {}
    for index, entry in enumerate(context.sequence(top.get("models"), "models")):
        model = _model(entry, context, index)
        if model.name in models:
            raise context.error("", f"model {model.name!r} is documented twice")
        models[model.name] = model
    return SchemaFile(path, sources, models)


def load_schema_file(path: Path, *, label: str) -> SchemaFile:
    """Parse ``schema.yml`` at ``path``; a project without one has no sources and no docs."""
    if not path.is_file():
        return SchemaFile()
    return parse_schema_file(path.read_text("utf-8"), path=path, label=label)
