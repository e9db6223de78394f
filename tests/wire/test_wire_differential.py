"""Differential tests: ``_c`` must answer exactly as ``_py`` on random input.

The same random streams are cut at the same random points and fed to both
implementations with the same random settings. Skipped (with the reason)
under FASTSMTP_NO_EXTENSIONS; failing when ``_c`` should be built and is not.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_strategies import (
    chunked,
    decoder_settings,
    path_args,
    reader_settings,
    streams,
    xtext_like,
)

from fastsmtp.wire import DataError, LineError, ParseError, _py

BOUNDED = settings(max_examples=300, deadline=None)


def outcome(func: Callable[..., Any], *args: Any, **kw: Any) -> tuple[object, ...]:
    """The result, or the ParseError kind; any other exception propagates."""
    try:
        return ("ok", func(*args, **kw))
    except ParseError as exc:
        return ("error", exc.kind)


@BOUNDED
@given(kw=decoder_settings(), chunks=chunked(streams()))
def test_data_decoder(c_wire: ModuleType, kw: dict[str, Any], chunks: list[bytes]) -> None:
    py_decoder = _py.DataDecoder(**kw)
    c_decoder = c_wire.DataDecoder(**kw)
    for chunk in chunks:
        py_body, py_done, py_leftover = py_decoder.feed(chunk)
        c_body, c_done, c_leftover = c_decoder.feed(chunk)
        assert (c_done, c_leftover) == (py_done, py_leftover)
        assert c_decoder.error == py_decoder.error
        if py_decoder.error == DataError.NONE:
            # after an error the body is to be discarded, so it may differ
            assert c_body == py_body
            assert c_decoder.size == py_decoder.size
        if py_done:
            for decoder in (py_decoder, c_decoder):
                with pytest.raises(ValueError):
                    decoder.feed(b"x")
            return


@st.composite
def reader_ops(draw: st.DrawFn) -> list[tuple[bytes, int | None]]:
    """Chunks to feed, each maybe followed by take(n)."""
    chunks = draw(chunked(streams()))
    takes = draw(st.lists(st.none() | st.integers(0, 20), min_size=len(chunks)))
    return list(zip(chunks, takes, strict=False))


def run_reader(impl: ModuleType, kw: dict[str, Any], ops: list[tuple[bytes, int | None]]) -> list:
    reader = impl.LineReader(**kw)
    trace: list[object] = []
    for chunk, take in ops:
        reader.feed(chunk)
        while True:
            try:
                line = reader.next_line()
            except LineError as exc:
                trace.append(type(exc))
                continue
            if line is None:
                break
            trace.append(line)
        trace.append(("len", len(reader)))
        if take is not None:
            trace.append(("take", reader.take(take), len(reader)))
    return trace


@BOUNDED
@given(kw=reader_settings(), ops=reader_ops())
def test_line_reader(c_wire: ModuleType, kw: dict[str, Any], ops: list) -> None:
    assert run_reader(c_wire, kw, ops) == run_reader(_py, kw, ops)


@BOUNDED
@given(chunks=chunked(streams()))
def test_dot_stuffer(c_wire: ModuleType, chunks: list[bytes]) -> None:
    py_stuffer, c_stuffer = _py.DotStuffer(), c_wire.DotStuffer()
    for chunk in chunks:
        assert c_stuffer.encode(chunk) == py_stuffer.encode(chunk)
    assert c_stuffer.finish() == py_stuffer.finish()
    whole = b"".join(chunks)
    assert c_wire.dot_stuff(whole) == _py.dot_stuff(whole)


@BOUNDED
@given(args=path_args(), lenient=st.booleans())
def test_parse_mail(c_wire: ModuleType, args: bytes, lenient: bool) -> None:
    expected = outcome(_py.parse_mail, args, lenient=lenient)
    assert outcome(c_wire.parse_mail, args, lenient=lenient) == expected


@BOUNDED
@given(args=path_args(), utf8=st.booleans(), lenient=st.booleans())
def test_parse_rcpt(c_wire: ModuleType, args: bytes, utf8: bool, lenient: bool) -> None:
    expected = outcome(_py.parse_rcpt, args, utf8=utf8, lenient=lenient)
    assert outcome(c_wire.parse_rcpt, args, utf8=utf8, lenient=lenient) == expected


@BOUNDED
@given(line=st.one_of(path_args(), streams(max_tokens=10)))
def test_parse_command(c_wire: ModuleType, line: bytes) -> None:
    assert c_wire.parse_command(line) == _py.parse_command(line)


@BOUNDED
@given(text=st.one_of(xtext_like(), st.text(max_size=20)))
def test_xtext(c_wire: ModuleType, text: str) -> None:
    assert outcome(c_wire.xtext_decode, text) == outcome(_py.xtext_decode, text)
    assert c_wire.xtext_encode(text) == _py.xtext_encode(text)
