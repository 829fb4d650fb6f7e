"""The embedded defaults: what `make run` and `make ui` start when the environment names no real systems.

- No ``FLOWRETAIL_BASE_URL``: the built-in simulator is served on a loopback port, its state kept
  under ``.flowretail/simulator/`` so a second run sees what the first one pushed.
- No ``DATABASE_URL``: an embedded PostgreSQL with its data under ``.flowretail/pgdata``.
- No ``DAGSTER_HOME``: ``.flowretail/dagster_home``, so runs show up in the UI afterwards.
Everything is exported as environment variables, which is how the Dagster resources read it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.settings import Settings, load_settings
from pipelines.warehouse.embedded import start_embedded_postgres
from pipelines.warehouse.postgres import mask_url

if TYPE_CHECKING:
    import dagster as dg

logger = logging.getLogger(__name__)

STATE_DIR = Path(".flowretail")

# The demo instance's settings (a dagster.yaml someone wrote by hand is never replaced):
# no usage statistics upload (no network here), no first-visit dialog over the asset graph, and
# step processes that log warnings only, so `make run` prints its summary rather than engine chatter.
_DAGSTER_YAML = (
    "telemetry:\n  enabled: false\nnux:\n  enabled: false\npython_logs:\n  python_log_level: WARNING\n"
)
_EARLIER_DAGSTER_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


@dataclass(frozen=True)
class Environment:
    """Where this process's runs go; ``masked_database_url`` is safe to print."""

    settings: Settings
    base_url: str
    database_url: str
    dagster_home: Path
    simulator: bool
    embedded_postgres: bool

    @property
    def masked_database_url(self) -> str:
        return mask_url(self.database_url)


def prepare_dagster_home(state_dir: Path = STATE_DIR) -> Path:
    """``DAGSTER_HOME`` (default ``state_dir/dagster_home``) with the demo's dagster.yaml, exported."""
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or state_dir.resolve() / "dagster_home").resolve()
    dagster_home.mkdir(parents=True, exist_ok=True)
    dagster_yaml = dagster_home / "dagster.yaml"
    current = dagster_yaml.read_text("utf-8") if dagster_yaml.exists() else ""
    if current.strip() in ("", _EARLIER_DAGSTER_YAML.strip()):
        dagster_yaml.write_text(_DAGSTER_YAML, "utf-8")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dagster_home


@contextmanager
def embedded_environment(state_dir: Path = STATE_DIR, *, start_simulator: bool = True) -> Iterator[Environment]:
    """Start the simulator and/or embedded PostgreSQL as needed and export their settings."""
    settings = load_settings()
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        base_url = settings.base_url
        if base_url is None and start_simulator:
            from pipelines.flowretail.simulator import SimulatorConfig, build_state, running_simulator
            from pipelines.flowretail.simulator.persistence import persisted_state

            state = stack.enter_context(
                persisted_state(state_dir / "simulator", lambda: build_state(SimulatorConfig()))
            )
            base_url = stack.enter_context(running_simulator(state))
            os.environ["FLOWRETAIL_BASE_URL"] = base_url
            os.environ["FLOWRETAIL_TOKEN"] = state.token
            os.environ.setdefault("FLOWRETAIL_TENANT_UIDS", ",".join(state.tenant_uids()))
            os.environ.setdefault("FLOWRETAIL_RATE_LIMIT", "1000")
            logger.info("serving the built-in Flow Retail simulator at %s", base_url)
        database_url = settings.database_url.get_secret_value() if settings.database_url else None
        if database_url is None:
            database_url = start_embedded_postgres(state_dir / "pgdata")
            os.environ["DATABASE_URL"] = database_url
        dagster_home = prepare_dagster_home(state_dir)
        yield Environment(
            settings=load_settings(),
            base_url=base_url or "",
            database_url=database_url,
            dagster_home=dagster_home,
            simulator=settings.base_url is None,
            embedded_postgres=settings.database_url is None,
        )


@contextmanager
def initialised_instance() -> Iterator[dg.DagsterInstance]:
    """The instance of ``DAGSTER_HOME`` with its storage initialised, under a file lock while in use.

    Dagster's SQLite storage creates its tables on first use without a lock, so two commands started
    at once on a fresh home both try (``table secondary_indexes already exists``): the first use, and
    whatever the caller does inside the block (syncing the tenant partitions), runs under a file lock
    beside ``dagster.yaml``. With PostgreSQL storage the lock is merely redundant.
    """
    import dagster as dg
    from filelock import FileLock

    with FileLock(Path(os.environ["DAGSTER_HOME"]) / ".flowretail-instance.lock", timeout=120):
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)
        instance.all_instigator_state()
        yield instance
