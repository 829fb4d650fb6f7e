"""Keep the demo simulator's data between runs, so a second `make run` sees what the first one pushed.

The state is plain JSON (``state.json``, owner-only 0600): loading it builds data, never code. An
older ``state.pickle`` is ignored and never unpickled, since unpickling a file that anyone could have
planted in the working directory would run their code. A file that does not load (another version
of the code, or hand-edited) is replaced by fresh data.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sortedcontainers import SortedDict, SortedList

from pipelines.flowretail.simulator.config import SimulatorConfig
from pipelines.flowretail.simulator.data import CustomerFactory
from pipelines.flowretail.simulator.state import Group, SimulatorState, Tenant

logger = logging.getLogger(__name__)

_FORMAT = 2
STATE_FILE = "state.json"
LEGACY_FILE = "state.pickle"


def _tenant_json(tenant: Tenant) -> dict[str, Any]:
    return {
        "uid": tenant.uid,
        "index": tenant.index,
        "uids": tenant.uids,
        "groups_of": [list(g) for g in tenant.groups_of],
        "added": tenant.added,
        "overrides": {str(i): fields for i, fields in tenant.overrides.items()},
        "version": tenant.version,
        "customers_version": tenant.customers_version,
        "scan_customers": tenant.scan_customers,
        "groups": [
            {
                "uid": g.uid,
                "name": g.name,
                "created_at": g.created_at,
                "created_by": g.created_by,
                "modified_at": g.modified_at,
                "modified_by": g.modified_by,
                "members": list(g.members),
                "version": g.version,
            }
            for g in tenant.groups.values()
        ],
    }


def _tenant_from_json(body: dict[str, Any], config: SimulatorConfig) -> Tenant:
    factory = CustomerFactory(
        config.seed, int(body["index"]), config.customers, config.hostile_strings, config.spec_deviations
    )
    groups = SortedDict()
    for g in body["groups"]:
        groups[g["uid"]] = Group(
            uid=g["uid"],
            name=g["name"],
            created_at=g["created_at"],
            created_by=g["created_by"],
            modified_at=g["modified_at"],
            modified_by=g["modified_by"],
            members=SortedList(g["members"]),
            version=int(g["version"]),
        )
    return Tenant(
        uid=body["uid"],
        index=int(body["index"]),
        factory=factory,
        uids=[str(u) for u in body["uids"]],
        groups_of=[tuple(g) for g in body["groups_of"]],
        groups=groups,
        added={str(k): int(v) for k, v in body["added"].items()},
        overrides={int(k): dict(v) for k, v in body["overrides"].items()},
        version=int(body["version"]),
        customers_version=int(body["customers_version"]),
        scan_customers=int(body["scan_customers"]),
    )


def save_state(state: SimulatorState, path: Path) -> None:
    """Write config, tenants and token atomically (owner-only temp file, then rename)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with state.lock:
        payload = {
            "format": _FORMAT,
            "config": asdict(state.config),
            "token": state.token,
            "tenants": [_tenant_json(t) for t in state.tenants.values()],
        }
        text = json.dumps(payload, ensure_ascii=False)
    temp = path.with_suffix(".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(temp, 0o600)
    os.replace(temp, path)


def load_state(path: Path) -> SimulatorState | None:
    """The saved state, or None when there is none or it cannot be read by this version."""
    if not path.exists():
        return None
    try:
        payload = json.loads(path.read_text("utf-8"))
        if payload.get("format") != _FORMAT:
            return None
        fields = payload["config"]
        config = SimulatorConfig(**{**fields, "content_codings": tuple(fields["content_codings"])})
        tenants = {t["uid"]: _tenant_from_json(t, config) for t in payload["tenants"]}
        return SimulatorState(config, tenants=tenants, token=str(payload["token"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        logger.warning("ignoring unreadable simulator state %s: %s", path, type(exc).__name__)
        return None


@contextmanager
def persisted_state(directory: Path, factory: Callable[[], SimulatorState]) -> Iterator[SimulatorState]:
    """Load the saved state (or build one with ``factory``) and save it again on exit."""
    legacy = directory / LEGACY_FILE
    if legacy.exists():
        logger.warning("ignoring %s: the simulator state is JSON now and a pickle is never loaded", legacy)
    path = directory / STATE_FILE
    state = load_state(path) or factory()
    try:
        yield state
    finally:
        save_state(state, path)
