"""The reliability suite's recorder: every scenario is recorded and, on request, RELIABILITY.md is
written from the run.

Each test carries ``@pytest.mark.reliability(area=..., injected=..., expected=...)`` and may report
what it measured through the ``scenario`` fixture (rows lost, partial states, token hits, notes).
At the end of a session that ran reliability tests with ``FLOWRETAIL_WRITE_RELIABILITY=1``,
``RELIABILITY.md`` is regenerated at the repository root; otherwise nothing is written, so an
ordinary ``make test`` leaves the tree clean.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.report import render_report

REPORT_PATH = Path(__file__).resolve().parents[2] / "RELIABILITY.md"
_HERE = Path(__file__).resolve().parent


@dataclass
class ScenarioRecord:
    """One scenario of the run and what it observed."""

    nodeid: str
    name: str
    area: str
    injected: str
    expected: str
    slow: bool
    result: str = "not run"
    rows_lost: int = 0
    partial_states: int = 0
    token_hits: int | None = None
    notes: list[str] = field(default_factory=list)
    bug: str | None = None
    duration: float = 0.0

    def lost(self, count: int) -> None:
        self.rows_lost += count

    def partial(self, count: int = 1) -> None:
        self.partial_states += count

    def tokens(self, count: int) -> None:
        self.token_hits = (self.token_hits or 0) + count

    def note(self, text: str) -> None:
        self.notes.append(text)


_RECORDS: dict[str, ScenarioRecord] = {}
_STARTED = time.monotonic()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "reliability(area, injected, expected): a scenario of the reliability suite, recorded in RELIABILITY.md",
    )


def _key(item: pytest.Item) -> str:
    """Schemathesis gives every operation's item the same nodeid; its name tells them apart."""
    if item.nodeid.endswith(item.name):
        return item.nodeid
    return item.nodeid.rsplit("::", 1)[0] + "::" + item.name


def _record_for(item: pytest.Item) -> ScenarioRecord:
    key = _key(item)
    record = _RECORDS.get(key)
    if record is None:
        marker = item.get_closest_marker("reliability")
        kwargs: dict[str, Any] = dict(marker.kwargs) if marker else {}
        name = item.name.removeprefix("test_")
        record = ScenarioRecord(
            nodeid=key,
            name=name,
            area=str(kwargs.get("area", Path(str(item.path)).stem.removeprefix("test_"))),
            injected=str(kwargs.get("injected", "")),
            expected=str(kwargs.get("expected", "")),
            slow=item.get_closest_marker("slow") is not None,
        )
        xfail = item.get_closest_marker("xfail")
        if xfail is not None:
            record.bug = str(xfail.kwargs.get("reason", ""))
        _RECORDS[key] = record
    return record


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[ScenarioRecord]:
    """What this scenario measured; read back when RELIABILITY.md is written."""
    yield _record_for(request.node)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    if _HERE not in Path(str(item.path)).resolve().parents:
        return
    report: pytest.TestReport = outcome.get_result()
    record = _record_for(item)
    if report.when == "call":
        record.duration = report.duration
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if hasattr(report, "wasxfail"):
            record.result = (
                "xfail (accepted limitation)" if report.skipped else "XPASS (limitation lifted? remove xfail)"
            )
        elif report.passed:
            record.result = "passed"
        elif report.skipped:
            record.result = "skipped"
        else:
            record.result = "FAILED"
    elif report.when == "teardown" and report.failed and record.result == "passed":
        record.result = "FAILED (teardown)"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("FLOWRETAIL_WRITE_RELIABILITY") != "1" or not _RECORDS:
        return
    records = [r for r in _RECORDS.values() if r.result != "not run"]
    if not records:
        return
    selection = str(session.config.getoption("markexpr", "") or "")
    text = render_report(
        records,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        wall_seconds=time.monotonic() - _STARTED,
        python=platform.python_version(),
        selection=selection,
    )
    REPORT_PATH.write_text(text, "utf-8")
