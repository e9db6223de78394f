"""parse_command: the verb and the arguments of a command line."""

from __future__ import annotations

from types import ModuleType

import pytest


@pytest.mark.parametrize(
    ("line", "verb", "args"),
    [
        (b"NOOP", "NOOP", b""),
        (b"noop", "NOOP", b""),
        (b"HeLo client.example", "HELO", b"client.example"),
        (b"MAIL FROM:<a@b.example> SIZE=10", "MAIL", b"FROM:<a@b.example> SIZE=10"),
        (b"ehlo   client.example  ", "EHLO", b"client.example"),
        (b"VRFY  John  Smith ", "VRFY", b"John  Smith"),
        (b"DATA ", "DATA", b""),
        (b"", "", b""),
        (b" NOOP", "", b"NOOP"),
        (b"X\tY z", "X\tY", b"z"),
        (b"EHLO \tx\t", "EHLO", b"\tx\t"),
        (b"EHLO caf\xc3\xa9.example", "EHLO", b"caf\xc3\xa9.example"),
        (b"\xffOO x", "\ufffdOO", b"x"),
        (b"m\xc3\xa9l x", "M\ufffd\ufffdL", b"x"),
    ],
)
def test_parse_command(wire: ModuleType, line: bytes, verb: str, args: bytes) -> None:
    assert wire.parse_command(line) == (verb, args)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_returns_str_verb_and_bytes_args(wire: ModuleType, kind: type) -> None:
    verb, args = wire.parse_command(kind(b"rcpt TO:<a@b.example>"))
    assert type(verb) is str
    assert type(args) is bytes
    assert (verb, args) == ("RCPT", b"TO:<a@b.example>")
