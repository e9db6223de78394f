"""DotStuffer and dot_stuff: the DATA encoder (RFC 5321 §4.5.2)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from fastsmtp.wire import DataError

ENCODED = [
    (b"", b".\r\n"),
    (b"abc\r\n", b"abc\r\n.\r\n"),
    (b"abc", b"abc\r\n.\r\n"),
    (b".\r\n", b"..\r\n.\r\n"),
    (b".a\r\n.b\r\n", b"..a\r\n..b\r\n.\r\n"),
    (b"a.b\r\nc.\r\n", b"a.b\r\nc.\r\n.\r\n"),
    (b"a\r\n.\r\n", b"a\r\n..\r\n.\r\n"),
    (b"..\r\n", b"...\r\n.\r\n"),
    (b"a\r\n.", b"a\r\n..\r\n.\r\n"),
    # a line starts after any LF, not after a lone CR; a body ending in a
    # bare LF still gets the exact CRLF "." CRLF a strict receiver needs
    (b"a\n.b\n", b"a\n..b\n\r\n.\r\n"),
    (b"a\r.b\r\n", b"a\r.b\r\n.\r\n"),
]


@pytest.mark.parametrize(("body", "wire_bytes"), ENCODED)
def test_dot_stuff(wire: ModuleType, body: bytes, wire_bytes: bytes) -> None:
    assert wire.dot_stuff(body) == wire_bytes


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_dot_stuff_accepts_any_bytes_like(wire: ModuleType, kind: Callable[[bytes], Any]) -> None:
    assert wire.dot_stuff(kind(b".a\r\n")) == b"..a\r\n.\r\n"
    stuffer = wire.DotStuffer()
    assert stuffer.encode(kind(b".a\r\n")) == b"..a\r\n"


@pytest.mark.parametrize(
    ("chunks", "terminator"),
    [
        ([], b".\r\n"),
        ([b""], b".\r\n"),
        ([b"abc\r\n"], b".\r\n"),
        ([b"abc"], b"\r\n.\r\n"),
        ([b"abc\r"], b"\r\n.\r\n"),
        ([b"abc\r\n", b""], b".\r\n"),
        ([b"abc\r\n", b"x"], b"\r\n.\r\n"),
        ([b"abc\n"], b"\r\n.\r\n"),
        ([b"abc\r", b"\n"], b".\r\n"),
        ([b"abc\r", b"\n", b""], b".\r\n"),
        ([b"\r", b"\n"], b".\r\n"),
        ([b"\n"], b"\r\n.\r\n"),
    ],
)
def test_finish_adds_crlf_only_when_needed(
    wire: ModuleType, chunks: list[bytes], terminator: bytes
) -> None:
    stuffer = wire.DotStuffer()
    for chunk in chunks:
        stuffer.encode(chunk)
    assert stuffer.finish() == terminator


def test_encode_empty_chunk(wire: ModuleType) -> None:
    stuffer = wire.DotStuffer()
    assert stuffer.encode(b"") == b""
    assert stuffer.encode(b".x") == b"..x"


@pytest.mark.parametrize(("body", "wire_bytes"), ENCODED)
def test_streaming_equals_one_shot_at_every_split(
    wire: ModuleType, body: bytes, wire_bytes: bytes
) -> None:
    splits = [[body[:i], b"", body[i:]] for i in range(len(body) + 1)]
    splits.append([body[i : i + 1] for i in range(len(body))])
    for chunks in splits:
        stuffer = wire.DotStuffer()
        out = b"".join(stuffer.encode(chunk) for chunk in chunks) + stuffer.finish()
        assert out == wire_bytes, chunks


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n",
        b"Subject: hi\r\n\r\nHello\r\n",
        b".\r\n",
        b"..\r\n.\r\n\r\n.\r\n",
        b".leading\r\n..two\r\nmid.dle\r\n.\r\n",
        b"a\r\n.\r\nQUIT\r\n",
    ],
)
def test_decoding_dot_stuffed_body_gives_it_back(wire: ModuleType, body: bytes) -> None:
    encoded = wire.dot_stuff(body)
    decoder = wire.DataDecoder()
    assert decoder.feed(encoded) == (body, True, b"")
    assert decoder.error == DataError.NONE
