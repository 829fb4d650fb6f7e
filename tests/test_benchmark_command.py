"""The split of a command's wall time in benchmarks/command.py: pure functions, no I/O."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def command() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("bench_command", BENCHMARKS / "command.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_steps_split_into_work_and_the_tests_after_the_last_materialization(command: ModuleType) -> None:
    e = command.StepEvent
    events = [
        e("warehouse_load", "flowretail_raw_tables", "start", 10.0),
        e("warehouse_load", "flowretail_raw_tables", "materialization", 14.0, "flowretail"),
        e("warehouse_load", "flowretail_raw_tables", "check", 14.5, "flowretail"),
        e("warehouse_load", "flowretail_raw_tables", "end", 15.0),
        e("warehouse_load", "analytics__stg", "start", 16.0),
        e("warehouse_load", "analytics__stg", "materialization", 18.0, "analytics"),
        e("warehouse_load", "analytics__stg", "end", 18.0),
        e("warehouse_load", "rel_check", "start", 18.0),
        e("warehouse_load", "rel_check", "check", 19.0, "analytics"),
        e("warehouse_load", "freshness", "start", 15.0),
        e("warehouse_load", "freshness", "check", 15.5, "flowretail"),
        e("warehouse_load", "freshness", "end", 15.5),
        e("warehouse_load", "rel_check", "end", 19.0),
        e("segment_push", "plan", "start", 20.0),
        e("segment_push", "plan", "materialization", 21.0, "flowretail_push_plan"),
        e("segment_push", "plan", "check", 21.0),
        e("segment_push", "plan", "end", 21.5),
        e("segment_push", "other_plan", "start", 20.5),
        e("segment_push", "other_plan", "end", 22.0),
    ]
    spans = command.step_spans(events, raw_schema="flowretail", push_prefixes=["flowretail_push_plan"])
    assert sorted((s.category, s.start, s.end) for s in spans) == [
        ("data tests", 18.0, 19.0),
        ("load checks", 14.0, 15.0),
        ("load checks", 15.0, 15.5),
        ("loads", 10.0, 14.0),
        ("models", 16.0, 18.0),
        ("pushes", 20.0, 21.5),
        ("pushes", 20.5, 22.0),
    ]
    split = command.split_wall(spans, 8.0, 25.0)
    # overlapping push steps count once; the gaps (8-10, 15.5-16, 19-20, 22-25) are orchestration
    assert split == {
        "loads": 4.0,
        "load checks": 1.5,
        "models": 2.0,
        "data tests": 1.0,
        "pushes": 2.0,
        "other steps": 0.0,
        "orchestration": 6.5,
    }


def test_the_same_step_in_two_runs_is_two_spans(command: ModuleType) -> None:
    e = command.StepEvent
    events = [
        e("warehouse_load", "flowretail_raw_tables", "start", 0.0, None, "run-1"),
        e("warehouse_load", "flowretail_raw_tables", "materialization", 2.0, "flowretail", "run-1"),
        e("warehouse_load", "flowretail_raw_tables", "end", 2.0, None, "run-1"),
        e("warehouse_load", "analytics__stg", "start", 2.0, None, "run-1"),
        e("warehouse_load", "analytics__stg", "materialization", 5.0, "analytics", "run-1"),
        e("warehouse_load", "analytics__stg", "end", 5.0, None, "run-1"),
        e("warehouse_load", "flowretail_raw_tables", "start", 5.0, None, "run-2"),
        e("warehouse_load", "flowretail_raw_tables", "materialization", 7.0, "flowretail", "run-2"),
        e("warehouse_load", "flowretail_raw_tables", "end", 7.0, None, "run-2"),
    ]
    spans = command.step_spans(events, raw_schema="flowretail", push_prefixes=[])
    assert sorted((s.category, s.start, s.end) for s in spans) == [
        ("loads", 0.0, 2.0),
        ("loads", 5.0, 7.0),
        ("models", 2.0, 5.0),
    ]
    assert command.split_wall(spans, 0.0, 7.0)["models"] == 3.0


def test_overlaps_go_to_the_earlier_category_and_spans_are_clipped_to_the_wall(command: ModuleType) -> None:
    span = command.Span
    spans = [span("models", 0.0, 4.0), span("data tests", 2.0, 6.0), span("other steps", 9.0, 30.0)]
    assert command.split_wall(spans, 1.0, 10.0) == {
        "loads": 0.0,
        "load checks": 0.0,
        "models": 3.0,
        "data tests": 2.0,
        "pushes": 0.0,
        "other steps": 1.0,
        "orchestration": 3.0,
    }


def test_dlt_gets_a_placeholder_password_only_when_the_url_has_none(command: ModuleType) -> None:
    socket_url = "postgresql://postgres@/bench_cmd_dlt_1?host=/tmp/pg15"
    assert (
        command.with_placeholder_password(socket_url) == "postgresql://postgres:unused@/bench_cmd_dlt_1?host=/tmp/pg15"
    )
    for unchanged in ("postgresql://postgres:@/db?host=/x", "postgresql://u:secret@h:5432/db", "postgresql:///db"):
        assert command.with_placeholder_password(unchanged) == unchanged


def test_the_tree_rss_leaves_out_servers_and_a_child_not_yet_execd(command: ModuleType) -> None:
    p = command.TreeProcess
    cli = ("python", "flowretail", "load")
    tree = [
        p(10, 1, "flowretail", cli, 200),
        p(11, 10, "flowretail", cli, 200),  # vforked, before its execve: the CLI's memory again
        p(12, 10, "tail", ("tail", "-F", "log"), 1),
        p(13, 10, "postgres", ("postgres", "-D", "x"), 50),
        p(14, 12, "python", cli, 7),  # same command line, but its parent runs another one: counted
    ]
    assert command.counted_rss(tree) == 200 + 1 + 7
