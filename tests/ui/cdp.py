"""Headless Chromium driven over the DevTools protocol through ``--remote-debugging-pipe`` (standard library only).

Chromium reads NUL-terminated JSON commands on fd 3 and writes replies and events on fd 4, so no
debugging port is opened and no websocket client is needed. Every call has a deadline; the browser
runs in its own process group and `close` kills that whole group.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import selectors
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tests.ui.webserver import kill_process_group

CHROMIUM = Path("/usr/bin/chromium")

# Running as root in a container, with nothing off the machine: every host name except 127.0.0.1
# fails to resolve, and no proxy is used.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-extensions",
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--hide-scrollbars",
    "--mute-audio",
)

T = TypeVar("T")


class CdpError(RuntimeError):
    """A DevTools command failed, timed out, or the browser went away."""


def chromium_available() -> bool:
    return CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)


class Browser:
    """One headless Chromium with one page attached (flattened session)."""

    def __init__(self, user_data_dir: Path, log_path: Path, width: int, height: int) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes() -> None:  # in the child, before exec: fd 3 = commands in, fd 4 = replies out
            commands, replies = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(commands, 3)
            os.dup2(replies, 4)

        argv = [
            str(CHROMIUM),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={user_data_dir}",
            f"--window-size={width},{height}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=False,
                preexec_fn=wire_pipes,
                start_new_session=True,
            )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._from_browser, selectors.EVENT_READ)
        self._buffer = b""
        self._next_id = 0
        self._session: str | None = None
        self.log_path = log_path

    # -- protocol -----------------------------------------------------------------------------------

    def _send(self, method: str, params: dict[str, Any] | None, *, session: str | None, timeout: float) -> Any:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        try:
            os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        except BrokenPipeError as exc:
            raise CdpError(f"{method}: Chromium is gone:\n{self._log_tail()}") from exc
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") != self._next_id:
                    continue  # an event, or a late reply to an earlier command
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError(f"{method}: no reply within {timeout:.0f} s")
            if self._selector.select(left):
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise CdpError(f"{method}: Chromium closed the pipe:\n{self._log_tail()}")
                self._buffer += chunk

    def browser_call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        return self._send(method, params, session=None, timeout=timeout)

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
        if self._session is None:
            raise CdpError("no page attached")
        return self._send(method, params, session=self._session, timeout=timeout)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text("utf-8", errors="replace")[-2000:]
        except OSError:
            return "<no log>"

    # -- page -------------------------------------------------------------------------------------

    def attach_page(self) -> None:
        targets = self.browser_call("Target.getTargets")["targetInfos"]
        page = next((t for t in targets if t["type"] == "page"), None)
        target_id = (
            page["targetId"] if page else self.browser_call("Target.createTarget", {"url": "about:blank"})["targetId"]
        )
        self._session = self.browser_call("Target.attachToTarget", {"targetId": target_id, "flatten": True})[
            "sessionId"
        ]
        self.call("Page.enable")
        self.call("Runtime.enable")

    def set_viewport(self, width: int, height: int) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def navigate(self, url: str) -> None:
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CdpError(f"navigation to {url} failed: {result['errorText']}")

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise CdpError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(
        self, probe: Callable[[], T], done: Callable[[T], bool], timeout: float, what: str, interval: float = 0.25
    ) -> T:
        """Poll ``probe`` until ``done`` holds for its value; bounded by ``timeout``. Returns the last value."""
        deadline = time.monotonic() + timeout
        value = probe()
        while not done(value):
            if time.monotonic() >= deadline:
                raise CdpError(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {value!r}")
            time.sleep(interval)
            value = probe()
        return value

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False}, timeout=60)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def close(self) -> None:
        with contextlib.suppress(CdpError, OSError):
            self.browser_call("Browser.close", timeout=5.0)
        kill_process_group(self.proc, grace=10.0)
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._selector.close()


@contextlib.contextmanager
def headless_chromium(workdir: Path, width: int = 1600, height: int = 1000) -> Iterator[Browser]:
    """A fresh profile under ``workdir``; the browser and its helpers are killed on exit."""
    profile = workdir / "chromium-profile"
    shutil.rmtree(profile, ignore_errors=True)
    profile.mkdir(parents=True)
    browser = Browser(profile, workdir / "chromium.log", width, height)
    try:
        browser.attach_page()
        browser.set_viewport(width, height)
        yield browser
    finally:
        browser.close()
