"""The fuzz harness, without atheris: every seed and every kept crash, replayed.

``run.py`` fuzzes for a bounded time in CI; these tests keep the harness
itself from rotting (a target that raises on a real session is a broken
harness or a bug) and replay ``regressions/``, the inputs that once found
a bug. The last tests show that the checks can fail at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import fuzz_harness
import pytest

from fastsmtp.wire import _py

HERE = Path(__file__).parent
SEEDS = sorted(fuzz_harness.corpus_files(str(HERE / "corpus")))
REGRESSIONS = sorted(fuzz_harness.corpus_files(str(HERE / "regressions")))


def test_the_corpus_and_the_twins_are_there():
    assert len(SEEDS) >= 30
    assert all(os.path.getsize(seed) <= 4096 for seed in SEEDS), "seeds stay small"
    # The differential target compares something, unless pure Python is forced.
    expected = 1 if os.environ.get("FASTSMTP_NO_EXTENSIONS") else 2
    assert len(fuzz_harness.TWINS) == expected, fuzz_harness.TWINS


@pytest.mark.parametrize("path", SEEDS + REGRESSIONS, ids=os.path.basename)
def test_input_passes_both_targets(path):
    data = Path(path).read_bytes()
    fuzz_harness.TestOneInput(data)
    # The same session cut and answered differently: a few more runs per seed.
    for extra in (b"\r\n", b"QUIT\r\n", b"\x00"):
        fuzz_harness.TestOneInput(data + extra)


@pytest.mark.parametrize(
    "out",
    [b"250 OK", b"250-a\r\n", b"250-a\r\n251 b\r\n", b"25O OK\r\n", b"250 a\rb\r\n", b"199 x\r\n"],
)
def test_malformed_replies_fail_the_check(out):
    with pytest.raises(AssertionError):
        fuzz_harness.check_replies(out)


def test_a_twin_that_differs_fails_both_targets(monkeypatch):
    def upper_args(line):
        verb, args = _py.parse_command(line)
        return verb, args.upper()

    twin = SimpleNamespace(**{n: getattr(_py, n) for n in _py.__all__})
    twin.parse_command = upper_args
    twin.__name__ = "fake"
    monkeypatch.setattr(fuzz_harness, "TWINS", (_py, twin))
    session = b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\n"
    with pytest.raises(AssertionError, match="parse_command"):
        fuzz_harness.wire_target(session)
    with pytest.raises(AssertionError, match="ServerConnection"):
        fuzz_harness.server_target(session)


def test_a_connection_that_breaks_the_state_machine_fails_the_server_target(monkeypatch):
    # As if a command pipelined after STARTTLS were read before the handshake.
    # A subclass: the compiled ServerConnection's methods cannot be replaced.
    class Broken(fuzz_harness.protocol_server.ServerConnection):
        receive_data = _ignore_tls_state

    monkeypatch.setattr(fuzz_harness.protocol_server, "ServerConnection", Broken)
    session = (HERE / "corpus" / "starttls_injection").read_bytes()
    failures = 0
    for extra in range(40):  # the settings (STARTTLS offered or not) vary with the input
        try:
            fuzz_harness.server_target(session + b"NOOP\r\n" * extra)
        except AssertionError:
            failures += 1
    assert failures


def _ignore_tls_state(self, data):
    if data:
        self._reader.feed(data)
    else:
        self._eof = True


def test_run_py_fuzzes_briefly():
    pytest.importorskip("atheris", reason="atheris is installed by CI's fuzz step")
    proc = subprocess.run(
        [sys.executable, str(HERE / "run.py"), "--seconds", "2", "--runs", "100", "wire"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "executions in all" in proc.stdout
