"""The Starlette app: routing, auth, request validation, fault injection and the request log.

Routing is done here on the raw path rather than with Starlette path parameters, so that a
percent-encoded slash or dot inside a uid reaches the uid check (400) instead of silently routing
elsewhere, and so that every error, even for an unknown path, is the API's JSON ``{"message"}``.
The business rules all live in ``SimulatorState``; this module only translates HTTP.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote

import jsonschema_rs
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from pipelines.flowretail.content_coding import encode_body, negotiate
from pipelines.flowretail.schemas import request_json_schema
from pipelines.flowretail.simulator.config import is_uid
from pipelines.flowretail.simulator.faults import (
    HTML_BODY,
    REPLACING_BODY_OUTCOMES,
    Decision,
    FaultEngine,
    SimulatedConnectionDrop,
    add_unknown_fields,
    bomb_body,
    break_body,
    non_utf8_body,
    retry_after_header,
    scripted_decision,
    status_message,
)
from pipelines.flowretail.simulator.state import (
    API_ACTOR,
    CUSTOMER_SORT_FIELDS,
    GROUP_SORT_FIELDS,
    PageRequest,
    RequestRecord,
    SimulatorError,
    SimulatorState,
    parse_page_request,
    utc_now,
)
from pipelines.flowretail.spec import (
    CREATE_GROUP,
    DELETE_GROUP,
    GET_GROUP,
    LIST_GROUPS,
    LIST_MEMBERS,
    RENAME_GROUP,
    UPDATE_MEMBERS,
)

LIST_OPERATIONS = frozenset({LIST_GROUPS, LIST_MEMBERS})

# (number of path segments after /v2/tenants/{t}, method) -> operationId
_ROUTES: dict[tuple[str, str], str] = {
    ("groups", "GET"): LIST_GROUPS,
    ("groups", "POST"): CREATE_GROUP,
    ("group", "GET"): GET_GROUP,
    ("group", "PUT"): RENAME_GROUP,
    ("group", "DELETE"): DELETE_GROUP,
    ("members", "GET"): LIST_MEMBERS,
    ("members", "PUT"): UPDATE_MEMBERS,
}
_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
_JSON = "application/json"


@dataclass(frozen=True)
class _Route:
    """Where a path points: which kind of resource, and the (decoded) uids in it."""

    kind: str
    tenant_uid: str
    group_uid: str | None


@dataclass
class _Answer:
    """A response before faults touch it; ``payload`` is the JSON body (None for 204)."""

    status: int
    payload: Any = None
    headers: dict[str, str] | None = None


def _resolve(raw_path: str) -> _Route | None:
    """Match ``/v2/tenants/{t}/customer-groups[/{g}[/customers]]`` on the raw (still encoded) path."""
    parts = raw_path.split("/")
    if len(parts) < 5 or parts[0] != "" or parts[1] != "v2" or parts[2] != "tenants" or parts[4] != "customer-groups":
        return None
    if not all(parts[3:]):
        return None  # an empty segment (trailing or double slash) names no resource
    tenant = unquote(parts[3])
    if len(parts) == 5:
        return _Route("groups", tenant, None)
    group = unquote(parts[5])
    if len(parts) == 6:
        return _Route("group", tenant, group)
    if len(parts) == 7 and parts[6] == "customers":
        return _Route("members", tenant, group)
    return None


class _DropResponse(Response):
    """Starts a 200 response and then fails, so the server closes the connection mid-response."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        raise SimulatedConnectionDrop("simulated connection drop: the server closed the connection mid-response")


def _json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """Every JSON answer goes through orjson: fast, and byte-identical to what tests compare."""
    return Response(orjson.dumps(payload), status_code=status, media_type=_JSON, headers=headers)


class SimulatorApp:
    """Translates HTTP to ``SimulatorState`` calls and applies the live faults of the state."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.engine = FaultEngine()
        self._body_validators = {
            op: jsonschema_rs.Draft4Validator(schema)
            for op in (CREATE_GROUP, RENAME_GROUP, UPDATE_MEMBERS)
            if (schema := request_json_schema(op)) is not None
        }

    async def endpoint(self, request: Request) -> Response:
        """Serve one request and record it in the state's request log with the status actually given."""
        method = request.method
        raw_path = _raw_path(request)
        route = _resolve(raw_path)
        operation = _ROUTES.get((route.kind, method)) if route else None
        raw_body = await request.body()
        body_json = _try_json(raw_body)
        query = dict(request.query_params)
        response, status = await self._serve(request, method, route, operation, raw_body, query)
        self._compress(request, response)
        self.state.record(
            RequestRecord(
                method=method,
                path=raw_path,
                operation_id=operation,
                query=query,
                status=status,
                json=body_json,
                at=utc_now(),
            )
        )
        return response

    async def _serve(
        self,
        request: Request,
        method: str,
        route: _Route | None,
        operation: str | None,
        raw_body: bytes,
        query: dict[str, str],
    ) -> tuple[Response, int]:
        """Auth, routing, faults, then the operation; returns the response and the status for the log."""
        state = self.state
        faults = state.faults
        with state.lock:
            revoked = self.engine.token_revoked(faults)
        if revoked or not self._authorized(request, route.tenant_uid if route else None):
            return _json_response(401, {"message": status_message(401)}), 401
        if route is None:
            return _json_response(404, {"message": f"no such endpoint: {method} {_raw_path(request)}"}), 404
        if operation is None:
            allowed = ", ".join(m for (kind, m) in _ROUTES if kind == route.kind)
            return _json_response(405, {"message": f"method {method} not allowed"}, {"Allow": allowed}), 405
        decision = self._decide(operation)
        if decision.delay:
            await asyncio.sleep(decision.delay)
        if decision.status is not None:
            headers = None
            if decision.status == 429:
                value = retry_after_header(faults.retry_after, decision.retry_after or 0.0)
                headers = {"Retry-After": value} if value is not None else None
            return _json_response(decision.status, {"message": status_message(decision.status)}, headers), (
                decision.status
            )
        if decision.body_fault in REPLACING_BODY_OUTCOMES:
            return self._replacing_body(decision.body_fault, route, operation, query, request), 200
        answer = self._answer(route, operation, raw_body, query, decision)
        if decision.drop:
            return _DropResponse(), 0
        payload = answer.payload
        if payload is None:
            return Response(status_code=answer.status, headers=answer.headers), answer.status
        content = orjson.dumps(payload)
        if decision.truncate and answer.status < 300:
            content = content[: max(1, len(content) // 2)]
        return Response(content, status_code=answer.status, media_type=_JSON, headers=answer.headers), answer.status

    def _authorized(self, request: Request, tenant: str | None) -> bool:
        """Constant-time token check, so the token cannot be guessed from response timing; a tenant
        with a token of its own accepts only that one."""
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials:
            return False
        expected = self.state.tenant_tokens.get(tenant or "", self.state.token)
        return hmac.compare_digest(credentials.strip().encode(), expected.encode())

    def _decide(self, operation: str) -> Decision:
        """A scripted outcome wins; otherwise the rate limit, then the random fault families."""
        state = self.state
        faults = state.faults
        scripted = state.take_scripted(operation)
        if scripted is not None:
            return scripted_decision(scripted)
        with state.lock:
            wait = self.engine.throttle(faults)
            if wait is not None:
                return Decision(status=429, retry_after=wait)
            return self.engine.random_decision(faults, operation)

    def _replacing_body(
        self, fault: str, route: _Route, operation: str, query: dict[str, str], request: Request
    ) -> Response:
        """An HTML page, a non-UTF-8 body or a decompression bomb instead of the operation (nothing is applied)."""
        if fault == "html":
            return Response(HTML_BODY, status_code=200, media_type="text/html; charset=utf-8")
        payload: Any = {"message": "ok"}
        if operation in LIST_OPERATIONS:
            try:
                payload = self._list(route, operation, query)
            except SimulatorError as exc:
                payload = exc.body()
        if fault == "bomb":
            # A hostile server compresses whether asked or not; gzip when the request accepts nothing.
            offered = self.state.config.content_codings or ("gzip",)
            coding = negotiate(request.headers.get("accept-encoding"), offered) or "gzip"
            body = bomb_body(orjson.dumps(payload), self.state.faults.bomb_bytes, coding)
            return Response(body, status_code=200, media_type=_JSON, headers={"Content-Encoding": coding})
        return Response(non_utf8_body(orjson.dumps(payload)), status_code=200, media_type="application/json")

    def _compress(self, request: Request, response: Response) -> None:
        """Compress the answer like a production gateway, with the first configured coding the request accepts."""
        offered = self.state.config.content_codings
        if not offered or isinstance(response, _DropResponse) or not response.body:
            return
        if "content-encoding" in response.headers:
            return
        coding = negotiate(request.headers.get("accept-encoding"), offered)
        if coding is None:
            return
        response.body = encode_body(bytes(response.body), coding)
        response.headers["Content-Encoding"] = coding
        response.headers["Content-Length"] = str(len(response.body))
        response.headers["Vary"] = "Accept-Encoding"

    def _answer(
        self, route: _Route, operation: str, raw_body: bytes, query: dict[str, str], decision: Decision
    ) -> _Answer:
        """Run the operation and apply a spec-breaking body fault to a successful answer."""
        try:
            answer = self._dispatch(route, operation, raw_body, query, decision)
        except SimulatorError as exc:
            return _Answer(exc.status, exc.body())
        unknown_fields = self.state.faults.unknown_customer_fields
        if unknown_fields and operation == LIST_MEMBERS and answer.status < 300 and isinstance(answer.payload, dict):
            add_unknown_fields(answer.payload, unknown_fields)
        if decision.body_fault is not None and answer.status < 300 and isinstance(answer.payload, dict):
            answer.payload = break_body(
                answer.payload, decision.body_fault, operation in LIST_OPERATIONS, operation == LIST_MEMBERS
            )
        return answer

    def _dispatch(
        self, route: _Route, operation: str, raw_body: bytes, query: dict[str, str], decision: Decision
    ) -> _Answer:
        """Map one operation onto the state's rules (the same ones the Python mutators use)."""
        state = self.state
        tenant = route.tenant_uid
        group = route.group_uid
        for kind, value in (("tenantUid", tenant), ("customerGroupUid", group)):
            if value is not None and not is_uid(value):
                raise SimulatorError(400, f"{kind} {value!r} is not a valid UID (letters, digits, - and _)")
        state.tenant(tenant)
        if operation in LIST_OPERATIONS:
            page = self._page_request(operation, query)
            if decision.body_fault == "oversized_page":
                return _Answer(200, self._oversized(route, operation, page))
            payload = self._list(route, operation, query, page)
            if decision.clean:
                self._after_list(route, operation, page, payload)
            return _Answer(200, payload)
        if operation == GET_GROUP:
            return _Answer(200, self._group_or_404(tenant, group))
        if operation == DELETE_GROUP:
            state.delete_group(tenant, _need(group))
            return _Answer(204)
        body = self._json_body(operation, raw_body)
        if operation == CREATE_GROUP:
            return _Answer(201, state.create_group(tenant, body["name"], body.get("customerGroupUid"), actor=API_ACTOR))
        if operation == RENAME_GROUP:
            return _Answer(200, state.rename_group(tenant, _need(group), body.get("name"), actor=API_ACTOR))
        state.update_members(
            tenant,
            _need(group),
            add=body.get("addCustomerUids") or [],
            remove=body.get("removeCustomerUids") or [],
            limit=state.config.max_uids_per_update,
        )
        return _Answer(204)

    def _group_or_404(self, tenant: str, group: str | None) -> dict[str, Any]:
        """The read helper returns None for a missing group; the API answers 404."""
        found = self.state.group(tenant, _need(group))
        if found is None:
            raise SimulatorError(404, f"customer group {group!r} not found in tenant {tenant!r}")
        return found

    def _page_request(self, operation: str, query: dict[str, str]) -> PageRequest:
        """Each list has its own sortable fields; everything else about paging is shared."""
        fields = GROUP_SORT_FIELDS if operation == LIST_GROUPS else CUSTOMER_SORT_FIELDS
        return parse_page_request(query, self.state.config, fields)

    def _list(
        self, route: _Route, operation: str, query: dict[str, str], page: PageRequest | None = None
    ) -> dict[str, Any]:
        """One page of either list operation."""
        page = page or self._page_request(operation, query)
        if operation == LIST_GROUPS:
            return self.state.list_groups(route.tenant_uid, page)
        return self.state.list_members(route.tenant_uid, _need(route.group_uid), page)

    def _oversized(self, route: _Route, operation: str, page: PageRequest) -> dict[str, Any]:
        """One item more than the effective page size, while paging still claims that size."""
        bigger = replace(page, size=page.size + 1)
        payload = self._list(route, operation, {}, bigger)
        items = payload["items"]
        while items and len(items) <= page.size:
            items.append(dict(items[len(items) % max(1, len(items))]))
        payload["paging"]["pageSize"] = page.size
        return payload

    def _after_list(self, route: _Route, operation: str, page: PageRequest, payload: dict[str, Any]) -> None:
        """The data-changing faults: disturb a member scan after its first page, delete groups after a full list."""
        state = self.state
        total = payload["paging"]["totalCount"]
        with state.lock:
            faults = state.faults
            if operation == LIST_MEMBERS:
                first_page = page.number == state.config.page_base
                if faults.mutate_scans > 0 and first_page and total > page.size:
                    faults.mutate_scans -= 1
                    state.disturb_scan(route.tenant_uid, _need(route.group_uid))
                return
            last_page = total > 0 and page.offset < total <= page.offset + page.size
            if faults.delete_groups_after_list > 0 and last_page:
                deleted = state.delete_listed_groups(route.tenant_uid, faults.delete_groups_after_list)
                faults.delete_groups_after_list -= len(deleted)

    def _json_body(self, operation: str, raw_body: bytes) -> dict[str, Any]:
        """Parse and validate a request body against the spec; pattern errors on member uids are left
        to ``update_members`` so they come back as ``invalidCustomerUids``."""
        if not raw_body.strip():
            raise SimulatorError(400, "request body must be a JSON object")
        try:
            body = orjson.loads(raw_body)
        except orjson.JSONDecodeError:
            raise SimulatorError(400, "request body is not valid JSON") from None
        validator = self._body_validators.get(operation)
        if validator is not None:
            for error in validator.iter_errors(body):
                if operation == UPDATE_MEMBERS and isinstance(error.kind, jsonschema_rs.ValidationErrorKind.Pattern):
                    continue
                where = ".".join(str(p) for p in error.instance_path) or "(body)"
                raise SimulatorError(400, f"request body is invalid at {where}: {error.message}")
        if not isinstance(body, dict):
            raise SimulatorError(400, "request body must be a JSON object")
        return body


def _need(value: str | None) -> str:
    """Narrow an optional path uid; a route without one never reaches a group handler."""
    if value is None:
        raise SimulatorError(404, "no customer group in the path")
    return value


def _raw_path(request: Request) -> str:
    """The path still percent-encoded, so an encoded slash stays inside its segment."""
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes | bytearray):
        return bytes(raw).split(b"?", 1)[0].decode("latin-1")
    return str(request.scope.get("path", "/"))


def _try_json(raw: bytes) -> Any:
    """The request body for the log: parsed when it is JSON, else None (never raises)."""
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def create_app(state: SimulatorState) -> Starlette:
    """The ASGI app serving ``state``; mount it at the server root (paths start with ``/v2``)."""
    simulator = SimulatorApp(state)
    app = Starlette(routes=[Route("/{path:path}", simulator.endpoint, methods=_METHODS)])

    async def unmatched(scope: Scope, receive: Receive, send: Send) -> None:
        # "{path:path}" cannot match a path holding a newline (%0A); serve those too, so every
        # answer is the API's JSON error rather than Starlette's plain-text 404.
        if scope["type"] != "http":
            return
        response = await simulator.endpoint(Request(scope, receive))
        await response(scope, receive, send)

    app.router.default = unmatched
    app.state.simulator = simulator
    return app
