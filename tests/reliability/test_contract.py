"""Contract fuzzing: Schemathesis generates requests for all seven operations of the merged spec
(pipelines/flowretail/openapi.json) and checks the simulator's answers against it.

Two properties, each with a fast subset (``make test``) and a long run (``-m slow``, size from
``FLOWRETAIL_CONTRACT_EXAMPLES``):
- valid requests (path uids of an existing tenant and group, paging and sort values the API accepts,
  uids of real customers) get exactly the documented status, content type, headers and body schema;
- any request the spec allows, as generated, never gets a 5xx, a body breaking its documented schema,
  or an error that is not the API's JSON ``{"message": ...}`` with 400, 401, 404 or 409.
The merged spec documents success statuses only, so the undocumented 4xx answers of the second
property are counted and reported rather than failed on.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import CHECKS  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402

from pipelines.flowretail.simulator import SimulatorState, create_app  # noqa: E402
from tests.reliability.conftest import ScenarioRecord  # noqa: E402
from tests.reliability.support import TOKEN, make_state  # noqa: E402

SPEC = Path(__file__).resolve().parents[2] / "pipelines" / "flowretail" / "openapi.json"
BASE_URL = "http://localhost/v2"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
FAST_EXAMPLES = 8
LONG_EXAMPLES = int(os.environ.get("FLOWRETAIL_CONTRACT_EXAMPLES", "400"))
GROUP_SORT = ["customerGroupUid", "name", "createdAt", "lastModifiedAt"]
MEMBER_SORT = ["customerUid", "lastname", "firstname", "createdAt"]
API_ERRORS = {400, 401, 404, 409}

UNDOCUMENTED: dict[str, dict[int, int]] = {}


class _CurrentApp:
    """One ASGI app for the schema (checks that re-send a request reach it too); each example swaps in a
    fresh simulator behind it, so examples never see each other's writes."""

    def __init__(self) -> None:
        self.state: SimulatorState | None = None
        self.inner: Any = None

    def fresh(self) -> SimulatorState:
        # The customers that break the spec on purpose (what real APIs send) would fail every
        # response check; the contract is the simulator's own, so they stay out here.
        self.state = make_state(customers=30, groups=4, spec_deviations=False)
        self.inner = create_app(self.state)
        return self.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.inner(scope, receive, send)


APP = _CurrentApp()
# Requests the spec allows (positive data); the coverage phase adds its boundary values of them.
CONFIG = SchemathesisConfig.from_dict({"generation": {"mode": "positive"}})


def _undeclared_path_parameters(spec: dict[str, Any]) -> list[str]:
    """Path template variables with no ``in: path`` parameter (on the path or on every operation)."""
    missing = []
    for path, item in spec["paths"].items():
        names = re.findall(r"{([^}]+)}", path)
        shared = {p.get("name") for p in item.get("parameters", []) if p.get("in") == "path"}
        for method, operation in item.items():
            if method == "parameters":
                continue
            own = {p.get("name") for p in operation.get("parameters", []) if p.get("in") == "path"}
            missing += [f"{method.upper()} {path}: {n}" for n in names if n not in shared | own]
    return missing


def _with_path_parameters(spec: dict[str, Any]) -> dict[str, Any]:
    """The merged spec plus the path parameters it leaves undeclared (typed as its own UID schema)."""
    patched = copy.deepcopy(spec)
    for path, item in patched["paths"].items():
        item["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"$ref": "#/components/schemas/UID"}}
            for name in re.findall(r"{([^}]+)}", path)
        ]
    return patched


RAW_SPEC: dict[str, Any] = json.loads(SPEC.read_text("utf-8"))
schema = schemathesis.openapi.from_dict(_with_path_parameters(RAW_SPEC), config=CONFIG)
schema.app = APP


def _pick(value: Any, choices: list[str]) -> str:
    digest = hashlib.blake2b(repr(value).encode("utf-8"), digest_size=4).digest()
    return choices[int.from_bytes(digest, "big") % len(choices)]


def _check(name: str) -> Any:
    return next(c for c in CHECKS.get_all() if c.__name__ == name)


def _validify(case: Any, state: SimulatorState) -> None:
    """Keep what the generator chose where the API accepts it; map the rest onto valid values."""
    tenant = state.tenant_uids()[0]
    groups = [g["customerGroupUid"] for g in state.groups(tenant)]
    customers = state.customer_uids(tenant)
    params = case.path_parameters or {}
    params["tenantUid"] = tenant
    if "customerGroupUid" in params:
        params["customerGroupUid"] = _pick(params["customerGroupUid"], groups)
    case.path_parameters = params
    if case.query:
        query = dict(case.query)
        for name in ("pageNumber", "pageSize"):
            if name in query:
                query[name] = min(max(int(query[name]), 1), 1_000_000)
        if "sortDirection" in query and query["sortDirection"] not in ("ASC", "DESC"):
            query["sortDirection"] = _pick(query["sortDirection"], ["ASC", "DESC"])
        if "sortBy" in query:
            query["sortBy"] = _pick(query["sortBy"], MEMBER_SORT if "customers" in case.operation.path else GROUP_SORT)
        case.query = query
    operation = case.operation.definition.raw["operationId"]
    # The spec leaves every request body optional (no 'required: true'); the API needs a JSON object.
    defaults: dict[str, dict[str, Any]] = {
        "post-customer-groups": {"name": "generated"},
        "put-customer-groups": {},
        "put-customer-groups-customers": {},
    }
    body = case.body if isinstance(case.body, dict) or operation not in defaults else defaults[operation]
    if operation == "post-customer-groups" and isinstance(body, dict) and "customerGroupUid" in body:
        cleaned = "".join(ch for ch in str(body["customerGroupUid"]) if ch.isascii() and (ch.isalnum() or ch in "-_"))
        body = {**body, "customerGroupUid": f"new-{cleaned[:40]}"}
    if operation == "put-customer-groups-customers" and isinstance(body, dict):
        adds = sorted({_pick(u, customers) for u in body.get("addCustomerUids", [])})
        removes = sorted({_pick(u, customers) for u in body.get("removeCustomerUids", [])} - set(adds))
        body = {k: v for k, v in (("addCustomerUids", adds), ("removeCustomerUids", removes)) if k in body}
    case.body = body


def _api_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Undocumented statuses must still be the API's errors: 400/401/404/409 with {"message": str}."""
    if response.status_code < 300:
        return None
    assert response.status_code in API_ERRORS, f"unexpected status {response.status_code}"
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"], body
    operation = case.operation.definition.raw["operationId"]
    counts = UNDOCUMENTED.setdefault(operation, {})
    counts[response.status_code] = counts.get(response.status_code, 0) + 1
    return None


def _valid_requests(case: Any) -> None:
    _validify(case, APP.fresh())
    case.call_and_validate(base_url=BASE_URL, headers=HEADERS)


def _any_requests(case: Any) -> None:
    state = APP.fresh()
    if hashlib.blake2b(repr(case.path_parameters).encode(), digest_size=1).digest()[0] % 2:
        case.path_parameters = {**(case.path_parameters or {}), "tenantUid": state.tenant_uids()[0]}
    response = case.call(base_url=BASE_URL, headers=HEADERS)
    checks = [_check(n) for n in ("not_a_server_error", "content_type_conformance", "response_schema_conformance")]
    case.validate_response(response, checks=checks)
    _api_error_shape(None, response, case)


@pytest.mark.reliability(
    area="contract",
    injected="the merged spec as shipped",
    expected="every path template variable is a declared path parameter",
)
def test_the_merged_spec_declares_its_path_parameters(scenario: ScenarioRecord) -> None:
    missing = _undeclared_path_parameters(RAW_SPEC)
    scenario.note(f"{len(missing)} undeclared: {', '.join(missing)}")
    assert missing == []  # regression test for commit 785c612


@pytest.mark.reliability(
    area="contract",
    injected="GET /v2/tenants/t%0A/customer-groups (a newline in the tenant uid)",
    expected="the API's JSON error body, like every other refused path",
)
def test_a_newline_in_a_path_uid_gets_the_api_json_error(scenario: ScenarioRecord) -> None:
    import asyncio

    import httpx

    APP.fresh()

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://sim") as client:
            return await client.get("/v2/tenants/t%0A/customer-groups", headers=HEADERS)

    response = asyncio.run(get())
    scenario.note(f"HTTP {response.status_code} {response.headers.get('content-type')}: {response.text[:40]!r}")
    # Regression test for commit 75501dc (Schemathesis found Starlette's plain-text 404 here).
    assert response.headers.get("content-type") == "application/json"
    assert response.status_code == 400
    assert response.json() == {"message": "tenantUid 't\\n' is not a valid UID (letters, digits, - and _)"}


_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": list(HealthCheck),
    "derandomize": True,
    "database": None,
}


@pytest.mark.reliability(
    area="contract",
    injected=f"Schemathesis: {FAST_EXAMPLES} valid requests per operation, all 7 operations",
    expected="documented status, content type, headers and body schema for every answer",
)
@schema.parametrize()
@settings(max_examples=FAST_EXAMPLES, **_SETTINGS)
def test_valid_requests_get_documented_answers(case: Any, scenario: ScenarioRecord) -> None:
    _valid_requests(case)


@pytest.mark.reliability(
    area="contract",
    injected=f"Schemathesis: {FAST_EXAMPLES} spec-valid requests per operation as generated (any uids, paging, bodies)",
    expected="no 5xx; documented bodies match their schema; other answers are the API's JSON 400/401/404/409",
)
@schema.parametrize()
@settings(max_examples=FAST_EXAMPLES, **_SETTINGS)
def test_any_request_gets_a_conforming_or_api_error_answer(case: Any, scenario: ScenarioRecord) -> None:
    _any_requests(case)
    operation = case.operation.definition.raw["operationId"]
    scenario.notes[:] = [f"undocumented statuses so far: {UNDOCUMENTED.get(operation, {})}"]


@pytest.mark.slow
@pytest.mark.reliability(
    area="contract",
    injected=f"Schemathesis long run: {LONG_EXAMPLES} valid requests per operation (FLOWRETAIL_CONTRACT_EXAMPLES)",
    expected="documented status, content type, headers and body schema for every answer",
)
@schema.parametrize()
@settings(max_examples=LONG_EXAMPLES, **{**_SETTINGS, "derandomize": False})
def test_valid_requests_get_documented_answers_long(case: Any, scenario: ScenarioRecord) -> None:
    _valid_requests(case)


@pytest.mark.slow
@pytest.mark.reliability(
    area="contract",
    injected=f"Schemathesis long run: {LONG_EXAMPLES} spec-valid requests per operation as generated",
    expected="no 5xx; documented bodies match their schema; other answers are the API's JSON 400/401/404/409",
)
@schema.parametrize()
@settings(max_examples=LONG_EXAMPLES, **{**_SETTINGS, "derandomize": False})
def test_any_request_gets_a_conforming_or_api_error_answer_long(case: Any, scenario: ScenarioRecord) -> None:
    _any_requests(case)
    operation = case.operation.definition.raw["operationId"]
    scenario.notes[:] = [f"undocumented statuses so far: {UNDOCUMENTED.get(operation, {})}"]
