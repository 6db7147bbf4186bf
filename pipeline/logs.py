"""One log format for every command and the daemon: ``2026-11-24T17:50:00Z info message``
(UTC, ISO 8601), plain text whether stderr is a terminal, a pipe or a file.

Lines go through the command's rich console, so on a terminal they print above a progress
bar instead of through it; markup is never interpreted, so a file name cannot style or forge
a line (names are made printable where they are logged).
"""

from __future__ import annotations

import logging
import time

from rich.console import Console
from rich.text import Text

FILES = "imgrag.files"
"""The logger of the per-file lines (``indexed PATH``), shown at ``-v``."""


class UtcFormatter(logging.Formatter):
    """``<ISO-8601 UTC time> <level> <message>``, a traceback after it when there is one."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))

    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.formatTime(record)} {record.levelname.lower()} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class ConsoleHandler(logging.Handler):
    """Writes formatted records to a rich console as plain text (no markup, no colour
    codes off a terminal, no wrapping: one record, one line)."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self.setFormatter(UtcFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # A Text is never parsed for markup or emoji. (Passing markup=False instead would
            # also apply to a progress bar rendered along with the line.)
            self.console.print(Text(self.format(record)), highlight=False, soft_wrap=True)
        except Exception:
            self.handleError(record)


def setup(console: Console, *, level: int = logging.WARNING, verbose: bool = False) -> None:
    """Route every log record (imgrag's, uvicorn's, libraries') to ``console`` in the one
    format. imgrag's own loggers log from ``level``; ``verbose`` shows the per-file lines."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(ConsoleHandler(console))
    root.setLevel(logging.WARNING)
    logging.getLogger("imgrag").setLevel(min(level, logging.INFO) if verbose else level)
    logging.getLogger(FILES).setLevel(logging.INFO if verbose else logging.WARNING)
