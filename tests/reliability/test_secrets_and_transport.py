"""Secrets and transport: the token appears nowhere a run leaves anything, plain http is for loopback
only, TLS verification cannot be switched off, and database passwords are masked wherever a URL is shown."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from pipelines.cli import main
from pipelines.flowretail.client import AsyncFlowRetailClient
from pipelines.flowretail.config import ClientConfig, check_base_url
from pipelines.flowretail.errors import RetriesExhaustedError
from pipelines.flowretail.simulator import SimulatorConfig, build_state, running_simulator
from pipelines.settings import ConfigError, Settings, load_settings
from pipelines.warehouse.load import load_tenant
from pipelines.warehouse.postgres import mask_url
from tests.reliability.conftest import ScenarioRecord
from tests.reliability.support import asgi, client_config, make_state, tenant_of
from tests.simulator.helpers import https_simulator

DISTINCT_TOKEN = "tok_DISTINCT_7f3a9c"
PASSWORD = "Sup3r-S3cret-pw"


def _hits(haystack: str | bytes, needle: str) -> int:
    if isinstance(haystack, bytes):
        return haystack.count(needle.encode("utf-8"))
    return haystack.count(needle)


def _database_text(database_url: str) -> list[str]:
    """Every row of every table outside the system schemas, as JSON text."""
    out: list[str] = []
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema NOT IN "
            "('pg_catalog', 'information_schema') AND table_schema NOT LIKE 'pg_toast%%' AND table_schema NOT LIKE 'pg_temp%%'"
        ).fetchall()
        for schema, table in tables:
            rows = conn.execute(
                sql.SQL("SELECT row_to_json(t)::text FROM {}.{} t").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
            ).fetchall()
            out.extend(r[0] for r in rows)
    return out


def _dagster_events(dagster_home: Path) -> list[str]:
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(dagster_home))
    texts: list[str] = []
    for run in instance.get_runs():
        texts.append(repr(run))
        texts.extend(repr(entry) for entry in instance.all_logs(run.run_id))
    return texts


@pytest.mark.slow
@pytest.mark.reliability(
    area="secrets and transport",
    injected=f"full `flowretail run` then a load with the token revoked mid-run, token {DISTINCT_TOKEN}",
    expected="token in none of: stdout/stderr, logs, files under DAGSTER_HOME and the work dir, database text, "
    "exception texts, Dagster events and metadata",
)
def test_the_token_appears_nowhere_after_a_full_cli_run(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database_url: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    scenario: ScenarioRecord,
) -> None:
    caplog.set_level(logging.DEBUG)
    state = build_state(SimulatorConfig(tenants=2, customers=300, groups=5))
    state.token = DISTINCT_TOKEN
    work = tmp_path / "work"
    home = tmp_path / "dagster_home"
    work.mkdir()
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with running_simulator(state) as base_url:
        monkeypatch.setenv("FLOWRETAIL_BASE_URL", base_url)
        monkeypatch.setenv("FLOWRETAIL_TOKEN", DISTINCT_TOKEN)
        monkeypatch.setenv("FLOWRETAIL_TENANT_UIDS", "tenant-1,tenant-2")
        monkeypatch.setenv("FLOWRETAIL_RATE_LIMIT", "1000")
        monkeypatch.setenv("DATABASE_URL", database_url)
        assert main(["run", "--tenant", "tenant-1"]) == 0
        state.faults.revoke_token_after = 2
        assert main(["load", "--tenant", "tenant-1"]) == 1
        state.faults.revoke_token_after = None
        exceptions: list[str] = []
        try:
            main(["--verbose", "load", "--tenant", "nope-tenant"])
        except Exception as exc:  # the verbose CLI re-raises
            exceptions.append(f"{type(exc).__name__}: {exc}")
    captured = capfd.readouterr()
    assert "check FLOWRETAIL_TOKEN" in captured.err
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.is_relative_to(home) for p in files)
    database = _database_text(database_url)
    events = _dagster_events(home)
    assert len(database) > 100 and len(events) > 50
    corpus: dict[str, int] = {
        "stdout": _hits(captured.out, DISTINCT_TOKEN),
        "stderr": _hits(captured.err, DISTINCT_TOKEN),
        "logging": _hits(caplog.text, DISTINCT_TOKEN),
        "files": sum(_hits(p.read_bytes(), DISTINCT_TOKEN) for p in files),
        "database": sum(_hits(t, DISTINCT_TOKEN) for t in database),
        "exceptions": sum(_hits(t, DISTINCT_TOKEN) for t in exceptions),
        "dagster events": sum(_hits(t, DISTINCT_TOKEN) for t in events),
    }
    scenario.tokens(sum(corpus.values()))
    scenario.note(
        f"scanned {len(files)} files, {len(database)} database rows, {len(events)} Dagster events, "
        f"{len(captured.out) + len(captured.err)} characters of output"
    )
    assert _hits(f"Bearer {DISTINCT_TOKEN}", DISTINCT_TOKEN) == 1  # the scan would see it
    assert corpus == dict.fromkeys(corpus, 0)


@pytest.mark.reliability(
    area="secrets and transport",
    injected="a load whose every request fails, logging at DEBUG; errors and reprs inspected",
    expected="token in no log record, exception text, load_runs row or repr",
)
def test_the_token_appears_nowhere_in_a_failed_in_process_load(
    database_url: str, caplog: pytest.LogCaptureFixture, scenario: ScenarioRecord
) -> None:
    caplog.set_level(logging.DEBUG)
    state = make_state(customers=60, groups=3)
    state.token = DISTINCT_TOKEN
    state.script(["503", "drop", "truncate", "401"])
    config = client_config(token=SecretStr(DISTINCT_TOKEN), max_attempts=4)
    errors: list[str] = []

    async def go() -> None:
        async with AsyncFlowRetailClient(config, transport=asgi(state)) as client:
            errors.append(repr(client))
            try:
                await load_tenant(client, database_url, tenant_of(state), "run-1")
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc!r} {exc}")

    asyncio.run(go())
    texts = [caplog.text, *errors, repr(config), str(config), *_database_text(database_url)]
    assert any("check FLOWRETAIL_TOKEN" in t for t in errors)
    hits = sum(_hits(t, DISTINCT_TOKEN) for t in texts)
    scenario.tokens(hits)
    assert hits == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://api.flowretail.com/v2",
        "http://10.0.0.1/v2",
        "http://0.0.0.0:8080/v2",
        "http://127.0.0.1.nip.io/v2",
        "http://localhost.evil.example/v2",
        "http://2130706433/v2",
        "http://[::ffff:10.0.0.1]/v2",
    ],
)
@pytest.mark.reliability(
    area="secrets and transport",
    injected="FLOWRETAIL_BASE_URL with plain http to a host that is not loopback",
    expected="exit 2, one line naming the variable; no request made",
)
def test_non_loopback_http_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], scenario: ScenarioRecord, url: str
) -> None:
    monkeypatch.setenv("FLOWRETAIL_BASE_URL", url)
    monkeypatch.setenv("FLOWRETAIL_TOKEN", DISTINCT_TOKEN)
    monkeypatch.setenv("FLOWRETAIL_TENANT_UIDS", "tenant-1")
    with pytest.raises(ValueError, match="must use https unless the host is loopback"):
        check_base_url(url)
    assert main(["load"]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == (
        "",
        f"configuration error: FLOWRETAIL_BASE_URL: must use https unless the host is loopback, got {url!r}\n",
    )
    assert "http://127.0.0.1@evil.example/v2" not in url
    with pytest.raises(ValueError, match="must not carry credentials"):
        check_base_url("http://127.0.0.1@evil.example/v2")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_simulator(tls_files: tuple[Path, Path]) -> Iterator[tuple[str, Any]]:
    """The simulator over https on a loopback port, with a self-signed certificate."""
    state = make_state(customers=40, groups=2)
    with https_simulator(state, *tls_files) as base_url:
        yield base_url, state


SWITCH_OFF_ATTEMPTS = {
    "FLOWRETAIL_VERIFY_SSL": "false",
    "FLOWRETAIL_SSL_VERIFY": "0",
    "FLOWRETAIL_TLS_VERIFY": "off",
    "FLOWRETAIL_VERIFY": "false",
    "FLOWRETAIL_INSECURE": "1",
    "FLOWRETAIL_CA_BUNDLE": "",
    "PYTHONHTTPSVERIFY": "0",
    "CURL_CA_BUNDLE": "",
    "REQUESTS_CA_BUNDLE": "",
    "HTTPX_VERIFY": "0",
}


@pytest.mark.reliability(
    area="secrets and transport",
    injected="https simulator with a self-signed certificate; every env var a user might set to skip verification",
    expected="no setting exists; the handshake is refused naming CERTIFICATE_VERIFY_FAILED; a CA bundle makes it work",
)
def test_tls_verification_cannot_be_switched_off(
    monkeypatch: pytest.MonkeyPatch,
    tls_simulator: tuple[str, Any],
    tls_files: tuple[Path, Path],
    scenario: ScenarioRecord,
) -> None:
    base_url, state = tls_simulator
    for name, value in SWITCH_OFF_ATTEMPTS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FLOWRETAIL_BASE_URL", base_url)
    monkeypatch.setenv("FLOWRETAIL_TOKEN", state.token)
    monkeypatch.setenv("FLOWRETAIL_TENANT_UIDS", "tenant-1")
    monkeypatch.setenv("FLOWRETAIL_MAX_ATTEMPTS", "1")
    fields = set(Settings.model_fields) | set(ClientConfig.model_fields)
    assert not {f for f in fields if re.search("verify|insecure|tls|ssl", f)}
    settings = load_settings()
    config = settings.client_config()
    assert not config.ca_bundle

    def fetch(cfg: ClientConfig) -> Any:
        async def go() -> Any:
            async with AsyncFlowRetailClient(cfg) as client:
                return await client.fetch_customer_groups("tenant-1")

        return asyncio.run(go())

    with pytest.raises(RetriesExhaustedError) as err:
        fetch(config)
    assert re.fullmatch(
        r"get-customer-groups page 1: gave up after 1 attempts; last error: ConnectError: \[SSL: "
        r"CERTIFICATE_VERIFY_FAILED\] certificate verify failed: self[- ]signed certificate \(_ssl\.c:\d+\)",
        str(err.value),
    ), str(err.value)
    assert state.request_log == []
    unknown_kwarg = ClientConfig(base_url=base_url, token=SecretStr(state.token), max_attempts=1, verify=False)  # type: ignore[call-arg]
    with pytest.raises(RetriesExhaustedError, match="CERTIFICATE_VERIFY_FAILED"):
        fetch(unknown_kwarg)
    monkeypatch.setenv("FLOWRETAIL_CA_BUNDLE", str(tls_files[0]))
    trusted = load_settings().client_config()
    assert fetch(trusted) == state.groups("tenant-1")
    scenario.note(f"{len(SWITCH_OFF_ATTEMPTS)} switch-off variables ignored; verification failed without the CA bundle")


@pytest.mark.reliability(
    area="secrets and transport",
    injected="DATABASE_URL with a password; the warehouse refuses connections while a failed load is recorded",
    expected="the warning line shows the URL with *** and never the password",
)
def test_database_password_is_masked_in_the_failure_log(
    pg_server_url: str, database_url: str, caplog: pytest.LogCaptureFixture, scenario: ScenarioRecord
) -> None:
    caplog.set_level(logging.DEBUG)
    parts = urlsplit(database_url)
    secret = parts.password or PASSWORD  # a server that asks for one has it in DATABASE_URL already
    if not parts.password:  # trust authentication ignores it, the URL still carries it
        netloc = f"{parts.username or 'postgres'}:{PASSWORD}@{parts.netloc.rpartition('@')[2]}"
        parts = parts._replace(netloc=netloc)
    with_password = urlunsplit(parts)
    assert f":{secret}@" in with_password
    dbname = psycopg.connect(database_url).info.dbname
    state = make_state(customers=60, groups=3)

    async def lock_out_then_fail() -> None:
        with psycopg.connect(pg_server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(dbname)))
        raise RuntimeError("injected failure before the merge")

    async def go() -> None:
        async with AsyncFlowRetailClient(client_config(), transport=asgi(state)) as client:
            await load_tenant(client, with_password, tenant_of(state), "run-1", before_merge=lock_out_then_fail)

    try:
        with pytest.raises(RuntimeError, match="injected failure before the merge"):
            asyncio.run(go())
    finally:
        with psycopg.connect(pg_server_url, autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(dbname)))
    warnings = [r.getMessage() for r in caplog.records if r.name == "pipelines.warehouse.load"]
    assert len(warnings) == 1
    masked = mask_url(with_password)
    assert masked == with_password.replace(secret, "***")
    assert warnings[0].startswith(f"could not record the failed load of {tenant_of(state)} in {masked}: ")
    assert "is not currently accepting connections" in warnings[0]
    hits = _hits(caplog.text, PASSWORD)
    scenario.note(f"password occurrences in logs: {hits}")
    assert hits == 0


@pytest.mark.reliability(
    area="secrets and transport",
    injected="DATABASE_URL with a password pointing at a closed loopback port, opened by the warehouse resource",
    expected="ConfigError line names DATABASE_URL with the URL masked (***), never the password",
)
def test_database_password_is_masked_in_connection_errors(scenario: ScenarioRecord) -> None:
    from pipelines.resources import WarehouseResource

    url = f"postgresql://flow:{PASSWORD}@127.0.0.1:9/warehouse"
    with pytest.raises(ConfigError) as err:
        WarehouseResource(database_url=url).connect()
    text = str(err.value)
    assert text.startswith("DATABASE_URL: cannot connect to postgresql://flow:***@127.0.0.1:9/warehouse: ")
    assert PASSWORD not in text
    for shape in (url, f"host=127.0.0.1 port=9 password={PASSWORD} user=flow", f"password='{PASSWORD}' user=flow"):
        assert PASSWORD not in mask_url(f"error with {shape} inside")


@pytest.mark.slow
@pytest.mark.reliability(
    area="secrets and transport",
    injected="`flowretail load` with DATABASE_URL at a closed loopback port, password in the URL, with and without --verbose",
    expected="exit 1 (or the raised error) with a clear line; the password in no output, log or file",
)
def test_database_password_never_printed_by_the_cli(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    scenario: ScenarioRecord,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    state = make_state(tenants=2, customers=40, groups=2)
    with running_simulator(state) as base_url:
        monkeypatch.setenv("FLOWRETAIL_BASE_URL", base_url)
        monkeypatch.setenv("FLOWRETAIL_TOKEN", state.token)
        monkeypatch.setenv("FLOWRETAIL_TENANT_UIDS", "tenant-1,tenant-2")
        monkeypatch.setenv("DATABASE_URL", f"postgresql://flow:{PASSWORD}@127.0.0.1:9/warehouse")
        assert main(["load", "--tenant", "tenant-1"]) == 1
        first = capfd.readouterr()
        with pytest.raises(psycopg.OperationalError) as raised:
            main(["--verbose", "load", "--tenant", "tenant-1"])
    verbose = capfd.readouterr()
    assert first.err.splitlines()[-1:] == [
        'error: OperationalError: connection failed: connection to server at "127.0.0.1", port 9 failed: '
        "Connection refused Is the server running on that host and accepting TCP/IP connections? "
        "(rerun with --verbose for detail)",
    ]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    hits = _hits(first.out + first.err + verbose.out + verbose.err + caplog.text + str(raised.value), PASSWORD) + sum(
        _hits(p.read_bytes(), PASSWORD) for p in files
    )
    scenario.tokens(0)
    scenario.note(f"password occurrences: {hits}; the problem takes two lines (libpq's hint)")
    assert hits == 0
