"""The commands a user runs, timed as a user runs them: `flowretail load` and `flowretail run`.

    .venv/bin/python benchmarks/command.py [--servers embedded,pg15] [--scenarios load,rerun,tenants] [--runs 3]
    .venv/bin/python benchmarks/command.py --quick          # smoke test: tiny sizes, one run, embedded only

Every measurement starts the real CLI (``.venv/bin/flowretail``) as a subprocess, on a FRESH
database, with its own ``DAGSTER_HOME`` and working directory, and reports:
- wall time of the command, CPU seconds of its process tree (``RUSAGE_CHILDREN`` around the wait,
  so every step process the command reaped counts), and the peak RSS of the tree (psutil sampling
  every 50 ms of the command and all its descendants; PostgreSQL server processes excluded);
- the split of the wall time into loads, load checks, models, data tests, pushes, other steps and
  orchestration, read back from the Dagster event log of the runs the command made (step start,
  materialization, check evaluation and step end times): a step's time up to its last
  materialization is its asset's kind of work, after it (while check evaluations follow) the
  checks of that work: load checks after a load (the raw tables' checks of the loaded rows), data
  tests after a model (its schema.yml tests); a check-only step is load checks or data tests by the
  asset it checks; every step of the ``segment_push`` job is pushes.
  Overlapping steps are counted once, in that order of priority. Orchestration is the rest of the
  wall time: interpreter start and imports, Dagster instance and run bookkeeping, the embedded
  PostgreSQL and simulator start, the summary.

Scenarios (targets from issue 13):
- ``load``: `flowretail load` on 2 tenants x 20,000 customers, 100 groups, 10 ms latency,
  ``FLOWRETAIL_RATE_LIMIT=1000``, against ``benchmarks/dlt_peer.py``'s dlt worker (extract + load
  only) on the same simulator process, alternating, each on a fresh database. Target: >= 3x faster
  at <= half the peak memory.
- ``rerun``: a second `make run` on the demo data: `flowretail run` with nothing configured but
  the server (the built-in simulator and, on ``embedded``, the embedded PostgreSQL the CLI starts
  itself), after a first run in the same directory. Target: <= 15 s.
- ``tenants``: `flowretail load` of 50 tenants x 2,000 customers against 1 tenant x 100,000
  customers. Target: model + data-test time within 2x of each other. The load checks are part of
  each tenant's load (one set per load, like the load itself) and are shown beside it, with the
  ratio they would give if they were counted.

Servers: ``embedded`` (the project's PostgreSQL 18, the bench's own data directory), ``pg15`` (the
machine's ``/usr/lib/postgresql/15``: a throwaway cluster on a Unix socket in a temp directory,
run as the ``postgres`` user when this script runs as root) and ``url`` (``DATABASE_URL``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

DLT_PEER = Path(__file__).resolve().parent / "dlt_peer.py"
FLOWRETAIL = Path(sys.executable).parent / "flowretail"
CATEGORIES = ("loads", "load checks", "models", "data tests", "pushes", "other steps")
PUSH_JOB = "segment_push"
# the product's own configuration, removed from the environment so each command sees only ours
PRODUCT_ENV_PREFIXES = ("FLOWRETAIL_", "DATABASE_URL", "DAGSTER_HOME")

FULL: dict[str, dict[str, Any]] = {
    "load": {"tenants": 2, "customers": 20_000, "groups": 100, "latency_ms": 10.0},
    "tenants_many": {"tenants": 50, "customers": 2_000, "groups": 100, "latency_ms": 0.0},
    "tenants_one": {"tenants": 1, "customers": 100_000, "groups": 100, "latency_ms": 0.0},
}
QUICK: dict[str, dict[str, Any]] = {
    "load": {"tenants": 2, "customers": 500, "groups": 10, "latency_ms": 10.0},
    "tenants_many": {"tenants": 3, "customers": 300, "groups": 10, "latency_ms": 0.0},
    "tenants_one": {"tenants": 1, "customers": 900, "groups": 10, "latency_ms": 0.0},
}
TARGET_SPEEDUP = 3.0
TARGET_MEMORY_FRACTION = 0.5
TARGET_RERUN_SECONDS = 15.0
TARGET_TENANT_SPREAD = 2.0


# ----------------------------------------------------------------------------- the split (pure)


@dataclass(frozen=True)
class StepEvent:
    """One event of a Dagster run that the split needs."""

    job: str
    step: str
    kind: str  # "start", "end", "materialization" or "check"
    at: float
    asset_top: str | None = None
    run_id: str = ""  # one step key runs once per run: steps of different runs are different spans


@dataclass(frozen=True)
class Span:
    category: str
    start: float
    end: float


def asset_category(asset_top: str, *, raw_schema: str, push_prefixes: Sequence[str]) -> str:
    if asset_top == raw_schema:
        return "loads"
    if asset_top in push_prefixes:
        return "pushes"
    return "models"


def step_spans(events: Sequence[StepEvent], *, raw_schema: str, push_prefixes: Sequence[str]) -> list[Span]:
    """Each step's time cut into the kind of work it did (see the module docstring)."""
    by_step: dict[tuple[str, str, str], list[StepEvent]] = {}
    for event in events:
        by_step.setdefault((event.run_id, event.job, event.step), []).append(event)
    spans = []
    for (_, job, _), items in by_step.items():
        starts = [e.at for e in items if e.kind == "start"]
        if not starts:
            continue
        start = min(starts)
        end = max(e.at for e in items)
        mats = [e for e in items if e.kind == "materialization"]
        checks = [e for e in items if e.kind == "check"]
        if job == PUSH_JOB:
            spans.append(Span("pushes", start, end))
        elif mats:
            last = max(e.at for e in mats)
            top = mats[0].asset_top or ""
            category = asset_category(top, raw_schema=raw_schema, push_prefixes=push_prefixes)
            tests_after = any(e.at >= last for e in checks)
            spans.append(Span(category, start, last if tests_after else end))
            if tests_after:
                spans.append(Span("load checks" if category == "loads" else "data tests", last, end))
        elif checks:
            checked = checks[0].asset_top
            spans.append(Span("load checks" if checked == raw_schema else "data tests", start, end))
        else:
            spans.append(Span("other steps", start, end))
    return spans


def split_wall(spans: Sequence[Span], start: float, end: float) -> dict[str, float]:
    """Seconds of [start, end] covered by each category (overlaps go to the earlier category in
    CATEGORIES), and ``orchestration`` for the rest, so the parts add up to the wall time."""
    clipped = [Span(s.category, max(s.start, start), min(s.end, end)) for s in spans if s.end > start and s.start < end]
    points = sorted({start, end, *(s.start for s in clipped), *(s.end for s in clipped)})
    out = dict.fromkeys(CATEGORIES, 0.0)
    for left, right in itertools.pairwise(points):
        covering = {s.category for s in clipped if s.start <= left and s.end >= right}
        for category in CATEGORIES:
            if category in covering:
                out[category] += right - left
                break
    out["orchestration"] = (end - start) - sum(out.values())
    return out


# ----------------------------------------------------------------------------- reading the event log


def read_step_events(dagster_home: Path, since: float) -> list[StepEvent]:
    """The step events of every run created in ``dagster_home`` since ``since`` (epoch seconds)."""
    import dagster as dg

    kinds = {
        "STEP_START": "start",
        "STEP_SUCCESS": "end",
        "STEP_FAILURE": "end",
        "STEP_SKIPPED": "end",
        "ASSET_MATERIALIZATION": "materialization",
        "ASSET_CHECK_EVALUATION": "check",
    }
    events = []
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for record in instance.get_run_records():
            if record.create_timestamp.timestamp() < since - 1:
                continue
            job = record.dagster_run.job_name
            for entry in instance.all_logs(record.dagster_run.run_id):
                event = entry.dagster_event
                if event is None or entry.step_key is None or event.event_type_value not in kinds:
                    continue
                key = event.asset_key if event.event_type_value == "ASSET_MATERIALIZATION" else None
                if event.event_type_value == "ASSET_CHECK_EVALUATION":
                    key = event.event_specific_data.asset_key
                events.append(
                    StepEvent(job, entry.step_key, kinds[event.event_type_value], entry.timestamp,
                              key.path[0] if key else None, record.dagster_run.run_id)
                )  # fmt: skip
    return events


def classify(events: Sequence[StepEvent], start: float, end: float) -> dict[str, float]:
    from pipelines.reverse_etl.assets import plan_key, push_key
    from pipelines.warehouse.schema import SCHEMA

    prefixes = [plan_key("x").path[0], push_key("x").path[0]]
    return split_wall(step_spans(events, raw_schema=SCHEMA, push_prefixes=prefixes), start, end)


# ----------------------------------------------------------------------------- running a command


@dataclass
class Measured:
    """One command: wall, CPU of its tree, peak RSS of its tree, exit code, the split."""

    label: str
    wall: float
    cpu: float
    peak_rss_mib: float
    returncode: int
    split: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    output_tail: str = ""


@dataclass(frozen=True)
class TreeProcess:
    """One process of a command's tree, as sampled."""

    pid: int
    ppid: int
    name: str
    cmdline: tuple[str, ...]
    rss: int


def counted_rss(processes: Sequence[TreeProcess]) -> int:
    """The tree's resident memory: PostgreSQL servers left out, and a child that still runs its
    parent's command line too (forked, not yet exec'd: Dagster starts a compute-log ``tail`` and a
    watcher per run with vfork + execve), whose RSS is the parent's memory counted a second time."""
    cmdlines = {p.pid: p.cmdline for p in processes}
    return sum(
        p.rss
        for p in processes
        if not p.name.startswith(("postgres", "postmaster")) and cmdlines.get(p.ppid) != p.cmdline
    )


def _tree_rss(root: psutil.Process) -> int:
    processes = []
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            processes.append(
                TreeProcess(proc.pid, proc.ppid(), proc.name(), tuple(proc.cmdline()), proc.memory_info().rss)
            )
    return counted_rss(processes)


def run_measured(label: str, argv: Sequence[str], *, env: dict[str, str], cwd: Path, timeout: float) -> Measured:
    """Run ``argv`` to completion; bounded by ``timeout`` (then killed, returncode -9)."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    root = psutil.Process(process.pid)
    with tempfile.TemporaryFile("w+") as sink:

        def drain() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                sink.write(line)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        deadline = started + timeout
        try:
            while process.poll() is None and time.time() < deadline:
                with contextlib.suppress(psutil.Error):
                    peak = max(peak, _tree_rss(root))
                time.sleep(0.05)
        finally:  # timed out, or this script was stopped: the command goes too
            benchlib.stop_process(process)
        process.wait()
        reader.join(timeout=10)
        sink.seek(0)
        output = sink.read()
    ended = time.time()
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    result = Measured(label, ended - started, cpu, peak / 2**20, process.returncode, output_tail=output[-3000:])
    result.extra["started"] = started
    result.extra["ended"] = ended
    return result


def base_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(PRODUCT_ENV_PREFIXES)}
    env.update(values)
    return env


def flowretail(
    command: str,
    *,
    env: dict[str, str],
    cwd: Path,
    dagster_home: Path,
    timeout: float,
    label: str,
) -> Measured:
    """`flowretail COMMAND` as a user runs it; the split comes from the runs it recorded."""
    result = run_measured(label, [str(FLOWRETAIL), command], env=env, cwd=cwd, timeout=timeout)
    if result.returncode != 0:
        print(f"  {label}: exit code {result.returncode}; output ends:\n{result.output_tail}", flush=True)
    if dagster_home.exists():
        events = read_step_events(dagster_home, result.extra["started"])
        result.split = classify(events, result.extra["started"], result.extra["ended"])
    return result


# ----------------------------------------------------------------------------- servers


@contextlib.contextmanager
def pg15_cluster(bin_dir: Path) -> Iterator[benchlib.Postgres]:
    """A throwaway PostgreSQL cluster of the machine's packages, on a Unix socket only."""
    if not (bin_dir / "initdb").exists():
        raise RuntimeError(f"{bin_dir}/initdb not found: install it with `apt-get install -y postgresql`")
    root = Path(tempfile.mkdtemp(prefix="bench-pg15-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    with socket.socket() as probe:  # a port number only names the socket file; no TCP listener
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                    "--no-sync"], check=True, capture_output=True, timeout=300)  # fmt: skip
    options = f"-k {root} -p {port} -c listen_addresses=''"
    pg_ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-t", "120"]
    subprocess.run([*pg_ctl, "-o", options, "-l", str(root / "log"), "start"], check=True, capture_output=True,
                   timeout=180)  # fmt: skip
    try:
        yield benchlib.Postgres(f"postgresql://postgres@/postgres?host={root}&port={port}", embedded=False)
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True, timeout=180)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def server(name: str, args: argparse.Namespace) -> Iterator[benchlib.Postgres]:
    if name == "embedded":
        from pipelines.warehouse.embedded import start_embedded_postgres

        yield benchlib.Postgres(start_embedded_postgres(benchlib.BENCH_DIR / "pgdata"), embedded=True)
    elif name == "pg15":
        with pg15_cluster(Path(args.pg15_bin)) as pg:
            yield pg
    elif name == "url":
        url = os.environ.get("DATABASE_URL")
        if not url:
            raise RuntimeError("--servers url needs DATABASE_URL")
        yield benchlib.Postgres(url, embedded=False)
    else:
        raise ValueError(f"unknown server {name}")


def server_version(pg: benchlib.Postgres) -> str:
    with psycopg.connect(pg.server_url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


# ----------------------------------------------------------------------------- scenarios


def load_rows(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(memberships_rows), 0), coalesce(sum(customers_rows), 0), count(*) "
            "FROM flowretail.load_runs WHERE status = 'succeeded'"
        ).fetchone()
    assert row is not None
    return {"memberships_rows": int(row[0]), "customers_rows": int(row[1]), "loads": int(row[2])}


def product_load(
    pg: benchlib.Postgres, sim: benchlib.SimulatorProcess, tenants: int, label: str, args: argparse.Namespace
) -> Measured:
    """`flowretail load` of every simulated tenant into a fresh database."""
    database_url = pg.fresh_database("bench_cmd")
    with tempfile.TemporaryDirectory(prefix="bench-cmd-") as tmp:
        home = Path(tmp) / "dagster_home"
        home.mkdir()
        env = base_env(
            FLOWRETAIL_BASE_URL=sim.base_url,
            FLOWRETAIL_TOKEN=sim.token,
            FLOWRETAIL_TENANT_UIDS=",".join(f"tenant-{i}" for i in range(1, tenants + 1)),
            FLOWRETAIL_RATE_LIMIT="1000",
            DATABASE_URL=database_url,
            DAGSTER_HOME=str(home),
        )
        sim.reset()
        result = flowretail("load", env=env, cwd=Path(tmp), dagster_home=home, timeout=args.timeout, label=label)
        result.extra.update(load_rows(database_url))
        result.extra["requests"] = sim.stats()["requests"]
    pg.drop_database(database_url)
    return result


def with_placeholder_password(url: str) -> str:
    """``url`` with a password when it has none: dlt refuses credentials without one, and the pg15
    cluster (trust over a Unix socket) ignores whatever is sent."""
    parts = urlsplit(url)
    if parts.password is not None or "@" not in parts.netloc:
        return url
    user, host = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{user}:unused@{host}"))


def dlt_load(pg: benchlib.Postgres, sim: benchlib.SimulatorProcess, tenants: int, args: argparse.Namespace) -> Measured:
    """The peer: dlt_peer.py's dlt worker (extract + load only) in a fresh interpreter."""
    database_url = with_placeholder_password(pg.fresh_database("bench_cmd_dlt"))
    argv = [
        sys.executable, str(DLT_PEER), "--worker", "--tool", "dlt", "--base-url", sim.base_url, "--token", sim.token,
        "--database-url", database_url, "--tenants", ",".join(f"tenant-{i}" for i in range(1, tenants + 1)),
        "--page-size", "100", "--concurrency", "8", "--dlt-file-format", "insert_values",
    ]  # fmt: skip
    sim.reset()
    result = run_measured("dlt", argv, env=base_env(), cwd=benchlib.REPO, timeout=args.timeout)
    result.extra["requests"] = sim.stats()["requests"]
    if result.returncode == 0:
        result.extra.update(json.loads(result.output_tail.strip().splitlines()[-1]))
    else:
        print(f"  dlt: exit code {result.returncode}; output ends:\n{result.output_tail}", flush=True)
    pg.drop_database(database_url)
    return result


def scenario_load(pg: benchlib.Postgres, args: argparse.Namespace) -> dict[str, list[Measured]]:
    spec = args.sizes["load"]
    out: dict[str, list[Measured]] = {"product": [], "dlt": []}
    with benchlib.simulator_process(
        tenants=spec["tenants"], customers=spec["customers"], groups=spec["groups"], latency_ms=spec["latency_ms"]
    ) as sim:
        for run in range(1, args.runs + 1):
            out["product"].append(product_load(pg, sim, spec["tenants"], f"flowretail load #{run}", args))
            report(out["product"][-1])
            out["dlt"].append(dlt_load(pg, sim, spec["tenants"], args))
            report(out["dlt"][-1])
    return out


def scenario_rerun(pg: benchlib.Postgres, args: argparse.Namespace) -> dict[str, list[Measured]]:
    """A first `flowretail run` on the demo data, then ``runs`` more in the same directory."""
    out: dict[str, list[Measured]] = {"first": [], "second": []}
    database_url = None if pg.embedded else pg.fresh_database("bench_cmd_run")
    with tempfile.TemporaryDirectory(prefix="bench-cmd-run-") as tmp:
        env = base_env(**({"DATABASE_URL": database_url} if database_url else {}))
        home = Path(tmp) / ".flowretail" / "dagster_home"
        kwargs: dict[str, Any] = {"env": env, "cwd": Path(tmp), "dagster_home": home, "timeout": args.timeout}
        out["first"].append(flowretail("run", label="flowretail run (first)", **kwargs))
        report(out["first"][-1])
        for run in range(1, args.runs + 1):
            out["second"].append(flowretail("run", label=f"flowretail run again #{run}", **kwargs))
            report(out["second"][-1])
    if database_url:
        pg.drop_database(database_url)
    return out


def scenario_tenants(pg: benchlib.Postgres, args: argparse.Namespace) -> dict[str, list[Measured]]:
    out: dict[str, list[Measured]] = {}
    for name in ("tenants_many", "tenants_one"):
        spec = args.sizes[name]
        label = f"{spec['tenants']} x {spec['customers']:,}"
        out[name] = []
        with benchlib.simulator_process(
            tenants=spec["tenants"], customers=spec["customers"], groups=spec["groups"], latency_ms=spec["latency_ms"]
        ) as sim:
            for run in range(1, args.runs + 1):
                out[name].append(product_load(pg, sim, spec["tenants"], f"flowretail load {label} #{run}", args))
                report(out[name][-1])
    return out


SCENARIO_FUNCS = {"load": scenario_load, "rerun": scenario_rerun, "tenants": scenario_tenants}


# ----------------------------------------------------------------------------- output


def report(m: Measured) -> None:
    parts = ", ".join(f"{k} {v:.1f}" for k, v in m.split.items() if v >= 0.05)
    print(
        f"  {m.label}: {m.wall:.1f} s wall, {m.cpu:.1f} CPU-s, peak RSS {m.peak_rss_mib:.0f} MiB, exit {m.returncode}"
        + (f" [{parts}]" if parts else ""),
        flush=True,
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def med_split(items: Sequence[Measured], key: str) -> float:
    return median([m.split.get(key, float("nan")) for m in items])


def detail_rows(server_name: str, results: dict[str, dict[str, list[Measured]]]) -> list[list[Any]]:
    rows = []
    for scenario, groups in results.items():
        for items in groups.values():
            for m in items:
                rows.append(
                    [server_name, scenario, m.label, m.wall, m.cpu, m.peak_rss_mib,
                     *(m.split.get(c, float("nan")) for c in (*CATEGORIES, "orchestration")), m.returncode]
                )  # fmt: skip
    return rows


def target_rows(server_name: str, results: dict[str, dict[str, list[Measured]]]) -> list[list[str]]:
    """| target | server | measured | baseline (same run) | ratio | verdict |, medians of the runs."""
    rows = []
    if "load" in results:
        product, peer = results["load"]["product"], results["load"]["dlt"]
        p_wall, d_wall = median([m.wall for m in product]), median([m.wall for m in peer])
        p_rss, d_rss = median([m.peak_rss_mib for m in product]), median([m.peak_rss_mib for m in peer])
        speedup = benchlib.ratio(d_wall, p_wall)
        memory = benchlib.ratio(p_rss, d_rss)
        rows.append([f"`flowretail load` >= {TARGET_SPEEDUP:g}x faster than dlt (extract + load)", server_name,
                     f"{p_wall:.1f} s", f"dlt {d_wall:.1f} s", f"{speedup:.2f}x",
                     benchlib.verdict(speedup >= TARGET_SPEEDUP)])  # fmt: skip
        rows.append([f"`flowretail load` peak RSS <= {TARGET_MEMORY_FRACTION:g} x dlt's", server_name,
                     f"{p_rss:.0f} MiB", f"dlt {d_rss:.0f} MiB", f"{memory:.2f}",
                     benchlib.verdict(memory <= TARGET_MEMORY_FRACTION)])  # fmt: skip
    if "rerun" in results:
        second = results["rerun"]["second"]
        wall = median([m.wall for m in second])
        first = median([m.wall for m in results["rerun"]["first"]])
        rows.append([f"second `make run` <= {TARGET_RERUN_SECONDS:g} s", server_name, f"{wall:.1f} s",
                     f"first run {first:.1f} s", f"{benchlib.ratio(wall, TARGET_RERUN_SECONDS):.2f} of target",
                     benchlib.verdict(wall <= TARGET_RERUN_SECONDS)])  # fmt: skip
    if "tenants" in results:
        many, one = results["tenants"]["tenants_many"], results["tenants"]["tenants_one"]
        for parts, target in ((("models", "data tests"), True), (("models", "data tests", "load checks"), False)):
            t_many = median([sum(m.split.get(p, 0) for p in parts) for m in many])
            t_one = median([sum(m.split.get(p, 0) for p in parts) for m in one])
            spread = max(t_many, t_one) / min(t_many, t_one) if min(t_many, t_one) > 0 else float("nan")
            rows.append([
                f"models + tests, many tenants vs one, within {TARGET_TENANT_SPREAD:g}x" if target
                else "(information) the same with the loads' own checks counted", server_name,
                f"{many[0].label.split(' #')[0].removeprefix('flowretail load ')}: {t_many:.1f} s",
                f"{one[0].label.split(' #')[0].removeprefix('flowretail load ')}: {t_one:.1f} s",
                f"{spread:.2f}x", benchlib.verdict(spread <= TARGET_TENANT_SPREAD) if target else "-"])  # fmt: skip
    return rows


def markdown(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:,.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


DETAIL_HEADERS = ["server", "scenario", "command", "wall s", "CPU s (tree)", "peak RSS MiB (tree)",
                  *CATEGORIES, "orchestration", "exit"]  # fmt: skip
TARGET_HEADERS = ["target", "server", "measured (median)", "baseline, same run (median)", "ratio", "verdict"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="embedded,pg15", help="comma-separated: embedded, pg15, url")
    parser.add_argument(
        "--scenarios", default="load,rerun,tenants", help=f"comma-separated: {', '.join(SCENARIO_FUNCS)}"
    )
    parser.add_argument("--runs", type=int, default=3, help="measured runs of each command")
    parser.add_argument("--pg15-bin", default="/usr/lib/postgresql/15/bin")
    parser.add_argument("--timeout", type=float, default=1800.0, help="bound on one command (s)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run, embedded only (smoke test)")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the throwaway cluster, the simulator and the command stop too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.sizes = QUICK if args.quick else FULL
    if args.quick:
        args.runs, args.servers = 1, "embedded"
    if not FLOWRETAIL.exists():
        raise SystemExit(f"{FLOWRETAIL} not found: run `make .venv/.installed` first")

    facts = benchlib.machine_facts()
    benchlib.print_facts(facts)
    all_rows: list[list[Any]] = []
    targets: list[list[str]] = []
    saved: dict[str, Any] = {"facts": facts, "args": {k: v for k, v in vars(args).items() if k != "sizes"},
                             "sizes": args.sizes, "results": {}}  # fmt: skip
    for server_name in args.servers.split(","):
        with server(server_name, args) as pg:
            label = f"{server_name} (PostgreSQL {server_version(pg)})"
            print(f"# server {label}", flush=True)
            results = {}
            for scenario in args.scenarios.split(","):
                print(f"scenario {scenario} ...", flush=True)
                results[scenario] = SCENARIO_FUNCS[scenario](pg, args)
            all_rows += detail_rows(label, results)
            targets += target_rows(label, results)
            saved["results"][label] = {
                s: {g: [vars(m) for m in items] for g, items in groups.items()} for s, groups in results.items()
            }
    facts["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    print()
    benchlib.print_table("Every command", all_rows, DETAIL_HEADERS)
    print("## Targets (markdown, ready to paste into BENCHMARKS.md)\n")
    print(markdown(TARGET_HEADERS, targets))
    print()
    print("## Every command (markdown)\n")
    print(markdown(DETAIL_HEADERS, all_rows))
    print()
    path = benchlib.save_results("command", saved)
    print(f"results saved to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
