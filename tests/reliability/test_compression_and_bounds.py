"""Issue 12's transport items under a real load: compressed answers in every coding, decompression
bombs, lists claiming more than any real list holds, and Retry-After values that are no number."""

from __future__ import annotations

import re

import pytest

from pipelines.flowretail.content_coding import AVAILABLE_CODINGS
from pipelines.flowretail.errors import SpecViolationError
from pipelines.flowretail.paging import MAX_PAGES, MAX_TOTAL_COUNT
from pipelines.flowretail.simulator import SimulatorState
from pipelines.flowretail.spec import LIST_GROUPS, LIST_MEMBERS
from tests.reliability.conftest import ScenarioRecord
from tests.reliability.support import check_final, check_unchanged, failed_run_row, make_state, prime, run_load

MiB = 1024 * 1024


def _first_page_requests(state: SimulatorState, operation: str, message: str) -> int:
    """How often page 1 of the list the error names was asked for (1: refused for good, not retried)."""
    group = re.search(r"reading customers of group (\S+) of tenant", message)
    return sum(
        1
        for r in state.request_log
        if r.operation_id == operation
        and r.query.get("pageNumber") == "1"
        and (group is None or r.path.endswith(f"/{group.group(1)}/customers"))
    )


@pytest.mark.parametrize("coding", AVAILABLE_CODINGS)
@pytest.mark.reliability(
    area="load faults",
    injected="every answer compressed (the simulator's default, like a gateway), one content coding per run",
    expected="each coding the client advertises is decoded; exact tables",
)
def test_a_load_through_compressed_answers(database_url: str, scenario: ScenarioRecord, coding: str) -> None:
    state = make_state(content_codings=(coding,))
    result = run_load(state, database_url, "run-1", page_size=50)
    check_final(scenario, state, database_url)
    assert result.pages > 5
    scenario.note(f"{coding}: {result.requests} compressed answers")


@pytest.mark.reliability(
    area="load faults",
    injected="a member page answered as a decompression bomb (a valid page behind 8 MiB of whitespace, "
    "compressed to a few KiB) with a 2 MiB body limit",
    expected="refused once, naming endpoint, page and limit; previous tables intact; rerun exact",
)
def test_a_decompression_bomb_fails_the_load_cleanly(database_url: str, scenario: ScenarioRecord) -> None:
    state = make_state()
    before = prime(state, database_url)
    state.faults.bomb_bytes = 8 * MiB
    state.script(["bomb"], operation_id=LIST_MEMBERS)
    state.clear_log()
    with pytest.raises(SpecViolationError) as err:
        run_load(state, database_url, "run-1", max_response_bytes=2 * MiB)
    assert str(err.value).startswith(
        "get-customer-groups-customers page 1: response breaks the spec at field '(body)': "
        f"zstd-decoded response exceeds the {2 * MiB}-byte limit (reading customers of group "
    )
    assert _first_page_requests(state, LIST_MEMBERS, str(err.value)) == 1
    check_unchanged(scenario, before, database_url)
    assert failed_run_row(database_url, "run-1") == ("failed", f"SpecViolationError: {err.value}")
    run_load(state, database_url, "run-2", max_response_bytes=2 * MiB)
    check_final(scenario, state, database_url)


@pytest.mark.parametrize(
    ("fault", "operation", "field", "problem"),
    [
        (
            "total_too_high",
            LIST_GROUPS,
            "paging.totalCount",
            f"1000000000000 items is more than the {MAX_TOTAL_COUNT} a list may hold",
        ),
        (
            "too_many_pages",
            LIST_MEMBERS,
            "paging.pageSize",
            f"totalCount {MAX_PAGES + 1} in pages of 1 makes {MAX_PAGES + 1} pages, "
            f"more than the {MAX_PAGES} a scan may take",
        ),
    ],
    ids=["total_too_high", "too_many_pages"],
)
@pytest.mark.reliability(
    area="bad input",
    injected="a first page claiming totalCount 10^12, or pages of one item adding up to more pages than a scan may take",
    expected="SpecViolationError naming endpoint, page and field after that one request; previous tables intact; "
    "rerun exact",
)
def test_a_list_claiming_too_much_is_refused_on_its_first_page(
    database_url: str, scenario: ScenarioRecord, fault: str, operation: str, field: str, problem: str
) -> None:
    state = make_state()
    before = prime(state, database_url)
    state.script([fault], operation_id=operation)
    state.clear_log()
    with pytest.raises(SpecViolationError) as err:
        run_load(state, database_url, "run-1")
    assert str(err.value).startswith(f"{operation} page 1: response breaks the spec at field '{field}': {problem}")
    assert _first_page_requests(state, operation, str(err.value)) == 1
    check_unchanged(scenario, before, database_url)
    assert failed_run_row(database_url, "run-1") == ("failed", f"SpecViolationError: {err.value}")
    run_load(state, database_url, "run-2")
    check_final(scenario, state, database_url)
    scenario.note(f"{len(state.request_log)} requests in the failed run and the rerun")


@pytest.mark.parametrize("style", ["superscript", "garbage"])
@pytest.mark.reliability(
    area="load faults",
    injected="429 answers whose Retry-After is '\u00b9' (isdigit() but not ASCII) or words",
    expected="the header counts as absent: backoff, no crash; exact tables",
)
def test_a_retry_after_that_is_no_number_is_ignored(database_url: str, scenario: ScenarioRecord, style: str) -> None:
    state = make_state()
    state.faults.retry_after = style
    state.script(["429"] * 3, operation_id=LIST_MEMBERS)
    result = run_load(state, database_url, "run-1")
    check_final(scenario, state, database_url)
    assert result.rate_limited == 3
