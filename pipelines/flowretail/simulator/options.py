"""The simulator's command-line options, declared once for `flowretail simulator` and for the
benchmarks' simulator server (``benchmarks/simserver.py``), which serve the same state differently."""

from __future__ import annotations

import argparse

from pipelines.flowretail.simulator.config import FaultConfig, SimulatorConfig
from pipelines.flowretail.simulator.state import DEFAULT_TOKEN, SimulatorState, build_state


def add_simulator_options(parser: argparse.ArgumentParser) -> None:
    """The data, paging and fault options; a caller changes a default with ``parser.set_defaults``."""
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the bearer token it accepts")
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--customers", type=int, default=2000, help="customers per tenant")
    parser.add_argument("--groups", type=int, default=12, help="groups per tenant")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--page-size-cap", type=int, default=1000)
    parser.add_argument("--page-base", type=int, choices=(0, 1), default=1)
    parser.add_argument("--max-uids-per-update", type=int, default=1000)
    parser.add_argument("--no-spec-deviations", action="store_true", help="serve no customer that breaks the spec")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests per second before 429s")
    parser.add_argument("--retry-after", choices=("seconds", "http-date", "none"), default="seconds")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction of 5xx answers")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="fraction of dropped connections")
    parser.add_argument("--truncate-rate", type=float, default=0.0, help="fraction of truncated bodies")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--latency-jitter-ms", type=float, default=0.0)
    parser.add_argument("--mutate-scans", type=int, default=0, help="member scans that see data change mid-scan")
    parser.add_argument("--delete-groups-after-list", type=int, default=0)
    parser.add_argument(
        "--unknown-customer-fields", type=int, default=0, help="fields the spec does not know, per customer"
    )


def state_from_options(args: argparse.Namespace) -> SimulatorState:
    """The simulator state the options of ``add_simulator_options`` describe, accepting ``args.token``."""
    state = build_state(
        SimulatorConfig(
            tenants=args.tenants,
            customers=args.customers,
            groups=args.groups,
            seed=args.seed,
            page_size_cap=args.page_size_cap,
            page_base=args.page_base,
            max_uids_per_update=args.max_uids_per_update,
            spec_deviations=not args.no_spec_deviations,
        ),
        FaultConfig(
            rate_limit_rps=args.rate_limit,
            retry_after=args.retry_after,
            error_rate=args.error_rate,
            drop_rate=args.drop_rate,
            truncate_rate=args.truncate_rate,
            latency_ms=args.latency_ms,
            latency_jitter_ms=args.latency_jitter_ms,
            mutate_scans=args.mutate_scans,
            delete_groups_after_list=args.delete_groups_after_list,
            unknown_customer_fields=args.unknown_customer_fields,
        ),
    )
    state.token = args.token
    return state
