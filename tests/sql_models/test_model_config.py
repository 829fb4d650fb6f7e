"""``config(...)`` validation: defaults, and the exact message for every bad key or value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.sql_models import ModelConfig, ModelConfigError, SegmentPushConfig, load_project

ProjectWriter = Callable[[dict[str, str]], Path]

SEGMENT_SELECT = "select 't' as tenant_uid, 'c' as customer_uid"
PUSH = "push_to_group_uid='segment-vip', push_group_name='VIP (warehouse)'"


def _load_config(write_project: ProjectWriter, relative: str, config: str) -> ModelConfig:
    root = write_project({relative: f"{{{{ config({config}) }}}}\n{SEGMENT_SELECT}"})
    return load_project(root).models[Path(relative).stem].config


def _config_error(write_project: ProjectWriter, relative: str, config: str) -> str:
    root = write_project({relative: f"{{{{ config({config}) }}}}\n{SEGMENT_SELECT}"})
    with pytest.raises(ModelConfigError) as raised:
        load_project(root)
    assert raised.value.paths == (root / relative,)
    return str(raised.value)


def test_defaults(write_project: ProjectWriter) -> None:
    assert _load_config(write_project, "staging/stg.sql", "") == ModelConfig(
        materialized="view", description=None, push=None
    )
    assert _load_config(write_project, "segments/vip.sql", PUSH) == ModelConfig(
        push=SegmentPushConfig(
            group_uid="segment-vip",
            group_name="VIP (warehouse)",
            mode="mirror",
            max_remove_fraction=0.2,
            adopt_existing="refuse",
            rename_adopted=False,
            max_add_fraction=1.0,
        )
    )


def test_every_key_set(write_project: ProjectWriter) -> None:
    config = _load_config(
        write_project,
        "segments/vip.sql",
        f"materialized='table', description='VIPs', {PUSH}, push_mode='add_only', max_remove_fraction=1, "
        "adopt_existing='mirror', rename_adopted=true, max_add_fraction=2.5",
    )

    assert config == ModelConfig(
        materialized="table",
        description="VIPs",
        push=SegmentPushConfig("segment-vip", "VIP (warehouse)", "add_only", 1.0, "mirror", True, 2.5),
    )


def test_later_config_calls_override_earlier_ones(write_project: ProjectWriter) -> None:
    root = write_project(
        {
            "marts/m.sql": "{{ config(materialized='table') }}{{ config(description='d') }}"
            "{{ config(materialized='view') }}select 1"
        }
    )

    assert load_project(root).models["m"].config == ModelConfig(materialized="view", description="d")


@pytest.mark.parametrize(
    ("relative", "config", "message"),
    [
        (
            "marts/m.sql",
            "materialized='table', tags=['daily']",
            "models/marts/m.sql: unknown config key 'tags' (allowed: adopt_existing, description, "
            "incremental_strategy, materialized, max_add_fraction, max_remove_fraction, push_group_name, push_mode, "
            "push_to_group_uid, rename_adopted, tenant_scope, unique_key)",
        ),
        (
            "marts/m.sql",
            "materialized='ephemeral'",
            "models/marts/m.sql: config materialized='ephemeral' is invalid: expected one of 'view', 'table', "
            "'incremental'",
        ),
        (
            "marts/m.sql",
            "materialized=None",
            "models/marts/m.sql: config materialized=None is invalid: expected one of 'view', 'table', 'incremental'",
        ),
        (
            "marts/m.sql",
            "description=42",
            "models/marts/m.sql: config description=42 is invalid: must be a string",
        ),
        (
            "marts/m.sql",
            PUSH,
            "models/marts/m.sql: config push_to_group_uid is only allowed on models in segments/",
        ),
        (
            "staging/stg.sql",
            "push_mode='mirror'",
            "models/staging/stg.sql: config push_mode is only allowed on models in segments/",
        ),
        (
            "segments/vip.sql",
            "push_to_group_uid='segment vip', push_group_name='VIP'",
            "models/segments/vip.sql: config push_to_group_uid='segment vip' is invalid: "
            "must fully match ^[A-Za-z0-9_-]{1,256}$",
        ),
        (
            "segments/vip.sql",
            "push_to_group_uid='vip\\'; drop table x; --', push_group_name='VIP'",
            'models/segments/vip.sql: config push_to_group_uid="vip\'; drop table x; --" is invalid: '
            "must fully match ^[A-Za-z0-9_-]{1,256}$",
        ),
        (
            "segments/vip.sql",
            "push_to_group_uid='', push_group_name='VIP'",
            "models/segments/vip.sql: config push_to_group_uid='' is invalid: must fully match ^[A-Za-z0-9_-]{1,256}$",
        ),
        (
            "segments/vip.sql",
            "push_to_group_uid='vip\\n', push_group_name='VIP'",
            "models/segments/vip.sql: config push_to_group_uid='vip\\n' is invalid: must fully match ^[A-Za-z0-9_-]{1,256}$",
        ),
        (
            "segments/vip.sql",
            "push_to_group_uid=7, push_group_name='VIP'",
            "models/segments/vip.sql: config push_to_group_uid=7 is invalid: must fully match ^[A-Za-z0-9_-]{1,256}$",
        ),
        (
            "segments/vip.sql",
            "push_to_group_uid='segment-vip'",
            "models/segments/vip.sql: config push_group_name is required when push_to_group_uid is set",
        ),
        (
            "segments/vip.sql",
            "push_to_group_uid='segment-vip', push_group_name='  '",
            "models/segments/vip.sql: config push_group_name='  ' is invalid: must be a non-empty string",
        ),
        (
            "segments/vip.sql",
            "push_group_name='VIP'",
            "models/segments/vip.sql: config push_group_name requires push_to_group_uid",
        ),
        (
            "segments/vip.sql",
            f"{PUSH}, push_mode='sync'",
            "models/segments/vip.sql: config push_mode='sync' is invalid: expected one of 'mirror', 'add_only'",
        ),
        (
            "segments/vip.sql",
            f"{PUSH}, max_remove_fraction=1.5",
            "models/segments/vip.sql: config max_remove_fraction=1.5 is invalid: must be a number between 0 and 1",
        ),
        (
            "segments/vip.sql",
            f"{PUSH}, max_remove_fraction=-0.1",
            "models/segments/vip.sql: config max_remove_fraction=-0.1 is invalid: must be a number between 0 and 1",
        ),
        (
            "segments/vip.sql",
            f"{PUSH}, max_remove_fraction='0.2'",
            "models/segments/vip.sql: config max_remove_fraction='0.2' is invalid: must be a number between 0 and 1",
        ),
        (
            "segments/vip.sql",
            f"{PUSH}, max_remove_fraction=true",
            "models/segments/vip.sql: config max_remove_fraction=True is invalid: must be a number between 0 and 1",
        ),
        (
            "segments/vip.sql",
            f"{PUSH}, adopt_existing='replace'",
            "models/segments/vip.sql: config adopt_existing='replace' is invalid: expected one of 'refuse', "
            "'add_only', 'mirror'",
        ),
        (
            "segments/vip.sql",
            f"{PUSH}, rename_adopted='yes'",
            "models/segments/vip.sql: config rename_adopted='yes' is invalid: must be true or false",
        ),
        (
            "segments/vip.sql",
            f"{PUSH}, max_add_fraction=-1",
            "models/segments/vip.sql: config max_add_fraction=-1 is invalid: must be a finite number of at least 0",
        ),
    ],
)
def test_bad_config_names_the_file_key_and_value(
    write_project: ProjectWriter, relative: str, config: str, message: str
) -> None:
    assert _config_error(write_project, relative, config) == message


def test_two_segments_cannot_push_to_the_same_group(write_project: ProjectWriter) -> None:
    body = f"{{{{ config({PUSH}) }}}}\n{SEGMENT_SELECT}"
    root = write_project({"segments/vip.sql": body, "segments/vip_copy.sql": body})

    with pytest.raises(ModelConfigError) as raised:
        load_project(root)

    assert str(raised.value) == (
        "push_to_group_uid 'segment-vip' is used by two segments: models/segments/vip.sql and "
        "models/segments/vip_copy.sql"
    )
