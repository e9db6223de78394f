"""Hypothesis strategies shared by the wire property and differential tests."""

from __future__ import annotations

import itertools
import string

from hypothesis import strategies as st

# Bytes that matter to framing: line endings, dots, and the terminator's pieces.
_STREAM_TOKENS = [
    b"\r",
    b"\n",
    b".",
    b"..",
    b"a",
    b"b",
    b" ",
    b"\r\n",
    b"\r\n.",
    b".\r\n",
    b"\r\n.\r\n",
    b"\n.",
    b"\r.",
    # the SMTP smuggling sequences
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\xc3\xa9",
    b"\x00",
]


def streams(max_tokens: int = 50) -> st.SearchStrategy[bytes]:
    """Byte streams rich in CR, LF and dots, with runs long enough to hit limits."""
    token = st.one_of(
        st.sampled_from(_STREAM_TOKENS),
        st.integers(1, 60).map(lambda n: b"x" * n),
        st.binary(max_size=4),
    )
    return st.lists(token, max_size=max_tokens).map(b"".join)


@st.composite
def chunked(draw: st.DrawFn, data: st.SearchStrategy[bytes]) -> list[bytes]:
    """A drawn byte string cut at random points (empty chunks included)."""
    blob = draw(data)
    position = st.integers(0, len(blob))
    # cuts just after a CR or LF are where framing bugs hide
    after_eol = [i + 1 for i, c in enumerate(blob) if c in b"\r\n"]
    if after_eol:
        position = st.one_of(position, st.sampled_from(after_eol))
    cuts = sorted(draw(st.lists(position, max_size=12)))
    bounds = [0, *cuts, len(blob)]
    return [blob[a:b] for a, b in itertools.pairwise(bounds)]


def decoder_settings() -> st.SearchStrategy[dict[str, object]]:
    """DataDecoder keyword arguments with small limits, so that they are hit."""
    return st.fixed_dictionaries(
        {
            "strict": st.booleans(),
            "max_size": st.none() | st.integers(0, 80),
            "max_line_length": st.none() | st.just(0) | st.integers(1, 48),
        }
    )


def reader_settings() -> st.SearchStrategy[dict[str, object]]:
    """LineReader keyword arguments with small limits."""
    return st.fixed_dictionaries({"strict": st.booleans(), "max_line_length": st.integers(3, 40)})


def crlf_bodies() -> st.SearchStrategy[bytes]:
    """Message bodies whose every line ends with CRLF (or the empty body)."""
    piece = st.sampled_from([b".", b"..", b"a", b" ", b"\xff", b"\x00", b"x" * 10, b"\t"])
    line = st.lists(piece, max_size=8).map(b"".join)
    return st.lists(line, max_size=12).map(lambda lines: b"".join(x + b"\r\n" for x in lines))


# --- addresses ------------------------------------------------------------------

_ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
_LETDIG = string.ascii_letters + string.digits


def _label() -> st.SearchStrategy[str]:
    inner = st.text(alphabet=_LETDIG + "-", max_size=6)
    edge = st.sampled_from(_LETDIG)
    return st.one_of(edge, st.tuples(edge, inner, edge).map("".join))


def mailboxes() -> st.SearchStrategy[str]:
    """Valid ASCII dot-string mailboxes: ``local@domain``."""
    atom = st.text(alphabet=_ATEXT, min_size=1, max_size=8)
    local = st.lists(atom, min_size=1, max_size=3).map(".".join)
    domain = st.lists(_label(), min_size=1, max_size=4).map(".".join)
    return st.tuples(local, domain).map("@".join)


def esmtp_params() -> st.SearchStrategy[list[tuple[str, str | None]]]:
    """Distinct (keyword, value) pairs, keywords in any case."""
    keyword = st.tuples(st.sampled_from(_LETDIG), st.text(alphabet=_LETDIG + "-", max_size=8)).map(
        "".join
    )
    value_chars = "".join(chr(c) for c in range(33, 127) if c != 61)
    value = st.none() | st.text(alphabet=value_chars, min_size=1, max_size=10)
    return st.lists(st.tuples(keyword, value), max_size=4, unique_by=lambda kv: kv[0].upper())


# Fragments of MAIL/RCPT arguments, valid and not.
_PATH_TOKENS = [
    b"FROM:",
    b"TO:",
    b"from:",
    b" ",
    b"<",
    b">",
    b"<>",
    b"@",
    b".",
    b":",
    b",",
    b'"',
    b"\\",
    b"[",
    b"]",
    b"IPv6:",
    b"=",
    b"-",
    b"+",
    b"a",
    b"Z",
    b"0",
    b"9",
    b"_",
    b"example.com",
    b"192.0.2.1",
    b"::1",
    b"Postmaster",
    b"SMTPUTF8",
    b"SIZE=10",
    b"\xc3\xa9",
    b"\xff",
    b"\x00",
    b"\t",
    b"\x7f",
]


def path_args() -> st.SearchStrategy[bytes]:
    """Random MAIL/RCPT argument bytes, mostly made of meaningful fragments."""
    tokens = st.lists(st.sampled_from(_PATH_TOKENS), max_size=24).map(b"".join)
    prefix = st.sampled_from([b"FROM:<", b"TO:<", b"FROM:", b"TO:", b""])
    return st.one_of(st.tuples(prefix, tokens).map(b"".join), st.binary(max_size=30))


def xtext_like() -> st.SearchStrategy[str]:
    """Strings near xtext: hex escapes, '+', '=', spaces, non-ASCII."""
    return st.text(alphabet="+0123456789ABCDEFabz= ~é\x7f", max_size=20)
