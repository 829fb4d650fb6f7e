"""Pure paging rules: which pages exist, what a page must hold, when a scan is trustworthy."""

from __future__ import annotations

import pytest

from pipelines.flowretail.errors import SpecViolationError
from pipelines.flowretail.paging import (
    PagingInfo,
    ScanLedger,
    page_count,
    parse_paging,
    remaining_page_numbers,
)


@pytest.mark.parametrize(
    ("total", "size", "pages"),
    [(0, 100, 0), (1, 100, 1), (100, 100, 1), (101, 100, 2), (250, 100, 3), (7, 1, 7)],
)
def test_page_count(total: int, size: int, pages: int) -> None:
    assert page_count(total, size) == pages


@pytest.mark.parametrize("base", [0, 1])
def test_remaining_pages_follow_the_first_page_and_stop_at_the_last(base: int) -> None:
    first = PagingInfo(page_number=base, page_size=100, total_count=250)
    assert list(remaining_page_numbers(first, base)) == [base + 1, base + 2]
    assert not remaining_page_numbers(PagingInfo(base, 100, 100), base)
    assert not remaining_page_numbers(PagingInfo(base, 100, 0), base)


def _body(n: int, size: int, total: int, number: int = 1) -> dict[str, object]:
    return {
        "items": [{"customerUid": f"c{i}"} for i in range(n)],
        "paging": {"pageNumber": number, "pageSize": size, "totalCount": total},
    }


def test_parse_paging_uses_the_servers_page_size() -> None:
    assert parse_paging(_body(50, 50, 120), "op", 1, requested_size=100) == PagingInfo(1, 50, 120)


def test_a_page_larger_than_asked_names_operation_page_and_field() -> None:
    with pytest.raises(SpecViolationError) as err:
        parse_paging(_body(3, 200, 300, number=2), "get-customer-groups-customers", 2, requested_size=100)
    assert str(err.value) == (
        "get-customer-groups-customers page 2: response breaks the spec at field 'paging.pageSize': "
        "server used 200 but 100 was asked"
    )


def test_more_items_than_the_page_size_is_refused() -> None:
    with pytest.raises(SpecViolationError, match=r"page 3: .* field 'items': 11 items on a page of size 10"):
        parse_paging(_body(11, 10, 30, number=3), "op", 3, requested_size=10)


def test_ledger_drops_duplicates_and_verifies_the_total() -> None:
    ledger = ScanLedger("customerUid")
    fresh = ledger.admit([{"customerUid": "a"}, {"customerUid": "b"}], total_count=3)
    assert [i["customerUid"] for i in fresh] == ["a", "b"]
    fresh = ledger.admit([{"customerUid": "b"}, {"customerUid": "c"}], total_count=3)
    assert [i["customerUid"] for i in fresh] == ["c"]
    assert ledger.duplicates == 1
    assert ledger.is_consistent()


def test_ledger_detects_a_shift_and_a_changed_total() -> None:
    shifted = ScanLedger("k")
    shifted.admit([{"k": "a"}, {"k": "b"}], 4)
    shifted.admit([{"k": "b"}, {"k": "c"}], 4)
    assert shifted.unique_count == 3
    assert not shifted.is_consistent()
    grown = ScanLedger("k")
    grown.admit([{"k": "a"}], 1)
    grown.admit([{"k": "b"}], 2)
    assert not grown.is_consistent()
