"""The Dagster UI's GraphQL API serves the product's code location exactly as `pipelines.definitions` defines it."""

from __future__ import annotations

from typing import Any

import pytest
from dagster_graphql import DagsterGraphQLClient

from tests.ui.expected import ExpectedDefinitions
from tests.ui.webserver import LOOPBACK, UiServer

LOCATION = "pipelines.definitions"

WORKSPACE_QUERY = """
query FlowRetailWorkspace {
  workspaceOrError {
    __typename
    ... on PythonError { message stack }
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message stack }
          ... on RepositoryLocation {
            name
            repositories {
              name
              assetGroups { groupName }
              assetNodes {
                assetKey { path }
                description
                groupName
                isPartitioned
                jobNames
              }
              jobs { name isAssetJob }
              schedules { name cronSchedule pipelineName }
              sensors { name }
            }
          }
        }
      }
    }
  }
}
"""


@pytest.fixture(scope="module")
def repository(ui_server: UiServer) -> dict[str, Any]:
    """The one repository of the code location, as the UI's GraphQL API returns it (after asserting it loaded)."""
    client = DagsterGraphQLClient(LOOPBACK, port_number=ui_server.port, timeout=60)
    result = client._execute(WORKSPACE_QUERY)
    workspace = result["workspaceOrError"]
    assert workspace["__typename"] == "Workspace", workspace
    entries = {entry["name"]: entry for entry in workspace["locationEntries"]}
    assert set(entries) == {LOCATION}, f"unexpected code locations: {sorted(entries)}"
    entry = entries[LOCATION]
    location = entry["locationOrLoadError"]
    assert location is not None, entry
    assert location["__typename"] != "PythonError", (
        f"{LOCATION} failed to load: {location.get('message')}\n{''.join(location.get('stack') or [])}"
    )
    assert entry["loadStatus"] == "LOADED", entry
    assert location["__typename"] == "RepositoryLocation", location
    repositories = location["repositories"]
    assert len(repositories) == 1, [r["name"] for r in repositories]
    repo: dict[str, Any] = repositories[0]
    return repo


def _asset_nodes(repository: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {"/".join(node["assetKey"]["path"]): node for node in repository["assetNodes"]}


def test_code_location_loads_with_every_asset_of_the_definitions(
    repository: dict[str, Any], expected_definitions: ExpectedDefinitions
) -> None:
    nodes = _asset_nodes(repository)
    assert set(nodes) == expected_definitions.asset_keys

    prefixes = {key.split("/", 1)[0] for key in nodes}
    assert prefixes == {"flowretail", "analytics", "flowretail_push_plan", "flowretail_push", "flowretail_push_orphans"}
    raw_tables = {key for key in nodes if key.startswith("flowretail/")}
    assert raw_tables == {
        "flowretail/customer_groups",
        "flowretail/customer_group_memberships",
        "flowretail/customer_group_membership_history",
        "flowretail/customer_snapshots",
        "flowretail/load_runs",
    }
    assert {"analytics/stg_customers", "analytics/newsletter_subscribers", "analytics/segment_membership"} <= set(nodes)
    # Every segment model has its plan and its push, and nothing else lives under those prefixes.
    plans = {key.split("/", 1)[1] for key in nodes if key.startswith("flowretail_push_plan/")}
    pushes = {key.split("/", 1)[1] for key in nodes if key.startswith("flowretail_push/")}
    assert plans, "no flowretail_push_plan/* assets"
    assert plans == pushes
    assert {f"analytics/{segment}" for segment in plans} <= set(nodes)
    assert "newsletter_subscribers" in plans


def test_asset_groups_and_descriptions_match_the_definitions(
    repository: dict[str, Any], expected_definitions: ExpectedDefinitions
) -> None:
    nodes = _asset_nodes(repository)
    assert {g["groupName"] for g in repository["assetGroups"]} == {"ingest", "transform", "reverse_etl"}
    groups = {key: node["groupName"] for key, node in nodes.items()}
    assert groups == expected_definitions.groups
    assert {k for k, g in groups.items() if g == "ingest"} == {k for k in nodes if k.startswith("flowretail/")}
    assert {k for k, g in groups.items() if g == "transform"} == {k for k in nodes if k.startswith("analytics/")}
    assert {k for k, g in groups.items() if g == "reverse_etl"} == {
        k for k in nodes if k.startswith(("flowretail_push_plan/", "flowretail_push/"))
    } | {"flowretail_push_orphans"}
    missing = sorted(key for key, node in nodes.items() if not (node["description"] or "").strip())
    assert not missing, f"assets without a description in the UI: {missing}"
    descriptions = {key: node["description"] for key, node in nodes.items()}
    assert descriptions == expected_definitions.descriptions


def test_jobs_schedule_and_sensor_are_listed(
    repository: dict[str, Any], expected_definitions: ExpectedDefinitions
) -> None:
    # Dagster adds implicit `__ASSET_JOB*` jobs for the asset graph; the product's own jobs are the rest.
    jobs = {job["name"] for job in repository["jobs"] if not job["name"].startswith("__ASSET_JOB")}
    assert jobs == expected_definitions.jobs == {"warehouse_load", "segment_push", "retire_group"}

    schedules = {s["name"]: (s["cronSchedule"], s["pipelineName"]) for s in repository["schedules"]}
    assert schedules == expected_definitions.schedules
    assert schedules["warehouse_load_daily"] == ("0 3 * * *", "warehouse_load")

    sensors = {s["name"] for s in repository["sensors"]}
    assert sensors == expected_definitions.sensors
    assert "push_after_warehouse_load" in sensors

    nodes = _asset_nodes(repository)
    assert "warehouse_load" in nodes["flowretail/customer_groups"]["jobNames"]
    assert "segment_push" in nodes["flowretail_push/newsletter_subscribers"]["jobNames"]
