"""Rendering models to final SQL, and the shape of the shipped project (no database)."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.sql_models import Project, SegmentPushConfig, load_project, render
from tests.sql_models.conftest import SHIPPED_MODELS

ProjectWriter = Callable[[dict[str, str]], Path]

SOURCES = """version: 2
sources:
  - name: flowretail
    tables: [{name: customer_snapshots}]
  - name: pos
    schema: Legacy POS
    tables: [{name: customers}]
"""


def test_refs_and_sources_become_quoted_relations(write_project: ProjectWriter) -> None:
    root = write_project(
        {
            "schema.yml": SOURCES,
            "staging/stg_a.sql": "select * from {{ source('flowretail', 'customer_snapshots') }};\n",
            "staging/stg_b.sql": "select * from {{ source('pos', 'customers') }} -- legacy\n",
            "marts/m.sql": (
                "{{ config(materialized='table') }}\n"
                "select a.*, '100%' as pct from {{ ref('stg_a') }} a join {{ ref('stg_b') }} b using (x)"
            ),
        }
    )

    project = load_project(root)

    assert render(project.models["stg_a"], project) == 'select * from "flowretail"."customer_snapshots"'
    assert render(project.models["stg_b"], project) == 'select * from "Legacy POS"."customers" -- legacy'
    assert render(project.models["m"], project) == (
        'select a.*, \'100%\' as pct from "analytics"."stg_a" a join "analytics"."stg_b" b using (x)'
    )
    dev = load_project(root, target_schema='dev "sandbox"')
    assert render(dev.models["m"], dev).count('"dev ""sandbox"""."stg_') == 2
    assert dev.relation("m").as_string(None) == '"dev ""sandbox"""."m"'


def test_render_is_identical_across_loads(write_project: ProjectWriter) -> None:
    root = write_project(
        {"marts/m.sql": "{% for n in range(3) %}{% if n %} union all {% endif %}select {{ n }}{% endfor %}"}
    )

    assert (
        render(load_project(root).models["m"], load_project(root)) == "select 0 union all select 1 union all select 2"
    )


def test_the_shipped_project_has_the_promised_models(shipped_project: Project) -> None:
    layers = {name: model.layer for name, model in shipped_project.models.items()}

    assert layers == {
        "stg_customers": "staging",
        "stg_customer_consents": "staging",
        "stg_group_memberships": "staging",
        "dim_customer_groups": "marts",
        "fct_group_membership_daily": "marts",
        "fct_group_membership_changes": "marts",
        "segment_membership": "marts",
        "newsletter_subscribers": "segments",
        "b2b_credit_customers": "segments",
        "credit_at_risk": "segments",
    }
    assert all(model.docs is not None and model.description for model in shipped_project.models.values())
    order = list(shipped_project.models)
    for model in shipped_project.models.values():
        assert all(order.index(ref) < order.index(model.name) for ref in model.refs)


def test_the_shipped_segment_configs(shipped_project: Project) -> None:
    pushes = {model.name: model.config.push for model in shipped_project.segments()}

    assert pushes == {
        "b2b_credit_customers": SegmentPushConfig(
            "segment-b2b-credit-customers", "B2B credit customers (warehouse)", "mirror", 0.2, "refuse"
        ),
        "credit_at_risk": SegmentPushConfig(
            "segment-credit-at-risk", "Credit at risk (warehouse)", "add_only", 0.0, "refuse"
        ),
        "newsletter_subscribers": SegmentPushConfig(
            "segment-newsletter-subscribers", "Newsletter subscribers (warehouse)", "mirror", 0.2, "refuse"
        ),
    }


def test_segment_membership_is_generated_from_the_segments(shipped_project: Project) -> None:
    model = shipped_project.models["segment_membership"]

    assert model.uses_segments
    assert set(model.refs) == {segment.name for segment in shipped_project.segments()}
    rendered = render(model, shipped_project)
    assert rendered.count("union all") == len(shipped_project.segments()) - 1
    for segment in shipped_project.segments():
        assert segment.config.push is not None
        assert (
            f"'{segment.name}'::text as segment,\n    members.tenant_uid,\n    members.customer_uid,\n"
            f"    '{segment.config.push.group_uid}'::text as target_group_uid\n"
            f'from "analytics"."{segment.name}" as members'
        ) in rendered


def test_a_new_segment_joins_segment_membership_without_editing_it(write_project: ProjectWriter) -> None:
    shipped = {
        path.relative_to(SHIPPED_MODELS).as_posix(): path.read_text("utf-8")
        for path in SHIPPED_MODELS.rglob("*")
        if path.is_file()
    }
    root = write_project(
        {
            **shipped,
            "segments/lapsed_customers.sql": (
                "select tenant_uid, customer_uid from {{ ref('stg_customers') }} where false"
            ),
        }
    )

    project = load_project(root)

    rendered = render(project.models["segment_membership"], project)
    assert "'lapsed_customers'::text as segment" in rendered
    assert "null::text as target_group_uid" in rendered
    assert "lapsed_customers" in project.models["segment_membership"].refs


def test_segment_membership_without_segments_is_an_empty_select(write_project: ProjectWriter) -> None:
    # Without its dbt hint (the "-- depends_on:" line naming the shipped segments).
    text = (SHIPPED_MODELS / "marts" / "segment_membership.sql").read_text("utf-8")
    without_dbt_hint = "\n".join(line for line in text.splitlines() if not line.startswith("-- depends_on:"))
    root = write_project({"marts/segment_membership.sql": without_dbt_hint})

    project = load_project(root)

    assert render(project.models["segment_membership"], project).endswith("where false")
    assert project.models["segment_membership"].refs == ()


def test_shipped_sql_needs_nothing_newer_than_postgresql_14() -> None:
    """Guard against later additions sneaking in: MERGE, NULLS NOT DISTINCT (15), any_value,
    IS JSON, JSON_ARRAY/JSON_OBJECT (16), JSON_TABLE and the SQL/JSON query functions (17)."""
    newer = re.compile(
        r"\b(merge\s+into|nulls\s+not\s+distinct|any_value|is\s+json|json_array|json_object|json_table|"
        r"json_exists|json_query|json_value)\b",
        re.IGNORECASE,
    )
    for path in SHIPPED_MODELS.rglob("*.sql"):
        assert not newer.search(path.read_text("utf-8")), path


def test_the_library_never_imports_dagster() -> None:
    package = Path(__file__).resolve().parents[2] / "pipelines" / "sql_models"
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text("utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names} | {
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        }
        assert not any(name.split(".")[0] == "dagster" for name in imported), path


@pytest.mark.parametrize("model_name", ["newsletter_subscribers", "b2b_credit_customers", "credit_at_risk"])
def test_shipped_segments_select_exactly_tenant_and_customer(shipped_project: Project, model_name: str) -> None:
    rendered = render(shipped_project.models[model_name], shipped_project)

    assert re.match(r"(--[^\n]*\n)*select\n    tenant_uid,\n    customer_uid\nfrom ", rendered), rendered
