"""Headless Debian Chromium driven by Playwright, for the UI smoke tests.

Playwright cannot download its own browser build here, so it launches the system's
``/usr/bin/chromium`` through ``executable_path``. Every wait has a deadline and ``close`` ends the
browser with its helpers.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")

# Running as root in a container, with nothing off the machine: every host name except 127.0.0.1
# fails to resolve, and no proxy is used. Playwright adds --headless itself.
CHROMIUM_ARGS = [
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
]

T = TypeVar("T")

BrowserError = PlaywrightError


def chromium_available() -> bool:
    return CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)


class Browser:
    """One page of a headless Chromium, with a polling wait that says what it waited for."""

    def __init__(self, page: Page) -> None:
        self.page = page

    def is_alive(self) -> bool:
        browser = self.page.context.browser
        return browser is not None and browser.is_connected()

    def set_viewport(self, width: int, height: int) -> None:
        self.page.set_viewport_size({"width": width, "height": height})

    def navigate(self, url: str) -> None:
        """Start loading ``url``; callers wait for what they need with :meth:`wait_for`."""
        self.page.goto(url, wait_until="commit")

    def evaluate(self, expression: str) -> Any:
        return self.page.evaluate(expression)

    def wait_for(
        self, probe: Callable[[], T], done: Callable[[T], bool], timeout: float, what: str, interval: float = 0.25
    ) -> T:
        """Poll ``probe`` until ``done`` holds for its value; bounded by ``timeout``. Returns the last value."""
        deadline = time.monotonic() + timeout
        value = probe()
        while not done(value):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {value!r}")
            self.page.wait_for_timeout(interval * 1000)
            value = probe()
        return value

    def screenshot(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), timeout=60_000)
        return path


@contextlib.contextmanager
def headless_chromium(workdir: Path, width: int = 1600, height: int = 1000) -> Iterator[Browser]:
    """A fresh profile under ``workdir``; the browser and its helpers are ended on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(workdir / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
            device_scale_factor=1,
            timeout=60_000,
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            yield Browser(page)
        finally:
            with contextlib.suppress(PlaywrightError):
                context.close()
