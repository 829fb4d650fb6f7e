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
import stat
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.settings import Settings, load_settings
from pipelines.warehouse.embedded import start_embedded_postgres
from pipelines.warehouse.postgres import masked_database_url

if TYPE_CHECKING:
    import dagster as dg

logger = logging.getLogger(__name__)

STATE_DIR = Path(".flowretail")
# Local state holds customer PII (data-test samples in Dagster's event log, the simulator's customers,
# the embedded warehouse): owner-only directories (0700) and files (0600).
PRIVATE_UMASK = 0o077

# The demo instance's settings (a dagster.yaml someone wrote by hand is never replaced):
# no usage statistics upload (no network here), no first-visit dialog over the asset graph, and
# step processes that log warnings only, so `make run` prints its summary rather than engine chatter.
_DAGSTER_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\npython_logs:\n  python_log_level: WARNING\n"


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
        return masked_database_url(self.database_url)


def private_state_dir(path: Path) -> Path:
    """Create ``path`` owner-only and take group/other access away from anything already in it.

    Sets the process umask to :data:`PRIVATE_UMASK` first, so every file written afterwards by this
    process and its children (Dagster's storage, step processes, PostgreSQL, reports) is private
    too; a tree created by an older version (0755/0644) is tightened in place.
    """
    os.umask(PRIVATE_UMASK)
    path.mkdir(parents=True, exist_ok=True)
    me = os.geteuid()
    for root, dirs, files in os.walk(path):
        # Entries of another user (the embedded server's data when run as root) keep their own modes.
        dirs[:] = [d for d in dirs if (Path(root) / d).lstat().st_uid == me]
        for name in [*dirs, *files]:
            entry = Path(root) / name
            info = entry.lstat()
            ordinary = stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)
            if info.st_uid == me and ordinary and info.st_mode & 0o077:
                entry.chmod(stat.S_IMODE(info.st_mode) & ~0o077)
    path.chmod(0o700)
    return path


def _traversable_for_server(state_dir: Path, data_dir: Path) -> None:
    """Run as root, embedded-postgres starts the server as its own system user and opens the path to
    its data (0755); take listing away again, leaving only traversal (0711). Every file and directory
    inside stays owner-only."""
    if data_dir.exists() and data_dir.stat().st_uid != os.geteuid():
        state_dir.chmod(0o711)


def prepare_dagster_home(state_dir: Path = STATE_DIR) -> Path:
    """``DAGSTER_HOME`` (default ``state_dir/dagster_home``) with the demo's dagster.yaml, exported."""
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or state_dir.resolve() / "dagster_home").resolve()
    dagster_home.mkdir(mode=0o700, parents=True, exist_ok=True)
    dagster_yaml = dagster_home / "dagster.yaml"
    current = dagster_yaml.read_text("utf-8") if dagster_yaml.exists() else ""
    if not current.strip():
        dagster_yaml.write_text(_DAGSTER_YAML, "utf-8")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dagster_home


@contextmanager
def embedded_environment(state_dir: Path = STATE_DIR, *, start_simulator: bool = True) -> Iterator[Environment]:
    """Start the simulator and/or embedded PostgreSQL as needed and export their settings."""
    settings = load_settings()
    state_dir = private_state_dir(state_dir.resolve())
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
            _traversable_for_server(state_dir, state_dir / "pgdata")
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
