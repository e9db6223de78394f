"""The log of ``fastsmtp serve`` (``fastsmtp._logs``): basicConfig's lines, made cheaper."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

from fastsmtp._logs import FORMAT, _Formatter


def _record(created: float, message: str) -> logging.LogRecord:
    record = logging.LogRecord("fastsmtp", logging.INFO, __file__, 1, "%s", (message,), None)
    record.created = created
    record.msecs = (created - int(created)) * 1000
    return record


def test_the_lines_are_those_of_the_standard_formatter():
    ours, standard = _Formatter(), logging.Formatter(FORMAT)
    # Within one second, across seconds, and back: the cached time never goes stale.
    for created in (
        1_700_000_000.0,
        1_700_000_000.5,
        1_700_000_000.999,
        1_700_000_001.001,
        1_700_000_000.25,
    ):
        record = _record(created, f"at {created}")
        assert ours.format(record) == standard.format(record)


def test_serve_logs_in_that_format_and_leaves_a_configured_root_alone():
    code = (
        "import logging, sys\n"
        "from fastsmtp import _logs\n"
        "_logs.configure('info')\n"
        "logging.getLogger('fastsmtp').info('hello %s', 'there')\n"
        "logging.getLogger('fastsmtp').debug('not shown')\n"
        "_logs.configure('debug')\n"  # configured already: nothing changes
        "logging.getLogger('fastsmtp').debug('still not shown')\n"
        "print(len(logging.getLogger().handlers))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} fastsmtp INFO hello there", lines[0])
    assert result.stdout.strip() == "1"
