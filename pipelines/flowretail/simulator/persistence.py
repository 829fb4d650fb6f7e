"""Keep a simulator's state across processes, so a second demo run sees what the first one pushed.

Only what cannot be regenerated is saved: the groups with their members, customers added at run
time and changed customer fields. Generated customers come back from the saved config and seed.
Faults, scripted outcomes, the request log and the token are deliberately not saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from sortedcontainers import SortedList

from pipelines.flowretail.simulator.config import SimulatorConfig
from pipelines.flowretail.simulator.state import Group, SimulatorState, Tenant, _build_tenant

logger = logging.getLogger(__name__)

SNAPSHOT_FILE = "state.json"
_FORMAT = 1


def snapshot(state: SimulatorState) -> dict[str, Any]:
    """A JSON-able picture of everything in ``state`` that generation cannot reproduce."""
    with state.lock:
        return {
            "format": _FORMAT,
            "config": dataclasses.asdict(state.config),
            "tenants": {uid: _tenant_snapshot(tenant) for uid, tenant in state.tenants.items()},
        }


def _tenant_snapshot(tenant: Tenant) -> dict[str, Any]:
    return {
        "groups": [
            {
                "customerGroupUid": g.uid,
                "name": g.name,
                "createdAt": g.created_at,
                "createdBy": g.created_by,
                "lastModifiedAt": g.modified_at,
                "lastModifiedBy": g.modified_by,
                "members": list(g.members),
            }
            for g in tenant.groups.values()
        ],
        "added": sorted(tenant.added.items(), key=lambda item: item[1]),
        "overrides": {str(index): fields for index, fields in tenant.overrides.items()},
        "scanCustomers": tenant.scan_customers,
    }


def restore(data: dict[str, Any]) -> SimulatorState:
    """Rebuild a state from ``snapshot`` output."""
    if data.get("format") != _FORMAT:
        raise ValueError(f"unsupported simulator snapshot format {data.get('format')!r}")
    config = SimulatorConfig(**data["config"])
    tenants: dict[str, Tenant] = {}
    for position, uid in enumerate(config.resolved_tenant_uids()):
        saved = data["tenants"][uid]
        tenant = _build_tenant(config, position, uid, with_groups=False)
        for customer_uid, index in saved["added"]:
            if index != len(tenant.uids):
                raise ValueError(f"snapshot of tenant {uid}: added customers are not contiguous")
            tenant.uids.append(customer_uid)
            tenant.groups_of.append(())
            tenant.added[customer_uid] = index
        tenant.overrides = {int(index): fields for index, fields in saved["overrides"].items()}
        tenant.scan_customers = int(saved.get("scanCustomers", 0))
        for item in saved["groups"]:
            group = Group(
                uid=item["customerGroupUid"],
                name=item["name"],
                created_at=item["createdAt"],
                created_by=item["createdBy"],
                modified_at=item["lastModifiedAt"],
                modified_by=item["lastModifiedBy"],
                members=SortedList(item["members"]),
                version=tenant.bump(),
            )
            for member in group.members:
                index = tenant.index_of(member)
                if index is None:
                    raise ValueError(f"snapshot of tenant {uid}: member {member!r} is not a customer")
                tenant.link(index, group.uid)
            tenant.groups[group.uid] = group
        tenants[uid] = tenant
    return SimulatorState(config, None, tenants)


def save(state: SimulatorState, directory: Path) -> Path:
    """Write the snapshot atomically (temp file + rename), so a crash never leaves half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / SNAPSHOT_FILE
    temporary = target.with_suffix(".tmp")
    temporary.write_bytes(orjson.dumps(snapshot(state)))
    os.replace(temporary, target)
    return target


def load(directory: Path) -> SimulatorState | None:
    """The saved state, or None when there is none or it cannot be read (then it is rebuilt)."""
    target = directory / SNAPSHOT_FILE
    if not target.exists():
        return None
    try:
        return restore(orjson.loads(target.read_bytes()))
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring unreadable simulator snapshot %s: %s", target, exc)
        return None


@contextlib.contextmanager
def persisted_state(directory: Path, factory: Callable[[], SimulatorState]) -> Iterator[SimulatorState]:
    """The saved state if any (else ``factory()``), saved back when the block ends."""
    state = load(directory)
    if state is None:
        state = factory()
    try:
        yield state
    finally:
        save(state, directory)
