"""Compressed answers, decompression bombs and the bounds on what a list may claim, against the simulator."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from pydantic import SecretStr

from pipelines.flowretail.client import AsyncFlowRetailClient, parse_retry_after
from pipelines.flowretail.config import ClientConfig
from pipelines.flowretail.content_coding import (
    ACCEPT_ENCODING,
    AVAILABLE_CODINGS,
    ContentCodingError,
    CutOffError,
    DecodedTooLarge,
    decode_body,
    encode_body,
    negotiate,
)
from pipelines.flowretail.errors import SpecViolationError
from pipelines.flowretail.paging import MAX_PAGES, MAX_TOTAL_COUNT, PagingInfo, remaining_page_numbers
from pipelines.flowretail.simulator import SimulatorConfig, SimulatorState, build_state, create_app, running_simulator
from tests.flowretail.lists import fetch_customer_groups, fetch_group_members
from tests.flowretail.test_client import _without_nul

T = TypeVar("T")
TOKEN = "tok-compression-0b7d"
TENANT = "tenant-1"
MiB = 1024 * 1024


def _state(**config: Any) -> SimulatorState:
    state = build_state(SimulatorConfig(**{"tenants": 1, "customers": 400, "groups": 6, **config}))
    state.token = TOKEN
    return state


def _config(base_url: str = "http://127.0.0.1/v2", **overrides: Any) -> ClientConfig:
    values: dict[str, Any] = {
        "base_url": base_url,
        "token": SecretStr(TOKEN),
        "rate_limit_per_second": None,
        "backoff_initial": 0.001,
        "backoff_max": 0.01,
        "max_total_wait": 5.0,
    }
    values.update(overrides)
    return ClientConfig(**values)


class _Recorder:
    """Wraps the simulator app and keeps each request's Accept-Encoding and each answer's Content-Encoding."""

    def __init__(self, state: SimulatorState) -> None:
        self.app = create_app(state)
        self.accepted: list[str] = []
        self.encodings: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or [])
        self.accepted.append(headers.get(b"accept-encoding", b"").decode())

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer = dict(message.get("headers") or [])
                self.encodings.append(answer.get(b"content-encoding", b"identity").decode())
            await send(message)

        await self.app(scope, receive, watch)


def run(app: Any, call: Callable[[AsyncFlowRetailClient], Awaitable[T]], **config: Any) -> T:
    async def main() -> T:
        async with AsyncFlowRetailClient(_config(**config), transport=httpx.ASGITransport(app=app)) as client:
            return await call(client)

    return asyncio.run(main())


def _big_group(state: SimulatorState) -> str:
    return max(state.groups(TENANT), key=lambda g: len(state.member_uids(TENANT, g["customerGroupUid"])))[
        "customerGroupUid"
    ]


def test_the_client_advertises_exactly_the_codings_it_decodes() -> None:
    assert AVAILABLE_CODINGS == ("zstd", "br", "gzip", "deflate")  # brotli and zstandard are dependencies
    assert ACCEPT_ENCODING == "gzip, deflate, br, zstd"
    recorder = _Recorder(_state())
    run(recorder, lambda c: fetch_customer_groups(c, TENANT))
    assert recorder.accepted == [ACCEPT_ENCODING]
    assert recorder.encodings == ["zstd"]  # the simulator's first choice, like a modern gateway


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_every_advertised_coding_is_decoded_to_the_exact_data(coding: str) -> None:
    state = _state(content_codings=(coding,))
    recorder = _Recorder(state)
    group = _big_group(state)

    async def fetch(client: AsyncFlowRetailClient) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return await fetch_customer_groups(client, TENANT), await fetch_group_members(client, TENANT, group)

    groups, members = run(recorder, fetch, page_size=40)
    assert groups == state.groups(TENANT)
    assert members == [_without_nul(state.customer(TENANT, uid)) for uid in state.member_uids(TENANT, group)]
    assert len(recorder.encodings) > 2
    assert set(recorder.encodings) == {coding}


def test_uncompressed_answers_still_work_when_compression_is_off() -> None:
    state = _state(content_codings=())
    recorder = _Recorder(state)
    assert run(recorder, lambda c: fetch_customer_groups(c, TENANT)) == state.groups(TENANT)
    assert recorder.encodings == ["identity"]


def test_compressed_answers_over_real_http() -> None:
    state = _state()
    group = _big_group(state)

    async def fetch(base_url: str) -> list[dict[str, Any]]:
        async with AsyncFlowRetailClient(_config(base_url, page_size=30)) as client:
            return await fetch_group_members(client, TENANT, group)

    with running_simulator(state) as base_url:
        members = asyncio.run(fetch(base_url))
    assert [m["customerUid"] for m in members] == state.member_uids(TENANT, group)


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br", "zstd"])
def test_a_decompression_bomb_is_refused_once_naming_endpoint_page_and_limit(coding: str) -> None:
    state = _state(content_codings=(coding,))
    state.faults.bomb_bytes = 3 * MiB
    state.script(["bomb"])
    state.clear_log()
    with pytest.raises(SpecViolationError) as err:
        run(create_app(state), lambda c: fetch_customer_groups(c, TENANT), max_response_bytes=MiB)
    assert str(err.value) == (
        f"get-customer-groups page 1: response breaks the spec at field '(body)': {coding}-decoded response "
        f"exceeds the {MiB}-byte limit (reading customer groups of tenant {TENANT})"
    )
    assert len(state.request_log) == 1  # refused for good, not retried


def test_the_same_bomb_under_a_larger_limit_is_a_valid_answer() -> None:
    """What refused the bomb is the decoded-size limit, not broken JSON: whitespace before JSON is valid."""
    state = _state(content_codings=("gzip",))
    state.faults.bomb_bytes = 3 * MiB
    state.script(["bomb"])
    groups = run(create_app(state), lambda c: fetch_customer_groups(c, TENANT), max_response_bytes=4 * MiB)
    assert groups == state.groups(TENANT)


def test_a_bomb_over_real_http() -> None:
    state = _state()
    state.faults.bomb_bytes = 2 * MiB
    state.script(["bomb"])

    async def fetch(base_url: str) -> list[dict[str, Any]]:
        async with AsyncFlowRetailClient(_config(base_url, max_response_bytes=MiB)) as client:
            return await fetch_customer_groups(client, TENANT)

    with running_simulator(state) as base_url, pytest.raises(SpecViolationError, match="zstd-decoded response exceeds"):
        asyncio.run(fetch(base_url))


@pytest.mark.parametrize("coding", ["gzip", "deflate", "br"])
def test_decoding_is_bounded_cut_off_and_corrupt_streams_are_told_apart(coding: str) -> None:
    body = b'{"items": []}' * 5000
    packed = encode_body(body, coding)
    assert decode_body(packed, coding, len(body)) == body
    with pytest.raises(DecodedTooLarge, match=f"^{coding}-decoded response exceeds the 1000-byte limit$"):
        decode_body(packed, coding, 1000)
    with pytest.raises(CutOffError):
        decode_body(packed[: len(packed) // 2], coding, len(body))
    with pytest.raises(ContentCodingError, match=f"^not valid {coding} data"):
        decode_body(b"\x00\xffnot compressed at all" * 3, coding, len(body))


def test_content_encoding_headers_and_raw_deflate() -> None:
    body = b"hello " * 100
    assert decode_body(body, None, 10_000) == body
    assert decode_body(body, "identity", 10_000) == body
    raw_deflate = zlib.compress(body)[2:-4]
    assert decode_body(raw_deflate, "deflate", 10_000) == body
    assert decode_body(encode_body(encode_body(body, "gzip"), "br"), "gzip, br", 10_000) == body
    with pytest.raises(ContentCodingError, match=r"^Content-Encoding 'compress' was not asked for"):
        decode_body(body, "compress", 10_000)
    assert negotiate("gzip;q=0, deflate", AVAILABLE_CODINGS) == "deflate"
    assert negotiate("*", ("gzip",)) == "gzip"
    assert negotiate(None, AVAILABLE_CODINGS) is None
    assert negotiate("br;q=0.5, zstd;q=0", AVAILABLE_CODINGS) == "br"


# ------------------------------------------------------------------------------- bounds


def test_a_total_count_beyond_the_limit_is_refused_on_the_first_page() -> None:
    state = _state()
    state.script(["total_too_high"], operation_id="get-customer-groups")
    state.clear_log()
    with pytest.raises(SpecViolationError) as err:
        run(create_app(state), lambda c: fetch_customer_groups(c, TENANT), page_size=1)
    assert str(err.value) == (
        "get-customer-groups page 1: response breaks the spec at field 'paging.totalCount': "
        f"1000000000000 items is more than the {MAX_TOTAL_COUNT} a list may hold "
        f"(reading customer groups of tenant {TENANT})"
    )
    assert len(state.request_log) == 1


def test_too_many_pages_are_refused_on_the_first_page() -> None:
    state = _state()
    group = _big_group(state)
    state.script(["too_many_pages"], operation_id="get-customer-groups-customers")
    state.clear_log()
    with pytest.raises(SpecViolationError) as err:
        run(create_app(state), lambda c: fetch_group_members(c, TENANT, group))
    assert str(err.value) == (
        "get-customer-groups-customers page 1: response breaks the spec at field 'paging.pageSize': "
        f"totalCount {MAX_PAGES + 1} in pages of 1 makes {MAX_PAGES + 1} pages, more than the {MAX_PAGES} "
        f"a scan may take (reading customers of group {group} of tenant {TENANT})"
    )
    assert len(state.request_log) == 1


def test_page_numbers_are_generated_lazily() -> None:
    """A claimed 10^12 pages costs nothing to describe: the old list(range(...)) ran out of memory here."""
    numbers = remaining_page_numbers(PagingInfo(1, 1, 10**12), 1)
    assert len(numbers) == 10**12 - 1
    assert (numbers[0], numbers[-1]) == (2, 10**12)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 12 ", 12.0),
        ("\u00b2", None),
        ("\u0663", None),  # ARABIC-INDIC DIGIT THREE: isdigit() but not ASCII
        ("\u2075\u00b9", None),
        ("-3", None),
        ("1.5", None),
        ("1e3", None),
        ("soon", None),
        ("", None),
        ("Thu, 01 Jan 2026 12:00:30 GMT", 30.0),
        ("Thursday, 01-Jan-26 12:00:30 GMT", 30.0),
        ("Thu Jan  1 12:00:30 2026", 30.0),
    ],
)
def test_retry_after_takes_only_ascii_digits_or_an_http_date(value: str, expected: float | None) -> None:
    from datetime import UTC, datetime

    assert parse_retry_after(value, datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)) == expected


@pytest.mark.parametrize("style", ["superscript", "garbage"])
def test_a_retry_after_that_is_no_number_counts_as_absent(style: str) -> None:
    state = _state()
    state.faults.retry_after = style
    state.script(["429", "429"])
    recorder = _Recorder(state)

    async def fetch(client: AsyncFlowRetailClient) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return await fetch_customer_groups(client, TENANT), client.stats.as_dict()

    groups, stats = run(recorder, fetch)
    assert groups == state.groups(TENANT)
    assert stats["retries_by_cause"] == {"429": 2}
    assert [r.status for r in state.request_log] == [429, 429, 200]
