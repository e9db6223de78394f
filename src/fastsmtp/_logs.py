"""The log of ``fastsmtp serve``: one line per message, at a price that fits.

At INFO every message logs a line, as Postfix's do. Through the standard
``logging`` setup each line cost ~78k instructions, more than receiving the
message itself (~58k). The process is the CLI's own, so it takes the
optimisations the logging HOWTO lists for what its format never shows
(threads, processes, the caller's file and line), and formats the time once
a second instead of per line. The lines read exactly as ``basicConfig``
with the same format writes them.
"""

from __future__ import annotations

import logging
import time

__all__ = ["FORMAT", "configure"]

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class _Formatter(logging.Formatter):
    """``logging.Formatter``'s lines; the time is formatted once per second."""

    def __init__(self) -> None:
        super().__init__(FORMAT)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:  # handlers format under their lock: no race here
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"  # as Formatter's "%s,%03d"


def configure(level: str) -> None:
    """Log to stderr at ``level``, as ``logging.basicConfig`` would, only cheaper.

    Like ``basicConfig``, it does nothing when the root logger has handlers.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    # The logging HOWTO's "Optimization": what the format does not show is not collected.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # no caller lookup (sys._getframe and a walk) per line
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
