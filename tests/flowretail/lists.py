"""Whole lists read through the client, for tests that compare them with the simulator's state.

The product never needs a whole list in memory: the load streams pages into staging and the push
keeps only member uids (``fetch_group_member_uids``). Tests do, so these helpers live here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pipelines.flowretail.client import AsyncFlowRetailClient, ScanPage


async def collect(pages: AsyncIterator[ScanPage]) -> list[dict[str, Any]]:
    """All items of the last (consistent) scan, in page order whatever order the pages arrived in."""
    by_page: dict[int, list[dict[str, Any]]] = {}
    attempt = 0
    async for page in pages:
        if page.attempt != attempt:
            by_page.clear()
            attempt = page.attempt
        by_page[page.page_number] = page.items
    return [item for number in sorted(by_page) for item in by_page[number]]


async def fetch_customer_groups(client: AsyncFlowRetailClient, tenant_uid: str) -> list[dict[str, Any]]:
    """All groups of a tenant from one consistent scan."""
    return await collect(client.iter_customer_groups(tenant_uid))


async def fetch_group_members(
    client: AsyncFlowRetailClient, tenant_uid: str, customer_group_uid: str
) -> list[dict[str, Any]]:
    """All customers of a group from one consistent scan."""
    return await collect(client.iter_group_members(tenant_uid, customer_group_uid))
