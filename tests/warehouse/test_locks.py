"""The advisory-lock keys are a contract with every release that shares the warehouse."""

from __future__ import annotations

import pytest

from pipelines.warehouse import locks


def test_the_lock_numbers_are_those_earlier_releases_use() -> None:
    """Changing one would let an old and a new process run the same work side by side."""
    assert locks.MIGRATE_LOCK == 0x464C5244
    assert locks.PUSH_TABLES_LOCK == 0x464C5250
    assert locks.MODEL_REGISTRY_LOCK == 0x464C4D52
    assert locks.TENANT_LOAD_NAMESPACE == 0x464C5257
    assert locks.PUSH_GROUP_NAMESPACE == 0x464C5047
    assert locks.MODEL_NAMESPACE == 0x464C524D


def test_the_two_key_locks_join_namespace_and_crc32() -> None:
    assert locks.tenant_load_lock("tenant-1") == (0x464C5257, 2079263231)
    assert locks.push_group_lock("tenant-1", "seg-news") == (0x464C5047, 581686880)
    assert locks.model_lock("analytics", "dim_customers") == (
        0x464C524D,
        locks.advisory_lock_key("analytics", "dim_customers"),
    )


def test_a_tag_has_four_letters() -> None:
    with pytest.raises(ValueError, match="four letters"):
        locks._tag("FLR")
