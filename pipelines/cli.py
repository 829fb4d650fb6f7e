"""`flowretail`: launches Dagster jobs in-process on the configured (or embedded) systems. No logic of its own."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pipelines.settings import ConfigError
from pipelines.warehouse.postgres import mask_url

logger = logging.getLogger("flowretail")
_Subcommands = argparse._SubParsersAction  # what ArgumentParser.add_subparsers returns


def _guard_overrides(cmd: argparse.ArgumentParser) -> None:
    """One flag per override declared with the push guards (segment_push.plan.GUARDS)."""
    from pipelines.segment_push.plan import GUARD_OVERRIDES, GUARDS

    for override in GUARD_OVERRIDES:
        names = ", ".join(g.name for g in GUARDS if g.override == override)
        cmd.add_argument("--" + override.replace("_", "-"), action="store_true", help=f"push even if {names} trip")


def _add_simulator_command(sub: _Subcommands) -> None:
    from pipelines.flowretail.simulator.options import add_simulator_options

    add_simulator_options(sub.add_parser("simulator", help="serve the Flow Retail API simulator on a loopback port"))


def _add_run_commands(sub: _Subcommands) -> None:
    """``load``, ``run`` and ``push``: the commands that launch Dagster jobs."""
    for name, help_text in (("load", "load tenants into the warehouse"), ("run", "load, build models, push segments")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--tenant", action="append", help="tenant uid (repeatable; default: all configured)")
        cmd.add_argument("--json", action="store_true", help="print the summary as JSON")
        if name == "run":
            _guard_overrides(cmd)
            cmd.add_argument(
                "--drop-stale-models",
                action="store_true",
                help="drop the relations the runner built for models that no longer exist",
            )
    push = sub.add_parser("push", help="push segments into Flow Retail customer groups")
    push.add_argument("--tenant", action="append")
    push.add_argument("--segment", action="append")
    push.add_argument("--dry-run", action="store_true")
    _guard_overrides(push)
    push.add_argument("--retire", metavar="GROUP_UID", help="empty and delete a group the product created (no push)")
    push.add_argument("--keep-group", action="store_true", help="with --retire: empty the group but keep it")
    push.add_argument("--json", action="store_true")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowretail", description="Flow Retail customer groups <-> PostgreSQL")
    parser.add_argument("--verbose", action="store_true", help="show detail and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_simulator_command(sub)
    _add_run_commands(sub)
    migrate = sub.add_parser(
        "migrate",
        help="create or upgrade the warehouse schema and promote new API fields "
        "(load, push and run do it first when needed)",
    )
    migrate.add_argument("--force", action="store_true", help="re-run every idempotent statement even when current")
    tenants = sub.add_parser("tenants", help="list the configured and registered tenants, or sync the partitions")
    tenants.add_argument("action", choices=("list", "sync"), nargs="?", default="list")
    sub.add_parser("ui", help="start the Dagster UI on the same defaults as `make run`")
    sub.add_parser("report", help="write an HTML report of the recorded runs under .flowretail/report/")
    sub.add_parser(
        "psql",
        help="open psql on the warehouse (starts the embedded PostgreSQL if needed); "
        "further arguments go to psql, e.g. flowretail psql -c 'select 1'",
    )
    return parser


def _serve_simulator(args: argparse.Namespace) -> int:
    from pipelines.flowretail.simulator import serve_forever
    from pipelines.flowretail.simulator.options import state_from_options

    serve_forever(state_from_options(args), port=args.port)
    return 0


def _run_jobs(args: argparse.Namespace) -> int:
    from pipelines.launch import launch
    from pipelines.progress import attach_terminal_progress
    from pipelines.runtime import embedded_environment
    from pipelines.segment_push.plan import GUARD_OVERRIDES

    progress = attach_terminal_progress()
    with embedded_environment() as env:
        if getattr(args, "retire", None):
            from pipelines.launch import retire

            summary = retire(
                env,
                group_uid=args.retire,
                tenants=args.tenant,
                dry_run=args.dry_run,
                keep_group=args.keep_group,
                verbose=args.verbose,
            )
        else:
            summary = launch(
                env,
                command=args.command,
                tenants=args.tenant,
                segments=getattr(args, "segment", None),
                dry_run=getattr(args, "dry_run", False),
                overrides=[name for name in GUARD_OVERRIDES if getattr(args, name, False)],
                drop_stale_models=getattr(args, "drop_stale_models", False),
                verbose=args.verbose,
            )
        if args.command == "run":
            from pipelines.reporting import write_report

            summary.report_path = str(write_report(env.database_url))
    if progress is not None:
        progress.finish()
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2, default=str))
    else:
        print(summary.render())
    for problem in summary.problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if summary.problems else 0


def _tenants(args: argparse.Namespace) -> int:
    from pipelines.partitions import TENANT_PARTITIONS_NAME, configured_tenant_uids, sync_tenant_partitions
    from pipelines.runtime import initialised_instance, prepare_dagster_home

    prepare_dagster_home()
    configured = configured_tenant_uids()
    with initialised_instance() as instance:
        if args.action == "sync":
            result = sync_tenant_partitions(instance, configured)
            print(f"added: {', '.join(result.added) or '-'}")
            print(f"removed: {', '.join(result.removed) or '-'}")
        else:
            print(f"configured: {', '.join(configured) or '-'}")
        print(f"registered: {', '.join(instance.get_dynamic_partitions(TENANT_PARTITIONS_NAME)) or '-'}")
    return 0


def _ui(args: argparse.Namespace) -> int:
    import subprocess

    from pipelines.runtime import embedded_environment

    with embedded_environment() as env:
        print(f"Dagster UI on the embedded defaults (warehouse {env.masked_database_url}); Ctrl-C to stop")
        try:
            return subprocess.call([sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml"])
        except KeyboardInterrupt:
            return 0


def _report(args: argparse.Namespace) -> int:
    from pipelines.reporting import write_report
    from pipelines.settings import load_settings

    settings = load_settings()
    if settings.database_url is not None:
        from pipelines.runtime import STATE_DIR, private_state_dir

        private_state_dir(STATE_DIR)
        path = write_report(settings.database_url.get_secret_value())
    else:
        from pipelines.runtime import embedded_environment

        with embedded_environment(start_simulator=False) as env:
            path = write_report(env.database_url)
    print(f"report written to {path}")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from pipelines.settings import load_settings
    from pipelines.warehouse.migrate import MigrationError, migrate

    settings = load_settings()
    try:
        if settings.database_url is not None:
            report = migrate(settings.database_url.get_secret_value(), force=args.force)
        else:
            from pipelines.runtime import embedded_environment

            with embedded_environment(start_simulator=False) as env:
                report = migrate(env.database_url, force=args.force)
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    return 0


def _psql(args: argparse.Namespace) -> int:
    import subprocess

    from pipelines.runtime import embedded_environment
    from pipelines.warehouse.embedded import psql_invocation

    with (
        embedded_environment(start_simulator=False) as env,
        psql_invocation(env.database_url, args.psql_args) as (
            argv,
            psql_env,
        ),
    ):
        return subprocess.call(argv, env=psql_env)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "psql":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.psql_args = extra
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    handlers: dict[str, Any] = {
        "simulator": _serve_simulator,
        "ui": _ui,
        "report": _report,
        "psql": _psql,
        "tenants": _tenants,
        "migrate": _migrate,
    }
    try:
        return int(handlers.get(args.command, _run_jobs)(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        message = mask_url(" ".join(str(exc).split()))
        print(f"error: {type(exc).__name__}: {message} (rerun with --verbose for detail)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
