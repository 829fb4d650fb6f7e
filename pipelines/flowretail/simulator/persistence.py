"""Keep the demo simulator's data between runs, so a second `make run` sees what the first one pushed.

The file is written by this process for this process (under ``.flowretail/``), never read from
elsewhere; a file that does not load (another version of the code) is replaced by fresh data.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.flowretail.simulator.state import SimulatorState

logger = logging.getLogger(__name__)

_FORMAT = 1


def save_state(state: SimulatorState, path: Path) -> None:
    """Write tenants, config and token atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with state.lock:
        for tenant in state.tenants.values():
            tenant.sort_cache.clear()
        payload = pickle.dumps((_FORMAT, state.config, state.tenants, state.token), protocol=pickle.HIGHEST_PROTOCOL)
    temp = path.with_suffix(".tmp")
    temp.write_bytes(payload)
    os.replace(temp, path)


def load_state(path: Path) -> SimulatorState | None:
    """The saved state, or None when there is none or it cannot be read by this version."""
    if not path.exists():
        return None
    try:
        version, config, tenants, token = pickle.loads(path.read_bytes())
    except Exception as exc:  # any unreadable file means: start fresh
        logger.warning("ignoring unreadable simulator state %s: %s", path, type(exc).__name__)
        return None
    if version != _FORMAT:
        return None
    return SimulatorState(config, tenants=tenants, token=token)


@contextmanager
def persisted_state(directory: Path, factory: Callable[[], SimulatorState]) -> Iterator[SimulatorState]:
    """Load the saved state (or build one with ``factory``) and save it again on exit."""
    path = directory / "state.pickle"
    state = load_state(path) or factory()
    try:
        yield state
    finally:
        save_state(state, path)
