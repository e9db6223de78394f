"""Micro benchmarks of the wire layer, both implementations side by side.

Run with ``make bench`` (``python -m pytest bench/test_micro.py
--benchmark-only``); ``--benchmark-disable`` runs every benchmark once as a
smoke test. Ids: ``[py]``/``[c]`` is the implementation, then the body size.

DATA bodies are realistic text: 76-character lines with CRLF, every 25th
starting with a dot, dot-stuffed on the wire and fed to ``DataDecoder`` in
64 KiB chunks with strict CRLF checks and the 1000-octet line limit on, as
the server does. For scale, each size group also times:

- ``test_data_readline_reference``: the same DATA work done the way
  aiosmtpd does it, a Python loop per line (readline-style split on CRLF,
  terminator check, line-length check, strip the leading dot, append);
- ``test_bytes_copy``: one plain memory copy of the wire bytes;
- ``test_bytes_count_lf``: ``bytes.count(b"\\n")`` over them.

Throughput is bytes of input per second (see ``conftest.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from bench.bodies import MAX_LINE, chunks, readline_decode, stuffed, text

SIZES = {"1KiB": 1024, "100KiB": 100 * 1024, "10MiB": 10 * 1024 * 1024}

MAIL_LINE = (
    b"MAIL FROM:<alice.sender@example.org> SIZE=102400 BODY=8BITMIME RET=HDRS ENVID=QQ314159"
)
RCPT_LINE = (
    b"RCPT TO:<bob.recipient@mail.example.com> NOTIFY=SUCCESS,FAILURE "
    b"ORCPT=rfc822;bob.recipient@mail.example.com"
)
PIPELINED = (
    MAIL_LINE
    + b"\r\n"
    + b"".join(b"RCPT TO:<user%d@example.com>\r\n" % i for i in range(10))
    + b"DATA\r\n"
)

Measure = Callable[..., Any]
size_param = pytest.mark.parametrize("size", list(SIZES))


# --- commands ---------------------------------------------------------------


@pytest.mark.benchmark(group="commands")
def test_parse_mail(wire: ModuleType, throughput: Measure) -> None:
    parse_command, parse_mail = wire.parse_command, wire.parse_mail

    def run() -> tuple[str, dict[str, str | None]]:
        _verb, args = parse_command(MAIL_LINE)
        return parse_mail(args)  # type: ignore[no-any-return]

    address, params = throughput(run, len(MAIL_LINE))
    assert address == "alice.sender@example.org" and params["SIZE"] == "102400"


@pytest.mark.benchmark(group="commands")
def test_parse_rcpt(wire: ModuleType, throughput: Measure) -> None:
    parse_command, parse_rcpt = wire.parse_command, wire.parse_rcpt

    def run() -> tuple[str, dict[str, str | None]]:
        _verb, args = parse_command(RCPT_LINE)
        return parse_rcpt(args)  # type: ignore[no-any-return]

    address, params = throughput(run, len(RCPT_LINE))
    assert address == "bob.recipient@mail.example.com" and params["NOTIFY"] == "SUCCESS,FAILURE"


@pytest.mark.benchmark(group="commands")
def test_line_reader_pipelined(wire: ModuleType, throughput: Measure) -> None:
    """Frame one pipelined batch: MAIL, ten RCPTs and DATA in one read."""
    line_reader = wire.LineReader

    def run() -> list[bytes]:
        reader = line_reader()
        reader.feed(PIPELINED)
        lines = []
        while (line := reader.next_line()) is not None:
            lines.append(line)
        return lines

    assert len(throughput(run, len(PIPELINED), ops=12)) == 12


# --- DATA -------------------------------------------------------------------


@size_param
def test_data_decode(wire: ModuleType, size: str, benchmark: Any, throughput: Measure) -> None:
    """``DataDecoder.feed`` over 64 KiB chunks, strict, until the terminator."""
    benchmark.group = f"data-{size}"
    parts = chunks(SIZES[size])
    decoder_class = wire.DataDecoder

    def run() -> list[bytes]:
        decoder = decoder_class(max_size=None, max_line_length=MAX_LINE, strict=True)
        out = []
        for part in parts:
            text, done, _ = decoder.feed(part)
            out.append(text)
        assert done and not decoder.error
        return out

    assert b"".join(throughput(run, len(stuffed(SIZES[size])))) == text(SIZES[size])


@size_param
def test_dot_stuff(wire: ModuleType, size: str, benchmark: Any, throughput: Measure) -> None:
    """``dot_stuff`` of a whole body (the outbound side)."""
    benchmark.group = f"data-{size}"
    body, dot_stuff = text(SIZES[size]), wire.dot_stuff
    assert throughput(lambda: dot_stuff(body), len(body)) == stuffed(SIZES[size])


@size_param
def test_data_readline_reference(size: str, benchmark: Any, throughput: Measure) -> None:
    """Reference: a per-line Python loop (aiosmtpd's approach)."""
    benchmark.group = f"data-{size}"
    parts = chunks(SIZES[size])
    lines = throughput(lambda: readline_decode(parts), len(stuffed(SIZES[size])))
    assert b"".join(lines) == text(SIZES[size])


@size_param
def test_bytes_copy(size: str, benchmark: Any, throughput: Measure) -> None:
    """Reference: one memory copy of the wire bytes."""
    benchmark.group = f"data-{size}"
    data = stuffed(SIZES[size])
    assert len(throughput(lambda: bytearray(data), len(data))) == len(data)


@size_param
def test_bytes_count_lf(size: str, benchmark: Any, throughput: Measure) -> None:
    """Reference: ``bytes.count(b"\\n")``, one C pass that touches every byte."""
    benchmark.group = f"data-{size}"
    data = stuffed(SIZES[size])
    assert throughput(lambda: data.count(b"\n"), len(data)) == data.count(b"\n")
