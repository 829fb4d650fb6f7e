"""Serving the simulator over real HTTP with uvicorn: in a background thread, or in the foreground.

The socket is bound before uvicorn starts, so port 0 works and the URL is known up front. Uvicorn
runs in its own thread with its own event loop; signals are handled by the foreground function
here, not by uvicorn, so Ctrl-C and SIGTERM both end in a clean shutdown and a normal return.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from types import FrameType

import uvicorn

from pipelines.flowretail.simulator.app import create_app
from pipelines.flowretail.simulator.faults import SimulatedConnectionDrop
from pipelines.flowretail.simulator.state import SimulatorState

logger = logging.getLogger(__name__)

_STARTUP_TIMEOUT = 15.0


class _QuietDrops(logging.Filter):
    """Uvicorn logs every app exception with a traceback; simulated drops are intended, not errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop only records caused by a simulated drop; real errors still reach the log."""
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SimulatedConnectionDrop)


_QUIET_DROPS = _QuietDrops()


def _bind(host: str, port: int) -> socket.socket:
    """Bind before uvicorn starts, so port 0 works and the URL is known to the caller."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _base_url(host: str, port: int) -> str:
    """The URL clients use, bracketing an IPv6 host."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v2"


class _ServerThread:
    """One uvicorn server on a pre-bound socket, in a daemon thread that never touches signals."""

    def __init__(self, state: SimulatorState, host: str, port: int) -> None:
        logging.getLogger("uvicorn.error").addFilter(_QUIET_DROPS)
        self.sock = _bind(host, port)
        self.port = int(self.sock.getsockname()[1])
        self.url = _base_url(host, self.port)
        config = uvicorn.Config(
            create_app(state),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            timeout_keep_alive=30,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name=f"flowretail-simulator-{self.port}", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        """Uvicorn's own loop; an exception is kept for ``start`` to report."""
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as exc:  # reported to the starting thread, which raises it
            self.error = exc

    def start(self) -> None:
        """Start the thread and wait until uvicorn listens, so the URL works when returned."""
        self.thread.start()
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while not self.server.started:
            if self.error is not None or not self.thread.is_alive():
                self.sock.close()
                raise RuntimeError(f"the simulator server failed to start: {self.error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the simulator server did not start in time")
            time.sleep(0.01)

    def stop(self) -> None:
        """Ask uvicorn to finish in-flight requests, then force it if it lingers."""
        self.server.should_exit = True
        self.thread.join(timeout=10)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout=5)
        self.sock.close()


@contextlib.contextmanager
def running_simulator(state: SimulatorState, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``state`` on a loopback port in the background; yields the base URL ending in ``/v2``."""
    server = _ServerThread(state, host, port)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def serve_forever(state: SimulatorState, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve in the foreground until Ctrl-C or SIGTERM, then shut down cleanly and return.

    Prints exactly one line once listening, so a script can wait for it and read the URL.
    """
    server = _ServerThread(state, host, port)
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        """Signal handler: only sets the event; the main loop does the shutdown."""
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        print(
            f"Flow Retail simulator ready at {server.url} (tenants: {', '.join(state.tenant_uids())})",
            flush=True,
        )
        while not stop.is_set() and server.thread.is_alive():
            stop.wait(0.2)
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if server.error is not None:
        print(f"the simulator server stopped: {server.error!r}", file=sys.stderr)
