"""Hypothesis properties that each wire implementation must have on its own."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from wire_strategies import (
    chunked,
    crlf_bodies,
    decoder_settings,
    esmtp_params,
    mailboxes,
    reader_settings,
    streams,
)

from fastsmtp.wire import DataError, LineError

BOUNDED = settings(max_examples=200, deadline=None)


def decode(wire: ModuleType, chunks: list[bytes], **kw: Any) -> tuple[bytes, bool, bytes, bool]:
    """(body, done, leftover incl. unfed chunks, clean) for a whole stream."""
    decoder = wire.DataDecoder(**kw)
    body = b""
    for i, chunk in enumerate(chunks):
        part, done, leftover = decoder.feed(chunk)
        body += part
        if done:
            rest = leftover + b"".join(chunks[i + 1 :])
            return body, True, rest, decoder.error == DataError.NONE
    return body, False, b"", decoder.error == DataError.NONE


def read_lines(wire: ModuleType, chunks: list[bytes], **kw: Any) -> tuple[list[object], int]:
    """Every line or error class from a stream, and what stays buffered."""
    reader = wire.LineReader(**kw)
    out: list[object] = []
    for chunk in chunks:
        reader.feed(chunk)
        while True:
            try:
                line = reader.next_line()
            except LineError as exc:
                out.append(type(exc))
                continue
            if line is None:
                break
            out.append(line)
    return out, len(reader)


@BOUNDED
@given(body=crlf_bodies(), after=st.sampled_from([b"", b"QUIT\r\n"]), data=st.data())
def test_decoding_a_dot_stuffed_body_gives_it_back(
    wire: ModuleType, body: bytes, after: bytes, data: st.DataObject
) -> None:
    encoded = wire.dot_stuff(body) + after
    chunks = data.draw(chunked(st.just(encoded)))
    assert decode(wire, chunks, max_line_length=None) == (body, True, after, True)


@BOUNDED
@given(chunks=chunked(streams()))
def test_streaming_dot_stuffing_equals_one_shot(wire: ModuleType, chunks: list[bytes]) -> None:
    stuffer = wire.DotStuffer()
    out = b"".join(stuffer.encode(chunk) for chunk in chunks) + stuffer.finish()
    assert out == wire.dot_stuff(b"".join(chunks))


@BOUNDED
@given(kw=decoder_settings(), chunks=chunked(streams()))
def test_decoding_does_not_depend_on_the_split(
    wire: ModuleType, kw: dict[str, Any], chunks: list[bytes]
) -> None:
    body, done, leftover, clean = decode(wire, chunks, **kw)
    whole_body, whole_done, whole_leftover, whole_clean = decode(wire, [b"".join(chunks)], **kw)
    assert (done, leftover, clean) == (whole_done, whole_leftover, whole_clean)
    if clean:
        assert body == whole_body


@BOUNDED
@given(kw=decoder_settings(), chunks=chunked(streams()))
def test_a_decoder_that_keeps_no_body_decides_the_same(
    wire: ModuleType, kw: dict[str, Any], chunks: list[bytes]
) -> None:
    keeping = wire.DataDecoder(**kw)
    discarding = wire.DataDecoder(**kw, keep_body=False)
    for chunk in chunks:
        _, done, leftover = keeping.feed(chunk)
        assert discarding.feed(chunk) == (b"", done, leftover)
        assert (discarding.error, discarding.size) == (keeping.error, keeping.size)
        if done:
            return


@BOUNDED
@given(kw=reader_settings(), chunks=chunked(streams()))
def test_line_framing_does_not_depend_on_the_split(
    wire: ModuleType, kw: dict[str, Any], chunks: list[bytes]
) -> None:
    assert read_lines(wire, chunks, **kw) == read_lines(wire, [b"".join(chunks)], **kw)


@BOUNDED
@given(kw=reader_settings(), chunks=chunked(streams()))
def test_reader_holds_less_than_a_line_after_reading(
    wire: ModuleType, kw: dict[str, Any], chunks: list[bytes]
) -> None:
    _, buffered = read_lines(wire, chunks, **kw)
    assert buffered <= kw["max_line_length"]


@BOUNDED
@given(mailbox=mailboxes(), params=esmtp_params(), spaces=st.sampled_from(["", " ", "  "]))
def test_valid_paths_parse_back(
    wire: ModuleType, mailbox: str, params: list[tuple[str, str | None]], spaces: str
) -> None:
    text = "".join(f" {k}" if v is None else f" {k}={v}" for k, v in params)
    expected = {k.upper(): v for k, v in params}
    mail = f"FROM:{spaces}<{mailbox}>{text}".encode()
    rcpt = f"TO:{spaces}<{mailbox}>{text}".encode()
    assert wire.parse_mail(mail) == (mailbox, expected)
    assert wire.parse_rcpt(rcpt) == (mailbox, expected)


@BOUNDED
@given(text=st.text())
def test_xtext_round_trip(wire: ModuleType, text: str) -> None:
    encoded = wire.xtext_encode(text)
    assert all(33 <= ord(c) <= 126 and c != "=" for c in encoded)
    assert wire.xtext_decode(encoded) == text


@BOUNDED
@given(
    verb=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ", max_size=10),
    args=st.binary(max_size=20),
)
def test_parse_command_splits_at_the_first_space(wire: ModuleType, verb: str, args: bytes) -> None:
    assert wire.parse_command(verb.encode() + b" " + args) == (verb.upper(), args.strip(b" "))
