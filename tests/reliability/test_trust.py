"""Trust: the push writes only to groups the product owns, retires what outlived its segment without
losing track under a crash, and keeps local state (customer PII, simulator data) private."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.flowretail.client import AsyncFlowRetailClient
from pipelines.flowretail.errors import RetriesExhaustedError
from pipelines.flowretail.simulator import SimulatorConfig, SimulatorState, build_state
from pipelines.flowretail.simulator.persistence import persisted_state
from pipelines.metadata import md_escape, md_table
from pipelines.segment_push.lifecycle import Retirement, RetireRefusedError, retire_group
from pipelines.segment_push.plan import PushTarget
from tests.reliability.conftest import ScenarioRecord
from tests.reliability.support import asgi, client_config, run_push, tenant_of
from tests.reliability.test_push_faults import TARGET, conn, state

DELETE_GROUP = "delete-customer-groups"


__all__ = ["conn", "state"]


def _writes(state: SimulatorState) -> list[tuple[str, int]]:
    return [(r.method, r.status) for r in state.request_log if r.method != "GET"]


def _retire(state: SimulatorState, conn: Any, group: str, run_id: str, **options: Any) -> Retirement:
    async def main() -> Retirement:
        async with AsyncFlowRetailClient(client_config(max_attempts=3), transport=asgi(state)) as client:
            return await retire_group(
                client, conn, run_id, tenant_of(state), group, declared={}, batch_size=40, **options
            )

    return asyncio.run(main())


@pytest.mark.reliability(
    area="ownership",
    injected="a segment names the uid of a group staff made by hand (members, own name); no adopt_existing",
    expected="plan blocked by foreign_group with the remedy in the message; 0 write calls; group unchanged",
)
def test_a_foreign_group_is_never_written(state: SimulatorState, conn: Any, scenario: ScenarioRecord) -> None:
    tenant = tenant_of(state)
    theirs = state.customer_uids(tenant)[:25]
    state.create_group(tenant, "Made by hand", TARGET.group_uid)
    state.add_members(tenant, TARGET.group_uid, theirs)
    state.clear_log()
    plan, outcome = run_push(state, conn, TARGET, state.customer_uids(tenant)[10:60], run_id="run-1", allow=True)
    assert outcome is None and [g.name for g in plan.guards if g.blocked] == ["foreign_group"]
    assert _writes(state) == []
    after = set(state.member_uids(tenant, TARGET.group_uid))
    scenario.lost(len(after ^ set(theirs)))
    assert after == set(theirs) and state.group(tenant, TARGET.group_uid)["name"] == "Made by hand"  # type: ignore[index]


@pytest.mark.reliability(
    area="ownership",
    injected="a broken segment more than doubles (30 -> 61 customers) after a verified push",
    expected="plan blocked by max_add_fraction, 0 write calls; with the override the rerun is verified",
)
def test_a_group_is_not_more_than_doubled(state: SimulatorState, conn: Any, scenario: ScenarioRecord) -> None:
    tenant = tenant_of(state)
    everyone = state.customer_uids(tenant)
    run_push(state, conn, TARGET, everyone[:30], run_id="run-1")
    state.clear_log()
    plan, outcome = run_push(state, conn, TARGET, everyone[:61], run_id="run-2")
    assert outcome is None and [g.name for g in plan.guards if g.blocked] == ["max_add_fraction"]
    assert _writes(state) == [] and set(state.member_uids(tenant, TARGET.group_uid)) == set(everyone[:30])
    _, outcome = run_push(state, conn, TARGET, everyone[:61], run_id="run-3", allow=True)
    assert outcome is not None and outcome.verified
    scenario.lost(len(set(state.member_uids(tenant, TARGET.group_uid)) ^ set(everyone[:61])))


@pytest.mark.reliability(
    area="lifecycle",
    injected="retire of an orphan: 503 on every attempt of the delete, after the group was emptied",
    expected="run failed, group empty and still registered active, calls logged; rerun deletes it and marks it retired",
)
def test_a_retirement_crashing_between_emptying_and_deleting_converges(
    state: SimulatorState, conn: Any, scenario: ScenarioRecord
) -> None:
    tenant = tenant_of(state)
    run_push(state, conn, TARGET, state.customer_uids(tenant)[:100], run_id="run-1")
    state.script(["503"] * 3, operation_id=DELETE_GROUP)
    with pytest.raises(RetriesExhaustedError):
        _retire(state, conn, TARGET.group_uid, "retire-1")
    assert state.member_uids(tenant, TARGET.group_uid) == []
    logged = conn.execute(
        "SELECT action, uid_count, http_status FROM flowretail.segment_push_log WHERE run_id = 'retire-1' ORDER BY id"
    ).fetchall()
    assert logged == [
        ("retire_remove", 40, 204),
        ("retire_remove", 40, 204),
        ("retire_remove", 20, 204),
        ("delete", 0, None),
    ]
    registry = "SELECT status FROM flowretail.segment_push_groups WHERE customer_group_uid = %s"
    assert conn.execute(registry, (TARGET.group_uid,)).fetchall() == [("active",)]
    state.clear_script()
    done = _retire(state, conn, TARGET.group_uid, "retire-2")
    assert (done.status, done.removed, done.deleted) == ("retired", 0, True)
    assert state.group(tenant, TARGET.group_uid) is None
    assert conn.execute(registry, (TARGET.group_uid,)).fetchall() == [("retired",)]
    if state.group(tenant, TARGET.group_uid) is not None:
        scenario.partial()


@pytest.mark.reliability(
    area="lifecycle",
    injected="`--retire` of a group the product never registered (a staff group)",
    expected="refused with a message naming the registry; 0 write calls; group unchanged",
)
def test_retire_refuses_a_group_the_product_does_not_own(
    state: SimulatorState, conn: Any, scenario: ScenarioRecord
) -> None:
    tenant = tenant_of(state)
    theirs = state.groups(tenant)[0]["customerGroupUid"]
    before = state.member_uids(tenant, theirs)
    state.clear_log()
    with pytest.raises(RetireRefusedError, match="this product never created it"):
        _retire(state, conn, theirs, "retire-1")
    assert _writes(state) == []
    scenario.lost(len(set(before) ^ set(state.member_uids(tenant, theirs))))


def _modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")] if not p.is_symlink()
    }


@pytest.fixture
def restore_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


@pytest.mark.reliability(
    area="private state",
    injected="`.flowretail/` left 0755 with a 0644 file by an older version; then a run with the simulator",
    expected="every directory 0700 and every file 0600 afterwards (simulator state, dagster home, old files)",
)
def test_local_state_is_owner_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str, restore_umask: None
) -> None:
    from pipelines.runtime import embedded_environment

    root = tmp_path / ".flowretail"
    (root / "report").mkdir(parents=True, mode=0o755)
    root.chmod(0o755)
    (root / "report" / "old.html").write_text("customer PII", "utf-8")
    (root / "report" / "old.html").chmod(0o644)
    monkeypatch.delenv("FLOWRETAIL_BASE_URL", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url)
    for name in ("FLOWRETAIL_TOKEN", "FLOWRETAIL_TENANT_UIDS", "FLOWRETAIL_RATE_LIMIT"):
        monkeypatch.delenv(name, raising=False)
    with embedded_environment(root) as env:
        assert env.simulator
        (Path(env.dagster_home) / "history.db").write_text("event log with samples", "utf-8")
    modes = _modes(root)
    assert {"simulator/state.json", "dagster_home/dagster.yaml", "dagster_home/history.db", "report/old.html"} <= set(
        modes
    )
    wrong = {path: oct(mode) for path, mode in modes.items() if mode != (0o700 if (root / path).is_dir() else 0o600)}
    assert wrong == {}


class _Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.mark.reliability(
    area="private state",
    injected="a state.pickle planted in .flowretail/simulator whose unpickling would create a file",
    expected="never unpickled (no file created); a warning; fresh state saved as JSON",
)
def test_a_planted_pickle_is_never_loaded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    marker = tmp_path / "pwned"
    directory = tmp_path / "simulator"
    directory.mkdir()
    (directory / "state.pickle").write_bytes(pickle.dumps(_Planted(marker)))
    built: list[int] = []

    def factory() -> SimulatorState:
        built.append(1)
        return build_state(SimulatorConfig(tenants=1, customers=20, groups=2))

    with caplog.at_level(logging.WARNING), persisted_state(directory, factory) as state:
        assert state.tenant_uids() == ["tenant-1"]
    assert not marker.exists() and built == [1]
    assert f"ignoring {directory / 'state.pickle'}: the simulator state is JSON now" in caplog.text
    assert (directory / "state.json").read_text("utf-8").startswith('{"format": 2')


HOSTILE = "<img src=x onerror=alert(1)> | **VIP** [x](http://evil)\n# h"


@pytest.mark.reliability(
    area="private state",
    injected="a group named with HTML, a table pipe, emphasis, a link and a newline, shown in Markdown metadata",
    expected="rendered literally: every markup character backslash-escaped, one line, table intact",
)
def test_api_strings_are_escaped_in_markdown_metadata() -> None:
    from pipelines.reverse_etl.assets import _plan_markdown
    from pipelines.segment_push.plan import LiveGroup, PushHistory, plan_segment_push

    escaped = "\\<img src=x onerror=alert\\(1\\)\\> \\| \\*\\*VIP\\*\\* \\[x\\]\\(http://evil\\) \\# h"
    assert md_escape(HOSTILE) == escaped
    # tabulate pads each column to its widest cell; the escaped cell is that wide.
    width = len(escaped)
    assert md_table(["name"], [(HOSTILE,)]) == f"| {'name':<{width}} |\n|{'-' * (width + 2)}|\n| {escaped} |"
    plan = plan_segment_push(
        tenant_uid="t",
        target=PushTarget("s", "g", "G", adopt_existing="add_only"),
        segment_uids=frozenset({"a"}),
        live=LiveGroup(HOSTILE, frozenset({"a"})),
        history=PushHistory(ownership="adopted", first_push_done=True),
    )
    rendered = _plan_markdown(plan)
    cells = [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rendered.splitlines()]
    assert ["name", escaped] in cells
    rows = rendered.splitlines()
    assert len(rows) == 13 and [len(re.findall(r"(?<!\\)\|", row)) for row in rows] == [3] * 13
