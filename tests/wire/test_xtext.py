"""xtext (RFC 3461 §4), the encoding of ENVID, ORCPT and AUTH= values."""

from __future__ import annotations

from types import ModuleType

import pytest

from fastsmtp.wire import ParseError

PAIRS = [
    ("", ""),
    ("abc", "abc"),
    ("a+b", "a+2Bb"),
    ("a=b", "a+3Db"),
    ("a b", "a+20b"),
    ("~!", "~!"),
    ("rfc822;user@example.com", "rfc822;user@example.com"),
    ("\x7f\x00", "+7F+00"),
    ("é", "+C3+A9"),
    ("a\r\nb", "a+0D+0Ab"),
]


@pytest.mark.parametrize(("text", "xtext"), PAIRS)
def test_encode(wire: ModuleType, text: str, xtext: str) -> None:
    assert wire.xtext_encode(text) == xtext


@pytest.mark.parametrize(("text", "xtext"), PAIRS)
def test_decode(wire: ModuleType, text: str, xtext: str) -> None:
    assert wire.xtext_decode(xtext) == text


@pytest.mark.parametrize(
    ("xtext", "text"),
    [("a+2B+2Bb", "a++b"), ("+41+42", "AB"), ("A+2Bb+3D", "A+b=")],
)
def test_decode_escapes_of_plain_characters(wire: ModuleType, xtext: str, text: str) -> None:
    assert wire.xtext_decode(xtext) == text


@pytest.mark.parametrize(
    "xtext",
    [
        "+",
        "a+",
        "+2",
        "+2G",
        "+G2",
        "+2b",  # hexchar is two upper-case hex digits
        "a b",
        "a=b",
        "a\tb",
        "\x7f",
        "é",
        "+FF",  # not UTF-8
        "+C3",  # truncated UTF-8
    ],
)
def test_decode_refuses_bad_xtext(wire: ModuleType, xtext: str) -> None:
    with pytest.raises(ParseError) as info:
        wire.xtext_decode(xtext)
    assert info.value.kind == "param"
