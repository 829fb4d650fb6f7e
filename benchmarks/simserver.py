"""The project's simulator in its own process, plus two admin routes for the benchmarks.

``python benchmarks/simserver.py --customers N ...`` builds ``build_state(SimulatorConfig(...))``,
serves ``create_app(state)`` with uvicorn on a loopback port and prints one line
``ready at {"base_url": ..., "admin_url": ...}``. Requests under ``/__bench`` never reach the
simulator: ``GET /__bench/stats`` answers what the server saw since the last ``POST /__bench/reset``
(counts by status and operation, and optionally each request's time), so request counts and rates
are measured on the server side, the same way for the project's client and for dlt.
It stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import threading
import time
from collections import Counter
from types import FrameType
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from pipelines.flowretail.simulator import FaultConfig, SimulatorConfig, SimulatorState, build_state, create_app

ADMIN_PREFIX = "/__bench"


class AdminWrapper:
    """Routes ``/__bench/*`` to the admin handlers and everything else to the simulator app."""

    def __init__(self, app: ASGIApp, state: SimulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        action = scope["path"][len(ADMIN_PREFIX) :]
        if action == "/reset":
            self.state.clear_log()
            payload: Any = {"ok": True}
        elif action == "/stats":
            query = parse_qs(scope.get("query_string", b"").decode())
            payload = self._stats(with_times=query.get("timestamps") == ["1"])
        else:
            payload = {"message": f"unknown admin action {action}"}
        body = json.dumps(payload).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    def _stats(self, *, with_times: bool) -> dict[str, Any]:
        with self.state.lock:
            log = list(self.state.request_log)
        by_status = Counter(str(r.status) for r in log)
        by_operation = Counter(f"{r.method} {r.operation_id}" for r in log)
        stats: dict[str, Any] = {
            "requests": len(log),
            "by_status": dict(by_status),
            "by_operation": dict(by_operation),
        }
        if with_times:
            stats["times"] = [[r.at.timestamp(), r.status] for r in log]
        return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="bench-token")
    parser.add_argument("--tenants", type=int, default=1)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--page-size-cap", type=int, default=1000)
    parser.add_argument("--max-uids-per-update", type=int, default=1000)
    parser.add_argument("--rate-limit", type=float, default=None)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()

    state = build_state(
        SimulatorConfig(
            tenants=args.tenants,
            customers=args.customers,
            groups=args.groups,
            seed=args.seed,
            page_size_cap=args.page_size_cap,
            max_uids_per_update=args.max_uids_per_update,
        ),
        FaultConfig(rate_limit_rps=args.rate_limit, latency_ms=args.latency_ms),
    )
    state.token = args.token

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(2048)
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        AdminWrapper(create_app(state), state),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=30,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: server.run(sockets=[sock]), daemon=True)
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        print("the simulator server did not start", flush=True)
        return 1
    urls = {"base_url": f"http://127.0.0.1:{port}/v2", "admin_url": f"http://127.0.0.1:{port}{ADMIN_PREFIX}"}
    print(f"ready at {json.dumps(urls)}", flush=True)
    while not stop.is_set() and thread.is_alive():
        stop.wait(0.2)
    server.should_exit = True
    thread.join(timeout=10)
    if thread.is_alive():
        server.force_exit = True
        thread.join(timeout=5)
    sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
