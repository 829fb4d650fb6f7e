"""The project's simulator in its own process, plus two admin routes for the benchmarks.

``python benchmarks/simserver.py --customers N ...`` builds the state ``flowretail simulator`` would,
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

from pipelines.flowretail.simulator import SimulatorState, create_app
from pipelines.flowretail.simulator.options import add_simulator_options, state_from_options

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
    add_simulator_options(parser)
    parser.set_defaults(port=0, token="bench-token", tenants=1, customers=10_000, groups=100)
    args = parser.parse_args()
    state = state_from_options(args)

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
