"""DataDecoder: DATA end detection, unstuffing, limits and smuggling defence."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

import pytest

from fastsmtp.wire import DataError


class Decoded(NamedTuple):
    body: bytes
    done: bool
    leftover: bytes  # what follows the terminator, including chunks never fed
    error: DataError
    size: int


def decode(wire: ModuleType, chunks: list[bytes], **settings: Any) -> Decoded:
    """Feed chunks until done, as the protocol does; collect the whole body."""
    decoder = wire.DataDecoder(**settings)
    body = b""
    for i, chunk in enumerate(chunks):
        part, done, leftover = decoder.feed(chunk)
        assert isinstance(decoder.error, DataError)
        body += part
        if done:
            rest = leftover + b"".join(chunks[i + 1 :])
            return Decoded(body, True, rest, decoder.error, decoder.size)
        assert leftover == b""
    return Decoded(body, False, b"", decoder.error, decoder.size)


def every_split(data: bytes) -> list[list[bytes]]:
    """``data`` cut once at every position, plus byte by byte."""
    cuts = [[data[:i], data[i:]] for i in range(len(data) + 1)]
    return [*cuts, [data[i : i + 1] for i in range(len(data))]]


def every_double_split(data: bytes) -> list[list[bytes]]:
    """``data`` cut at every pair of positions."""
    return [
        [data[:i], data[i:j], data[j:]]
        for i, j in itertools.combinations_with_replacement(range(len(data) + 1), 2)
    ]


def assert_clean(result: Decoded, body: bytes, leftover: bytes = b"") -> None:
    assert result == Decoded(body, True, leftover, DataError.NONE, len(body))


# --- end of data ------------------------------------------------------------------


def test_body_keeps_its_last_crlf(wire: ModuleType) -> None:
    body = b"Subject: hi\r\n\r\nHello\r\n"
    assert_clean(decode(wire, [body + b".\r\n"]), body)


def test_empty_body(wire: ModuleType) -> None:
    decoder = wire.DataDecoder()
    assert decoder.feed(b".\r\n") == (b"", True, b"")
    assert decoder.error == DataError.NONE
    assert decoder.size == 0


def test_body_of_one_empty_line(wire: ModuleType) -> None:
    assert_clean(decode(wire, [b"\r\n.\r\n"]), b"\r\n")


def test_pipelined_commands_are_leftover(wire: ModuleType) -> None:
    after = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
    decoder = wire.DataDecoder()
    assert decoder.feed(b"x\r\n.\r\n" + after) == (b"x\r\n", True, after)


def test_lines_are_returned_as_they_complete(wire: ModuleType) -> None:
    decoder = wire.DataDecoder()
    assert decoder.feed(b"line one\r\nline t") == (b"line one\r\n", False, b"")
    assert decoder.feed(b"wo\r\n") == (b"line two\r\n", False, b"")
    assert decoder.feed(b".\r\n") == (b"", True, b"")
    assert decoder.size == len(b"line one\r\nline two\r\n")


STREAM = b"Hello\r\n..dot\r\n.\r\nQUIT\r\n"


def test_terminator_found_at_every_split(wire: ModuleType) -> None:
    for chunks in every_split(STREAM) + every_double_split(STREAM):
        assert_clean(decode(wire, chunks), b"Hello\r\n.dot\r\n", b"QUIT\r\n")


@pytest.mark.parametrize("chunks", every_split(b".\r\nQUIT\r\n"))
def test_empty_body_terminator_at_every_split(wire: ModuleType, chunks: list[bytes]) -> None:
    assert_clean(decode(wire, chunks), b"", b"QUIT\r\n")


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize(
    "data",
    [b"no end yet\r\n", b"abc\r\n.", b"abc\r\n.\r", b"abc\r\n..\r\n", b"abc\r\n. \r\n"],
)
def test_no_terminator_no_end(wire: ModuleType, strict: bool, data: bytes) -> None:
    for chunks in every_split(data):
        assert not decode(wire, chunks, strict=strict).done


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_feed_accepts_any_bytes_like(wire: ModuleType, kind: Callable[[bytes], Any]) -> None:
    decoder = wire.DataDecoder()
    assert decoder.feed(kind(b"a\r\n.\r\nQUIT")) == (b"a\r\n", True, b"QUIT")


@pytest.mark.parametrize("data", [b".\r\n", b"x\r\n.\r\n", b"x\nx\r\n.\r\n"])
@pytest.mark.parametrize("after", [b"", b"QUIT\r\n"])
def test_feed_after_done_raises(wire: ModuleType, data: bytes, after: bytes) -> None:
    decoder = wire.DataDecoder()
    assert decoder.feed(data)[1]
    with pytest.raises(ValueError):
        decoder.feed(after)


# --- dot-unstuffing (RFC 5321 §4.5.2) ----------------------------------------------


@pytest.mark.parametrize(
    ("data", "body"),
    [
        (b"..hidden\r\n", b".hidden\r\n"),
        (b".x\r\n", b"x\r\n"),
        (b"a\r\n..\r\n", b"a\r\n.\r\n"),
        (b"...\r\n", b"..\r\n"),
        (b"a.b\r\n. \r\n", b"a.b\r\n \r\n"),
        (b"..\r\n..\r\n", b".\r\n.\r\n"),
    ],
)
def test_unstuffing(wire: ModuleType, data: bytes, body: bytes) -> None:
    for chunks in every_split(data + b".\r\n"):
        assert_clean(decode(wire, chunks), body)


# --- SMTP smuggling (CVE-2023-51764 and friends) --------------------------------------

SMUGGLE = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n"]
EVIL = b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
@pytest.mark.parametrize("seq", SMUGGLE, ids=["lf.lf", "cr.cr", "lf.crlf", "crlf.lf"])
@pytest.mark.parametrize("prefix", [b"Subject: x\r\n\r\nbody", b""], ids=["mid", "start"])
def test_smuggling_sequences_never_end_data(
    wire: ModuleType, strict: bool, seq: bytes, prefix: bytes
) -> None:
    data = prefix + seq + EVIL
    for chunks in every_split(data):
        result = decode(wire, [*chunks, b".\r\nQUIT\r\n"], strict=strict)
        # only the real terminator ends the body; the smuggled commands are data
        assert result.done
        assert result.leftover == b"QUIT\r\n"
        if strict:
            assert result.error == DataError.BARE_LINE_ENDING
        else:
            assert result.error == DataError.NONE
            assert EVIL in result.body


@pytest.mark.parametrize("strict", [True, False], ids=["strict", "lenient"])
@pytest.mark.parametrize("seq", SMUGGLE, ids=["lf.lf", "cr.cr", "lf.crlf", "crlf.lf"])
def test_smuggling_sequences_in_a_stream_that_stops(
    wire: ModuleType, strict: bool, seq: bytes
) -> None:
    data = b"body" + seq + EVIL
    for chunks in every_double_split(data):
        assert not decode(wire, chunks, strict=strict).done, chunks


# --- strict and non-strict line endings -----------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"a\rb\r\n", b"a\nb\r\n", b"a\r\r\n", b"\n\r\n", b"a\r\n\r\r\n", b"a\r\n\rb\r\n", b"a\n"],
    ids=["cr", "lf", "cr-crlf", "leading-lf", "lone-cr-line", "leading-cr", "last-line-lf"],
)
def test_strict_refuses_bare_cr_or_lf(wire: ModuleType, data: bytes) -> None:
    for chunks in every_split(data + b"\r\n.\r\nQUIT\r\n"):
        result = decode(wire, chunks)
        assert (result.done, result.leftover) == (True, b"QUIT\r\n")
        assert result.error == DataError.BARE_LINE_ENDING


@pytest.mark.parametrize(
    ("data", "body"),
    [
        (b"a\nb\r\n", b"a\r\nb\r\n"),
        (b"a\rb\r\n", b"a\rb\r\n"),
        (b"a\r\r\n", b"a\r\r\n"),
        (b"\n\r\n", b"\r\n\r\n"),
        (b"a\n..b\r\n", b"a\r\n.b\r\n"),
        (b"a\n.b\n\r\n", b"a\r\nb\r\n\r\n"),
        (b"\r\n", b"\r\n"),
    ],
)
def test_non_strict_normalises_bare_lf(wire: ModuleType, data: bytes, body: bytes) -> None:
    for chunks in every_split(data + b".\r\nQUIT"):
        assert_clean(decode(wire, chunks, strict=False), body, b"QUIT")


def test_strict_is_the_default(wire: ModuleType) -> None:
    assert decode(wire, [b"a\nb\r\n.\r\n"]).error == DataError.BARE_LINE_ENDING


# --- line length ------------------------------------------------------------------------


def chunkings(data: bytes) -> list[list[bytes]]:
    return [
        [data],
        [data[i : i + 7] for i in range(0, len(data), 7)],
        [data[i : i + 1] for i in range(len(data))],
    ]


@pytest.mark.parametrize(
    ("length", "error"),
    [(998, DataError.NONE), (999, DataError.LINE_TOO_LONG)],
    ids=["1000", "1001"],
)
def test_default_line_limit_is_1000_with_crlf(
    wire: ModuleType, length: int, error: DataError
) -> None:
    data = b"ok\r\n" + b"x" * length + b"\r\nok\r\n.\r\nQUIT\r\n"
    for chunks in chunkings(data):
        result = decode(wire, chunks)
        assert (result.done, result.leftover, result.error) == (True, b"QUIT\r\n", error)
        if error == DataError.NONE:
            assert result.body == data[: -len(b".\r\nQUIT\r\n")]


@pytest.mark.parametrize("strict", [True, False])
def test_custom_line_limit(wire: ModuleType, strict: bool) -> None:
    ok = decode(wire, [b"x" * 8 + b"\r\n.\r\n"], max_line_length=10, strict=strict)
    assert ok.error == DataError.NONE
    long = decode(wire, [b"x" * 9 + b"\r\n.\r\n"], max_line_length=10, strict=strict)
    assert long.error == DataError.LINE_TOO_LONG


@pytest.mark.parametrize(("length", "ok"), [(8, True), (9, False)])
def test_non_strict_line_limit_counts_the_inserted_cr(
    wire: ModuleType, length: int, ok: bool
) -> None:
    result = decode(wire, [b"x" * length + b"\n\r\n.\r\n"], max_line_length=10, strict=False)
    assert result.error == (DataError.NONE if ok else DataError.LINE_TOO_LONG)


@pytest.mark.parametrize("limit", [None, 0])
def test_line_limit_disabled(wire: ModuleType, limit: int | None) -> None:
    body = b"x" * 5000 + b"\r\n"
    for chunks in chunkings(body + b".\r\n")[:2]:
        assert_clean(decode(wire, chunks, max_line_length=limit), body)


LONG_LINE = b"ok\r\n" + b"y" * 25 + b"\r\n.\r\nQUIT\r\n"


def test_terminator_found_after_a_long_line(wire: ModuleType) -> None:
    for chunks in every_split(LONG_LINE) + every_double_split(LONG_LINE):
        result = decode(wire, chunks, max_line_length=20)
        assert (result.done, result.leftover) == (True, b"QUIT\r\n"), chunks
        assert result.error == DataError.LINE_TOO_LONG, chunks


# --- size -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"12345678\r\n", DataError.NONE),
        (b"123456789\r\n", DataError.TOO_BIG),
        (b"1234\r\n12\r\n", DataError.NONE),
        (b"1234\r\n123\r\n", DataError.TOO_BIG),
    ],
)
def test_max_size_is_inclusive(wire: ModuleType, body: bytes, error: DataError) -> None:
    for chunks in chunkings(body + b".\r\n"):
        result = decode(wire, chunks, max_size=10)
        assert (result.done, result.error) == (True, error)
        if error == DataError.NONE:
            assert (result.body, result.size) == (body, 10)


def test_size_counts_the_unstuffed_body(wire: ModuleType) -> None:
    # 11 octets on the wire, 10 once the stuffing dot is gone
    result = decode(wire, [b"..2345678\r\n.\r\n"], max_size=10)
    assert_clean(result, b".2345678\r\n")


def test_non_strict_size_counts_the_inserted_cr(wire: ModuleType) -> None:
    ok = decode(wire, [b"12345678\n\r\n.\r\n"], max_size=12, strict=False)
    assert_clean(ok, b"12345678\r\n\r\n")
    result = decode(wire, [b"123456789\n\r\n.\r\n"], max_size=12, strict=False)
    assert result.error == DataError.TOO_BIG


def test_max_size_zero_allows_only_the_empty_body(wire: ModuleType) -> None:
    for chunks in every_split(b".\r\n"):
        assert_clean(decode(wire, chunks, max_size=0), b"")
    assert decode(wire, [b"\r\n.\r\n"], max_size=0).error == DataError.TOO_BIG


@pytest.mark.parametrize(
    ("data", "settings"),
    [
        (b".\r\n", {"max_size": 0}),
        (b".\r\n", {"max_line_length": 1}),
        (b"\r\n.\r\n", {"max_line_length": 2}),
        (b"\r\n.\r\n", {"max_size": 2}),
    ],
)
def test_the_terminator_line_is_not_held_to_the_limits(
    wire: ModuleType, data: bytes, settings: dict[str, int]
) -> None:
    for chunks in every_split(data):
        assert_clean(decode(wire, chunks, **settings), data[:-3])


def test_size_tracks_the_body_while_clean(wire: ModuleType) -> None:
    decoder = wire.DataDecoder(max_size=1000)
    total = b""
    for chunk in [b"..a\r\nb", b"c\r\n", b"\r\n..", b".\r\n", b"x"]:
        total += decoder.feed(chunk)[0]
        assert decoder.size == len(total)
        assert decoder.error == DataError.NONE


@pytest.mark.parametrize(
    "data",
    [b"0123456789\r\n" * 3 + b".\r\nQUIT\r\n", b"0123456789" * 3 + b"\r\n.\r\nQUIT\r\n"],
    ids=["many-lines", "one-line"],
)
def test_too_big_still_finds_the_terminator(wire: ModuleType, data: bytes) -> None:
    for chunks in every_split(data) + every_double_split(data):
        result = decode(wire, chunks, max_size=15, max_line_length=None)
        assert (result.done, result.leftover) == (True, b"QUIT\r\n"), chunks
        assert result.error == DataError.TOO_BIG, chunks


@pytest.mark.parametrize(
    "line",
    [b"x" * 78 + b"\r\n", b"x" * 256 * 1024],
    ids=["short-lines", "one-endless-line"],
)
def test_too_big_stays_memory_bounded(
    wire: ModuleType, rss: Callable[[], int], line: bytes
) -> None:
    decoder = wire.DataDecoder(max_size=1000, max_line_length=None)
    chunk = line * (256 * 1024 // len(line))
    decoder.feed(chunk)
    assert decoder.error == DataError.TOO_BIG
    start = rss()
    for _ in range(512):  # 128 MiB after the limit
        assert decoder.feed(chunk)[1] is False
        assert rss() - start < 48 * 1024 * 1024, "the decoder keeps what it must discard"
    assert decoder.feed(b"\r\n.\r\nQUIT\r\n")[1:] == (True, b"QUIT\r\n")
    assert decoder.error == DataError.TOO_BIG


# --- which error wins ------------------------------------------------------------------


def test_bare_line_ending_is_checked_before_length_and_size(wire: ModuleType) -> None:
    data = b"x" * 30 + b"\r\na\nb\r\n.\r\n"
    result = decode(wire, [data], max_size=10, max_line_length=20)
    assert result.error == DataError.BARE_LINE_ENDING


def test_line_length_is_checked_before_size(wire: ModuleType) -> None:
    result = decode(wire, [b"x" * 30 + b"\r\n.\r\n"], max_size=10, max_line_length=20)
    assert result.error == DataError.LINE_TOO_LONG


def test_the_first_error_sticks(wire: ModuleType) -> None:
    decoder = wire.DataDecoder(max_size=100, max_line_length=20)
    decoder.feed(b"x" * 30 + b"\r\n")
    assert decoder.error == DataError.LINE_TOO_LONG
    decoder.feed(b"a\nb\r\n" + b"y\r\n" * 100)
    assert decoder.feed(b".\r\n")[1]
    assert decoder.error == DataError.LINE_TOO_LONG
