"""LineReader: framing command lines (contract: the docstring of fastsmtp.wire._py)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from fastsmtp.wire import BareLineEnding, LineError, LineTooLong

Item = bytes | type[LineError]


def read_all(reader: Any) -> list[Item]:
    """Call next_line() until None: each line, or the class of the error it raised."""
    out: list[Item] = []
    while True:
        try:
            line = reader.next_line()
        except LineError as exc:
            out.append(type(exc))
            continue
        if line is None:
            return out
        out.append(line)


def read_chunks(wire: ModuleType, chunks: list[bytes], **settings: Any) -> list[Item]:
    """Feed each chunk and read every line it completes, as a server loop does."""
    reader = wire.LineReader(**settings)
    out: list[Item] = []
    for chunk in chunks:
        reader.feed(chunk)
        out += read_all(reader)
    return out


def every_split(data: bytes) -> list[list[bytes]]:
    """``data`` cut once at every position, plus byte by byte."""
    cuts = [[data[:i], data[i:]] for i in range(len(data) + 1)]
    return [*cuts, [data[i : i + 1] for i in range(len(data))]]


SESSION = b"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n\r\nQUIT\r\n"
SESSION_LINES = [b"EHLO client.example", b"MAIL FROM:<a@b.example>", b"", b"QUIT"]


def test_lines_come_out_without_their_ending(wire: ModuleType) -> None:
    assert read_chunks(wire, [SESSION]) == SESSION_LINES


def test_incomplete_line_waits_for_its_crlf(wire: ModuleType) -> None:
    reader = wire.LineReader()
    reader.feed(b"NOOP")
    assert reader.next_line() is None
    reader.feed(b"\r")
    assert reader.next_line() is None
    reader.feed(b"\n")
    assert reader.next_line() == b"NOOP"
    assert reader.next_line() is None


@pytest.mark.parametrize("chunks", every_split(SESSION))
def test_framing_is_the_same_at_every_split_point(wire: ModuleType, chunks: list[bytes]) -> None:
    assert read_chunks(wire, chunks) == SESSION_LINES


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_feed_accepts_any_bytes_like(wire: ModuleType, kind: type) -> None:
    reader = wire.LineReader()
    reader.feed(kind(b"HELO x\r\n"))
    assert reader.next_line() == b"HELO x"


# --- line length -------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # RFC 5321 §4.5.3.1.4: 512 octets including CRLF is the limit
        (b"x" * 510 + b"\r\n", [b"x" * 510]),
        (b"x" * 511 + b"\r\n", [LineTooLong]),
        (b"x" * 2000 + b"\r\n", [LineTooLong]),
    ],
    ids=["512", "513", "2002"],
)
@pytest.mark.parametrize("chunking", ["whole", "bytewise", "cr-apart"])
def test_default_limit_counts_the_crlf(
    wire: ModuleType, line: bytes, expected: list[Item], chunking: str
) -> None:
    if chunking == "whole":
        chunks = [line + b"NOOP\r\n"]
    elif chunking == "bytewise":
        chunks = [line[i : i + 1] for i in range(len(line))] + [b"NOOP\r\n"]
    else:
        chunks = [line[:-2], b"\r", b"\nNOOP\r\n"]
    assert read_chunks(wire, chunks) == [*expected, b"NOOP"]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize(
    ("line", "ok"),
    [
        (b"x" * 8 + b"\r\n", True),
        (b"x" * 9 + b"\r\n", False),
    ],
)
def test_custom_limit(wire: ModuleType, strict: bool, line: bytes, ok: bool) -> None:
    out = read_chunks(wire, [line], max_line_length=10, strict=strict)
    assert out == ([line[:-2]] if ok else [LineTooLong])


@pytest.mark.parametrize(("length", "ok"), [(511, True), (512, False)])
def test_non_strict_limit_counts_a_bare_lf(wire: ModuleType, length: int, ok: bool) -> None:
    out = read_chunks(wire, [b"x" * length + b"\n"], strict=False)
    assert out == ([b"x" * length] if ok else [LineTooLong])


@pytest.mark.parametrize(
    "chunks",
    [
        [b"A\r\n" + b"x" * 600 + b"\r\nB\r\n"],
        [b"A\r\n" + b"x" * 600, b"\r\nB\r\n"],
        [b"A\r\n", b"x" * 300, b"x" * 300, b"x" * 300, b"\r", b"\nB\r\n"],
        [b"A\r\n" + b"x" * 511, b"\r", b"\n", b"B\r\n"],
    ],
    ids=["whole", "tail-apart", "pieces", "cr-apart"],
)
def test_too_long_line_is_reported_once_in_order(wire: ModuleType, chunks: list[bytes]) -> None:
    assert read_chunks(wire, chunks) == [b"A", LineTooLong, b"B"]


@pytest.mark.parametrize("strict", [True, False])
def test_discard_runs_up_to_the_lf_whatever_precedes_it(wire: ModuleType, strict: bool) -> None:
    chunks = [b"x" * 600, b"\ry\r" * 50, b"\nNOOP\r\n"]
    assert read_chunks(wire, chunks, strict=strict) == [LineTooLong, b"NOOP"]


@pytest.mark.parametrize("strict", [True, False])
def test_too_long_line_ended_by_bare_lf_is_too_long(wire: ModuleType, strict: bool) -> None:
    assert read_chunks(wire, [b"x" * 600 + b"\nNOOP\r\n"], strict=strict) == [
        LineTooLong,
        b"NOOP",
    ]


def test_memory_is_bounded_while_discarding(wire: ModuleType) -> None:
    reader = wire.LineReader(max_line_length=512)
    chunk = b"x" * 4096
    reader.feed(chunk)
    assert reader.next_line() is None
    assert len(reader) <= 512
    for _ in range(2000):  # 8 MiB of one endless line
        reader.feed(chunk)
        assert len(reader) <= 512
        assert reader.next_line() is None
        assert len(reader) <= 512
    reader.feed(b"\r\nQUIT\r\n")
    assert read_all(reader) == [LineTooLong, b"QUIT"]


def test_slowly_growing_long_line_stays_bounded(wire: ModuleType) -> None:
    reader = wire.LineReader(max_line_length=64)
    for _ in range(100):
        reader.feed(b"y" * 10)
        assert reader.next_line() is None
        assert len(reader) <= 64


# --- strict and non-strict line endings --------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            b"MAIL FROM:<a@b.example>\nRCPT TO:<c@d.example>\r\n",
            [BareLineEnding, b"RCPT TO:<c@d.example>"],
        ),
        (b"NO\rOP\r\nQUIT\r\n", [BareLineEnding, b"QUIT"]),
        (b"NOOP\r\r\nQUIT\r\n", [BareLineEnding, b"QUIT"]),
        (b"\rNOOP\r\nQUIT\r\n", [BareLineEnding, b"QUIT"]),
        (b"NOOP\rQUIT\r\n", [BareLineEnding]),
        (b"\n\r\nQUIT\r\n", [BareLineEnding, b"", b"QUIT"]),
        (b"A\nB\nC\r\n", [BareLineEnding, BareLineEnding, b"C"]),
    ],
    ids=["bare-lf", "bare-cr", "cr-cr-lf", "leading-cr", "cr-does-not-end", "empty-bare-lf", "two"],
)
def test_strict_rejects_bare_cr_and_lf(wire: ModuleType, data: bytes, expected: list[Item]) -> None:
    for chunks in every_split(data):
        assert read_chunks(wire, chunks) == expected, chunks


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"A\nB\r\n", [b"A", b"B"]),
        (b"C\r\r\n", [b"C\r"]),
        (b"D\rE\n", [b"D\rE"]),
        (b"\rF\r\n", [b"\rF"]),
        (b"\n\r\nG\n", [b"", b"", b"G"]),
    ],
    ids=["bare-lf-ends", "only-one-cr-stripped", "inner-cr-stays", "leading-cr", "empty"],
)
def test_non_strict_normalises(wire: ModuleType, data: bytes, expected: list[bytes]) -> None:
    for chunks in every_split(data):
        assert read_chunks(wire, chunks, strict=False) == expected, chunks


def test_strict_is_the_default(wire: ModuleType) -> None:
    assert read_chunks(wire, [b"NOOP\nQUIT\r\n"]) == [BareLineEnding, b"QUIT"]


# --- take, drain, len ---------------------------------------------------------


def test_len_counts_buffered_bytes(wire: ModuleType) -> None:
    reader = wire.LineReader()
    assert len(reader) == 0
    reader.feed(b"NOOP\r\nQU")
    assert len(reader) == 8
    assert reader.next_line() == b"NOOP"
    assert len(reader) == 2
    assert reader.next_line() is None
    assert len(reader) == 2


def test_take_returns_a_bdat_payload(wire: ModuleType) -> None:
    reader = wire.LineReader()
    reader.feed(b"BDAT 10\r\nhello")
    assert reader.next_line() == b"BDAT 10"
    assert reader.take(10) == b"hello"
    assert len(reader) == 0
    reader.feed(b"world\r\nQUIT\r\n")
    assert reader.take(5) == b"world"
    assert len(reader) == 8
    assert reader.next_line() == b""
    assert reader.next_line() == b"QUIT"


@pytest.mark.parametrize(
    ("n", "taken", "rest"),
    [(0, b"", b"abc\r\n"), (2, b"ab", b"c\r\n"), (5, b"abc\r\n", b""), (99, b"abc\r\n", b"")],
)
def test_take_up_to_n(wire: ModuleType, n: int, taken: bytes, rest: bytes) -> None:
    reader = wire.LineReader()
    reader.feed(b"abc\r\n")
    assert reader.take(n) == taken
    assert len(reader) == len(rest)
    assert reader.drain() == rest


def test_drain_returns_everything_after_data(wire: ModuleType) -> None:
    reader = wire.LineReader()
    reader.feed(b"DATA\r\nSubject: hi\r\n\r\nbody")
    assert reader.next_line() == b"DATA"
    assert reader.drain() == b"Subject: hi\r\n\r\nbody"
    assert len(reader) == 0
    assert reader.next_line() is None
    assert reader.drain() == b""


def test_reading_continues_after_drain(wire: ModuleType) -> None:
    reader = wire.LineReader()
    reader.feed(b"STARTTLS\r\nMAIL FROM:<injected@example.com>\r\n")
    assert reader.next_line() == b"STARTTLS"
    assert reader.drain() == b"MAIL FROM:<injected@example.com>\r\n"
    reader.feed(b"EHLO again\r\n")
    assert read_all(reader) == [b"EHLO again"]
