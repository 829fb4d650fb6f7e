"""Page-number paging with an item count: the pure rules, no I/O.

Flow Retail lists answer ``paging.totalCount`` (items, not pages) and ``paging.pageSize`` (the size
actually used: servers cap it silently). From the first page alone we therefore know exactly which
pages exist, so the rest can be fetched concurrently and nothing past the last page is asked for.
A scan is trusted only when every page agreed on the total and the unique items add up to it;
otherwise the list changed while it was paged and the caller scans again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pipelines.flowretail.errors import SpecViolationError

# A list larger than this is taken for a broken or hostile server, not data: with totalCount = 10^12
# and pages of one item, trusting it would mean 10^12 requests. Both bounds are documented in README.
MAX_TOTAL_COUNT = 10_000_000
MAX_PAGES = 1_000_000


@dataclass(frozen=True)
class PagingInfo:
    """The ``paging`` object of one response."""

    page_number: int
    page_size: int
    total_count: int


def parse_paging(body: dict[str, Any], operation: str, page: int, requested_size: int) -> PagingInfo:
    """Read and sanity-check a list response's paging against what was asked and what came back."""
    paging = body["paging"]
    info = PagingInfo(int(paging["pageNumber"]), int(paging["pageSize"]), int(paging["totalCount"]))
    items = body["items"]
    if info.page_size < 1:
        raise SpecViolationError(operation, "paging.pageSize", f"must be at least 1, got {info.page_size}", page)
    if info.page_size > requested_size:
        raise SpecViolationError(
            operation, "paging.pageSize", f"server used {info.page_size} but {requested_size} was asked", page
        )
    if len(items) > info.page_size:
        raise SpecViolationError(operation, "items", f"{len(items)} items on a page of size {info.page_size}", page)
    if info.total_count < 0:
        raise SpecViolationError(operation, "paging.totalCount", f"negative: {info.total_count}", page)
    if info.total_count > MAX_TOTAL_COUNT:
        raise SpecViolationError(
            operation,
            "paging.totalCount",
            f"{info.total_count} items is more than the {MAX_TOTAL_COUNT} a list may hold",
            page,
        )
    pages = page_count(info.total_count, info.page_size)
    if pages > MAX_PAGES:
        raise SpecViolationError(
            operation,
            "paging.pageSize",
            f"totalCount {info.total_count} in pages of {info.page_size} makes {pages} pages, "
            f"more than the {MAX_PAGES} a scan may take",
            page,
        )
    return info


def check_page_consistency(
    items: list[dict[str, Any]], info: PagingInfo, page: int, page_base: int, key_field: str, operation: str
) -> None:
    """Refuse a page that contradicts itself: more items than its own total leaves room for, or one
    key twice. Data changing between pages cannot cause either, so rescanning would not help."""
    room = max(0, info.total_count - (page - page_base) * info.page_size)
    if len(items) > room:
        raise SpecViolationError(
            operation,
            "paging.totalCount",
            f"totalCount {info.total_count} leaves room for {room} items on this page, but it holds {len(items)}",
            page,
        )
    seen: set[Any] = set()
    for index, item in enumerate(items):
        key = item[key_field]
        if key in seen:
            raise SpecViolationError(
                operation, f"items[{index}].{key_field}", f"{key!r} appears twice on the page", page
            )
        seen.add(key)


def page_count(total_count: int, page_size: int) -> int:
    """How many pages hold ``total_count`` items."""
    return math.ceil(total_count / page_size) if total_count > 0 else 0


def remaining_page_numbers(first: PagingInfo, page_base: int) -> range:
    """Page numbers still to fetch after the first page, from what the first page reported.

    A range, never a list: its size does not grow with the total a server claims.
    """
    return range(page_base + 1, page_base + page_count(first.total_count, first.page_size))


@dataclass
class ScanLedger:
    """What one scan of a list has seen: unique keys, the totals each page reported, anomalies."""

    key_field: str
    seen: set[str] = field(default_factory=set)
    totals: set[int] = field(default_factory=set)
    duplicates: int = 0

    def admit(self, items: list[dict[str, Any]], total_count: int) -> list[dict[str, Any]]:
        """Record a page and return its items not seen on an earlier page of this scan."""
        self.totals.add(total_count)
        fresh = []
        for item in items:
            key = item[self.key_field]
            if key in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(key)
            fresh.append(item)
        return fresh

    @property
    def unique_count(self) -> int:
        return len(self.seen)

    def is_consistent(self) -> bool:
        """All pages agreed on one total and the unique items add up to it."""
        return len(self.totals) == 1 and self.unique_count == next(iter(self.totals))

    def reported_total(self) -> int:
        """The total the last scan should have produced (the largest reported, for error messages)."""
        return max(self.totals) if self.totals else 0
