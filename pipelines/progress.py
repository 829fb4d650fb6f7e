"""Progress of long work, as log records on the ``flowretail.progress`` logger.

Libraries only emit; whoever runs them decides where progress goes. The CLI shows it on one
updating terminal line when stderr is a terminal and drops it otherwise (schedulers, CI, pipes).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

progress_logger = logging.getLogger("flowretail.progress")


class TerminalProgressHandler(logging.Handler):
    """Rewrites a single status line on a terminal; ``finish()`` ends it with a newline."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(logging.INFO)
        self.stream = stream or sys.stderr
        self._dirty = False

    def emit(self, record: logging.LogRecord) -> None:
        width = 118
        text = self.format(record)
        self.stream.write("\r\x1b[K" + (text if len(text) <= width else text[: width - 1] + "…"))
        self.stream.flush()
        self._dirty = True

    def finish(self) -> None:
        if self._dirty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._dirty = False


def attach_terminal_progress(stream: TextIO | None = None) -> TerminalProgressHandler | None:
    """Show progress when the stream is a terminal; return the handler to finish, or None."""
    stream = stream or sys.stderr
    if not stream.isatty():
        return None
    handler = TerminalProgressHandler(stream)
    progress_logger.addHandler(handler)
    progress_logger.setLevel(logging.INFO)
    progress_logger.propagate = False
    return handler
