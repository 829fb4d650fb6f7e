"""Loading a model folder without a database: discovery, dependencies and the errors naming files."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.sql_models import (
    DependencyCycleError,
    DuplicateModelError,
    ModelDiscoveryError,
    ModelStatementError,
    ModelTemplateError,
    SchemaFileError,
    SourceRef,
    UnknownRefError,
    UnknownSourceError,
    discover_model_files,
    load_project,
)

ProjectWriter = Callable[[dict[str, str]], Path]

SOURCES = """version: 2
sources:
  - name: flowretail
    tables:
      - name: customer_snapshots
      - name: customer_groups
"""


def test_discovery_finds_models_in_layer_folders_sorted_by_path(write_project: ProjectWriter) -> None:
    root = write_project(
        {
            "staging/stg_b.sql": "select 1",
            "staging/stg_a.sql": "select 1",
            "marts/finance/fct_credit.sql": "select 1",
            "segments/vip.sql": "select 1",
            ".ipynb_checkpoints/staging/stg_a-checkpoint.sql": "select 1",
            "README.md": "not a model",
        }
    )

    files = discover_model_files(root)

    assert [(f.name, f.layer, f.label) for f in files] == [
        ("fct_credit", "marts", "models/marts/finance/fct_credit.sql"),
        ("vip", "segments", "models/segments/vip.sql"),
        ("stg_a", "staging", "models/staging/stg_a.sql"),
        ("stg_b", "staging", "models/staging/stg_b.sql"),
    ]
    assert files[0].path == root / "marts" / "finance" / "fct_credit.sql"


def test_a_model_outside_the_layer_folders_is_an_error(write_project: ProjectWriter) -> None:
    root = write_project({"analyses/adhoc.sql": "select 1"})

    with pytest.raises(ModelDiscoveryError) as raised:
        discover_model_files(root)

    assert str(raised.value) == (
        "models/analyses/adhoc.sql: a model must live in one of the layer folders staging/, marts/, segments/"
    )


@pytest.mark.parametrize(
    ("file_name", "message"),
    [
        (
            "Stg_Customers.sql",
            "models/staging/Stg_Customers.sql: model name 'Stg_Customers' must be lowercase letters, digits "
            "and underscores, not starting with a digit",
        ),
        (
            "stg-customers.sql",
            "models/staging/stg-customers.sql: model name 'stg-customers' must be lowercase letters, digits "
            "and underscores, not starting with a digit",
        ),
        (
            "a" * 59 + ".sql",
            f"models/staging/{'a' * 59}.sql: model name '{'a' * 59}' is longer than 58 characters",
        ),
    ],
)
def test_model_names_must_be_plain_short_identifiers(
    write_project: ProjectWriter, file_name: str, message: str
) -> None:
    root = write_project({f"staging/{file_name}": "select 1"})

    with pytest.raises(ModelDiscoveryError) as raised:
        discover_model_files(root)

    assert str(raised.value) == message


def test_a_duplicate_model_name_names_both_files(write_project: ProjectWriter) -> None:
    root = write_project({"staging/customers.sql": "select 1", "marts/customers.sql": "select 2"})

    with pytest.raises(DuplicateModelError) as raised:
        load_project(root)

    assert str(raised.value) == (
        "model name 'customers' is defined twice: models/marts/customers.sql and models/staging/customers.sql"
    )
    assert raised.value.paths == (root / "marts" / "customers.sql", root / "staging" / "customers.sql")


def test_models_are_ordered_after_the_models_they_ref(write_project: ProjectWriter) -> None:
    root = write_project(
        {
            "schema.yml": SOURCES,
            "staging/stg_customers.sql": "select * from {{ source('flowretail', 'customer_snapshots') }}",
            "staging/stg_groups.sql": "select * from {{ source('flowretail', 'customer_groups') }}",
            "marts/dim_customers.sql": "select * from {{ ref('stg_customers') }} join {{ ref('stg_groups') }} on true",
            "segments/aaa_first_alphabetically.sql": "select tenant_uid, customer_uid from {{ ref('dim_customers') }}",
        }
    )

    project = load_project(root)

    assert list(project.models) == ["stg_customers", "stg_groups", "dim_customers", "aaa_first_alphabetically"]
    assert project.models["dim_customers"].refs == ("stg_customers", "stg_groups")
    assert project.models["stg_customers"].sources == (SourceRef("flowretail", "customer_snapshots"),)
    assert [m.name for m in project.build_order(["aaa_first_alphabetically", "stg_groups"])] == [
        "stg_groups",
        "aaa_first_alphabetically",
    ]


def test_a_cycle_names_every_file_in_it(write_project: ProjectWriter) -> None:
    root = write_project(
        {
            "staging/stg_a.sql": "select * from {{ ref('fct_c') }}",
            "marts/dim_b.sql": "select * from {{ ref('stg_a') }}",
            "marts/fct_c.sql": "select * from {{ ref('dim_b') }}",
            "marts/outside.sql": "select * from {{ ref('stg_a') }}",
        }
    )

    with pytest.raises(DependencyCycleError) as raised:
        load_project(root)

    message = str(raised.value)
    assert message.startswith("models ref each other in a cycle: ")
    for label in ("models/staging/stg_a.sql", "models/marts/dim_b.sql", "models/marts/fct_c.sql"):
        assert label in message
    assert "outside" not in message
    # Shown in ref direction: each model refs the next one.
    chain = [part.split(" ")[0] for part in message.removeprefix("models ref each other in a cycle: ").split(" -> ")]
    refs = {"stg_a": "fct_c", "dim_b": "stg_a", "fct_c": "dim_b"}
    assert all(refs[a] == b for a, b in itertools.pairwise(chain))
    assert sorted(raised.value.paths) == sorted(
        [root / "staging/stg_a.sql", root / "marts/dim_b.sql", root / "marts/fct_c.sql"]
    )


def test_a_model_reffing_itself_is_a_cycle(write_project: ProjectWriter) -> None:
    root = write_project({"marts/loop.sql": "select * from {{ ref('loop') }}"})

    with pytest.raises(DependencyCycleError, match=r"cycle: loop \(models/marts/loop.sql\) -> loop"):
        load_project(root)


def test_an_unknown_ref_names_the_file_and_suggests_a_model(write_project: ProjectWriter) -> None:
    root = write_project(
        {"staging/stg_customers.sql": "select 1 as x", "marts/dim.sql": "select * from {{ ref('stg_customer') }}"}
    )

    with pytest.raises(UnknownRefError) as raised:
        load_project(root)

    assert (
        str(raised.value) == "models/marts/dim.sql: ref('stg_customer') names no model (did you mean 'stg_customers'?)"
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            "source('flowretail', 'orders')",
            "models/staging/stg.sql: source('flowretail', 'orders') is not declared in models/schema.yml",
        ),
        (
            "source('shopify', 'customer_groups')",
            "models/staging/stg.sql: source('shopify', 'customer_groups') is not declared in models/schema.yml",
        ),
    ],
)
def test_an_unknown_source_names_the_file(write_project: ProjectWriter, call: str, message: str) -> None:
    root = write_project({"schema.yml": SOURCES, "staging/stg.sql": f"select * from {{{{ {call} }}}}"})

    with pytest.raises(UnknownSourceError) as raised:
        load_project(root)

    assert str(raised.value) == message


def test_without_schema_yml_no_source_is_declared(write_project: ProjectWriter) -> None:
    root = write_project({"staging/stg.sql": "select * from {{ source('flowretail', 'customer_groups') }}"})

    with pytest.raises(UnknownSourceError, match=r"is not declared in models/schema\.yml$"):
        load_project(root)


@pytest.mark.parametrize(
    ("sql_text", "message"),
    [
        ("select 1; select 2", "models/marts/m.sql: contains 2 SQL statements; a model must be exactly one SELECT"),
        ("-- nothing here\n", "models/marts/m.sql: contains no SQL statement; a model must be one SELECT"),
        (
            "{{ config(materialized='table') }}",
            "models/marts/m.sql: contains no SQL statement; a model must be one SELECT",
        ),
        ("insert into t values (1)", "models/marts/m.sql: must be a SELECT or WITH statement, found INSERT"),
        ("drop table flowretail.customer_groups", "models/marts/m.sql: must be a SELECT or WITH statement, found DROP"),
        (
            "with gone as (delete from t returning *) select * from gone",
            "models/marts/m.sql: contains a data-modifying DELETE; a model must only read",
        ),
        ("select 'unterminated", "models/marts/m.sql: unterminated string constant"),
    ],
)
def test_a_model_must_be_exactly_one_select(write_project: ProjectWriter, sql_text: str, message: str) -> None:
    root = write_project({"marts/m.sql": sql_text})

    with pytest.raises(ModelStatementError) as raised:
        load_project(root)

    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("sql_text", "message"),
    [
        ("select {{ ref('a', 'b') }}", "models/marts/m.sql: ref() takes exactly one model name, got ('a', 'b')"),
        ("select {{ ref('a', v=2) }}", "models/marts/m.sql: ref() takes exactly one model name, got ('a', v=2)"),
        ("select {{ source('x') }}", "models/marts/m.sql: source() takes a source name and a table name, got ('x')"),
        ("{{ config('table') }} select 1", "models/marts/m.sql: config() takes keyword arguments only, got ('table')"),
        ("select {{ var('start_date') }}", "models/marts/m.sql: 'var' is undefined"),
        (
            "select 1\n{% if %}",
            "models/marts/m.sql:2: Jinja syntax error: Expected an expression, got 'end of statement block'",
        ),
    ],
)
def test_template_errors_name_the_file(write_project: ProjectWriter, sql_text: str, message: str) -> None:
    root = write_project({"marts/m.sql": sql_text})

    with pytest.raises(ModelTemplateError) as raised:
        load_project(root)

    assert str(raised.value) == message


def test_segments_lists_the_segment_models_and_records_their_refs(write_project: ProjectWriter) -> None:
    segment = (
        "{{{{ config(push_to_group_uid='{uid}', push_group_name='{uid}') }}}}\n"
        "select 't' as tenant_uid, 'c' as customer_uid"
    )
    root = write_project(
        {
            "segments/vip.sql": segment.format(uid="group-vip"),
            "segments/lapsed.sql": "select 't' as tenant_uid, 'c' as customer_uid",
            "marts/all_segments.sql": (
                "{% for s in segments() %}{% if not loop.first %} union all {% endif %}"
                "select '{{ s.name }}' as segment, '{{ s.push_to_group_uid }}' as target from {{ ref(s.name) }}"
                "{% endfor %}"
            ),
        }
    )

    project = load_project(root)

    model = project.models["all_segments"]
    assert model.refs == ("lapsed", "vip")
    assert model.uses_segments
    assert list(project.models)[-1] == "all_segments"
    assert [m.name for m in project.segments()] == ["lapsed", "vip"]


def test_segments_cannot_be_used_inside_a_segment(write_project: ProjectWriter) -> None:
    root = write_project({"segments/meta.sql": "{% for s in segments() %}select 1{% endfor %}select 2"})

    with pytest.raises(ModelTemplateError) as raised:
        load_project(root)

    assert str(raised.value) == (
        "models/segments/meta.sql: segments() cannot be used inside segments/ (a segment would depend on the "
        "list of segments, itself included)"
    )


def test_schema_yml_documenting_a_missing_model_is_an_error(write_project: ProjectWriter) -> None:
    root = write_project({"staging/stg_a.sql": "select 1 as a", "schema.yml": "version: 2\nmodels:\n  - name: stg_b\n"})

    with pytest.raises(SchemaFileError) as raised:
        load_project(root)

    assert str(raised.value) == "models/schema.yml: documents model 'stg_b', but no such model file exists"


def test_docs_and_config_descriptions_are_attached(write_project: ProjectWriter) -> None:
    root = write_project(
        {
            "staging/stg_a.sql": "select 1 as a",
            "staging/stg_b.sql": "{{ config(description='from config') }}select 1 as b",
            "schema.yml": (
                "version: 2\nmodels:\n  - name: stg_a\n    description: from yml\n"
                "  - name: stg_b\n    description: from yml too\n"
            ),
        }
    )

    project = load_project(root)

    assert project.models["stg_a"].description == "from yml"
    assert project.models["stg_b"].description == "from config"
    assert project.models["stg_a"].config.materialized == "view"
