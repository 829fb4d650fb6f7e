"""What a model declares in ``{{ config(...) }}``, validated into typed objects.

Validation is hand-written rather than left to a schema library so that every message has a fixed,
tested wording that names the file, the key and the offending value: a config error is read by the
person who edited one model file, usually in a failed run log.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from pipelines.sql_models.errors import ModelConfigError

Materialization = Literal["view", "table", "incremental"]
TenantScope = Literal["tenant", "all"]
PushMode = Literal["mirror", "add_only"]
AdoptionMode = Literal["add_only", "mirror"]

MATERIALIZATIONS: tuple[Materialization, ...] = ("view", "table", "incremental")
TENANT_SCOPES: tuple[TenantScope, ...] = ("tenant", "all")
# The one incremental strategy and key the runner implements: replace a tenant's slice (dbt's
# ``delete+insert`` keyed on the tenant column), so a model keeps building the same way under dbt.
TENANT_COLUMN = "tenant_uid"
INCREMENTAL_STRATEGIES = ("delete+insert",)
UNIQUE_KEYS = (TENANT_COLUMN,)
PUSH_MODES: tuple[PushMode, ...] = ("mirror", "add_only")
ADOPTION_MODES: tuple[AdoptionMode, ...] = ("add_only", "mirror")

# The push-back uses the uid in API paths and the segment_membership model quotes it into SQL text,
# so it is restricted to characters that need no escaping in either place.
GROUP_UID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")

DEFAULT_MAX_REMOVE_FRACTION = 0.2

MODEL_KEYS = ("materialized", "description", "tenant_scope", "incremental_strategy", "unique_key")
PUSH_KEYS = ("push_to_group_uid", "push_group_name", "push_mode", "max_remove_fraction", "adopt_existing")
ALLOWED_KEYS = tuple(sorted(MODEL_KEYS + PUSH_KEYS))


@dataclass(frozen=True)
class SegmentPushConfig:
    """How the push-back mirrors a segment into a customer group of the POS.

    ``mode`` "mirror" adds and removes members, "add_only" never removes. ``max_remove_fraction``
    caps how much of the group one push may remove (a guard against an empty or broken segment
    wiping a live group). ``adopt_existing`` says how a group that already exists in the POS but was
    not created by the warehouse is treated on first push.
    """

    group_uid: str
    group_name: str
    mode: PushMode = "mirror"
    max_remove_fraction: float = DEFAULT_MAX_REMOVE_FRACTION
    adopt_existing: AdoptionMode = "add_only"


@dataclass(frozen=True)
class ModelConfig:
    """A model's validated configuration; ``push`` is set only for segments that are pushed back.

    ``tenant_scope`` "tenant" (the default) means the model's rows for a tenant depend only on that
    tenant's data: a table is then built one tenant slice at a time, from that tenant's load alone.
    "all" declares a model that really spans tenants; it is rebuilt whole, once per tick.
    """

    materialized: Materialization = "view"
    description: str | None = None
    push: SegmentPushConfig | None = None
    tenant_scope: TenantScope = "tenant"

    @property
    def is_table(self) -> bool:
        """Rows are stored (``table`` or ``incremental``), as opposed to a view."""
        return self.materialized != "view"

    @property
    def tenant_sliced(self) -> bool:
        """Built per tenant: one tenant's slice is replaced at a time (dbt: incremental delete+insert)."""
        return self.is_table and self.tenant_scope == "tenant"


def _invalid(label: str, path: Path, key: str, value: object, reason: str) -> ModelConfigError:
    return ModelConfigError(f"{label}: config {key}={value!r} is invalid: {reason}", (path,))


def _choice(
    values: Mapping[str, object], key: str, choices: tuple[str, ...], default: str, label: str, path: Path
) -> str:
    value = values.get(key, default)
    if not isinstance(value, str) or value not in choices:
        expected = ", ".join(repr(choice) for choice in choices)
        raise _invalid(label, path, key, value, f"expected one of {expected}")
    return value


def _max_remove_fraction(values: Mapping[str, object], label: str, path: Path) -> float:
    value = values.get("max_remove_fraction", DEFAULT_MAX_REMOVE_FRACTION)
    # bool is an int subclass; True must not silently mean "remove everything".
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(label, path, "max_remove_fraction", value, "must be a number between 0 and 1")
    fraction = float(value)
    if math.isnan(fraction) or not 0.0 <= fraction <= 1.0:
        raise _invalid(label, path, "max_remove_fraction", value, "must be a number between 0 and 1")
    return fraction


def _push_config(values: Mapping[str, object], label: str, path: Path) -> SegmentPushConfig | None:
    group_uid = values.get("push_to_group_uid")
    if group_uid is None:
        stray = [key for key in PUSH_KEYS if key in values and key != "push_to_group_uid"]
        if stray:
            raise ModelConfigError(f"{label}: config {stray[0]} requires push_to_group_uid", (path,))
        return None
    if not isinstance(group_uid, str) or not GROUP_UID_PATTERN.fullmatch(group_uid):
        raise _invalid(label, path, "push_to_group_uid", group_uid, f"must fully match ^{GROUP_UID_PATTERN.pattern}$")
    if "push_group_name" not in values:
        raise ModelConfigError(f"{label}: config push_group_name is required when push_to_group_uid is set", (path,))
    group_name = values["push_group_name"]
    if not isinstance(group_name, str) or not group_name.strip():
        raise _invalid(label, path, "push_group_name", group_name, "must be a non-empty string")
    return SegmentPushConfig(
        group_uid=group_uid,
        group_name=group_name,
        mode=cast(PushMode, _choice(values, "push_mode", PUSH_MODES, "mirror", label, path)),
        max_remove_fraction=_max_remove_fraction(values, label, path),
        adopt_existing=cast(AdoptionMode, _choice(values, "adopt_existing", ADOPTION_MODES, "add_only", label, path)),
    )


def parse_model_config(values: Mapping[str, object], *, path: Path, label: str, is_segment: bool) -> ModelConfig:
    """Validate the merged keyword arguments of a model's ``config(...)`` calls.

    ``label`` is how the file is named in messages; ``is_segment`` says whether the model lives in
    ``segments/``, the only place push keys are allowed (a push from a staging model would bypass
    the segment contract of exactly ``tenant_uid, customer_uid``).
    """
    for key in values:
        if key not in ALLOWED_KEYS:
            raise ModelConfigError(f"{label}: unknown config key {key!r} (allowed: {', '.join(ALLOWED_KEYS)})", (path,))
    if not is_segment:
        for key in PUSH_KEYS:
            if key in values:
                raise ModelConfigError(f"{label}: config {key} is only allowed on models in segments/", (path,))
    description = values.get("description")
    if description is not None and not isinstance(description, str):
        raise _invalid(label, path, "description", description, "must be a string")
    materialized = cast(Materialization, _choice(values, "materialized", MATERIALIZATIONS, "view", label, path))
    tenant_scope = cast(TenantScope, _choice(values, "tenant_scope", TENANT_SCOPES, "tenant", label, path))
    _choice(values, "incremental_strategy", INCREMENTAL_STRATEGIES, INCREMENTAL_STRATEGIES[0], label, path)
    _choice(values, "unique_key", UNIQUE_KEYS, UNIQUE_KEYS[0], label, path)
    if materialized == "incremental" and tenant_scope == "all":
        raise _invalid(
            label, path, "tenant_scope", tenant_scope, "an incremental model replaces one tenant's slice at a time"
        )
    if is_segment and tenant_scope == "all":
        raise _invalid(label, path, "tenant_scope", tenant_scope, "a segment is pushed per tenant")
    return ModelConfig(
        materialized=materialized,
        description=description,
        push=_push_config(values, label, path),
        tenant_scope=tenant_scope,
    )
