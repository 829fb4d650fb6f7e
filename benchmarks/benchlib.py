"""Shared helpers of the benchmark scripts: PostgreSQL, the simulator in its own process, RSS, tables.

Nothing here is timed itself and nothing asserts on time: each script measures its own baseline
in the same run and prints the ratios. Every wait below is bounded, so a script always ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import selectors
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg
from psycopg import sql
from tabulate import tabulate

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / ".flowretail" / "bench"
RESULTS_DIR = BENCH_DIR / "results"
SIMSERVER = Path(__file__).resolve().parent / "simserver.py"
TOKEN = "bench-token"


# ----------------------------------------------------------------------------- machine facts


def machine_facts(database_url: str | None = None) -> dict[str, Any]:
    """What a reader needs to compare figures: CPU, memory, versions, load, date."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    facts: dict[str, Any] = {
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
    }
    for package in ("pandas", "psycopg", "sqlalchemy", "httpx", "uvicorn", "dlt", "orjson", "jsonschema_rs"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            facts[package] = metadata.version(package)
    if database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for setting in ("server_version", "shared_buffers", "synchronous_commit", "fsync", "work_mem"):
                row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
                facts[f"pg_{setting}"] = row[0] if row else None
    return facts


def print_facts(facts: dict[str, Any]) -> None:
    print(tabulate(sorted(facts.items()), headers=["machine / software", "value"]))
    print()


# ----------------------------------------------------------------------------- PostgreSQL


@dataclass
class Postgres:
    """A server URL (DATABASE_URL or an embedded server kept alive by this process)."""

    server_url: str
    embedded: bool

    def fresh_database(self, prefix: str) -> str:
        """Create an empty database for one measurement and return its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return with_database(self.server_url, name)

    def drop_database(self, url: str) -> None:
        """Best effort (a late autovacuum worker can hold the database a moment): retry, then warn."""
        name = urlsplit(url).path.lstrip("/")
        for attempt in range(10):
            try:
                with psycopg.connect(self.server_url, autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                return
            except psycopg.errors.ObjectInUse:
                time.sleep(1 + attempt)
        print(f"warning: could not drop database {name}; drop it by hand", file=sys.stderr)


def with_database(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def start_postgres(data_dir: Path | None = None) -> Postgres:
    """DATABASE_URL when set (a server you run), else the project's embedded PostgreSQL."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        return Postgres(configured, embedded=False)
    from pipelines.warehouse.embedded import start_embedded_postgres

    server = Postgres(start_embedded_postgres(data_dir or BENCH_DIR / "pgdata"), embedded=True)
    # the benchmarks' own server: drop databases an interrupted run left behind
    with psycopg.connect(server.server_url, autocommit=True) as conn:
        leftovers = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench%'")]
    for name in leftovers:
        server.drop_database(with_database(server.server_url, name))
    return server


def postmaster_pid(server_url: str) -> int | None:
    """The PostgreSQL postmaster of ``server_url`` when it runs on this machine (for CPU accounting)."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        try:  # while connected: the backend exits with the connection
            return int(psutil.Process(int(row[0])).ppid()) if row else None
        except psutil.Error:
            return None


def cluster_cpu_seconds(pid: int | None) -> float:
    """CPU seconds used so far by a postmaster and all its backends (exited ones included)."""
    if pid is None:
        return float("nan")
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
        return float(total)
    except psutil.Error:
        return float("nan")


def sqlalchemy_url(url: str) -> str:
    """The same server for SQLAlchemy's psycopg (v3) dialect."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


# ----------------------------------------------------------------------------- the simulator process


@dataclass
class SimulatorProcess:
    """The simulator served by ``benchmarks/simserver.py`` in a separate process (its own GIL)."""

    process: subprocess.Popen[str]
    base_url: str
    admin_url: str
    token: str

    def stats(self, timestamps: bool = False) -> dict[str, Any]:
        """Requests the server saw since the last reset: counts by status and operation."""
        import httpx

        params = {"timestamps": "1"} if timestamps else {}
        response = httpx.get(self.admin_url + "/stats", params=params, timeout=60)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def reset(self) -> None:
        import httpx

        httpx.post(self.admin_url + "/reset", timeout=60).raise_for_status()

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return float(times.user + times.system)


@contextlib.contextmanager
def simulator_process(
    *,
    tenants: int = 1,
    customers: int = 10_000,
    groups: int = 100,
    page_size_cap: int = 1000,
    max_uids_per_update: int = 1000,
    rate_limit: float | None = None,
    latency_ms: float = 0.0,
    seed: int = 42,
    startup_timeout: float = 600.0,
) -> Iterator[SimulatorProcess]:
    """Start the simulator in a child process, wait (bounded) for its ready line, stop it on exit."""
    args = [
        sys.executable,
        str(SIMSERVER),
        "--port", "0",
        "--token", TOKEN,
        "--tenants", str(tenants),
        "--customers", str(customers),
        "--groups", str(groups),
        "--page-size-cap", str(page_size_cap),
        "--max-uids-per-update", str(max_uids_per_update),
        "--seed", str(seed),
        "--latency-ms", str(latency_ms),
    ]  # fmt: skip
    if rate_limit is not None:
        args += ["--rate-limit", str(rate_limit)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = _read_line(process, startup_timeout)
        if "ready at " not in line:
            raise RuntimeError(f"the simulator did not start: {line!r}")
        info = json.loads(line.split("ready at ", 1)[1])
        yield SimulatorProcess(process, info["base_url"], info["admin_url"], TOKEN)
    finally:
        stop_process(process)


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(timeout=1.0):
            return process.stdout.readline().strip()
        if process.poll() is not None:
            return f"(exited with {process.returncode})"
    return "(timed out)"


def stop_process(process: subprocess.Popen[Any], grace: float = 15.0) -> None:
    """SIGTERM our own child by pid, then SIGKILL it if it does not go in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)


# ----------------------------------------------------------------------------- workers and memory


@dataclass
class TreeSampler:
    """Samples the RSS of a process and its children in a thread; keeps the peak of the sum."""

    pid: int
    interval: float = 0.05
    peak_bytes: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            total = 0
            try:
                for proc in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                        total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                return
            self.peak_bytes = max(self.peak_bytes, total)
            self.samples += 1
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def run_worker(
    script: Path, args: Sequence[str], *, timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``script --worker ...`` in a fresh interpreter; its last stdout line is a JSON result.

    The parent samples the child's process tree RSS; the child reports its own ru_maxrss too.
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    sampler = TreeSampler(process.pid)
    sampler.start()
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(process)
        sampler.stop()
        raise RuntimeError(f"{script.name} {' '.join(args)} did not finish in {timeout:.0f}s") from None
    sampler.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed with exit code {process.returncode}")
    lines = [line for line in out.splitlines() if line.strip()]
    result: dict[str, Any] = json.loads(lines[-1])
    result["process_wall_seconds"] = time.perf_counter() - started
    result["tree_peak_rss_mib"] = sampler.peak_bytes / 2**20
    return result


def own_peak_rss_mib() -> float:
    """Peak resident set of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit_result(result: dict[str, Any]) -> None:
    """A worker's last line: its JSON result for the orchestrating parent."""
    print(json.dumps(result, default=str), flush=True)


# ----------------------------------------------------------------------------- output


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def print_table(title: str, rows: list[list[Any]], headers: list[str]) -> None:
    print(f"## {title}")
    print(tabulate(rows, headers=headers, floatfmt=",.2f", intfmt=","))
    print()


def save_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path
