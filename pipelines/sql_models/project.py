"""A folder of dbt-style SQL models loaded into a checked, ordered ``Project``, without a database.

Layout: ``<root>/<layer>/[any/sub/folders/]<model_name>.sql`` with layers ``staging``, ``marts`` and
``segments``, plus an optional ``<root>/schema.yml``; ``<root>/macros/`` holds dbt macros (read by dbt
only: the runner provides the same functions itself). Loading discovers the files, renders each
template with recording ``ref``/``source``/``config`` functions, validates what they recorded and
orders the models so that every model comes after the models it refs. Every problem is reported
as an error naming the file(s) involved; loading either yields a fully consistent project or fails.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Literal, cast

from psycopg import sql

from pipelines.sql_models.config import ModelConfig, parse_model_config
from pipelines.sql_models.data_tests import DataTest, compile_test_sql, data_test_name
from pipelines.sql_models.errors import (
    DependencyCycleError,
    DuplicateModelError,
    ModelConfigError,
    ModelDiscoveryError,
    ModelTemplateError,
    SchemaFileError,
    UnknownModelError,
    UnknownRefError,
    UnknownSourceError,
)
from pipelines.sql_models.schema_file import (
    ModelDocs,
    ModelRef,
    SchemaFile,
    Source,
    SourceRef,
    load_schema_file,
)
from pipelines.sql_models.slices import tenant_condition
from pipelines.sql_models.statements import single_select_body
from pipelines.sql_models.templating import SegmentDeclaration, TemplateCalls, render_template

Layer = Literal["staging", "marts", "segments"]
LAYERS: tuple[Layer, ...] = ("staging", "marts", "segments")
SEGMENT_LAYER: Layer = "segments"
DEFAULT_TARGET_SCHEMA = "analytics"
SCHEMA_FILE_NAME = "schema.yml"
# dbt's macro-paths: the dbt versions of what the runner provides (segments(), tenant slicing).
MACRO_FOLDERS = ("macros",)
# A model built for one tenant reads each ref/source through a CTE holding only that tenant's rows.
SLICE_PREFIX = "__tenant_slice_"
# Builds create "<name>__new" first; PostgreSQL truncates identifiers beyond 63 bytes, which would
# make the temporary name collide with another model's.
BUILD_SUFFIX = "__new"
MAX_MODEL_NAME_LENGTH = 63 - len(BUILD_SUFFIX)
# Lowercase only: PostgreSQL folds unquoted names, so an analyst can type the model name as is.
MODEL_NAME_PATTERN = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True)
class ModelFile:
    """A discovered model file: its model name, layer, location and the label errors use."""

    name: str
    layer: Layer
    path: Path
    label: str


@dataclass(frozen=True)
class Model:
    """One SQL model: its template, what it depends on, its validated config and its docs."""

    name: str
    layer: Layer
    path: Path
    label: str
    raw_sql: str
    refs: tuple[str, ...]
    sources: tuple[SourceRef, ...]
    config: ModelConfig
    docs: ModelDocs | None = None
    uses_segments: bool = False

    @property
    def is_segment(self) -> bool:
        return self.layer == SEGMENT_LAYER

    @property
    def description(self) -> str | None:
        """The ``config(description=...)`` if given, else the ``schema.yml`` description."""
        if self.config.description is not None:
            return self.config.description
        return self.docs.description if self.docs else None


@dataclass(frozen=True)
class Project:
    """All models of a folder, in dependency order, with their sources and compiled data tests."""

    root: Path
    models: Mapping[str, Model]
    sources: Mapping[str, Source] = field(default_factory=dict)
    tests: tuple[DataTest, ...] = ()
    target_schema: str = DEFAULT_TARGET_SCHEMA
    schema_file: SchemaFile = field(default_factory=SchemaFile)

    def relation(self, model_name: str) -> sql.Identifier:
        """The schema-qualified relation a model is built as."""
        return sql.Identifier(self.target_schema, model_name)

    def build_order(self, selection: Iterable[str] | None = None) -> list[Model]:
        """Models to build, dependencies first; ``selection`` restricts to the named models only."""
        if selection is None:
            return list(self.models.values())
        wanted = set(selection)
        unknown = sorted(wanted - set(self.models))
        if unknown:
            raise UnknownModelError(f"selection names unknown model(s): {', '.join(unknown)}")
        return [model for name, model in self.models.items() if name in wanted]

    def segments(self) -> list[Model]:
        """The segment models (everything in ``segments/``), by name."""
        return sorted((model for model in self.models.values() if model.is_segment), key=lambda m: m.name)

    def cross_tenant_models(self) -> list[Model]:
        """Models declared ``tenant_scope='all'``: rebuilt whole, once per tick, after the loads."""
        return [model for model in self.models.values() if model.config.tenant_scope == "all"]

    def tests_for(self, model_name: str) -> list[DataTest]:
        """The data tests declared on one model."""
        return [test for test in self.tests if test.model == model_name]


def _label(root: Path, path: Path) -> str:
    return path.relative_to(root.parent).as_posix()


def discover_model_files(root: Path) -> list[ModelFile]:
    """Every ``.sql`` file under ``root`` as a model file, sorted by path.

    Hidden folders (``.ipynb_checkpoints``...) are skipped; a ``.sql`` file outside the three layer
    folders is an error rather than silently ignored, so a misplaced model cannot go missing.
    """
    root = root.resolve()
    if not root.is_dir():
        raise ModelDiscoveryError(f"{root}: model folder does not exist", (root,))
    files: list[ModelFile] = []
    for path in sorted(root.rglob("*.sql")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if relative.parts[0] in MACRO_FOLDERS:
            continue
        label = _label(root, path)
        if len(relative.parts) < 2 or relative.parts[0] not in LAYERS:
            raise ModelDiscoveryError(
                f"{label}: a model must live in one of the layer folders {', '.join(f'{x}/' for x in LAYERS)}",
                (path,),
            )
        name = path.stem
        if not MODEL_NAME_PATTERN.fullmatch(name):
            raise ModelDiscoveryError(
                f"{label}: model name {name!r} must be lowercase letters, digits and underscores, "
                "not starting with a digit",
                (path,),
            )
        if len(name) > MAX_MODEL_NAME_LENGTH:
            raise ModelDiscoveryError(
                f"{label}: model name {name!r} is longer than {MAX_MODEL_NAME_LENGTH} characters", (path,)
            )
        files.append(ModelFile(name, cast(Layer, relative.parts[0]), path, label))
    seen: dict[str, ModelFile] = {}
    for model_file in files:
        earlier = seen.get(model_file.name)
        if earlier is not None:
            raise DuplicateModelError(
                f"model name {model_file.name!r} is defined twice: {earlier.label} and {model_file.label}",
                (earlier.path, model_file.path),
            )
        seen[model_file.name] = model_file
    return files


class _Resolver:
    """Turns ``ref``/``source`` calls into quoted relation names for one target schema.

    With ``tenants``, every relation becomes the name of a CTE that selects only those tenants' rows
    (``wrap``), so the model's own SQL stays unchanged whether it is built for some tenants or all.
    """

    def __init__(self, target_schema: str, sources: Mapping[str, Source], tenants: Sequence[str] | None = None) -> None:
        self.target_schema = target_schema
        self.sources = sources
        self.tenants = tenants
        self.slices: dict[str, str] = {}

    def _relation(self, relation: sql.Identifier) -> str:
        text = relation.as_string(None)
        if self.tenants is None:
            return text
        cte = self.slices.setdefault(text, f"{SLICE_PREFIX}{len(self.slices) + 1}")
        return sql.Identifier(cte).as_string(None)

    def ref(self, model_name: str) -> str:
        return self._relation(sql.Identifier(self.target_schema, model_name))

    def source(self, source_name: str, table_name: str) -> str:
        # An undeclared source still renders (as "<source>"."<table>") so that loading can finish
        # the template and then report every undeclared source with the file that uses it.
        declared = self.sources.get(source_name)
        schema = declared.schema if declared else source_name
        return self._relation(sql.Identifier(schema, table_name))

    def wrap(self, body: str) -> str:
        """``body`` behind the tenant CTEs its relations were renamed to (unchanged without tenants).

        ``NOT MATERIALIZED`` lets PostgreSQL push the tenant filter into each read (and its indexes)
        even where a model reads one relation twice.
        """
        if self.tenants is None or not self.slices:
            return body
        condition = tenant_condition(self.tenants).as_string(None)
        ctes = ",\n".join(
            f"{sql.Identifier(cte).as_string(None)} AS NOT MATERIALIZED (SELECT * FROM {relation} WHERE {condition})"
            for relation, cte in self.slices.items()
        )
        alias = sql.Identifier(f"{SLICE_PREFIX}model").as_string(None)
        return f"WITH {ctes}\nSELECT * FROM (\n{body}\n) AS {alias}"


def _segment_declarations(models: Iterable[tuple[ModelFile, ModelConfig]]) -> list[SegmentDeclaration]:
    declarations = []
    for model_file, config in sorted(models, key=lambda item: item[0].name):
        push = config.push
        declarations.append(
            SegmentDeclaration(
                name=model_file.name,
                push_to_group_uid=push.group_uid if push else None,
                push_group_name=push.group_name if push else None,
                push_mode=push.mode if push else None,
                max_remove_fraction=push.max_remove_fraction if push else None,
                adopt_existing=push.adopt_existing if push else None,
            )
        )
    return declarations


def _check_refs(model_file: ModelFile, calls: TemplateCalls, names: set[str]) -> None:
    for ref in calls.refs:
        if ref not in names:
            close = difflib.get_close_matches(ref, sorted(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownRefError(f"{model_file.label}: ref({ref!r}) names no model{hint}", (model_file.path,))


def _check_sources(
    model_file: ModelFile, calls: TemplateCalls, sources: Mapping[str, Source], schema_label: str
) -> None:
    for source_name, table_name in calls.sources:
        source = sources.get(source_name)
        if source is None or table_name not in source.tables:
            raise UnknownSourceError(
                f"{model_file.label}: source({source_name!r}, {table_name!r}) is not declared in {schema_label}",
                (model_file.path,),
            )


def _ordered_names(files: Mapping[str, ModelFile], refs: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Model names dependencies first; among models ready together, alphabetical (stable runs)."""
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for name in files:
        sorter.add(name, *refs[name])
    try:
        sorter.prepare()
    except CycleError as error:
        cycle: list[str] = list(error.args[1])
        # graphlib lists the cycle against the ref direction; show it as "a refs b refs ...".
        if len(cycle) > 1 and cycle[1] not in refs[cycle[0]]:
            cycle.reverse()
        chain = " -> ".join(f"{name} ({files[name].label})" for name in cycle)
        raise DependencyCycleError(
            f"models ref each other in a cycle: {chain}", tuple(files[name].path for name in cycle[:-1])
        ) from error
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order.extend(ready)
        sorter.done(*ready)
    return order


def _compile_tests(
    models: Mapping[str, Model], schema_file: SchemaFile, resolver: _Resolver, schema_label: str
) -> tuple[DataTest, ...]:
    path = schema_file.path or Path(schema_label)
    tests: dict[str, DataTest] = {}
    for model in models.values():
        if model.docs is None:
            continue
        relation = sql.Identifier(resolver.target_schema, model.name)
        tenant_scoped = model.config.tenant_scope == "tenant"
        for declared in model.docs.all_tests:
            target_relation: sql.Identifier | None = None
            target_name: str | None = None
            target_per_tenant = True
            if isinstance(declared.to, ModelRef):
                if declared.to.name not in models:
                    raise SchemaFileError(
                        f"{schema_label}: model {model.name} relationships test on {declared.column!r} "
                        f"refs unknown model {declared.to.name!r}",
                        (path,),
                    )
                target_name = declared.to.name
                target_relation = sql.Identifier(resolver.target_schema, declared.to.name)
                target_per_tenant = models[declared.to.name].config.tenant_scope == "tenant"
            elif isinstance(declared.to, SourceRef):
                source = schema_file.sources.get(declared.to.source_name)
                if source is None or declared.to.table_name not in source.tables:
                    raise SchemaFileError(
                        f"{schema_label}: model {model.name} relationships test on {declared.column!r} "
                        f"reads undeclared source({declared.to.source_name!r}, {declared.to.table_name!r})",
                        (path,),
                    )
                target_name = f"{declared.to.source_name}_{declared.to.table_name}"
                target_relation = sql.Identifier(source.schema, declared.to.table_name)
            name = data_test_name(model.name, declared, target_name)
            if name in tests:
                raise SchemaFileError(f"{schema_label}: test {name} is declared twice", (path,))
            tenant_keyed = tenant_scoped and target_per_tenant
            tests[name] = DataTest(
                name=name,
                model=model.name,
                column=declared.column,
                kind=declared.kind,
                sql=compile_test_sql(declared, relation, target_relation, tenant_keyed=tenant_keyed),
                defined_in=schema_label,
                references=declared.to,
                declared=declared,
                relation=relation,
                target_relation=target_relation,
                tenant_scoped=tenant_scoped,
                tenant_keyed=tenant_keyed,
            )
    return tuple(tests.values())


def load_project(root: Path, *, target_schema: str = DEFAULT_TARGET_SCHEMA) -> Project:
    """Load the project under ``root``; see the module docstring for what is checked."""
    root = root.resolve()
    model_files = {model_file.name: model_file for model_file in discover_model_files(root)}
    schema_path = root / SCHEMA_FILE_NAME
    schema_label = _label(root, schema_path)
    schema_file = load_schema_file(schema_path, label=schema_label)
    resolver = _Resolver(target_schema, schema_file.sources)
    raw_sql = {name: model_file.path.read_text("utf-8") for name, model_file in model_files.items()}
    rendered, configs = _render_models(model_files, raw_sql, resolver)
    _check_rendered(model_files, rendered, schema_file, schema_label)
    refs = {name: tuple(rendered[name][1].refs) for name in model_files}
    models: dict[str, Model] = {}
    for name in _ordered_names(model_files, refs):
        model_file, calls = model_files[name], rendered[name][1]
        models[name] = Model(
            name=name,
            layer=model_file.layer,
            path=model_file.path,
            label=model_file.label,
            raw_sql=raw_sql[name],
            refs=refs[name],
            sources=tuple(SourceRef(source, table) for source, table in calls.sources),
            config=configs[name],
            docs=schema_file.models.get(name),
            uses_segments=calls.uses_segments,
        )
    _check_tenant_scopes(models)
    return Project(
        root=root,
        models=models,
        sources=schema_file.sources,
        tests=_compile_tests(models, schema_file, resolver, schema_label),
        target_schema=target_schema,
        schema_file=schema_file,
    )


def _render_file(
    resolver: _Resolver, model_file: ModelFile, raw_sql: str, segments: list[SegmentDeclaration]
) -> tuple[str, TemplateCalls]:
    return render_template(
        raw_sql,
        path=model_file.path,
        label=model_file.label,
        resolve_ref=resolver.ref,
        resolve_source=resolver.source,
        segments=segments,
    )


def _render_models(
    model_files: Mapping[str, ModelFile], raw_sql: Mapping[str, str], resolver: _Resolver
) -> tuple[dict[str, tuple[str, TemplateCalls]], dict[str, ModelConfig]]:
    """Every model's rendered SQL, recorded calls and validated config.

    Two passes: ``segments()`` lists the segments with their push targets, which are only known once
    the segments' own configs are parsed, so the models calling it are rendered again after that.
    """
    rendered = {name: _render_file(resolver, model_file, raw_sql[name], []) for name, model_file in model_files.items()}
    configs: dict[str, ModelConfig] = {}
    for name, model_file in model_files.items():
        calls = rendered[name][1]
        is_segment = model_file.layer == SEGMENT_LAYER
        if calls.uses_segments and is_segment:
            raise ModelTemplateError(
                f"{model_file.label}: segments() cannot be used inside segments/ (a segment would depend "
                "on the list of segments, itself included)",
                (model_file.path,),
            )
        configs[name] = parse_model_config(
            calls.config, path=model_file.path, label=model_file.label, is_segment=is_segment
        )
    _check_unique_push_targets(model_files, configs)
    segments = _segment_declarations(
        (model_file, configs[name]) for name, model_file in model_files.items() if model_file.layer == SEGMENT_LAYER
    )
    for name, model_file in model_files.items():
        if rendered[name][1].uses_segments:
            rendered[name] = _render_file(resolver, model_file, raw_sql[name], segments)
            configs[name] = parse_model_config(
                rendered[name][1].config, path=model_file.path, label=model_file.label, is_segment=False
            )
    return rendered, configs


def _check_rendered(
    model_files: Mapping[str, ModelFile],
    rendered: Mapping[str, tuple[str, TemplateCalls]],
    schema_file: SchemaFile,
    schema_label: str,
) -> None:
    """Each model is one SELECT reading known models and declared sources; schema.yml documents no missing model."""
    names = set(model_files)
    for name, model_file in model_files.items():
        sql_text, calls = rendered[name]
        single_select_body(sql_text, path=model_file.path, label=model_file.label)
        _check_refs(model_file, calls, names)
        _check_sources(model_file, calls, schema_file.sources, schema_label)
    undocumented = sorted(set(schema_file.models) - names)
    if undocumented:
        raise SchemaFileError(
            f"{schema_label}: documents model {undocumented[0]!r}, but no such model file exists",
            (schema_file.path or Path(schema_label),),
        )


def _check_tenant_scopes(models: Mapping[str, Model]) -> None:
    """A per-tenant model reading a cross-tenant one would depend on every tenant's load."""
    for model in models.values():
        if model.config.tenant_scope != "tenant":
            continue
        for ref in model.refs:
            other = models[ref]
            if other.config.tenant_scope == "all":
                raise ModelConfigError(
                    f"{model.label}: ref({ref!r}) reads a model declared tenant_scope='all' ({other.label}); "
                    "a per-tenant model may only read per-tenant models and sources (declare "
                    f"tenant_scope='all' on {model.name} too)",
                    (model.path, other.path),
                )


def _check_unique_push_targets(model_files: Mapping[str, ModelFile], configs: Mapping[str, ModelConfig]) -> None:
    """Two segments pushing into one customer group would undo each other on every run."""
    owners: dict[str, str] = {}
    for name in sorted(configs):
        push = configs[name].push
        if push is None:
            continue
        owner = owners.get(push.group_uid)
        if owner is not None:
            first, second = model_files[owner], model_files[name]
            raise ModelConfigError(
                f"push_to_group_uid {push.group_uid!r} is used by two segments: {first.label} and {second.label}",
                (first.path, second.path),
            )
        owners[push.group_uid] = name


def render(model: Model, project: Project, tenants: Sequence[str] | None = None) -> str:
    """The SQL that builds ``model``: refs and sources replaced by quoted relation names.

    ``ref('x')`` becomes ``"<target_schema>"."x"``, ``source('s', 't')`` becomes
    ``"<schema of s>"."t"``; a trailing ``;`` is dropped so the text can follow ``CREATE VIEW ... AS``.
    With ``tenants``, each of them reads only those tenants' rows (see ``_Resolver.wrap``).
    """
    resolver = _Resolver(project.target_schema, project.sources, tenants)
    segments = (
        []
        if model.is_segment
        else _segment_declarations((_model_file(segment), segment.config) for segment in project.segments())
    )
    model_file = _model_file(model)
    sql_text, calls = _render_file(resolver, model_file, model.raw_sql, segments)
    _check_refs(model_file, calls, set(project.models))
    _check_sources(model_file, calls, project.sources, _label(project.root, project.root / SCHEMA_FILE_NAME))
    return resolver.wrap(single_select_body(sql_text, path=model.path, label=model.label))


def _model_file(model: Model) -> ModelFile:
    return ModelFile(model.name, model.layer, model.path, model.label)
