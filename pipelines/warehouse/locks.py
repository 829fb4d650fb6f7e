"""Every PostgreSQL advisory lock the product takes, declared once.

A lock excludes only the processes that compute the same key, so these values are part of the
warehouse's contract: an older release running next to this one (a deployment rolling over, a
CLI run beside the daemon) must still collide with it. Each key is a four-letter tag read as a
32-bit big-endian number ("FLRD" is 0x464C5244); ``tests/warehouse/test_locks.py`` pins the numbers.

Single-key locks (``pg_advisory_lock(key)``):

- :data:`MIGRATE_LOCK` ("FLRD"): the warehouse schema. ``flowretail migrate`` holds it
  exclusively while it applies DDL or promotes columns; every tenant load holds it shared for its
  whole run, so loads run side by side and a migrate waits for them.
- :data:`PUSH_TABLES_LOCK` ("FLRP"): creating the push tables outside a migrate (tests, benchmarks).
- :data:`MODEL_REGISTRY_LOCK` ("FLMR"): creating the model runner's registry table of built relations.

Two-key locks (``pg_advisory_lock(namespace, advisory_lock_key(...))``), one per thing:

- :data:`TENANT_LOAD_NAMESPACE` ("FLRW"), :func:`tenant_load_lock`: one tenant's load; a second
  load of the same tenant refuses.
- :data:`PUSH_GROUP_NAMESPACE` ("FLPG"), :func:`push_group_lock`: writes into one customer group of
  a tenant; pushes and retirements of one group never interleave their calls.
- :data:`MODEL_NAMESPACE` ("FLRM"), :func:`model_lock`: one SQL model's relation; tenant slice
  writers share it, a whole rebuild or a view replacement holds it alone.

A plain library: no Dagster, so ``pipelines/sql_models`` may import it.
"""

from __future__ import annotations

import zlib


def _tag(letters: str) -> int:
    """A four-letter ASCII tag as the 32-bit number PostgreSQL sees (positive, below 2**31 for "FL..")."""
    raw = letters.encode("ascii")
    if len(raw) != 4:
        raise ValueError(f"an advisory-lock tag has four letters, not {letters!r}")
    return int.from_bytes(raw, "big")


MIGRATE_LOCK = _tag("FLRD")
PUSH_TABLES_LOCK = _tag("FLRP")
MODEL_REGISTRY_LOCK = _tag("FLMR")

TENANT_LOAD_NAMESPACE = _tag("FLRW")
PUSH_GROUP_NAMESPACE = _tag("FLPG")
MODEL_NAMESPACE = _tag("FLRM")


def advisory_lock_key(*parts: str) -> int:
    """32-bit key of a PostgreSQL advisory lock on a tenant, or on one thing of a tenant.

    crc32 of the parts joined by a unit separator: stable across processes and versions, so every
    loader and pusher of the same tenant or group computes the same key.
    """
    return zlib.crc32("\x1f".join(parts).encode("utf-8")) - 2**31


def tenant_load_lock(tenant_uid: str) -> tuple[int, int]:
    """The two-key lock of one tenant's load."""
    return (TENANT_LOAD_NAMESPACE, advisory_lock_key(tenant_uid))


def push_group_lock(tenant_uid: str, group_uid: str) -> tuple[int, int]:
    """The two-key lock of the writes into one customer group."""
    return (PUSH_GROUP_NAMESPACE, advisory_lock_key(tenant_uid, group_uid))


def model_lock(target_schema: str, model_name: str) -> tuple[int, int]:
    """The two-key lock of one SQL model's relation in the target schema."""
    return (MODEL_NAMESPACE, advisory_lock_key(target_schema, model_name))
