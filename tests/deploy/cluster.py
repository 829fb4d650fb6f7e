"""A production-shaped deployment on this machine: the shipped deploy/dagster.yaml on PostgreSQL, with
the code server (`dagster api grpc`, as the Helm chart and compose start it), `dagster-daemon run` and
`dagster-webserver` as separate processes. Used by tests/deploy and benchmarks/many_tenants.py.

Every wait is bounded; every process runs in its own process group and is killed with it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tests.ui.webserver import (
    LOOPBACK,
    REPO,
    UiServer,
    free_port,
    graphql,
    kill_process_group,
    product_env,
    running_webserver,
)

DEPLOY_DAGSTER_YAML = REPO / "deploy" / "dagster.yaml"
LOCATION = "flowretail"
REPOSITORY = "__repository__"
BIN = Path(sys.executable).parent


def psycopg2_url(url: str) -> str:
    """The URL form deploy/dagster.yaml documents for DAGSTER_POSTGRES_URL (psycopg2 driver)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql+psycopg2"))


def queue_limits() -> dict[str, Any]:
    """max_concurrent_runs and the tag limits exactly as the shipped deploy/dagster.yaml sets them."""
    import yaml

    runs: dict[str, Any] = yaml.safe_load(DEPLOY_DAGSTER_YAML.read_text("utf-8"))["concurrency"]["runs"]
    return runs


@dataclass(frozen=True)
class Deployment:
    """The running processes' shared environment and the webserver that fronts them."""

    env: dict[str, str]
    dagster_home: Path
    webserver: UiServer
    workdir: Path

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST a query to the webserver; raises with the errors if GraphQL reports any."""
        import json
        import urllib.request

        request = urllib.request.Request(
            f"{self.webserver.url}/graphql",
            data=json.dumps({"query": query, "variables": dict(variables or {})}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=60) as response:
            body: dict[str, Any] = json.loads(response.read())
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        data: dict[str, Any] = body["data"]
        return data

    def repository_selector(self) -> dict[str, str]:
        return {"repositoryName": REPOSITORY, "repositoryLocationName": LOCATION}


def _start(argv: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            argv,
            cwd=REPO,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for_code_server(proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float) -> None:
    from dagster._grpc.client import DagsterGrpcClient

    client = DagsterGrpcClient(port=port, host=LOOPBACK)
    deadline = time.monotonic() + timeout
    problem = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"code server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            client.ping("ready?")
            return
        except Exception as exc:
            problem = f"{type(exc).__name__}"
        time.sleep(0.5)
    raise AssertionError(f"code server not serving after {timeout:.0f} s ({problem}):\n{log_path.read_text()[-3000:]}")


@contextlib.contextmanager
def running_deployment(
    workdir: Path,
    *,
    base_url: str,
    token: str,
    tenant_uids: list[str],
    database_url: str,
    dagster_postgres_url: str,
    extra_env: Mapping[str, str] | None = None,
    ready_timeout: float = 240.0,
    dagster_yaml: Path = DEPLOY_DAGSTER_YAML,
) -> Iterator[Deployment]:
    """Start code server, daemon and webserver on the shipped deploy/dagster.yaml (or, for a benchmark's
    comparison, another instance file); stop all three after."""
    home = workdir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dagster_yaml, home / "dagster.yaml")
    env = product_env(
        base_url=base_url, token=token, tenant_uids=tenant_uids, database_url=database_url, dagster_home=home
    )
    env.update(DAGSTER_POSTGRES_URL=dagster_postgres_url, **(extra_env or {}))
    grpc_port = free_port()
    workspace = workdir / "workspace.yaml"
    workspace.write_text(
        f"load_from:\n  - grpc_server:\n      host: {LOOPBACK}\n      port: {grpc_port}\n"
        f"      location_name: {LOCATION}\n",
        "utf-8",
    )
    code_log, daemon_log = workdir / "code_server.log", workdir / "daemon.log"
    code_argv = [str(BIN / "dagster"), "api", "grpc", "-m", "pipelines.definitions", "-d", str(REPO)]
    code_server = _start([*code_argv, "-h", LOOPBACK, "-p", str(grpc_port)], env, code_log)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        _wait_for_code_server(code_server, grpc_port, code_log, ready_timeout)
        daemon = _start([str(BIN / "dagster-daemon"), "run", "-w", str(workspace)], env, daemon_log)
        with running_webserver(
            env, home, workdir / "webserver.log", workspace=workspace, ready_timeout=ready_timeout
        ) as webserver:
            yield Deployment(env=env, dagster_home=home, webserver=webserver, workdir=workdir)
    finally:
        if daemon is not None:
            kill_process_group(daemon)
        kill_process_group(code_server)


RUNS_QUERY = """
query Runs {
  runsOrError {
    __typename
    ... on Runs { results { runId jobName status startTime endTime tags { key value } } }
  }
}
"""


def list_runs(deployment: Deployment) -> list[dict[str, Any]]:
    """Every run of the instance as the webserver's GraphQL API reports it (tags as a dict)."""
    data = deployment.graphql(RUNS_QUERY)["runsOrError"]
    assert data["__typename"] == "Runs", data
    runs: list[dict[str, Any]] = data["results"]
    for run in runs:
        run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
    return runs


RUN_MATERIALIZATIONS = """
query RunMaterializations($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      assetMaterializations {
        assetKey { path }
        partition
        metadataEntries { label ... on IntMetadataEntry { intValue } }
      }
    }
  }
}
"""


def run_materializations(deployment: Deployment, run_id: str) -> list[dict[str, Any]]:
    """The run's asset materializations as the webserver reports them: key path, partition and the
    integer metadata (``dagster/row_count``, ...) as a dict."""
    data = deployment.graphql(RUN_MATERIALIZATIONS, {"runId": run_id})["runOrError"]
    assert data["__typename"] == "Run", data
    out = []
    for event in data["assetMaterializations"]:
        ints = {e["label"]: e["intValue"] for e in event["metadataEntries"] if "intValue" in e}
        out.append({"path": event["assetKey"]["path"], "partition": event["partition"], "ints": ints})
    return out


RUN_ERRORS = """
query RunErrors($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events { __typename ... on MessageEvent { message } ... on ErrorEvent { error { message } } }
    }
  }
}
"""


def failure_report(deployment: Deployment, runs: list[dict[str, Any]]) -> str:
    """For an assertion message: each run that did not succeed, with its error events' messages."""
    lines = []
    for run in runs:
        if run["status"] == "SUCCESS":
            continue
        data = deployment.graphql(RUN_ERRORS, {"runId": run["runId"]})["logsForRun"]
        errors = [
            (e.get("error") or {}).get("message") or e.get("message", "")
            for e in data.get("events", [])
            if e["__typename"] in ("RunFailureEvent", "ExecutionStepFailureEvent", "EngineEvent") and e.get("error")
        ]
        failures = [e.get("message", "") for e in data.get("events", []) if e["__typename"] == "RunFailureEvent"]
        lines.append(f"{run['jobName']} {run['tags'].get('dagster/partition')} {run['status']}: {failures} {errors}")
    return "\n".join(lines)


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most of the ``(start, end)`` intervals that overlap at one instant (an end before a start
    at the same instant)."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


START_SENSOR = """
mutation Start($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) { __typename ... on PythonError { message } }
}
"""

LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on UnauthorizedError { message }
  }
}
"""


def start_sensor(deployment: Deployment, name: str) -> None:
    selector = {**deployment.repository_selector(), "sensorName": name}
    result = deployment.graphql(START_SENSOR, {"selector": selector})["startSensor"]
    assert result["__typename"] == "Sensor", result


def launch_backfill(deployment: Deployment, job: str, partitions: list[str]) -> str:
    """A job backfill over ``partitions``: the daemon turns it into queued runs, one per partition."""
    params = {
        "selector": {
            "partitionSetName": f"{job}_partition_set",
            "repositorySelector": deployment.repository_selector(),
        },
        "partitionNames": partitions,
        "fromFailure": False,
    }
    result = deployment.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    backfill_id: str = result["backfillId"]
    return backfill_id


IN_PROGRESS = {"STARTING", "STARTED", "CANCELING"}
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


@dataclass
class RunWatch:
    """What polling the runs saw: the final runs and the most that were in progress at one poll."""

    runs: list[dict[str, Any]]
    peak_in_progress: int
    peak_per_token: int


def wait_for_runs(deployment: Deployment, expected: Mapping[str, int], timeout: float) -> RunWatch:
    """Poll until every expected job has that many finished runs (or one failed); raise on timeout."""
    peak = peak_token = 0
    deadline = time.monotonic() + timeout
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = list_runs(deployment)
        active = [r for r in runs if r["status"] in IN_PROGRESS]
        peak = max(peak, len(active))
        per_token: dict[str | None, int] = {}
        for run in active:
            token = run["tags"].get("flowretail/token")
            per_token[token] = per_token.get(token, 0) + 1
        peak_token = max([peak_token, *per_token.values()])
        if any(r["status"] == "FAILURE" for r in runs):
            break
        done = {job: sum(1 for r in runs if r["jobName"] == job and r["status"] in FINISHED) for job in expected}
        if all(done[job] >= n for job, n in expected.items()):
            break
        time.sleep(0.5)
    else:
        states = sorted((r["jobName"], r["status"]) for r in runs)
        raise AssertionError(f"runs not finished after {timeout:.0f} s: {states}")
    return RunWatch(runs=runs, peak_in_progress=peak, peak_per_token=peak_token)


def wait_for_readiness(deployment: Deployment) -> None:
    """The webserver's workspace has loaded the code server's location."""
    body = graphql(
        deployment.webserver.url,
        "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
        "locationOrLoadError { __typename } } } } }",
    )
    entries = body["data"]["workspaceOrError"]["locationEntries"]
    assert [(e["name"], e["locationOrLoadError"]["__typename"]) for e in entries] == [
        (LOCATION, "RepositoryLocation")
    ], entries
