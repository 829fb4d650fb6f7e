"""The Flow Retail API v2 client: one async client over httpx.

Every rule lives once, in ``AsyncFlowRetailClient``: uid checks before a URL is built, the rate
limit and concurrency bound, retries (tenacity, honouring ``Retry-After``), response validation
against the merged spec, and paging with a verified total.
"""

from __future__ import annotations

import asyncio
import codecs
import email.utils
import logging
import ssl
import time
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from pipelines.flowretail.budget import ApiBudget, LocalBudget
from pipelines.flowretail.config import ClientConfig, check_uid
from pipelines.flowretail.content_coding import (
    ACCEPT_ENCODING,
    ContentCodingError,
    CutOffError,
    DecodedTooLarge,
    decode_body,
)
from pipelines.flowretail.deviations import NUL_ESCAPE, deviation_record, remove_nul
from pipelines.flowretail.errors import (
    ApiStatusError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FlowRetailError,
    NotFoundError,
    PagingInconsistentError,
    RetriesExhaustedError,
    SpecViolationError,
)
from pipelines.flowretail.paging import (
    PagingInfo,
    ScanLedger,
    check_page_consistency,
    parse_paging,
    remaining_page_numbers,
)
from pipelines.flowretail.schemas import ResponseValidator, validator_for
from pipelines.flowretail.secrets import redact
from pipelines.flowretail.spec import (
    CREATE_GROUP,
    DELETE_GROUP,
    GET_GROUP,
    LIST_GROUPS,
    LIST_MEMBERS,
    RENAME_GROUP,
    UPDATE_MEMBERS,
)
from pipelines.flowretail.stats import ClientStats

logger = logging.getLogger(__name__)

_RETRYABLE_STATUS = frozenset({500, 502, 503, 504})
_USER_AGENT = "flowretail-pipelines/0.1"
_ERROR_TEXT_LIMIT = 300


class BearerAuth(httpx.Auth):
    """Adds the integration token to each request; its repr never shows the token."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(token=<redacted>)"


class _Retryable(Exception):
    """One failed attempt that may succeed if repeated."""

    def __init__(self, cause: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.cause = cause
        self.detail = detail
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date, else None (absent).

    Only ASCII digits count as seconds: ``str.isdigit`` also accepts ``²`` or Arabic-Indic digits,
    which ``float`` then refuses.
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class ScanPage:
    """Items of one page not seen earlier in the same scan.

    ``attempt`` starts at 1; when it grows, the list changed while it was paged and everything the
    consumer kept from earlier attempts of this scan must be discarded.
    """

    items: list[dict[str, Any]]
    page_number: int
    attempt: int
    total_count: int
    deviations: dict[str, dict[str, str]] = field(default_factory=dict)  # item key -> field path -> case


class PageBudget:
    """Caps how many list pages are alive at once across every scan that shares it.

    A page takes a slot before it is requested and keeps it until its consumer calls ``release``
    (after writing it), so pages in flight, finished but not yet consumed, queued and being written
    all count: peak memory then follows the budget and the page size, not how many groups are
    scanned at once times how many pages each fetches ahead. A scan waits for a slot only while
    it holds no page of its own, so scans sharing a budget cannot starve one another.
    """

    def __init__(self, pages: int) -> None:
        if pages < 1:
            raise ValueError("a page budget needs at least one page")
        self._slots = asyncio.Semaphore(pages)

    async def take(self) -> None:
        await self._slots.acquire()

    def exhausted(self) -> bool:
        return self._slots.locked()

    def release(self, pages: int = 1) -> None:
        for _ in range(pages):
            self._slots.release()


class AsyncFlowRetailClient:
    """Async client for the CustomerGroup operations of one Flow Retail installation."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        budget: ApiBudget | None = None,
    ) -> None:
        """``budget`` (closed with the client) defaults to an in-memory one sized by the config."""
        self.config = config
        self.stats = ClientStats()
        self._token = config.token.get_secret_value()
        self._budget: ApiBudget = budget or LocalBudget(config.rate_limit, config.concurrency)
        self._http = httpx.AsyncClient(
            base_url=config.base_url + "/",
            auth=BearerAuth(self._token),
            transport=transport,
            timeout=httpx.Timeout(config.read_timeout, connect=config.connect_timeout),
            limits=httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency),
            headers={"User-Agent": _USER_AGENT, "Accept": "application/json", "Accept-Encoding": ACCEPT_ENCODING},
            verify=ssl.create_default_context(cafile=config.ca_bundle) if config.ca_bundle else True,
            # No proxy or CA settings from the environment unless FLOWRETAIL_TRUST_ENV=1 says so.
            trust_env=config.trust_env,
        )

    def __repr__(self) -> str:
        return f"AsyncFlowRetailClient(base_url={self.config.base_url!r})"

    async def __aenter__(self) -> AsyncFlowRetailClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        try:
            await self._http.aclose()
        finally:
            await self._budget.aclose()

    # ----------------------------------------------------------------- groups

    def iter_customer_groups(self, tenant_uid: str) -> AsyncIterator[ScanPage]:
        """Every customer group of a tenant, page by page (see ``ScanPage`` for rescans)."""
        tenant = check_uid("tenantUid", tenant_uid)
        return self._scan(
            LIST_GROUPS,
            f"tenants/{tenant}/customer-groups",
            key_field="customerGroupUid",
            sort_by=self.config.groups_sort_by,
            what=f"customer groups of tenant {tenant}",
        )

    async def get_customer_group(self, tenant_uid: str, customer_group_uid: str) -> dict[str, Any]:
        body: dict[str, Any] = await self._call(GET_GROUP, "GET", self._group_path(tenant_uid, customer_group_uid))
        return body

    async def create_customer_group(
        self, tenant_uid: str, name: str, customer_group_uid: str | None = None
    ) -> dict[str, Any]:
        """Create a group. With a client-chosen uid the call is safe to retry: a 409 means it exists."""
        tenant = check_uid("tenantUid", tenant_uid)
        payload: dict[str, Any] = {"name": name}
        if customer_group_uid is not None:
            payload["customerGroupUid"] = check_uid("customerGroupUid", customer_group_uid)
        body: dict[str, Any] = await self._call(
            CREATE_GROUP,
            "POST",
            f"tenants/{tenant}/customer-groups",
            json=payload,
            retry_writes=customer_group_uid is not None,
        )
        return body

    async def rename_customer_group(self, tenant_uid: str, customer_group_uid: str, name: str) -> dict[str, Any]:
        body: dict[str, Any] = await self._call(
            RENAME_GROUP,
            "PUT",
            self._group_path(tenant_uid, customer_group_uid),
            json={"name": name},
            retry_writes=True,
        )
        return body

    async def delete_customer_group(self, tenant_uid: str, customer_group_uid: str) -> None:
        await self._call(DELETE_GROUP, "DELETE", self._group_path(tenant_uid, customer_group_uid))

    # ---------------------------------------------------------------- members

    def iter_group_members(
        self, tenant_uid: str, customer_group_uid: str, *, budget: PageBudget | None = None
    ) -> AsyncIterator[ScanPage]:
        """Every customer of a group, page by page (see ``ScanPage`` for rescans).

        With a ``budget``, every page yielded holds one of its slots, which the consumer releases.
        """
        path = self._group_path(tenant_uid, customer_group_uid) + "/customers"
        return self._scan(
            LIST_MEMBERS,
            path,
            key_field="customerUid",
            sort_by=self.config.members_sort_by,
            what=f"customers of group {customer_group_uid} of tenant {tenant_uid}",
            budget=budget,
        )

    async def fetch_group_member_uids(self, tenant_uid: str, customer_group_uid: str) -> set[str]:
        """The live member uids of a group (what the push-back diffs against)."""
        uids: set[str] = set()
        attempt = 0
        async for page in self.iter_group_members(tenant_uid, customer_group_uid):
            if page.attempt != attempt:
                uids.clear()
                attempt = page.attempt
            uids.update(item["customerUid"] for item in page.items)
        return uids

    async def update_group_customers(
        self,
        tenant_uid: str,
        customer_group_uid: str,
        add_customer_uids: list[str] | None = None,
        remove_customer_uids: list[str] | None = None,
    ) -> None:
        """Add and/or remove customers in one call; set semantics make it safe to retry."""
        payload: dict[str, Any] = {}
        if add_customer_uids:
            payload["addCustomerUids"] = list(add_customer_uids)
        if remove_customer_uids:
            payload["removeCustomerUids"] = list(remove_customer_uids)
        await self._call(
            UPDATE_MEMBERS,
            "PUT",
            self._group_path(tenant_uid, customer_group_uid) + "/customers",
            json=payload,
            retry_writes=True,
        )

    # ---------------------------------------------------------------- paging

    async def _scan(
        self,
        operation: str,
        path: str,
        *,
        key_field: str,
        sort_by: str,
        what: str,
        budget: PageBudget | None = None,
    ) -> AsyncIterator[ScanPage]:
        """The pages of a ``_Scan``, with spec violations saying which tenant's list (and group) broke.

        ``yield await`` keeps no page in this frame while the next is awaited, so a page the consumer
        has written is freed at once, not one page later.
        """
        scan = _Scan(self, operation, path, key_field=key_field, sort_by=sort_by, what=what, budget=budget)
        try:
            while not scan.finished:
                yield await scan.next_page()
        except SpecViolationError as exc:
            raise self._redact_error(exc.in_context(what)) from None
        finally:
            await scan.aclose()

    async def _list_page(
        self, operation: str, path: str, number: int, sort_by: str, *, first: bool = False
    ) -> dict[str, Any]:
        params = {
            "pageNumber": number,
            "pageSize": self.config.page_size,
            "sortBy": sort_by,
            "sortDirection": "ASC",
        }
        try:
            body: dict[str, Any] = await self._call(operation, "GET", path, params=params, page=number)
        except BadRequestError as exc:
            if not first:
                raise
            raise BadRequestError(
                operation,
                exc.status_code,
                f"the server refused the list request with sortBy={sort_by}, sortDirection=ASC "
                f"({exc.detail}); paging needs a stable sort: configure a sort field it accepts",
                page=number,
            ) from None
        self.stats.pages += 1
        return body

    # ------------------------------------------------------------- transport

    def _group_path(self, tenant_uid: str, customer_group_uid: str) -> str:
        tenant = check_uid("tenantUid", tenant_uid)
        group = check_uid("customerGroupUid", customer_group_uid)
        return f"tenants/{tenant}/customer-groups/{group}"

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        page: int | None = None,
        retry_writes: bool = False,
    ) -> Any:
        """One operation with retries; returns the validated JSON body (None for 204)."""
        idempotent = method in ("GET", "DELETE") or retry_writes
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.max_attempts if idempotent else 1)
            | stop_before_delay(self.config.max_total_wait),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            before_sleep=self._count_retry,
            reraise=True,
        )
        attempts = 0
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    return await self._attempt(operation, method, path, params, json, page)
        except _Retryable as exc:
            raise self._redact_error(
                RetriesExhaustedError(operation + (f" page {page}" if page is not None else ""), attempts, exc.detail)
            ) from None
        except FlowRetailError as exc:
            raise self._redact_error(exc)  # noqa: B904 - the same error, its texts redacted
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        backoff = wait_random_exponential(multiplier=self.config.backoff_initial, max=self.config.backoff_max)(state)
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return max(exc.retry_after, 0.0)
        return float(backoff)

    def _count_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        cause = exc.cause if isinstance(exc, _Retryable) else "other"
        self.stats.retries[cause] += 1
        logger.info("retrying after %s (attempt %d)", cause, state.attempt_number)

    async def _attempt(
        self,
        operation: str,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        json: dict[str, Any] | None,
        page: int | None,
    ) -> Any:
        async with self._budget.slot():
            started = time.perf_counter()
            received = 0
            try:
                # httpx's read timeout is per chunk; the deadline bounds a whole slow-dripping answer too.
                async with asyncio.timeout(self.config.connect_timeout + 2 * self.config.read_timeout):
                    request = self._http.build_request(method, path, params=params, json=json)
                    response = await self._http.send(request, stream=True)
                    try:
                        raw = await self._read_capped(response, operation, page)
                    finally:
                        await response.aclose()
                received = len(raw)
            except (httpx.TimeoutException, TimeoutError) as exc:
                raise _Retryable("timeout", f"{type(exc).__name__}: no answer in time") from None
            except httpx.TransportError as exc:
                raise _Retryable("connection", f"{type(exc).__name__}: {self._redact(str(exc))}") from None
            finally:
                self.stats.observe(operation, time.perf_counter() - started, received)
        try:
            return self._interpret(operation, response, raw, page)
        except _Retryable as exc:
            if exc.cause == "429" and exc.retry_after is not None:
                await self._budget.pause(exc.retry_after)  # every request sharing the token waits too
            raise

    async def _read_capped(self, response: httpx.Response, operation: str, page: int | None) -> bytes:
        """The body as sent (still compressed), refused past the size limit before it is all read."""
        limit = self.config.max_response_bytes
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise SpecViolationError(
                operation, "(body)", f"response of {declared} bytes exceeds the {limit}-byte limit", page
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > limit:
                raise SpecViolationError(operation, "(body)", f"response exceeds the {limit}-byte limit", page)
            chunks.append(chunk)
        return b"".join(chunks)

    def _interpret(self, operation: str, response: httpx.Response, raw: bytes, page: int | None) -> Any:
        status = response.status_code
        if status == 429:
            self.stats.rate_limited += 1
            raise _Retryable(
                "429", "HTTP 429 Too Many Requests", parse_retry_after(response.headers.get("Retry-After"))
            )
        if status in _RETRYABLE_STATUS:
            raise _Retryable(str(status), f"HTTP {status}")
        raw = self._decode(response, raw, operation, page)
        if status >= 400:
            raise self._status_error(operation, status, raw, page)
        validator = validator_for(operation)
        if status != validator.success_status:
            raise SpecViolationError(
                operation, "(status)", f"expected HTTP {validator.success_status}, got {status}", page
            )
        if validator.success_status == 204:
            return None
        content_type = response.headers.get("Content-Type", "")
        if "json" not in content_type.lower():
            raise SpecViolationError(
                operation, "(body)", f"expected application/json, got {content_type or 'no content type'!r}", page
            )
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            # Only on failure: bad UTF-8 is the server's fault for good, a cut-off body is worth a retry,
            # even when the cut falls inside a multi-byte character (final=False accepts that tail).
            try:
                codecs.getincrementaldecoder("utf-8")().decode(raw, final=False)
            except UnicodeDecodeError as exc:
                raise SpecViolationError(operation, "(body)", f"not valid UTF-8 (byte {exc.start})", page) from None
            raise _Retryable("invalid_json", f"HTTP {status} with a truncated or malformed JSON body") from None
        return _with_deviations(operation, validator, body, raw, page, strict=self.config.strict_spec)

    def _decode(self, response: httpx.Response, raw: bytes, operation: str, page: int | None) -> bytes:
        """Undo the Content-Encoding; the size limit applies to the decoded body too (decompression bombs)."""
        try:
            return decode_body(raw, response.headers.get("Content-Encoding"), self.config.max_response_bytes)
        except CutOffError as exc:
            raise _Retryable(
                "truncated", f"HTTP {response.status_code} with a cut-off compressed body ({exc})"
            ) from None
        except DecodedTooLarge as exc:
            raise SpecViolationError(operation, "(body)", str(exc), page) from None
        except ContentCodingError as exc:
            raise SpecViolationError(operation, "(body)", str(exc), page) from None

    def _status_error(self, operation: str, status: int, raw: bytes, page: int | None) -> ApiStatusError:
        detail = self._redact(_error_message(raw), _ERROR_TEXT_LIMIT)
        if status in (401, 403):
            return AuthenticationError(
                operation,
                status,
                f"{detail}; the token was refused (missing, wrong, revoked or lacking "
                f"the CUSTOMER permission): check {self.config.token_env}",
                page,
            )
        if status == 404:
            return NotFoundError(operation, status, detail, page)
        if status == 409:
            return ConflictError(operation, status, detail, page)
        if status == 400:
            error = BadRequestError(operation, status, detail, page)
            error.body = _json_or_none(raw)  # type: ignore[attr-defined]
            return error
        return ApiStatusError(operation, status, detail, page)

    def _redact(self, text: str, limit: int | None = None) -> str:
        return redact(text, (self._token,), limit)

    def _redact_error(self, exc: FlowRetailError) -> FlowRetailError:
        """Schema violations quote response values, which may echo the token; every error leaves redacted."""
        return exc.redacted(self._redact)


class _Scan:
    """One scan of a list until an attempt is consistent: the attempt, its ledger and its page slots.

    An attempt asks for the first page, which tells how many there are, then for the others
    concurrently (up to ``concurrency`` in flight), handing pages out in page order as they arrive.
    It stops asking early when a page comes back empty: the list shrank. An attempt whose pages
    disagree (the list changed while it was paged) or that meets a page contradicting itself (more
    items than its own total allows, a key twice: perhaps a transient server glitch) earns a rescan;
    if the last attempt still meets such a page, the error names the page and field instead of
    blaming data changes.

    With a ``PageBudget``, every page takes a slot before its request. The scan counts the slots it
    holds (requests in flight, pages fetched but not handed out) and gives them all back in one place,
    ``_end_attempt``; a page handed out takes its slot along to the consumer, who releases it once the
    page is written. A scan waits for a slot only while none of its requests is in flight, so scans
    sharing a budget cannot starve one another.
    """

    def __init__(
        self,
        client: AsyncFlowRetailClient,
        operation: str,
        path: str,
        *,
        key_field: str,
        sort_by: str,
        what: str,
        budget: PageBudget | None,
    ) -> None:
        self._client = client
        self._config = client.config
        self._operation = operation
        self._path = path
        self._key_field = key_field
        self._sort_by = sort_by
        self._what = what
        self._budget = budget
        self.attempt = 0
        self.ledger = ScanLedger(key_field)
        self.finished = False
        self._contradiction: SpecViolationError | None = None
        self._in_attempt = False  # False: the next page is the first of a new attempt
        self._numbers = range(0)  # the attempt's pages after the first
        self._position = 0  # how many of them have been asked for
        self._pending: dict[asyncio.Task[dict[str, Any]], int] = {}
        self._ready: list[asyncio.Task[dict[str, Any]]] = []  # finished, last page first, not yet handed out
        self._held = 0

    async def next_page(self) -> ScanPage:
        """The next page's items not seen earlier in this attempt, starting a new attempt when due."""
        while True:
            if not self._in_attempt:
                self._start_attempt()
                number, body, info = await self._first_page()
            else:
                number, body, info = await self._later_page()
            try:
                check_page_consistency(
                    body["items"], info, number, self._config.page_base, self._key_field, self._operation
                )
            except SpecViolationError as exc:
                self._contradiction = exc
                await self._end_attempt()
                continue
            self._held -= 1  # the consumer owns this page's slot now
            fresh = self.ledger.admit(body["items"], info.total_count)
            page = ScanPage(
                fresh, number, self.attempt, info.total_count, _page_deviations(body, fresh, self._key_field)
            )
            if not (self._pending or self._position < len(self._numbers)):
                await self._end_attempt()
                self.finished = self.ledger.is_consistent()
            return page

    async def aclose(self) -> None:
        """Stop whatever the current attempt still has in flight and give back its slots."""
        await self._end_attempt()

    def _start_attempt(self) -> None:
        if self.attempt == self._config.max_scan_attempts:
            if self._contradiction is not None:
                raise self._contradiction
            raise PagingInconsistentError(
                self._what, self.ledger.reported_total(), self.ledger.unique_count, self.attempt
            )
        if self.attempt:
            self._client.stats.rescans += 1
            logger.info("%s changed while paging (attempt %d); scanning again", self._what, self.attempt)
        self.attempt += 1
        self.ledger = ScanLedger(self._key_field)
        self._contradiction = None

    async def _first_page(self) -> tuple[int, dict[str, Any], PagingInfo]:
        base = self._config.page_base
        await self._take_slot()
        body = await self._client._list_page(self._operation, self._path, base, self._sort_by, first=self.attempt == 1)
        info = parse_paging(body, self._operation, base, self._config.page_size)
        self._numbers = remaining_page_numbers(info, base)  # a range: O(1) whatever the total
        self._position = 0
        self._in_attempt = True
        return base, body, info

    async def _later_page(self) -> tuple[int, dict[str, Any], PagingInfo]:
        """The lowest-numbered finished page; when none is waiting, top up the requests and wait."""
        if not self._ready:
            await self._request_more()
            done, _ = await asyncio.wait(self._pending, return_when=asyncio.FIRST_COMPLETED)
            self._ready = sorted(done, key=self._pending.__getitem__, reverse=True)
        task = self._ready.pop()
        number = self._pending.pop(task)
        body = task.result()
        info = parse_paging(body, self._operation, number, self._config.page_size)
        if not body["items"]:
            self._position = len(self._numbers)
        return number, body, info

    async def _request_more(self) -> None:
        while self._position < len(self._numbers) and len(self._pending) < self._config.concurrency:
            if self._pending and self._budget is not None and self._budget.exhausted():
                return
            await self._take_slot()
            number = self._numbers[self._position]
            self._position += 1
            request = self._client._list_page(self._operation, self._path, number, self._sort_by)
            self._pending[asyncio.ensure_future(request)] = number

    async def _take_slot(self) -> None:
        if self._budget is not None:
            await self._budget.take()
        self._held += 1

    async def _end_attempt(self) -> None:
        """Cancel the attempt's requests still in flight and give back every slot the scan holds."""
        pending, self._pending, self._ready = self._pending, {}, []
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._budget is not None and self._held:
            self._budget.release(self._held)
        self._held = 0
        self._in_attempt = False


class DeviatingBody(dict[str, Any]):
    """A list response whose items break the spec only in data fields, which the load keeps as they
    come (see ``deviations``): the body, plus per item position what broke."""

    deviations: dict[int, dict[str, str]]


def _with_deviations(
    operation: str, validator: ResponseValidator, body: Any, raw: bytes, page: int | None, *, strict: bool
) -> Any:
    """The validated body; a list page whose items deviate comes back as a ``DeviatingBody``.

    Tolerant, NULs go first, so that a key freed of one is validated as the key it is meant to be;
    strict, the first violation fails as it always did, and a NUL after that.
    """
    nul = validator.is_list and NUL_ESCAPE in raw and isinstance(body, dict) and isinstance(body.get("items"), list)
    if strict:
        validator.validate(body, page)
        if nul:
            remove_nul(operation, body["items"], page, strict=True)
        return body
    found = remove_nul(operation, body["items"], page, strict=False) if nul else []
    found = validator.check(body, page) + found
    if not found:
        return body
    tolerant = DeviatingBody(body)
    tolerant.deviations = deviation_record(found)
    return tolerant


def _page_deviations(body: dict[str, Any], fresh: list[dict[str, Any]], key_field: str) -> dict[str, dict[str, str]]:
    """Key of each fresh item -> its deviations (field path -> case); empty for a page true to the spec."""
    if not isinstance(body, DeviatingBody):
        return {}
    kept = {id(item) for item in fresh}
    return {
        item[key_field]: record
        for position, record in body.deviations.items()
        if id(item := body["items"][position]) in kept
    }


def _json_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _error_message(raw: bytes) -> str:
    """The API's ``message`` (or the start of the body), uncut: the caller redacts, then cuts."""
    body = _json_or_none(raw)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        message: str = body["message"]
        return message
    return raw[: 4 * _ERROR_TEXT_LIMIT].decode("utf-8", "replace").strip() or "no message"
