"""Progress shows on a terminal only, on one rewritten line."""

from __future__ import annotations

import io
import logging

from pipelines.progress import TerminalProgressHandler, attach_terminal_progress, progress_logger


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_progress_when_not_on_a_terminal() -> None:
    assert attach_terminal_progress(io.StringIO()) is None


def test_progress_rewrites_one_line_and_finishes_clean() -> None:
    stream = _Tty()
    handler = attach_terminal_progress(stream)
    assert isinstance(handler, TerminalProgressHandler)
    try:
        progress_logger.info("%s: %d/%d groups paged", "tenant-1", 3, 12)
        progress_logger.info("x" * 500)
        handler.finish()
    finally:
        progress_logger.removeHandler(handler)
        progress_logger.propagate = True
        progress_logger.setLevel(logging.NOTSET)
    assert stream.getvalue() == ("\r\x1b[Ktenant-1: 3/12 groups paged" + "\r\x1b[K" + "x" * 117 + "…" + "\r\x1b[K")
