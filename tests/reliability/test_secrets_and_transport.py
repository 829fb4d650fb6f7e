"""Secrets and transport: the token appears nowhere a run leaves anything, plain http is for loopback
only, TLS verification cannot be switched off, and database passwords are masked wherever a URL is shown."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

import httpx
import orjson
import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from pipelines.cli import main
from pipelines.flowretail.client import AsyncFlowRetailClient
from pipelines.flowretail.config import ClientConfig, check_base_url
from pipelines.flowretail.errors import RetriesExhaustedError, SpecViolationError
from pipelines.flowretail.simulator import SimulatorConfig, build_state, running_simulator
from pipelines.flowretail.spec import LIST_GROUPS
from pipelines.settings import ConfigError, Settings, load_settings
from pipelines.warehouse.load import load_tenant
from pipelines.warehouse.postgres import mask_url, masked_database_url
from tests.flowretail.lists import fetch_customer_groups
from tests.helpers import client_config_of
from tests.reliability.conftest import ScenarioRecord
from tests.reliability.support import asgi, client_config, make_state, run_load, tenant_of
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
    config = client_config_of(settings)
    assert not config.ca_bundle

    def fetch(cfg: ClientConfig) -> Any:
        async def go() -> Any:
            async with AsyncFlowRetailClient(cfg) as client:
                return await fetch_customer_groups(client, "tenant-1")

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
    trusted = client_config_of(load_settings())
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
    masked = masked_database_url(with_password)
    assert secret not in masked and f"{urlsplit(with_password).username}:***@" in masked
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
    expected="exit 1 with one line naming DATABASE_URL, password masked; the password in no output, log or file",
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
        assert main(["--verbose", "load", "--tenant", "tenant-1"]) == 1
    verbose = capfd.readouterr()
    line = (
        "error: DATABASE_URL: cannot connect to postgresql://flow:***@127.0.0.1:9/warehouse: connection failed: "
        'connection to server at "127.0.0.1", port 9 failed: Connection refused Is the server running on that host '
        "and accepting TCP/IP connections?"
    )
    # The schema check before any job meets the closed port first: one line naming the variable.
    assert first.err.splitlines()[-1:] == [line]
    assert verbose.err.splitlines()[-1:] == [line]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    hits = _hits(first.out + first.err + verbose.out + verbose.err + caplog.text, PASSWORD) + sum(
        _hits(p.read_bytes(), PASSWORD) for p in files
    )
    scenario.tokens(0)
    scenario.note(f"password occurrences: {hits}")
    assert hits == 0


# ------------------------------------------------------------------ token hygiene (issue 12)


def _load_runs(database_url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT tenant_uid, status, error FROM flowretail.load_runs ORDER BY started_at").fetchall()


@pytest.mark.slow
@pytest.mark.reliability(
    area="secrets and transport",
    injected="`flowretail load` with FLOWRETAIL_TOKEN ending in a newline (a secret mounted from a file), "
    "then the same token revoked",
    expected="the newline is stripped and the load succeeds (exit 0); the revoked run exits 1 with one error "
    "line; the token in no output and no load_runs.error",
)
def test_a_token_with_a_trailing_newline_is_stripped_end_to_end(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database_url: str,
    capfd: pytest.CaptureFixture[str],
    scenario: ScenarioRecord,
) -> None:
    state = make_state(customers=60, groups=3)
    state.token = DISTINCT_TOKEN
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with running_simulator(state) as base_url:
        monkeypatch.setenv("FLOWRETAIL_BASE_URL", base_url)
        monkeypatch.setenv("FLOWRETAIL_TOKEN", DISTINCT_TOKEN + "\n")
        monkeypatch.setenv("FLOWRETAIL_TENANT_UIDS", "tenant-1")
        monkeypatch.setenv("DATABASE_URL", database_url)
        assert main(["load"]) == 0
        ok = capfd.readouterr()
        state.faults.revoke_token_after = 0
        assert main(["load"]) == 1
        failed = capfd.readouterr()
    assert {r.status for r in state.request_log} == {200, 401}
    runs = _load_runs(database_url)
    assert [(tenant, status) for tenant, status, _ in runs] == [("tenant-1", "succeeded"), ("tenant-1", "failed")]
    assert runs[0][2] is None
    assert runs[1][2].startswith("AuthenticationError: get-customer-groups page 1: HTTP 401: ")
    errors = [line for line in failed.err.splitlines() if line.startswith("error: ")]
    error = runs[1][2]
    assert errors == [
        f"error: load of tenant tenant-1 failed: flowretail_raw_tables: pipelines.flowretail.errors.{error}"
    ]
    assert "check FLOWRETAIL_TOKEN" in errors[0]
    texts = [ok.out, ok.err, failed.out, failed.err, *(str(r) for r in runs)]
    hits = sum(_hits(t, DISTINCT_TOKEN) + _hits(t, DISTINCT_TOKEN[:8]) for t in texts)
    scenario.tokens(hits)
    assert hits == 0


BAD_TOKENS = {
    "inner newline": (f"{DISTINCT_TOKEN[:6]}\n{DISTINCT_TOKEN[6:]}", "is not a valid bearer token: character 7 of 20"),
    "header injection": (
        f"{DISTINCT_TOKEN}\r\nX-Evil: 1",
        f"is not a valid bearer token: character {len(DISTINCT_TOKEN) + 1} of {len(DISTINCT_TOKEN) + 11}",
    ),
    "space inside": (f"{DISTINCT_TOKEN[:5]} {DISTINCT_TOKEN[5:]}", "is not a valid bearer token: character 6 of 20"),
    "quoted": (f'"{DISTINCT_TOKEN}"', "is not a valid bearer token: character 1 of 21"),
    "too short": ("Zq8x7Wp", "is 7 characters long; a bearer token has at least 8"),
    "only whitespace": (" \n\t", "is empty"),
}
_ALLOWED_CHARS = " is not allowed (RFC 6750 allows letters, digits, - . _ ~ + / and trailing =)"


@pytest.mark.parametrize("case", list(BAD_TOKENS))
@pytest.mark.reliability(
    area="secrets and transport",
    injected="FLOWRETAIL_TOKEN with a character a bearer token cannot hold, or shorter than 8 characters",
    expected="exit 2 at start with one line naming FLOWRETAIL_TOKEN, never the token; no request, nothing written",
)
def test_a_bad_or_short_token_stops_the_program_at_start(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    scenario: ScenarioRecord,
    case: str,
) -> None:
    token, problem = BAD_TOKENS[case]
    line = f"FLOWRETAIL_TOKEN: {problem}" + (_ALLOWED_CHARS if problem.startswith("is not a valid") else "")
    state = make_state(customers=20, groups=1)
    with running_simulator(state) as base_url:
        monkeypatch.setenv("FLOWRETAIL_BASE_URL", base_url)
        monkeypatch.setenv("FLOWRETAIL_TOKEN", token)
        monkeypatch.setenv("FLOWRETAIL_TENANT_UIDS", "tenant-1")
        monkeypatch.setenv("DATABASE_URL", database_url)
        with pytest.raises(ConfigError) as err:
            load_settings()
        assert main(["load"]) == 2
    assert str(err.value) == line
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"configuration error: {line}\n")
    assert state.request_log == []
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'flowretail'").fetchone() == (0,)
    parts = [p for p in re.split(r"\s+", token) if len(p) >= 4]
    hits = sum(_hits(captured.err + str(err.value), p) for p in parts)
    scenario.tokens(hits)
    assert hits == 0


def _fixed_app(status: int, payload: Any) -> Any:
    """A one-answer HTTP server (ASGI): what a hostile or broken API could send back."""
    body = orjson.dumps(payload)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": body})

    return app


def _escaped_forms(token: str) -> list[str]:
    return [
        token,
        repr(token + "\n")[1:-1],
        str((token + "\n").encode()),
        orjson.dumps(token).decode().replace("/", "\\/"),
        quote(token, safe=""),
        quote(token, safe="").lower(),
        quote_plus(token),
    ]


@pytest.mark.reliability(
    area="secrets and transport",
    injected="API answers echoing the token: a 400 message with it in 7 escaped forms, the first straddling "
    "the 300-character cut; a schema-violating value; a duplicated key equal to the token",
    expected="every error text (message, detail, load_runs row) redacted before cutting; no form of the token left",
)
def test_every_client_error_is_redacted_before_it_is_cut(database_url: str, scenario: ScenarioRecord) -> None:
    token = "tok/DISTINCT+7f3a9c=="
    forms = _escaped_forms(token)
    message = "x" * 290 + " " + " | ".join(forms)
    # Strict: a data field breaking the spec is an error only then (otherwise it is loaded as it comes).
    config = client_config(token=SecretStr(token), strict_spec=True)
    texts: list[str] = []

    def call(app: Any, operation: Callable[[AsyncFlowRetailClient], Awaitable[Any]]) -> str:
        async def go() -> str:
            async with AsyncFlowRetailClient(config, transport=httpx.ASGITransport(app=app)) as client:
                try:
                    await operation(client)
                except Exception as exc:
                    texts.extend([str(exc), repr(exc), *(v for v in vars(exc).values() if isinstance(v, str))])
                    return str(exc)
            raise AssertionError("no error raised")

        return asyncio.run(go())

    refused = call(_fixed_app(400, {"message": message}), lambda c: c.get_customer_group("tenant-1", "g1"))
    assert refused == "get-customer-groups-by-uid: HTTP 400: " + "x" * 290 + " <redacted"
    page = {
        "items": [{"customerGroupUid": {"echo": token}, "name": "n"}],  # item keys stay strict
        "paging": {"pageNumber": 1, "pageSize": 100, "totalCount": 1},
    }
    violation = call(_fixed_app(200, page), lambda c: fetch_customer_groups(c, "tenant-1"))
    assert violation.startswith(
        "get-customer-groups page 1: response breaks the spec at field 'items[0].customerGroupUid': "
    )
    assert "<redacted>" in violation
    uid_token = "A_tok_DISTINCT_uid_7f3a9c"  # a token that is also a valid uid, listed first
    state = make_state(customers=30, groups=2)
    state.token = uid_token
    state.create_group(tenant_of(state), "echo", uid_token)
    state.script(["duplicate_items"] * 3, operation_id=LIST_GROUPS)  # on every scan attempt
    with pytest.raises(SpecViolationError) as err:
        run_load(state, database_url, "run-1", token=SecretStr(uid_token))
    texts.extend([str(err.value), *(str(r) for r in _load_runs(database_url))])
    assert "'<redacted>' appears twice on the page" in str(err.value)
    assert uid_token[:8] not in str(err.value)
    hits = sum(_hits(t, form) for t in texts for form in [*forms, token[:8], uid_token])
    scenario.tokens(hits)
    assert hits == 0


@pytest.mark.reliability(
    area="secrets and transport",
    injected="`flowretail psql` with a password in DATABASE_URL; psql prints its own command line and passfile",
    expected="the password is not on psql's command line; it reaches psql through a private PGPASSFILE, removed after",
)
def test_psql_gets_the_password_through_the_environment(
    monkeypatch: pytest.MonkeyPatch, database_url: str, capfd: pytest.CaptureFixture[str], scenario: ScenarioRecord
) -> None:
    parts = urlsplit(database_url)
    host = parts.netloc.rpartition("@")[2]
    with_password = urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}:{PASSWORD}@{host}"))
    monkeypatch.setenv("DATABASE_URL", with_password)
    monkeypatch.setenv("PGPASSWORD", "inherited-and-dropped")
    show = (
        '\\! tr \'\\0\' \' \' < /proc/$PPID/cmdline; echo; cat "$PGPASSFILE"; echo "$PGPASSFILE"; echo "pw=$PGPASSWORD"'
    )
    assert main(["psql", "-X", "-A", "-t", "-c", "select 41 + 1", "-c", show]) == 0
    out = capfd.readouterr().out.splitlines()
    assert out[0] == "42"
    cmdline, passfile_line, passfile, inherited = out[1:5]
    assert "dbname=" in cmdline and "select 41 + 1" in cmdline
    assert PASSWORD not in cmdline
    assert passfile_line == f"*:*:*:*:{PASSWORD}"
    assert inherited == "pw="
    assert not Path(passfile).exists()
    scenario.tokens(0)
    scenario.note("the password was read from the passfile and absent from argv")


@pytest.mark.reliability(
    area="secrets and transport",
    injected="embedded PostgreSQL started with FLOWRETAIL_TOKEN, DATABASE_URL, PGPASSWORD and a cloud key in the environment",
    expected="the running postmaster's environment holds only PATH/HOME/USER/locale/TZ-like names and none of the secrets",
)
def test_the_embedded_server_starts_with_a_scrubbed_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, scenario: ScenarioRecord
) -> None:
    from pipelines.warehouse.embedded import start_embedded_postgres
    from tests.helpers import stop_embedded_postgres

    secrets = {
        "FLOWRETAIL_TOKEN": DISTINCT_TOKEN,
        "DATABASE_URL": f"postgresql://flow:{PASSWORD}@db.example/warehouse",
        "PGPASSWORD": PASSWORD,
        "AWS_SECRET_ACCESS_KEY": "aws-secret-value-123",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    data = tmp_path / "pg"
    url = start_embedded_postgres(data)
    try:
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
        environ = Path(f"/proc/{postmaster}/environ").read_bytes()
    finally:
        stop_embedded_postgres(data)
    names = {entry.split(b"=", 1)[0].decode() for entry in environ.split(b"\0") if entry}
    # pg_ctl and its shell add PGDATA, PGSYSCONFDIR, PG_GRANDPARENT_PID and PWD themselves.
    added = {"PGDATA", "PGSYSCONFDIR", "PG_GRANDPARENT_PID", "PWD"}
    allowed = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", *added}
    assert names - allowed <= {n for n in names if n.startswith("LC_")}, names
    hits = sum(_hits(environ, value) for value in secrets.values())
    scenario.tokens(hits)
    scenario.note(f"postmaster environment names: {', '.join(sorted(names))}")
    assert hits == 0


@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.reliability(
    area="secrets and transport",
    injected="HTTP_PROXY/HTTPS_PROXY/ALL_PROXY pointing at a second server, with and without FLOWRETAIL_TRUST_ENV=1",
    expected="without it the proxy sees no request and the API answers; with it the request goes to the proxy",
)
def test_proxies_from_the_environment_are_ignored_unless_trusted(
    monkeypatch: pytest.MonkeyPatch, scenario: ScenarioRecord, trusted: bool
) -> None:
    api, proxy = make_state(customers=20, groups=2), make_state(customers=5, groups=1)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with running_simulator(api) as base_url, running_simulator(proxy) as proxy_url:
        proxy_origin = proxy_url.removesuffix("/v2")
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy_origin)
        monkeypatch.setenv("FLOWRETAIL_BASE_URL", base_url)
        monkeypatch.setenv("FLOWRETAIL_TOKEN", api.token)
        monkeypatch.setenv("FLOWRETAIL_TENANT_UIDS", "tenant-1")
        if trusted:
            monkeypatch.setenv("FLOWRETAIL_TRUST_ENV", "1")
        config = client_config_of(load_settings())
        assert config.trust_env is trusted

        async def fetch() -> Any:
            async with AsyncFlowRetailClient(config) as client:
                return await fetch_customer_groups(client, "tenant-1")

        # The "proxy" is another simulator with other data: uvicorn serves an absolute-form request itself.
        assert asyncio.run(fetch()) == (proxy if trusted else api).groups("tenant-1")
    assert api.groups("tenant-1") != proxy.groups("tenant-1")
    assert len(proxy.request_log) == (1 if trusted else 0)
    assert len(api.request_log) == (0 if trusted else 1)
    scenario.note("proxied" if trusted else "direct")
