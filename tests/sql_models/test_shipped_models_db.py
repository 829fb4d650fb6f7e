"""The shipped models on the hand-written retail fixture: exact rows, passing data tests, docs.

Every test runs three times: built whole (all tenants at once), built the way tenant runs build them
(one tenant slice after the other), and built the way a run over several tenants builds them (both
slices in one build). The fixture has two tenants sharing uids, so a model or test that misses its
tenant filter fails the per-tenant run, and one that mixes tenants fails the run over both.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from pipelines.sql_models import BuildResult, Project
from tests.sql_models import retail_fixture as fx
from tests.sql_models.helpers import build_project, run_data_tests

TENANTS = (fx.OUTDOOR, fx.BAKERY)


@pytest.fixture(params=["whole", "per tenant", "tenants together"])
def build_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _build(
    conn: psycopg.Connection[Any], project: Project, mode: str, selection: list[str] | None = None
) -> list[BuildResult]:
    """Build whole, once per tenant (results of the last tenant's run), or once for both tenants."""
    if mode == "whole":
        return build_project(conn, project, selection)
    if mode == "tenants together":
        return build_project(conn, project, selection, tenants=TENANTS)
    results: list[BuildResult] = []
    for tenant in TENANTS:
        results = build_project(conn, project, selection, tenants=[tenant])
    return results


def _rows(conn: psycopg.Connection[Any], model: str, columns: list[str]) -> list[tuple[Any, ...]]:
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(column) for column in columns), sql.Identifier("analytics", model)
    )
    return [tuple(row) for row in conn.execute(query).fetchall()]


def _as_set(rows: list[tuple[Any, ...]]) -> set[tuple[Any, ...]]:
    """Rows as a set, after checking there is no duplicate a set would hide."""
    assert len(rows) == len(set(rows)), f"duplicate rows: {rows}"
    return set(rows)


def test_staging_models_hold_exactly_the_expected_rows(
    retail_conn: psycopg.Connection[Any], shipped_project: Project, build_mode: str
) -> None:
    _build(retail_conn, shipped_project, build_mode)

    customers = _rows(
        retail_conn,
        "stg_customers",
        [
            "tenant_uid",
            "customer_uid",
            "customer_type",
            "display_name",
            "credit_limit",
            "credit_balance",
            "has_newsletter_consent",
            "has_sms_consent",
            "has_email_marketing_consent",
            "version_valid_from",
        ],
    )
    assert _as_set(customers) == fx.expected_customer_rows()
    consents = _rows(
        retail_conn,
        "stg_customer_consents",
        ["tenant_uid", "customer_uid", "consent_name", "consent_uid", "status", "source", "created_at"],
    )
    assert _as_set(consents) == fx.expected_consent_rows()
    memberships = _rows(
        retail_conn,
        "stg_group_memberships",
        ["tenant_uid", "customer_group_uid", "customer_group_name", "customer_uid"],
    )
    assert _as_set(memberships) == fx.expected_group_membership_rows()


def test_segments_hold_exactly_the_expected_customers(
    retail_conn: psycopg.Connection[Any], shipped_project: Project, build_mode: str
) -> None:
    _build(retail_conn, shipped_project, build_mode)

    columns = ["tenant_uid", "customer_uid"]
    newsletter = _as_set(_rows(retail_conn, "newsletter_subscribers", columns))
    b2b_credit = _as_set(_rows(retail_conn, "b2b_credit_customers", columns))
    at_risk = _as_set(_rows(retail_conn, "credit_at_risk", columns))
    assert newsletter == fx.expected_newsletter_subscribers()
    assert b2b_credit == fx.expected_b2b_credit_customers()
    assert at_risk == fx.expected_credit_at_risk()
    # The same facts read off the fixture by hand, so the Python expectations are checked too.
    assert newsletter == {
        (fx.OUTDOOR, "c-1002"),
        (fx.OUTDOOR, "c-1004"),
        (fx.OUTDOOR, "c-shared"),
        (fx.BAKERY, "c-2001"),
    }
    assert b2b_credit == {
        (fx.OUTDOOR, "c-1003"),
        (fx.OUTDOOR, "c-1004"),
        (fx.BAKERY, "c-2001"),
        (fx.BAKERY, "c-shared"),
    }
    assert at_risk == {(fx.OUTDOOR, "c-1003"), (fx.OUTDOOR, "c-1005"), (fx.BAKERY, "c-2001")}

    membership = _as_set(
        _rows(retail_conn, "segment_membership", ["segment", "tenant_uid", "customer_uid", "target_group_uid"])
    )
    assert membership == (
        {("newsletter_subscribers", t, c, "segment-newsletter-subscribers") for t, c in newsletter}
        | {("b2b_credit_customers", t, c, "segment-b2b-credit-customers") for t, c in b2b_credit}
        | {("credit_at_risk", t, c, "segment-credit-at-risk") for t, c in at_risk}
    )


def test_marts_hold_exactly_the_expected_rows(
    retail_conn: psycopg.Connection[Any], shipped_project: Project, build_mode: str
) -> None:
    _build(retail_conn, shipped_project, build_mode)
    today = retail_conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()[0]  # type: ignore[index]

    groups = _rows(
        retail_conn, "dim_customer_groups", ["tenant_uid", "customer_group_uid", "customer_group_name", "member_count"]
    )
    assert _as_set(groups) == fx.expected_group_rows()
    assert (fx.OUTDOOR, "dormant", "Dormant campaign", 0) in groups
    daily = _rows(
        retail_conn,
        "fct_group_membership_daily",
        ["tenant_uid", "customer_group_uid", "membership_date", "member_count"],
    )
    assert _as_set(daily) == fx.expected_daily_rows(today)
    changes = _rows(
        retail_conn,
        "fct_group_membership_changes",
        ["tenant_uid", "customer_group_uid", "customer_uid", "change", "changed_at"],
    )
    assert _as_set(changes) == fx.expected_change_rows()


def test_day_boundaries_of_the_daily_counts(
    retail_conn: psycopg.Connection[Any], shipped_project: Project, build_mode: str
) -> None:
    """Spot checks of the subtle days, written by hand."""
    _build(retail_conn, shipped_project, build_mode, ["fct_group_membership_daily"])
    daily = {
        (tenant, group, day): count
        for tenant, group, day, count in _rows(
            retail_conn,
            "fct_group_membership_daily",
            ["tenant_uid", "customer_group_uid", "membership_date", "member_count"],
        )
    }

    def day(days_ago: int) -> Any:
        return fx.at(days_ago).date()

    # staff: c-1005 joined and left on day -4 (not counted); c-1007 from day -3 until midnight
    # after day -2 (counted on days -3 and -2); c-1003 from day -2 on.
    assert [daily[(fx.OUTDOOR, "staff", day(n))] for n in (4, 3, 2, 1, 0)] == [0, 1, 2, 1, 1]
    # bakery vip: joined at 23:59 UTC on day -1 (in Auckland that is already day 0).
    assert daily[(fx.BAKERY, "vip", day(1))] == 1
    assert (fx.BAKERY, "vip", day(2)) not in daily


def test_every_shipped_data_test_passes_on_the_fixture(
    retail_conn: psycopg.Connection[Any], shipped_project: Project, build_mode: str
) -> None:
    _build(retail_conn, shipped_project, build_mode)

    for tenants in (None, *([tenant] for tenant in TENANTS), TENANTS):
        results = run_data_tests(retail_conn, shipped_project, tenants=tenants)

        assert set(results) == {test.name for test in shipped_project.tests}
        failing = {name: result.sample for name, result in results.items() if not result.passed}
        assert failing == {}, tenants


def test_documented_columns_are_the_built_columns(
    retail_conn: psycopg.Connection[Any], shipped_project: Project, build_mode: str
) -> None:
    results = _build(retail_conn, shipped_project, build_mode)

    for result in results:
        docs = shipped_project.models[result.model].docs
        assert docs is not None, f"{result.model} is not documented in schema.yml"
        assert [column.name for column in result.columns] == list(docs.column_names), result.model
    for segment in shipped_project.segments():
        built = next(result for result in results if result.model == segment.name)
        assert [(c.name, c.data_type) for c in built.columns] == [("tenant_uid", "text"), ("customer_uid", "text")]


def test_rebuilding_is_idempotent(
    retail_conn: psycopg.Connection[Any], shipped_project: Project, build_mode: str
) -> None:
    first = _build(retail_conn, shipped_project, build_mode)
    second = _build(retail_conn, shipped_project, build_mode)

    assert [(r.model, r.row_count, r.columns) for r in first] == [(r.model, r.row_count, r.columns) for r in second]
    # Built per tenant, a result counts the rows of the tenant built last.
    expected = {
        row for row in fx.expected_newsletter_subscribers() if build_mode != "per tenant" or row[0] == fx.BAKERY
    }
    assert {r.model: r.row_count for r in second}["newsletter_subscribers"] == len(expected)
