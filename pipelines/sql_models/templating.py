"""Rendering a model's Jinja with dbt's ``ref``, ``source`` and ``config`` functions.

The same template is rendered twice in a model's life: once at load time with recording functions
(to learn its dependencies and configuration) and once to produce the SQL that is run. Both use one
environment so that a model renders identically in both passes. ``StrictUndefined`` makes any name
dbt would provide but this runner does not (``var``, ``this``, ``is_incremental``...) an error
naming the file instead of silently rendering as an empty string.

Besides dbt's functions the runner provides ``segments()``: the segment models (all models in
``segments/``) with their push configuration, so a model such as ``segment_membership`` can union
every segment without listing them. Under dbt the same template works with a project macro named
``segments`` that returns the equivalent list built from ``graph.nodes``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from pipelines.sql_models.errors import ModelTemplateError


@dataclass(frozen=True)
class SegmentDeclaration:
    """What ``segments()`` yields to a template: one segment model and its push configuration.

    Attribute names follow the ``config(...)`` keys, as a dbt macro reading ``node.config`` would.
    """

    name: str
    push_to_group_uid: str | None
    push_group_name: str | None
    push_mode: str | None
    max_remove_fraction: float | None
    adopt_existing: str | None


@dataclass
class TemplateCalls:
    """What one rendering of a model called: refs and sources in first-call order, merged config."""

    refs: list[str] = field(default_factory=list)
    sources: list[tuple[str, str]] = field(default_factory=list)
    config: dict[str, object] = field(default_factory=dict)
    uses_segments: bool = False


class _CallError(Exception):
    """A dbt function was called with arguments the runner does not support."""


RefResolver = Callable[[str], str]
SourceResolver = Callable[[str, str], str]

_ENVIRONMENT = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)


def render_template(
    raw_sql: str,
    *,
    path: Path,
    label: str,
    resolve_ref: RefResolver,
    resolve_source: SourceResolver,
    segments: Sequence[SegmentDeclaration] = (),
) -> tuple[str, TemplateCalls]:
    """Render ``raw_sql``; return the SQL text and a record of the calls it made."""
    calls = TemplateCalls()

    def ref(*args: object, **kwargs: object) -> str:
        if kwargs or len(args) != 1 or not isinstance(args[0], str):
            raise _CallError(f"ref() takes exactly one model name, got {_call_text(args, kwargs)}")
        if args[0] not in calls.refs:
            calls.refs.append(args[0])
        return resolve_ref(args[0])

    def source(*args: object, **kwargs: object) -> str:
        if kwargs or len(args) != 2 or not all(isinstance(arg, str) for arg in args):
            raise _CallError(f"source() takes a source name and a table name, got {_call_text(args, kwargs)}")
        source_name, table_name = str(args[0]), str(args[1])
        if (source_name, table_name) not in calls.sources:
            calls.sources.append((source_name, table_name))
        return resolve_source(source_name, table_name)

    def config(*args: object, **kwargs: object) -> str:
        if args:
            raise _CallError(f"config() takes keyword arguments only, got {_call_text(args, {})}")
        calls.config.update(kwargs)
        return ""

    def segment_list() -> list[SegmentDeclaration]:
        calls.uses_segments = True
        return list(segments)

    try:
        template = _ENVIRONMENT.from_string(raw_sql)
        rendered = template.render(ref=ref, source=source, config=config, segments=segment_list)
    except jinja2.TemplateSyntaxError as error:
        raise ModelTemplateError(f"{label}:{error.lineno}: Jinja syntax error: {error.message}", (path,)) from error
    except (jinja2.TemplateError, _CallError) as error:
        raise ModelTemplateError(f"{label}: {error}", (path,)) from error
    return rendered, calls


def _call_text(args: tuple[object, ...], kwargs: dict[str, object]) -> str:
    parts = [repr(arg) for arg in args] + [f"{key}={value!r}" for key, value in kwargs.items()]
    return f"({', '.join(parts)})"
