"""Validation of API responses against the merged OpenAPI spec.

OpenAPI 3.0 schemas are close to JSON Schema draft 4; the two differences that matter here are
``nullable`` and ``#/components/schemas`` references, translated once when a validator is built.
Validation runs in Rust (jsonschema-rs), so checking every customer of a large tenant is cheap.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import jsonschema_rs

from pipelines.flowretail.deviations import Deviation, tolerable
from pipelines.flowretail.errors import SpecViolationError
from pipelines.flowretail.spec import load_spec, operations

_REF_PREFIX = "#/components/schemas/"


def _to_json_schema(node: Any) -> Any:
    """Translate one OpenAPI 3.0 schema node into draft-4 JSON Schema."""
    if isinstance(node, list):
        return [_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _to_json_schema(value) for key, value in node.items() if key not in ("nullable", "deprecated")}
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
        out = {"$ref": "#/definitions/" + ref[len(_REF_PREFIX) :]}
    if node.get("nullable") is True:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _resolve_response_schema(spec: dict[str, Any], response: dict[str, Any]) -> dict[str, Any] | None:
    ref = response.get("$ref")
    if ref:
        response = spec["components"]["responses"][ref.rsplit("/", 1)[1]]
    content = response.get("content", {}).get("application/json")
    if content is None:
        return None
    schema: dict[str, Any] = copy.deepcopy(content["schema"])
    return schema


def response_json_schema(operation_id: str) -> tuple[int, dict[str, Any] | None]:
    """(success status, JSON Schema of its body or None when the body is empty) for an operation."""
    spec = load_spec()
    _method, _path, op = operations(spec)[operation_id]
    status, response = next((int(code), body) for code, body in op["responses"].items() if code.startswith("2"))
    schema = _resolve_response_schema(spec, response)
    if schema is None:
        return status, None
    definitions = {name: _to_json_schema(body) for name, body in spec["components"]["schemas"].items()}
    return status, {**_to_json_schema(schema), "definitions": definitions}


def request_json_schema(operation_id: str) -> dict[str, Any] | None:
    """JSON Schema of an operation's request body, for the simulator's input validation."""
    spec = load_spec()
    _method, _path, op = operations(spec)[operation_id]
    body = op.get("requestBody")
    if body is None:
        return None
    ref = body.get("$ref")
    if ref:
        body = spec["components"]["requestBodies"][ref.rsplit("/", 1)[1]]
    schema = body["content"]["application/json"]["schema"]
    definitions = {name: _to_json_schema(b) for name, b in spec["components"]["schemas"].items()}
    return {**_to_json_schema(schema), "definitions": definitions}


def _field_path(path: list[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(body)"


class ResponseValidator:
    """Checks decoded response bodies of one operation against its spec schema."""

    def __init__(self, operation_id: str) -> None:
        self.operation_id = operation_id
        self.success_status, schema = response_json_schema(operation_id)
        self._validator = jsonschema_rs.Draft4Validator(schema, validate_formats=True) if schema is not None else None
        items = (schema or {}).get("properties", {}).get("items", {})
        self.is_list = isinstance(items, dict) and items.get("type") == "array"

    def validate(self, body: Any, page: int | None = None) -> None:
        """Raise SpecViolationError naming the first offending field."""
        if self._validator is None:
            return
        for error in self._validator.iter_errors(body):
            raise self._violation(error, page)

    def check(self, body: Any, page: int | None = None) -> list[Deviation]:
        """Like ``validate``, but a list item's data field that breaks the spec is returned, not raised.

        The whole body is checked first; only a body that fails is walked error by error. Paging,
        the list's shape and item keys stay strict (see ``deviations``).
        """
        if self._validator is None or self._validator.is_valid(body):
            return []
        found: list[Deviation] = []
        for error in self._validator.iter_errors(body):
            kind = error.kind
            required = str(kind.property) if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required) else None
            deviation = None
            if self.is_list:
                deviation = tolerable(list(error.instance_path), type(kind).__name__, required, error.instance)
            if deviation is None:
                raise self._violation(error, page)
            found.append(deviation)
        return found

    def _violation(self, error: jsonschema_rs.ValidationError, page: int | None) -> SpecViolationError:
        path = list(error.instance_path)
        if isinstance(error.kind, jsonschema_rs.ValidationErrorKind.Required):
            path.append(str(error.kind.property))
        return SpecViolationError(self.operation_id, _field_path(path), error.message, page)


@cache
def validator_for(operation_id: str) -> ResponseValidator:
    return ResponseValidator(operation_id)
