"""The client against the in-process simulator: every operation, fault and paging edge case."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import orjson
import pytest
from pydantic import SecretStr

from pipelines.flowretail import deviations
from pipelines.flowretail.client import (
    AsyncFlowRetailClient,
    PageBudget,
    ScanPage,
    parse_retry_after,
)
from pipelines.flowretail.config import ClientConfig
from pipelines.flowretail.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PagingInconsistentError,
    RetriesExhaustedError,
    SpecViolationError,
    UnsafeIdentifierError,
)
from pipelines.flowretail.simulator import SimulatorConfig, SimulatorState, build_state, create_app
from pipelines.flowretail.spec import LIST_MEMBERS
from tests.flowretail.lists import fetch_customer_groups, fetch_group_members

T = TypeVar("T")
TOKEN = "tok-Zq8-distinctive-secret"


def _config(**overrides: Any) -> ClientConfig:
    values: dict[str, Any] = {
        "base_url": "http://127.0.0.1/v2",
        "token": SecretStr(TOKEN),
        "rate_limit_per_second": None,
        "backoff_initial": 0.001,
        "backoff_max": 0.01,
        "max_total_wait": 5.0,
    }
    values.update(overrides)
    return ClientConfig(**values)


def _state(**config: Any) -> SimulatorState:
    state = build_state(SimulatorConfig(**{"tenants": 1, "customers": 600, "groups": 8, **config}))
    state.token = TOKEN
    return state


def run(state: SimulatorState, call: Callable[[AsyncFlowRetailClient], Awaitable[T]], **config: Any) -> T:
    async def main() -> T:
        transport = httpx.ASGITransport(app=create_app(state))
        async with AsyncFlowRetailClient(_config(**config), transport=transport) as client:
            return await call(client)

    return asyncio.run(main())


@pytest.fixture
def state() -> SimulatorState:
    return _state()


def _tenant(state: SimulatorState) -> str:
    return state.tenant_uids()[0]


def _group_with(state: SimulatorState, predicate: Callable[[int], bool]) -> str:
    tenant = _tenant(state)
    for group in state.groups(tenant):
        if predicate(len(state.member_uids(tenant, group["customerGroupUid"]))):
            return str(group["customerGroupUid"])
    raise AssertionError("the simulator has no such group")


def _without_nul(value: Any) -> Any:
    """What the client hands on: U+0000 removed from every string (PostgreSQL cannot store it)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {k: _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def test_lists_every_group_exactly(state: SimulatorState) -> None:
    tenant = _tenant(state)
    groups = run(state, lambda c: fetch_customer_groups(c, tenant), page_size=3)
    assert groups == state.groups(tenant)


@pytest.mark.parametrize("page_size", [1, 7, 100, 1000])
def test_members_of_every_group_match_the_simulator(state: SimulatorState, page_size: int) -> None:
    tenant = _tenant(state)

    async def all_members(client: AsyncFlowRetailClient) -> dict[str, list[dict[str, Any]]]:
        return {
            g["customerGroupUid"]: await fetch_group_members(client, tenant, g["customerGroupUid"])
            for g in state.groups(tenant)
        }

    members = run(state, all_members, page_size=page_size)
    for group_uid, items in members.items():
        assert [i["customerUid"] for i in items] == state.member_uids(tenant, group_uid)
        assert items == [_without_nul(state.customer(tenant, i["customerUid"])) for i in items]


def test_requests_are_exactly_the_pages_the_total_implies(state: SimulatorState) -> None:
    tenant = _tenant(state)
    group = _group_with(state, lambda n: n > 250)
    size = len(state.member_uids(tenant, group))
    state.clear_log()
    run(state, lambda c: fetch_group_members(c, tenant, group), page_size=100)
    pages = sorted(int(r.query["pageNumber"]) for r in state.request_log)
    assert pages == list(range(1, -(-size // 100) + 1))
    assert {r.query["sortBy"] for r in state.request_log} == {"customerUid"}
    assert {r.query["sortDirection"] for r in state.request_log} == {"ASC"}


def test_empty_group_costs_one_request(state: SimulatorState) -> None:
    tenant = _tenant(state)
    group = _group_with(state, lambda n: n == 0)
    state.clear_log()
    assert run(state, lambda c: fetch_group_members(c, tenant, group)) == []
    assert len(state.request_log) == 1


def test_exactly_one_full_page_costs_one_request(state: SimulatorState) -> None:
    tenant = _tenant(state)
    group = _group_with(state, lambda n: n == 100)
    state.clear_log()
    assert len(run(state, lambda c: fetch_group_members(c, tenant, group), page_size=100)) == 100
    assert len(state.request_log) == 1


def test_a_capped_page_size_is_followed() -> None:
    state = _state(page_size_cap=25)
    tenant = _tenant(state)
    group = _group_with(state, lambda n: n > 100)
    state.clear_log()
    items = run(state, lambda c: fetch_group_members(c, tenant, group), page_size=100)
    assert [i["customerUid"] for i in items] == state.member_uids(tenant, group)
    assert len(state.request_log) == -(-len(items) // 25)


def test_page_base_zero() -> None:
    state = _state(page_base=0)
    tenant = _tenant(state)
    group = _group_with(state, lambda n: n > 150)
    state.clear_log()
    items = run(state, lambda c: fetch_group_members(c, tenant, group), page_size=50, page_base=0)
    assert [i["customerUid"] for i in items] == state.member_uids(tenant, group)
    assert min(int(r.query["pageNumber"]) for r in state.request_log) == 0


def test_data_changing_mid_scan_is_rescanned_to_the_final_state(state: SimulatorState) -> None:
    tenant = _tenant(state)
    group = _group_with(state, lambda n: n > 250)
    state.faults.mutate_scans = 1

    async def scan(client: AsyncFlowRetailClient) -> tuple[list[dict[str, Any]], int]:
        items = await fetch_group_members(client, tenant, group)
        return items, client.stats.rescans

    items, rescans = run(state, scan, page_size=50)
    assert [i["customerUid"] for i in items] == state.member_uids(tenant, group)
    assert rescans == 1


def test_data_that_never_settles_fails_naming_tenant_group_and_counts(state: SimulatorState) -> None:
    tenant = _tenant(state)
    group = _group_with(state, lambda n: n > 250)
    state.faults.mutate_scans = 10
    with pytest.raises(PagingInconsistentError) as err:
        run(state, lambda c: fetch_group_members(c, tenant, group), page_size=50)
    message = str(err.value)
    assert f"customers of group {group} of tenant {tenant}" in message
    assert "reported totalCount" in message and "during 3 scans" in message


def test_a_group_deleted_after_listing_is_reported_as_gone(state: SimulatorState) -> None:
    tenant = _tenant(state)
    group = _group_with(state, lambda n: n > 0)
    state.delete_group(tenant, group)
    with pytest.raises(NotFoundError) as err:
        run(state, lambda c: fetch_group_members(c, tenant, group))
    assert err.value.status_code == 404
    assert str(err.value).startswith("get-customer-groups-customers page 1: HTTP 404")


@pytest.mark.parametrize("outcome", ["429", "500", "502", "503", "504", "drop", "truncate"])
def test_transient_failures_are_retried_and_counted(state: SimulatorState, outcome: str) -> None:
    tenant = _tenant(state)
    state.script([outcome, outcome])

    async def fetch(client: AsyncFlowRetailClient) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return await fetch_customer_groups(client, tenant), client.stats.as_dict()

    groups, stats = run(state, fetch)
    assert groups == state.groups(tenant)
    assert stats["retries"] == 2
    cause = {"drop": "connection", "truncate": "invalid_json"}.get(outcome, outcome)
    assert stats["retries_by_cause"] == {cause: 2}
    assert stats["rate_limited"] == (2 if outcome == "429" else 0)


def test_retry_after_is_honoured(state: SimulatorState) -> None:
    tenant = _tenant(state)
    state.faults.retry_after = "seconds"
    state.script(["429"])
    loop_time: list[float] = []

    async def fetch(client: AsyncFlowRetailClient) -> None:
        start = asyncio.get_running_loop().time()
        await fetch_customer_groups(client, tenant)
        loop_time.append(asyncio.get_running_loop().time() - start)

    run(state, fetch)
    assert loop_time[0] >= 1.0


def test_parse_retry_after_seconds_and_http_date() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("garbage", now) is None
    assert parse_retry_after(None, now) is None


def test_retries_are_bounded(state: SimulatorState) -> None:
    tenant = _tenant(state)
    state.script(["503"] * 10)
    with pytest.raises(RetriesExhaustedError) as err:
        run(state, lambda c: fetch_customer_groups(c, tenant), max_attempts=3)
    assert str(err.value) == "get-customer-groups page 1: gave up after 3 attempts; last error: HTTP 503"


def test_a_slow_answer_past_the_timeout_is_retried(state: SimulatorState) -> None:
    tenant = _tenant(state)
    state.script(["slow:2.0"])

    async def fetch(client: AsyncFlowRetailClient) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return await fetch_customer_groups(client, tenant), client.stats.as_dict()

    groups, stats = run(state, fetch, read_timeout=0.2, connect_timeout=0.1)
    assert groups == state.groups(tenant)
    assert stats["retries_by_cause"] == {"timeout": 1}


@pytest.mark.parametrize("status", ["400", "401", "404"])
def test_client_errors_are_never_retried(state: SimulatorState, status: str) -> None:
    tenant = _tenant(state)
    state.script([status])
    state.clear_log()
    with pytest.raises((BadRequestError, AuthenticationError, NotFoundError)):
        run(state, lambda c: fetch_customer_groups(c, tenant))
    assert len(state.request_log) == 1


@pytest.mark.parametrize(
    ("outcome", "field"),
    [
        ("missing_field", "items[0]."),
        ("wrong_type", "items[0]."),
        ("no_paging", "paging"),
        ("html", "(body)"),
        ("non_utf8", "(body)"),
    ],
)
def test_responses_that_break_the_spec_name_operation_page_and_field(
    state: SimulatorState, outcome: str, field: str
) -> None:
    tenant = _tenant(state)
    state.script([outcome], operation_id="get-customer-groups")
    with pytest.raises(SpecViolationError) as err:
        # A data field breaking the spec fails only in strict mode; paging and the body always do.
        run(state, lambda c: fetch_customer_groups(c, tenant), strict_spec=True)
    assert str(err.value).startswith("get-customer-groups page 1: response breaks the spec at field")
    assert err.value.field.startswith(field)


def test_unknown_enum_value_is_a_spec_violation_in_strict_mode(state: SimulatorState) -> None:
    tenant = _tenant(state)
    group = _group_with(state, lambda n: n > 0)
    state.script(["bad_enum"], operation_id="get-customer-groups-customers")
    with pytest.raises(SpecViolationError) as err:
        run(state, lambda c: fetch_group_members(c, tenant, group), strict_spec=True)
    assert str(err.value) == (
        f"get-customer-groups-customers page 1: response breaks the spec at field 'items[0].customerType': "
        f'"ALIEN" is not one of "COMPANY", "PERSON" or "B2B" (reading customers of group {group} of tenant {tenant})'
    )


def _first_page(state: SimulatorState, group: str, **config: Any) -> ScanPage:
    tenant = _tenant(state)

    async def first(client: AsyncFlowRetailClient) -> ScanPage:
        async for page in client.iter_group_members(tenant, group):
            return page
        raise AssertionError("no page")

    return run(state, first, **config)


@pytest.mark.parametrize(
    ("outcome", "deviations"),
    [
        ("bad_enum", {"customerType": "enum"}),
        ("wrong_type", {"paymentTerms": "type"}),
        ("missing_field", {"email": "missing"}),
    ],
)
def test_a_data_field_breaking_the_spec_comes_with_the_page(outcome: str, deviations: dict[str, str]) -> None:
    state = _state(spec_deviations=False)  # only what the test breaks breaks the spec
    group = _group_with(state, lambda n: n > 1)
    state.script([outcome], operation_id="get-customer-groups-customers")
    page = _first_page(state, group)
    first = page.items[0]["customerUid"]
    assert page.deviations == {first: deviations}
    assert page.items[0]["customerType"] == ("ALIEN" if outcome == "bad_enum" else page.items[0]["customerType"])


def test_keys_and_paging_stay_strict() -> None:
    state = _state(spec_deviations=False)  # only what the test breaks breaks the spec
    group = _group_with(state, lambda n: n > 1)
    original = state.list_members

    def broken(tenant: str, group_uid: str, page: Any) -> dict[str, Any]:
        body = original(tenant, group_uid, page)
        body["items"][1]["customerUid"] = None
        return body

    state.list_members = broken  # type: ignore[method-assign]
    with pytest.raises(SpecViolationError) as err:
        _first_page(state, group)
    assert err.value.field == "items[1].customerUid" and err.value.problem == 'null is not of type "string"'


def test_nul_is_removed_from_data_and_refused_in_keys_and_in_strict_mode() -> None:
    state = _state(spec_deviations=False)  # only what the test breaks breaks the spec
    group = _group_with(state, lambda n: n > 1)
    original = state.list_members
    key = {"value": False, "strict": False}

    def with_nul(tenant: str, group_uid: str, page: Any) -> dict[str, Any]:
        body = original(tenant, group_uid, page)
        body["items"][0]["firstname"] = "Ka\x00ri"
        if not key["strict"]:
            body["items"][0]["credit"] = {"limit\x00": 5, "balance": 0, "note": ["a\x00b"]}
        if key["value"]:
            body["items"][1]["customerUid"] += "\x00"
        return body

    state.list_members = with_nul  # type: ignore[method-assign]
    page = _first_page(state, group)
    item = page.items[0]
    assert (item["firstname"], item["credit"]) == ("Kari", {"limit": 5, "balance": 0, "note": ["ab"]})
    assert page.deviations == {
        item["customerUid"]: {"firstname": "nul_removed", "credit.limit": "nul_removed", "credit.note": "nul_removed"}
    }
    key["strict"] = True
    with pytest.raises(SpecViolationError) as err:
        _first_page(state, group, strict_spec=True)
    assert err.value.field == "items[0].firstname"
    assert err.value.problem == "contains U+0000, which PostgreSQL cannot store"
    key["value"] = True
    with pytest.raises(SpecViolationError) as err:
        _first_page(state, group)
    assert err.value.field == "items[1].customerUid"


def test_only_items_that_may_hold_a_nul_are_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page with one NUL walks (and copies) that item, not the whole page; an escaped backslash
    before ``u0000`` looks like a NUL in JSON text, costs a walk and is left as it came."""
    walked: list[str] = []
    walk = deviations._without_nul

    def counting(value: Any, path: str, paths: dict[str, None]) -> Any:
        if not path:
            walked.append(value["customerUid"])
        return walk(value, path, paths)

    monkeypatch.setattr(deviations, "_without_nul", counting)
    plain = {"customerUid": "c1", "credit": {"limit": 5}}
    lookalike = {"customerUid": "c2", "note": "a\\u0000 b"}
    nul = {"customerUid": "c3", "firstname": "Ka\x00ri"}
    items = [plain, lookalike, nul]
    found = deviations.remove_nul(LIST_MEMBERS, items, 1, strict=False)
    assert walked == ["c2", "c3"]
    assert items[0] is plain and items[1] is lookalike
    assert items[2] == {"customerUid": "c3", "firstname": "Kari"}
    assert found == [deviations.Deviation(2, "firstname", "nul_removed")]


def test_a_page_larger_than_asked_is_refused(state: SimulatorState) -> None:
    tenant = _tenant(state)
    group = _group_with(state, lambda n: n > 20)
    state.script(["oversized_page"], operation_id="get-customer-groups-customers")
    with pytest.raises(SpecViolationError, match=r"page 1: .*field '(items|paging.pageSize)'"):
        run(state, lambda c: fetch_group_members(c, tenant, group), page_size=10)


def test_an_unknown_sort_field_gets_a_clear_error(state: SimulatorState) -> None:
    tenant = _tenant(state)
    with pytest.raises(BadRequestError) as err:
        run(state, lambda c: fetch_customer_groups(c, tenant), groups_sort_by="shoeSize")
    assert "refused the list request with sortBy=shoeSize" in str(err.value)
    assert "configure a sort field it accepts" in str(err.value)


def test_group_lifecycle_create_get_rename_add_remove_delete(state: SimulatorState) -> None:
    tenant = _tenant(state)
    customers = state.customer_uids(tenant)[:3]

    async def lifecycle(client: AsyncFlowRetailClient) -> dict[str, Any]:
        created = await client.create_customer_group(tenant, 'VIP; "quoted"', "vip-2026")
        with pytest.raises(ConflictError):
            await client.create_customer_group(tenant, "again", "vip-2026")
        renamed = await client.rename_customer_group(tenant, "vip-2026", "VIP 2026")
        await client.update_group_customers(tenant, "vip-2026", customers, [])
        await client.update_group_customers(tenant, "vip-2026", [customers[0]], [customers[1]])
        members = await client.fetch_group_member_uids(tenant, "vip-2026")
        fetched = await client.get_customer_group(tenant, "vip-2026")
        await client.delete_customer_group(tenant, "vip-2026")
        with pytest.raises(NotFoundError):
            await client.get_customer_group(tenant, "vip-2026")
        return {"created": created, "renamed": renamed, "members": members, "fetched": fetched}

    out = run(state, lifecycle)
    assert out["created"]["customerGroupUid"] == "vip-2026"
    assert out["created"]["name"] == 'VIP; "quoted"'
    assert out["renamed"]["name"] == "VIP 2026" == out["fetched"]["name"]
    assert out["members"] == {customers[0], customers[2]}
    assert state.group(tenant, "vip-2026") is None


def test_unknown_customer_uids_are_refused_with_their_names(state: SimulatorState) -> None:
    tenant = _tenant(state)
    group = _group_with(state, lambda n: n == 0)
    with pytest.raises(BadRequestError) as err:
        run(state, lambda c: c.update_group_customers(tenant, group, ["no-such-customer"], []))
    assert err.value.body["invalidCustomerUids"] == ["no-such-customer"]  # type: ignore[attr-defined]
    assert state.member_uids(tenant, group) == []


@pytest.mark.parametrize("uid", ["../x", "a/b", "%2F", "a b", "x'; drop table t; --", "é", "", "a" * 300])
def test_hostile_uids_are_refused_before_any_request(state: SimulatorState, uid: str) -> None:
    tenant = _tenant(state)
    state.clear_log()
    with pytest.raises(UnsafeIdentifierError, match=r"is not a valid UID .* no request was sent"):
        run(state, lambda c: fetch_group_members(c, tenant, uid))
    with pytest.raises(UnsafeIdentifierError):
        run(state, lambda c: fetch_customer_groups(c, uid))
    assert state.request_log == []


def test_the_token_never_appears_in_logs_errors_or_reprs(
    state: SimulatorState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tenant = _tenant(state)
    state.script(["503", "401"])
    with pytest.raises(AuthenticationError) as err:
        run(state, lambda c: fetch_customer_groups(c, tenant))
    config = _config()

    async def describe() -> list[str]:
        async with AsyncFlowRetailClient(config, transport=httpx.ASGITransport(app=create_app(state))) as client:
            return [repr(client), str(client.stats.as_dict())]

    texts = [caplog.text, str(err.value), repr(err.value), repr(config), str(config), *asyncio.run(describe())]
    assert "check FLOWRETAIL_TOKEN" in str(err.value)
    assert all(TOKEN not in text for text in texts)


def test_concurrency_is_bounded(state: SimulatorState) -> None:
    tenant = _tenant(state)
    group = _group_with(state, lambda n: n > 250)
    state.faults.latency_ms = 20
    peak = 0
    inflight = 0
    app = create_app(state)

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        nonlocal peak, inflight
        inflight += 1
        peak = max(peak, inflight)
        try:
            await app(scope, receive, send)
        finally:
            inflight -= 1

    async def main() -> None:
        async with AsyncFlowRetailClient(
            _config(concurrency=3, page_size=10), transport=httpx.ASGITransport(app=counting)
        ) as client:
            await fetch_group_members(client, tenant, group)

    asyncio.run(main())
    assert peak == 3


def test_rate_limit_spaces_requests(state: SimulatorState) -> None:
    tenant = _tenant(state)
    group = _group_with(state, lambda n: n > 250)

    async def timed(client: AsyncFlowRetailClient) -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await fetch_group_members(client, tenant, group)
        return loop.time() - start

    # 30+ pages at 20 requests/second: the bucket's first second is a burst, the rest is paced.
    elapsed = run(state, timed, page_size=10, rate_limit_per_second=20.0)
    pages = -(-len(state.member_uids(tenant, group)) // 10)
    assert elapsed >= (pages - 20) / 20 * 0.9


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://api.flowretail.com/v2", "must use https unless the host is loopback"),
        ("ftp://x/v2", r"must be an http\(s\) URL"),
        ("https://user:pw@api.flowretail.com/v2", "must not carry credentials"),
    ],
)
def test_base_url_rules(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        _config(base_url=url)


def test_loopback_http_is_allowed() -> None:
    for url in ("http://127.0.0.1:8080/v2", "http://localhost/v2", "http://[::1]:9/v2"):
        assert _config(base_url=url).base_url == url


def test_a_body_cut_inside_a_multibyte_character_is_retried_not_refused() -> None:
    """Only the cut-off tail is invalid UTF-8 there: that is truncation (retried), not a bad encoding."""
    group = {
        "customerGroupUid": "g-1",
        "name": "Bjørn og venner",
        "createdBy": "system",
        "createdAt": "2026-01-01T00:00:00Z",
        "lastModifiedBy": "system",
        "lastModifiedAt": "2026-01-01T00:00:00Z",
    }
    body = orjson.dumps({"items": [group], "paging": {"totalCount": 1, "pageSize": 100, "pageNumber": 1}})
    cut = body[: body.index("ø".encode()) + 1]
    answers = [cut, body]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, stream=httpx.ByteStream(answers.pop(0)), headers={"Content-Type": "application/json"}
        )

    async def main() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        async with AsyncFlowRetailClient(_config(), transport=httpx.MockTransport(handler)) as client:
            return await fetch_customer_groups(client, "tenant-1"), client.stats.as_dict()

    groups, stats = asyncio.run(main())
    assert groups == [group]
    assert stats["retries_by_cause"] == {"invalid_json": 1}


class _CountingTransport(httpx.AsyncBaseTransport):
    """Counts member-page requests as they start, to see how many pages are alive at once."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.started = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/customers"):
            self.started += 1
        return await self.inner.handle_async_request(request)


def _scan_all_groups(
    state: SimulatorState, budget: PageBudget, transport: _CountingTransport, alive: list[int]
) -> tuple[dict[str, set[str]] | BaseException, bool]:
    """Scan every group at once under one budget; a consumer holds each page briefly, then releases it.

    Returns what the scans found (or how they failed) and whether every slot came back afterwards.
    """
    tenant = _tenant(state)
    released = 0

    async def scan(client: AsyncFlowRetailClient, group: str) -> set[str]:
        nonlocal released
        uids: set[str] = set()
        async for page in client.iter_group_members(tenant, group, budget=budget):
            alive.append(transport.started - released)
            uids.update(item["customerUid"] for item in page.items)
            await asyncio.sleep(0.002)
            released += 1
            budget.release()
        return uids

    async def all_slots_free() -> bool:
        try:
            async with asyncio.timeout(1):
                for _ in range(3):
                    await budget.take()
        except TimeoutError:
            return False
        return True

    async def main() -> tuple[dict[str, set[str]] | BaseException, bool]:
        outcome: dict[str, set[str]] | BaseException
        async with AsyncFlowRetailClient(_config(page_size=10, concurrency=4), transport=transport) as client:
            groups = [g["customerGroupUid"] for g in state.groups(tenant)]
            try:
                found = await asyncio.gather(*(scan(client, g) for g in groups))
                outcome = dict(zip(groups, found, strict=True))
            except SpecViolationError as exc:
                outcome = exc
        await asyncio.sleep(0.05)
        return outcome, await all_slots_free()

    return asyncio.run(main())


def test_a_page_budget_bounds_the_pages_alive_across_concurrent_scans(state: SimulatorState) -> None:
    budget = PageBudget(3)
    transport = _CountingTransport(httpx.ASGITransport(app=create_app(state)))
    alive: list[int] = []
    found, slots_free = _scan_all_groups(state, budget, transport, alive)
    tenant = _tenant(state)
    assert isinstance(found, dict)
    assert found == {g: set(state.member_uids(tenant, g)) for g in found}
    assert transport.started > 3 * len(found)
    assert max(alive) == 3
    assert slots_free


def test_a_failed_scan_gives_back_every_page_slot(state: SimulatorState) -> None:
    state.script(["slow:0"] * 12 + ["html"], operation_id="get-customer-groups-customers")
    budget = PageBudget(3)
    transport = _CountingTransport(httpx.ASGITransport(app=create_app(state)))
    try:
        failure, slots_free = _scan_all_groups(state, budget, transport, [])
    finally:
        state.clear_script()
    assert isinstance(failure, SpecViolationError)
    assert str(failure).startswith("get-customer-groups-customers page ")
    assert transport.started >= 13
    assert slots_free
