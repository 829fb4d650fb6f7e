"""``schema.yml`` parsing into typed objects, its errors, and the SQL each data test compiles to."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.sql_models import (
    ColumnDocs,
    DeclaredTest,
    ModelDocs,
    ModelRef,
    SchemaFileError,
    Source,
    SourceRef,
    SourceTable,
    load_project,
    parse_schema_file,
)

ProjectWriter = Callable[[dict[str, str]], Path]
PATH = Path("/project/models/schema.yml")
ONE_COLUMN = "version: 2\nmodels:\n  - name: m\n    columns: [{name: a, tests: "


def _parse(text: str) -> object:
    return parse_schema_file(text, path=PATH, label="models/schema.yml")


def test_sources_models_columns_and_tests_are_typed() -> None:
    schema = parse_schema_file(
        """
version: 2
sources:
  - name: flowretail
    description: Loaded by ingest.
    tables:
      - name: customer_groups
        description: Current groups.
      - name: customer_snapshots
  - name: legacy
    schema: old_pos
    tables: [{name: customers}]
models:
  - name: stg_customers
    description: Current customers.
    columns:
      - name: customer_uid
        description: The customer.
        tests:
          - not_null
          - relationships:
              to: source('flowretail', 'customer_snapshots')
              field: customer_uid
      - name: customer_type
        data_tests:
          - accepted_values:
              arguments:
                values: [COMPANY, PERSON, B2B]
      - name: credit_limit
    tests:
      - unique:
          column_name: "tenant_uid || ':' || customer_uid"
  - name: dim_groups
    columns:
      - name: customer_group_uid
        tests:
          - relationships: {to: "ref(\\"stg_groups\\")", field: customer_group_uid}
""",
        path=PATH,
        label="models/schema.yml",
    )

    assert schema.sources == {
        "flowretail": Source(
            "flowretail",
            "flowretail",
            "Loaded by ingest.",
            {
                "customer_groups": SourceTable("customer_groups", "Current groups."),
                "customer_snapshots": SourceTable("customer_snapshots"),
            },
        ),
        "legacy": Source("legacy", "old_pos", None, {"customers": SourceTable("customers")}),
    }
    assert schema.models["stg_customers"] == ModelDocs(
        name="stg_customers",
        description="Current customers.",
        columns=(
            ColumnDocs(
                "customer_uid",
                "The customer.",
                (
                    DeclaredTest("not_null", "customer_uid"),
                    DeclaredTest(
                        "relationships",
                        "customer_uid",
                        to=SourceRef("flowretail", "customer_snapshots"),
                        field="customer_uid",
                    ),
                ),
            ),
            ColumnDocs(
                "customer_type",
                None,
                (DeclaredTest("accepted_values", "customer_type", accepted_values=("COMPANY", "PERSON", "B2B")),),
            ),
            ColumnDocs("credit_limit"),
        ),
        tests=(DeclaredTest("unique", "tenant_uid || ':' || customer_uid"),),
    )
    assert schema.models["stg_customers"].column_names == ("customer_uid", "customer_type", "credit_limit")
    assert schema.models["dim_groups"].columns[0].tests[0].to == ModelRef("stg_groups")


def test_an_empty_file_declares_nothing() -> None:
    schema = parse_schema_file("", path=PATH, label="models/schema.yml")

    assert (dict(schema.sources), dict(schema.models)) == ({}, {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 2\nmodels: [\n", "models/schema.yml: is not valid YAML: "),
        ("version: 1\n", "models/schema.yml: expected 'version: 2' (dbt's format), got 1"),
        ("- 1\n", "models/schema.yml: expected a mapping, got list"),
        ("version: 2\nseeds: []\n", "models/schema.yml: unknown key 'seeds' (allowed: models, sources, version)"),
        (
            "version: 2\nmodels:\n  - description: x\n",
            "models/schema.yml: models[0]: every entry needs a non-empty 'name'",
        ),
        (
            "version: 2\nmodels:\n  - name: m\n  - name: m\n",
            "models/schema.yml: model 'm' is documented twice",
        ),
        (
            "version: 2\nmodels:\n  - name: m\n    columns: [{name: a}, {name: a}]\n",
            "models/schema.yml: model m: column 'a' is documented twice",
        ),
        (
            "version: 2\nmodels:\n  - name: m\n    columns: [{name: a, tests: [uniq]}]\n",
            "models/schema.yml: model m column 'a': unknown test 'uniq' (supported: unique, not_null, "
            "accepted_values, relationships)",
        ),
        (
            "version: 2\nmodels:\n  - name: m\n    columns: [{name: a, tests: [{accepted_values: {values: []}}]}]\n",
            "models/schema.yml: model m column 'a' accepted_values: accepted_values needs a non-empty 'values' list",
        ),
        (
            f"{ONE_COLUMN}[{{accepted_values: {{values: [x], quote: false}}}}]}}]\n",
            "models/schema.yml: model m column 'a' accepted_values: unknown argument 'quote'",
        ),
        (
            f"{ONE_COLUMN}[{{relationships: {{to: other, field: b}}}}]}}]\n",
            "models/schema.yml: model m column 'a' relationships: relationships 'to' must be ref('model') or "
            "source('source', 'table'), got 'other'",
        ),
        (
            f"{ONE_COLUMN}[{{relationships: {{to: \"ref('o')\"}}}}]}}]\n",
            "models/schema.yml: model m column 'a' relationships: relationships needs 'field' (the column of "
            "the referenced relation)",
        ),
        (
            "version: 2\nmodels:\n  - name: m\n    tests: [unique]\n",
            "models/schema.yml: model m unique: a model-level test needs 'column_name' (a column or SQL expression)",
        ),
        (
            "version: 2\nmodels:\n  - name: m\n    columns: [{name: a, tests: [{unique: {column_name: b}}]}]\n",
            "models/schema.yml: model m column 'a' unique: 'column_name' is only for model-level tests",
        ),
        (
            "version: 2\nsources:\n  - name: s\n    tables: [{name: t}, {name: t}]\n",
            "models/schema.yml: source s: table 't' is declared twice",
        ),
    ],
)
def test_malformed_schema_yml_names_the_file_and_the_spot(text: str, message: str) -> None:
    with pytest.raises(SchemaFileError) as raised:
        _parse(text)

    assert str(raised.value).startswith(message)  # YAML errors continue with the parser's details
    if not message.endswith(": "):
        assert str(raised.value) == message
    assert raised.value.paths == (PATH,)


def test_tests_compile_to_sql_returning_failing_rows(write_project: ProjectWriter) -> None:
    root = write_project(
        {
            "staging/stg_customers.sql": "select 't' as tenant_uid, 'c' as customer_uid, 'PERSON' as customer_type",
            "marts/dim_customers.sql": "select * from {{ ref('stg_customers') }}",
            "schema.yml": """
version: 2
sources:
  - name: flowretail
    tables: [{name: customer_snapshots}]
models:
  - name: dim_customers
    columns:
      - name: customer_uid
        tests:
          - unique
          - not_null
          - relationships: {to: "ref('stg_customers')", field: customer_uid}
          - relationships: {to: "source('flowretail', 'customer_snapshots')", field: customer_uid}
      - name: customer_type
        tests:
          - accepted_values: {values: ["PERSON", "O'Brien & Co", 3, true]}
    tests:
      - unique: {column_name: "tenant_uid || ':' || customer_uid"}
""",
        }
    )

    project = load_project(root, target_schema="marts_dev")

    compiled = {test.name: (test.model, test.column, test.kind, test.sql) for test in project.tests}
    assert compiled == {
        "unique_dim_customers_customer_uid": (
            "dim_customers",
            "customer_uid",
            "unique",
            'SELECT "customer_uid" AS unique_field, count(*) AS n_records\nFROM "marts_dev"."dim_customers"\n'
            'WHERE "customer_uid" IS NOT NULL\nGROUP BY "customer_uid"\nHAVING count(*) > 1',
        ),
        "not_null_dim_customers_customer_uid": (
            "dim_customers",
            "customer_uid",
            "not_null",
            'SELECT *\nFROM "marts_dev"."dim_customers"\nWHERE "customer_uid" IS NULL',
        ),
        "relationships_dim_customers_customer_uid__stg_customers__customer_uid": (
            "dim_customers",
            "customer_uid",
            "relationships",
            'WITH child AS (\n    SELECT "tenant_uid", "customer_uid" AS from_field FROM "marts_dev"."dim_customers" '
            'WHERE "customer_uid" IS NOT NULL\n),\nparent AS (\n    SELECT "tenant_uid", "customer_uid" AS to_field '
            'FROM "marts_dev"."stg_customers"\n)\nSELECT child."tenant_uid", child.from_field\nFROM child\n'
            'LEFT JOIN parent ON child."tenant_uid" = parent."tenant_uid" AND child.from_field = parent.to_field\n'
            "WHERE parent.to_field IS NULL",
        ),
        "relationships_dim_customers_customer_uid__flowretail_customer_snapshots__customer_uid": (
            "dim_customers",
            "customer_uid",
            "relationships",
            'WITH child AS (\n    SELECT "tenant_uid", "customer_uid" AS from_field FROM "marts_dev"."dim_customers" '
            'WHERE "customer_uid" IS NOT NULL\n),\nparent AS (\n    SELECT "tenant_uid", "customer_uid" AS to_field '
            'FROM "flowretail"."customer_snapshots"\n)\nSELECT child."tenant_uid", child.from_field\nFROM child\n'
            'LEFT JOIN parent ON child."tenant_uid" = parent."tenant_uid" AND child.from_field = parent.to_field\n'
            "WHERE parent.to_field IS NULL",
        ),
        "accepted_values_dim_customers_customer_type": (
            "dim_customers",
            "customer_type",
            "accepted_values",
            'SELECT "customer_type" AS value_field, count(*) AS n_records\nFROM "marts_dev"."dim_customers"\n'
            "WHERE \"customer_type\" IS NOT NULL AND \"customer_type\" NOT IN ('PERSON', 'O''Brien & Co', 3, true)\n"
            'GROUP BY "customer_type"',
        ),
        "unique_dim_customers_tenant_uid_customer_uid": (
            "dim_customers",
            "tenant_uid || ':' || customer_uid",
            "unique",
            "SELECT (tenant_uid || ':' || customer_uid) AS unique_field, count(*) AS n_records\n"
            'FROM "marts_dev"."dim_customers"\n'
            "WHERE (tenant_uid || ':' || customer_uid) IS NOT NULL\n"
            "GROUP BY (tenant_uid || ':' || customer_uid)\nHAVING count(*) > 1",
        ),
    }
    assert {test.defined_in for test in project.tests} == {"models/schema.yml"}
    assert [test.name for test in project.tests_for("stg_customers")] == []


@pytest.mark.parametrize(
    ("to", "message"),
    [
        (
            "ref('nowhere')",
            "models/schema.yml: model m relationships test on 'a' refs unknown model 'nowhere'",
        ),
        (
            "source('flowretail', 'orders')",
            "models/schema.yml: model m relationships test on 'a' reads undeclared source('flowretail', 'orders')",
        ),
    ],
)
def test_relationships_to_something_unknown_names_schema_yml(
    write_project: ProjectWriter, to: str, message: str
) -> None:
    root = write_project(
        {
            "marts/m.sql": "select 1 as a",
            "schema.yml": (
                "version: 2\nsources: [{name: flowretail, tables: [{name: customer_groups}]}]\n"
                f"models:\n  - name: m\n    columns:\n      - name: a\n        tests:\n"
                f'          - relationships: {{to: "{to}", field: a}}\n'
            ),
        }
    )

    with pytest.raises(SchemaFileError) as raised:
        load_project(root)

    assert str(raised.value) == message


def test_the_same_test_twice_is_an_error(write_project: ProjectWriter) -> None:
    root = write_project(
        {
            "marts/m.sql": "select 1 as a",
            "schema.yml": f"{ONE_COLUMN}[unique, unique]}}]\n",
        }
    )

    with pytest.raises(SchemaFileError, match=r"^models/schema.yml: test unique_m_a is declared twice$"):
        load_project(root)


def test_a_test_of_a_per_tenant_model_reads_one_tenants_rows_on_both_sides(write_project: ProjectWriter) -> None:
    root = write_project(
        {
            "staging/stg_customers.sql": "select 't' as tenant_uid, 'c' as customer_uid",
            "staging/all_people.sql": "{{ config(tenant_scope='all') }} select 'c' as customer_uid",
            "marts/dim_customers.sql": "select * from {{ ref('stg_customers') }}",
            "schema.yml": """
version: 2
models:
  - name: dim_customers
    columns:
      - name: customer_uid
        tests:
          - not_null
          - relationships: {to: "ref('stg_customers')", field: customer_uid}
          - relationships: {to: "ref('all_people')", field: customer_uid}
  - name: all_people
    columns:
      - name: customer_uid
        tests: [not_null]
""",
        }
    )

    tests = {test.name: test for test in load_project(root).tests}

    assert tests["not_null_dim_customers_customer_uid"].sql_for(["o'ne"]) == (
        'SELECT *\nFROM (SELECT * FROM "analytics"."dim_customers" WHERE "tenant_uid" = \'o\'\'ne\') AS "tested"\n'
        'WHERE "customer_uid" IS NULL'
    )
    assert tests["relationships_dim_customers_customer_uid__stg_customers__customer_uid"].sql_for(["t1"]) == (
        'WITH child AS (\n    SELECT "tenant_uid", "customer_uid" AS from_field FROM (SELECT * FROM '
        '"analytics"."dim_customers" WHERE "tenant_uid" = \'t1\') AS "tested" WHERE "customer_uid" IS NOT NULL\n),\n'
        'parent AS (\n    SELECT "tenant_uid", "customer_uid" AS to_field FROM (SELECT * FROM '
        '"analytics"."stg_customers" WHERE "tenant_uid" = \'t1\') AS "referenced"\n)\n'
        'SELECT child."tenant_uid", child.from_field\nFROM child\n'
        'LEFT JOIN parent ON child."tenant_uid" = parent."tenant_uid" AND child.from_field = parent.to_field\n'
        "WHERE parent.to_field IS NULL"
    )
    # A model declared to span tenants has no tenant column to match or filter on.
    across = tests["relationships_dim_customers_customer_uid__all_people__customer_uid"]
    assert not across.tenant_keyed
    assert "LEFT JOIN parent ON child.from_field = parent.to_field" in across.sql
    unscoped = tests["not_null_all_people_customer_uid"]
    assert (
        unscoped.sql_for(["t1"])
        == unscoped.sql
        == 'SELECT *\nFROM "analytics"."all_people"\nWHERE "customer_uid" IS NULL'
    )
