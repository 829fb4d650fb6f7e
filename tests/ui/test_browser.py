"""Real-browser smoke test: headless Chromium renders the Dagster UI's global asset lineage for the product.

The page is the "Global asset lineage" (``/asset-groups``) of dagster-webserver 1.13. Two views are
captured under ``.flowretail/ui-smoke/``:

- ``asset-lineage-overview.png`` (1600x1000): the page as it opens, one box per asset group with
  its asset count.
- ``asset-graph.png``: every group expanded (``?expanded=``). That explorer zooms to fit the graph's
  *width*, hides nodes outside the viewport and draws names truncated below 60% zoom, so the test
  measures the laid-out graph and sizes the viewport for about 80% zoom: then every asset is drawn
  in full, with a link to ``/assets/<key>``, and all of them are checked by key.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.ui.browser import Browser, BrowserError, chromium_available, headless_chromium
from tests.ui.expected import ExpectedDefinitions
from tests.ui.webserver import REPO, MakeUiEnvironment, UiServer, graphql, run_flowretail, ui_server_for

SMOKE_DIR = REPO / ".flowretail" / "ui-smoke"
OVERVIEW_SIZE = (1600, 1000)
TARGET_ZOOM = 0.8
FULL_NODE_ZOOM = 0.6  # below this the explorer draws "minimal" nodes: truncated names, no links
MAX_VIEWPORT = (5000, 9000)
RENDER_TIMEOUT = 60.0
MIN_PNG_BYTES = 20_000

# What the lineage viewport shows: the graph's laid-out size, the current zoom, the asset keys linked
# from its nodes, and its visible text.
PROBE = """
(() => {
  const viewport = document.querySelector('[data-svg-viewport]');
  if (!viewport) return null;
  const layer = viewport.firstElementChild;
  const svg = layer && layer.querySelector(':scope > svg');
  const zoom = /matrix\\(([^,]+)/.exec((layer && layer.style.transform) || '');
  const keys = new Set();
  for (const a of viewport.querySelectorAll('a[href^="/assets/"]')) {
    keys.add(decodeURIComponent(new URL(a.href).pathname.slice('/assets/'.length)).replace(/\\/$/, ''));
  }
  return {
    graph: svg ? [Number(svg.getAttribute('width')), Number(svg.getAttribute('height'))] : null,
    viewport: [viewport.clientWidth, viewport.clientHeight],
    window: [window.innerWidth, window.innerHeight],
    zoom: zoom ? Number(zoom[1]) : null,
    keys: [...keys].sort(),
    text: viewport.innerText,
  };
})()
"""


# Decided at collection, so that no webserver is started for nothing.
# CI (`.ci/run` sets no CI variable itself; the CI machine does) installs Chromium, so there a
# missing browser fails the test instead of skipping it.
pytestmark = pytest.mark.skipif(
    not chromium_available() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed: apt-get install chromium",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    with headless_chromium(tmp_path / "chromium", *OVERVIEW_SIZE) as chromium:
        yield chromium


def _probe(browser: Browser) -> dict[str, Any]:
    """The viewport's state; ``{}`` while there is none (page still loading, or mid-navigation)."""
    try:
        value = browser.evaluate(PROBE)
    except BrowserError as exc:
        if not browser.is_alive():
            raise
        return {"error": str(exc)}
    return value if isinstance(value, dict) else {}


def _group_ids(groups: set[str]) -> str:
    """The explorer's ids for expanded groups: global ids, and per-code-location ids (behind a feature flag)."""
    ids = [f"global@global:{g}" for g in sorted(groups)]
    ids += [f"__repository__@pipelines.definitions:{g}" for g in sorted(groups)]
    return ",".join(ids)


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return int(width), int(height)


def _assert_screenshot(path: Path, size: tuple[int, int]) -> None:
    assert path.is_file(), f"no screenshot at {path}"
    assert path.stat().st_size > MIN_PNG_BYTES, f"{path} is only {path.stat().st_size} bytes"
    assert _png_size(path) == size


def _assert_no_community_dialog(server: UiServer) -> None:
    """The first-visit "Join the Dagster community" dialog would cover the graph; dagster.yaml turns it off."""
    body = graphql(server.url, "{ shouldShowNux }")
    assert body.get("data", {}).get("shouldShowNux") is False, body


def open_overview(browser: Browser, server: UiServer, expected: ExpectedDefinitions, screenshot: Path) -> None:
    """The lineage page as it opens: one box per group, labelled with its asset count."""
    browser.set_viewport(*OVERVIEW_SIZE)
    browser.navigate(f"{server.url}/asset-groups")
    wanted = {group: len(expected.keys_in_group(group)) for group in set(expected.groups.values())}

    def shows_every_group(state: dict[str, Any]) -> bool:
        text = state.get("text") or ""
        # "ingest\n5", or "ingest\n5 assets (fetching statuses)" while an instance with runs loads statuses
        return all(re.search(rf"(^|\n){re.escape(g)}\n{n}(\D|$)", text) for g, n in wanted.items())

    browser.wait_for(lambda: _probe(browser), shows_every_group, RENDER_TIMEOUT, f"group boxes {wanted}")
    browser.screenshot(screenshot)


def open_full_graph(
    browser: Browser, server: UiServer, expected: ExpectedDefinitions, screenshot: Path
) -> dict[str, Any]:
    """Every group expanded, the viewport sized so the whole graph is drawn in full; returns the final probe."""
    url = f"{server.url}/asset-groups?expanded={quote(_group_ids(set(expected.groups.values())), safe='@:,')}"
    browser.navigate(url)
    sizes: list[Any] = []

    def laid_out_and_settled(state: dict[str, Any]) -> bool:
        """The graph has a layout and a zoom, and its size did not change since the previous probe."""
        sizes.append(state.get("zoom") and state.get("graph"))
        return bool(sizes[-1]) and sizes[-2:] == [sizes[-1]] * 2

    laid_out = browser.wait_for(
        lambda: _probe(browser), laid_out_and_settled, RENDER_TIMEOUT, "the expanded asset graph to be laid out"
    )
    graph_w, graph_h = laid_out["graph"]
    window_w, window_h = laid_out["window"]
    view_w, view_h = laid_out["viewport"]
    width = max(OVERVIEW_SIZE[0], window_w - view_w + math.ceil(graph_w * TARGET_ZOOM) + 2)
    height = max(OVERVIEW_SIZE[1], window_h - view_h + math.ceil(graph_h * TARGET_ZOOM) + 40)
    assert width <= MAX_VIEWPORT[0] and height <= MAX_VIEWPORT[1], (
        f"the asset graph ({graph_w}x{graph_h}) needs a {width}x{height} viewport to be drawn in full"
    )
    browser.set_viewport(width, height)
    browser.navigate(url)
    state = browser.wait_for(
        lambda: _probe(browser),
        lambda s: set(s.get("keys") or ()) >= expected.asset_keys,
        RENDER_TIMEOUT,
        f"all {len(expected.asset_keys)} asset nodes drawn with their links",
    )
    browser.screenshot(screenshot)
    _assert_screenshot(screenshot, (width, height))
    assert state["zoom"] >= FULL_NODE_ZOOM, state["zoom"]
    return state


def test_asset_lineage_renders_raw_tables_models_and_pushes(
    ui_server: UiServer, expected_definitions: ExpectedDefinitions, browser: Browser
) -> None:
    _assert_no_community_dialog(ui_server)
    overview = SMOKE_DIR / "asset-lineage-overview.png"
    graph = SMOKE_DIR / "asset-graph.png"
    for old in (overview, graph):
        old.unlink(missing_ok=True)

    open_overview(browser, ui_server, expected_definitions, overview)
    _assert_screenshot(overview, OVERVIEW_SIZE)

    state = open_full_graph(browser, ui_server, expected_definitions, graph)
    assert set(state["keys"]) == expected_definitions.asset_keys
    for key in (
        "flowretail/customer_groups",
        "flowretail/customer_group_memberships",
        "flowretail/customer_group_membership_history",
        "flowretail/customer_snapshots",
        "flowretail/load_runs",
        "analytics/stg_customers",
        "analytics/newsletter_subscribers",
        "flowretail_push_plan/newsletter_subscribers",
        "flowretail_push/newsletter_subscribers",
    ):
        assert key in state["keys"], f"{key} is not drawn in the asset graph"
    lines = set(state["text"].splitlines())
    for name in ("customer_groups", "customer_snapshots", "load_runs", "stg_customers", "newsletter_subscribers"):
        assert name in lines, f"{name!r} is not shown as a node title"
    # Every asset is partitioned by tenant (models too, since tenant-sliced models). Tenants are dynamic
    # partitions, registered by the sync sensor or a command: in this fresh instance there are none yet.
    assert "Never materialized" not in state["text"]
    assert "0 partitions" in state["text"], "nothing has run here: the assets should say so"


@pytest.mark.slow
def test_asset_graph_after_a_run_shows_materializations(
    make_ui_environment: MakeUiEnvironment,
    database_url: str,
    expected_definitions: ExpectedDefinitions,
    browser: Browser,
    tmp_path: Path,
) -> None:
    environment = make_ui_environment(database_url, tmp_path / "run")
    tenant = environment.env["FLOWRETAIL_TENANT_UIDS"].split(",")[0]
    summary = json.loads(
        run_flowretail(["run", "--tenant", tenant, "--json"], environment.env, cwd=environment.workdir)
    )
    assert summary["problems"] == [], summary["problems"]
    assert summary["loads"] and summary["pushes"], summary

    with ui_server_for(environment) as server:
        _assert_no_community_dialog(server)
        graph = SMOKE_DIR / "asset-graph-after-run.png"
        graph.unlink(missing_ok=True)
        state = open_full_graph(browser, server, expected_definitions, graph)
    assert set(state["keys"]) == expected_definitions.asset_keys
    lines = state["text"].splitlines()
    assert "Never materialized" not in lines, "an asset shows no materialization after `flowretail run`"
    tenants = environment.env["FLOWRETAIL_TENANT_UIDS"].split(",")
    assert len(tenants) == 2, tenants
    unpartitioned = expected_definitions.asset_keys - expected_definitions.partitioned
    assert lines.count("Materialized") == len(unpartitioned)
    # One tenant of two was run: every partitioned asset (raw tables, plans, pushes) is half filled.
    assert lines.count("50% filled") == len(expected_definitions.partitioned)
    checks = [re.fullmatch(r"(\d+) / (\d+) Passed", line) for line in lines]
    results = [(int(m[1]), int(m[2])) for m in checks if m]
    assert results, "no asset check results are shown"
    assert all(passed == total for passed, total in results), f"asset checks not all passed: {results}"
