"""The project's merged copy of the Flow Retail CustomerGroup OpenAPI spec.

The upstream documentation ships one OpenAPI 3.0 fragment per operation inside a markdown file.
The client, the simulator and the tests all validate against one merged document, committed as
``openapi.json`` next to this module so that the product never depends on the docs at run time.
Regenerate it with ``python -m pipelines.flowretail.spec ../shared/flowretail-api/customer-group-api.md``.
"""

from __future__ import annotations

import json
import re
import sys
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

_JSON_BLOCK = re.compile(r"```json\s*\n(.*?)\n```", re.DOTALL)
_PATH_TEMPLATE = re.compile(r"{([^}/]+)}")
_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})
_COMPONENT_SECTIONS = ("schemas", "responses", "parameters", "requestBodies", "securitySchemes")
SPEC_FILE = Path(__file__).with_name("openapi.json")

# The operationIds of openapi.json that the code names, for the client, the simulator and the tests.
LIST_GROUPS = "get-customer-groups"
CREATE_GROUP = "post-customer-groups"
GET_GROUP = "get-customer-groups-by-uid"
RENAME_GROUP = "put-customer-groups"
DELETE_GROUP = "delete-customer-groups"
LIST_MEMBERS = "get-customer-groups-customers"
UPDATE_MEMBERS = "put-customer-groups-customers"


class SpecMergeError(ValueError):
    """Two fragments disagree about the same component or operation."""


def merge_spec_fragments(fragments: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge OpenAPI fragments into one document; identical duplicates are fine, conflicts are not."""
    if not fragments:
        raise SpecMergeError("no OpenAPI fragments found")
    first = fragments[0]
    merged: dict[str, Any] = {
        "openapi": first["openapi"],
        "info": first["info"],
        "servers": first.get("servers", []),
        "security": first.get("security", []),
        "tags": first.get("tags", []),
        "paths": {},
        "components": {section: {} for section in _COMPONENT_SECTIONS},
    }
    for fragment in fragments:
        for section in _COMPONENT_SECTIONS:
            for name, body in fragment.get("components", {}).get(section, {}).items():
                existing = merged["components"][section].get(name)
                if existing is not None and existing != body:
                    raise SpecMergeError(f"components.{section}.{name} differs between fragments")
                merged["components"][section][name] = body
        for path, operations in fragment.get("paths", {}).items():
            target = merged["paths"].setdefault(path, {})
            for method, operation in operations.items():
                if method in target and target[method] != operation:
                    raise SpecMergeError(f"{method.upper()} {path} differs between fragments")
                target[method] = operation
    merged["components"] = {k: dict(sorted(v.items())) for k, v in merged["components"].items() if v}
    merged["paths"] = {path: _with_path_parameters(path, ops) for path, ops in sorted(merged["paths"].items())}
    return merged


def _with_path_parameters(path: str, operations: dict[str, Any]) -> dict[str, Any]:
    """Declare the path's templated segments, which the upstream fragments leave undeclared.

    OpenAPI requires every ``{name}`` in a path to be a declared ``in: path`` parameter; the docs
    omit them, so the merge adds each as a required UID (the pattern the docs give those uids).
    """
    names = _PATH_TEMPLATE.findall(path)
    if not names or "parameters" in operations:
        return operations
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"$ref": "#/components/schemas/UID"}} for name in names
    ]
    return {"parameters": parameters, **operations}


def merge_spec_markdown(markdown: str) -> dict[str, Any]:
    """Extract every ```json fragment of the API docs and merge them."""
    return merge_spec_fragments([json.loads(block) for block in _JSON_BLOCK.findall(markdown)])


@cache
def load_spec() -> dict[str, Any]:
    """The committed merged spec."""
    text = resources.files("pipelines.flowretail").joinpath("openapi.json").read_text("utf-8")
    spec: dict[str, Any] = json.loads(text)
    return spec


def operations(spec: dict[str, Any] | None = None) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """operationId -> (method, path, operation object)."""
    spec = spec or load_spec()
    return {
        op["operationId"]: (method.upper(), path, op)
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if method in _HTTP_METHODS
    }


def render_spec(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m pipelines.flowretail.spec PATH/customer-group-api.md", file=sys.stderr)
        return 2
    merged = merge_spec_markdown(Path(args[0]).read_text("utf-8"))
    SPEC_FILE.write_text(render_spec(merged), "utf-8")
    print(f"wrote {SPEC_FILE} ({len(operations(merged))} operations)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
