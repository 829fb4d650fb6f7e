"""Start `dagster-webserver` on the product's workspace as a subprocess, wait (bounded) until it serves, stop it.

Everything here talks to 127.0.0.1 only: proxies are bypassed, and the instance in the temporary
``DAGSTER_HOME`` has telemetry and the first-visit community dialog switched off.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
WORKSPACE = REPO / "workspace.yaml"
LOOPBACK = "127.0.0.1"

# The instance the webserver (and a `flowretail run` before it) records into: no telemetry upload
# (it would leave the machine), no "Join the Dagster community" dialog over the UI.
DAGSTER_YAML = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"

# Variables of the outer environment that must not leak into the servers started here.
_PRODUCT_VARS_PREFIXES = ("FLOWRETAIL_", "DAGSTER_")
_PRODUCT_VARS = {"DATABASE_URL"}

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class WebserverError(RuntimeError):
    """The webserver exited or never became ready; the message ends with the tail of its log."""


@dataclass(frozen=True)
class UiServer:
    """A running webserver: where it answers, the environment it was started with, and its log."""

    port: int
    env: Mapping[str, str]
    dagster_home: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text("utf-8", errors="replace")[-chars:]
        except OSError:
            return "<no log>"


def prepare_dagster_home(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text(DAGSTER_YAML, "utf-8")
    return path


def product_env(
    *,
    base_url: str,
    token: str,
    tenant_uids: list[str],
    database_url: str,
    dagster_home: Path,
) -> dict[str, str]:
    """The process environment for the webserver and for `flowretail` subprocesses."""
    env = {k: v for k, v in os.environ.items() if k not in _PRODUCT_VARS and not k.startswith(_PRODUCT_VARS_PREFIXES)}
    env.update(
        FLOWRETAIL_BASE_URL=base_url,
        FLOWRETAIL_TOKEN=token,
        FLOWRETAIL_TENANT_UIDS=",".join(tenant_uids),
        FLOWRETAIL_RATE_LIMIT="1000",
        DATABASE_URL=database_url,
        DAGSTER_HOME=str(dagster_home),
        DAGSTER_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    with _NO_PROXY.open(url, timeout=timeout) as response:
        return int(response.status), response.read()


def graphql(url: str, query: str, timeout: float = 30.0) -> dict[str, Any]:
    """A raw POST to /graphql, for readiness polling (the tests use Dagster's own client)."""
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with _NO_PROXY.open(request, timeout=timeout) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


_LOAD_STATUS = "{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus } } } }"


def kill_process_group(proc: subprocess.Popen[Any], grace: float = 20.0) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session``), then SIGKILL what is left."""
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    # Children (the code server, Chromium's helpers) may outlive the leader: kill the whole group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _wait_until_ready(server: UiServer, proc: subprocess.Popen[bytes], deadline: float) -> None:
    last_problem = "no answer yet"
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise WebserverError(f"dagster-webserver exited with {code} before serving:\n{server.log_tail()}")
        try:
            status, _ = http_get(f"{server.url}/server_info", timeout=2.0)
            if status == 200:
                body = graphql(server.url, _LOAD_STATUS, timeout=10.0)
                entries = body.get("data", {}).get("workspaceOrError", {}).get("locationEntries")
                if entries and all(e["loadStatus"] != "LOADING" for e in entries):
                    return
                last_problem = f"workspace not loaded yet: {body}"
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last_problem = f"{type(exc).__name__}: {exc}"
        time.sleep(0.25)
    raise WebserverError(f"dagster-webserver did not become ready ({last_problem}):\n{server.log_tail()}")


@contextlib.contextmanager
def running_webserver(
    env: Mapping[str, str],
    dagster_home: Path,
    log_path: Path,
    *,
    ready_timeout: float = 120.0,
    workspace: Path = WORKSPACE,
) -> Iterator[UiServer]:
    """`python -m dagster_webserver -w WORKSPACE -h 127.0.0.1 -p PORT`, in its own process group."""
    port = free_port()
    server = UiServer(port=port, env=dict(env), dagster_home=dagster_home, log_path=log_path)
    argv = [sys.executable, "-m", "dagster_webserver", "-w", str(workspace), "-h", LOOPBACK, "-p", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_ready(server, proc, time.monotonic() + ready_timeout)
        yield server
    finally:
        kill_process_group(proc)


def run_flowretail(args: list[str], env: Mapping[str, str], cwd: Path, timeout: float = 300.0) -> str:
    """`flowretail ARGS` in a subprocess (its own process group); returns its stdout, raises on failure."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"flowretail {' '.join(args)} did not finish within {timeout:.0f} s") from exc
    finally:
        kill_process_group(proc, grace=5.0)
    if proc.returncode != 0:
        raise AssertionError(
            f"flowretail {' '.join(args)} exited with {proc.returncode}:\n"
            f"{out.decode(errors='replace')[-3000:]}\n{err.decode(errors='replace')[-3000:]}"
        )
    return out.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class UiEnvironment:
    """The process environment for the webserver and `flowretail` subprocesses, and its DAGSTER_HOME."""

    env: dict[str, str]
    dagster_home: Path
    workdir: Path


MakeUiEnvironment = Callable[[str, Path], UiEnvironment]


@contextlib.contextmanager
def ui_server_for(environment: UiEnvironment) -> Iterator[UiServer]:
    with running_webserver(environment.env, environment.dagster_home, environment.workdir / "webserver.log") as server:
        yield server
