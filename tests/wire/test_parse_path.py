"""parse_mail and parse_rcpt: paths and ESMTP parameters (RFC 5321 §4.1.2, §3.3)."""

from __future__ import annotations

from types import ModuleType

import pytest

from fastsmtp.wire import ParseError

Params = dict[str, str | None]

LONG_DOMAIN = b".".join([b"a" * 63] * 4) + b".example"  # 264 octets

# (args, address, params) accepted by parse_mail
MAIL_OK: list[tuple[bytes, str, Params]] = [
    (b"FROM:<>", "", {}),
    (b"FROM:<user@example.com>", "user@example.com", {}),
    (b"from:<user@example.com>", "user@example.com", {}),
    (b"From: <user@example.com>", "user@example.com", {}),
    (b"FROM:   <user@example.com>", "user@example.com", {}),
    (b"FROM: <>", "", {}),
    (b"FROM:<User.Name+tag@Sub.Example.COM>", "User.Name+tag@Sub.Example.COM", {}),
    (b"FROM:<a!#$%&'*+-/=?^_`{|}~@example.com>", "a!#$%&'*+-/=?^_`{|}~@example.com", {}),
    (b"FROM:<user@localhost>", "user@localhost", {}),
    (b"FROM:<user@a-b.123.example>", "user@a-b.123.example", {}),
    # source routes are accepted and dropped (RFC 5321 §4.1.2, appendix C)
    (b"FROM:<@relay.example:user@example.com>", "user@example.com", {}),
    (b"FROM:<@a.example,@b.example:user@example.com>", "user@example.com", {}),
    # quoted local parts are kept as written
    (b'FROM:<"john smith"@example.com>', '"john smith"@example.com', {}),
    (b'FROM:<"a>b"@example.com>', '"a>b"@example.com', {}),
    (b'FROM:<"a\\"b"@example.com>', '"a\\"b"@example.com', {}),
    (b'FROM:<"a\\\\b"@example.com>', '"a\\\\b"@example.com', {}),
    (b'FROM:<"a\\>b"@example.com>', '"a\\>b"@example.com', {}),
    (b'FROM:<"a@b"@example.com>', '"a@b"@example.com', {}),
    (b'FROM:<""@example.com>', '""@example.com', {}),
    # address literals (RFC 5321 §4.1.3)
    (b"FROM:<user@[192.0.2.1]>", "user@[192.0.2.1]", {}),
    (b"FROM:<user@[IPv6:2001:db8::1]>", "user@[IPv6:2001:db8::1]", {}),
    (b"FROM:<user@[IPv6:::ffff:192.0.2.1]>", "user@[IPv6:::ffff:192.0.2.1]", {}),
    (b"FROM:<user@[x-tag:some-content]>", "user@[x-tag:some-content]", {}),
    # parameters
    (b"FROM:<user@example.com> SIZE=1000", "user@example.com", {"SIZE": "1000"}),
    (
        b"FROM:<user@example.com> size=1000 body=8BITMIME",
        "user@example.com",
        {"SIZE": "1000", "BODY": "8BITMIME"},
    ),
    (b"FROM:<user@example.com> SMTPUTF8", "user@example.com", {"SMTPUTF8": None}),
    (
        b"FROM:<user@example.com>  SIZE=1   BODY=7BIT ",
        "user@example.com",
        {"SIZE": "1", "BODY": "7BIT"},
    ),
    (b"FROM:<> RET=HDRS ENVID=QQ314159", "", {"RET": "HDRS", "ENVID": "QQ314159"}),
    (b"FROM:<user@example.com> X-EXT=a+2Bb", "user@example.com", {"X-EXT": "a+2Bb"}),
    (b"FROM:<user@example.com> X-1-y", "user@example.com", {"X-1-Y": None}),
    # UTF-8 with SMTPUTF8 on the same command (RFC 6531)
    (b"FROM:<j\xc3\xb6s@ex\xc3\xa4mple.com> SMTPUTF8", "jös@exämple.com", {"SMTPUTF8": None}),
    (b"FROM:<user@example.com> smtputf8", "user@example.com", {"SMTPUTF8": None}),
    (b'FROM:<"j\xc3\xb6 s"@example.com> SMTPUTF8', '"jö s"@example.com', {"SMTPUTF8": None}),
    (
        b"FROM:<user@example.com> X-NAME=caf\xc3\xa9 SMTPUTF8",
        "user@example.com",
        {"X-NAME": "café", "SMTPUTF8": None},
    ),
]

# (args, kind) refused by parse_mail
MAIL_BAD: list[tuple[bytes, str]] = [
    (b"", "syntax"),
    (b"FROM", "syntax"),
    (b"FROM<user@example.com>", "syntax"),
    (b"FROM :<user@example.com>", "syntax"),
    (b"TO:<user@example.com>", "syntax"),
    (b"FROM:", "syntax"),
    (b"FROM:   ", "syntax"),
    (b"FROM:<user@example.com>SIZE=10", "syntax"),
    # brackets
    (b"FROM:user@example.com", "address"),
    (b"FROM:<user@example.com", "address"),
    (b'FROM:<"user@example.com>', "address"),
    # mailboxes
    (b"FROM:<Postmaster>", "address"),
    (b"FROM:<user>", "address"),
    (b"FROM:<@example.com>", "address"),
    (b"FROM:<user@>", "address"),
    (b"FROM:<user@@example.com>", "address"),
    (b"FROM:<.user@example.com>", "address"),
    (b"FROM:<user.@example.com>", "address"),
    (b"FROM:<us..er@example.com>", "address"),
    (b"FROM:<us er@example.com>", "address"),
    (b"FROM:<us\\er@example.com>", "address"),
    (b"FROM:<us(er)@example.com>", "address"),
    (b'FROM:<"a"b@example.com>', "address"),
    (b'FROM:<"a"@>', "address"),
    (b'FROM:<"a\x01"@example.com>', "address"),
    (b'FROM:<"a\\\x01"@example.com>', "address"),
    # domains
    (b"FROM:<user@exa mple.com>", "address"),
    (b"FROM:<user@-example.com>", "address"),
    (b"FROM:<user@example-.com>", "address"),
    (b"FROM:<user@sub.-example.com>", "address"),
    (b"FROM:<user@example.com->", "address"),
    (b"FROM:<user@example..com>", "address"),
    (b"FROM:<user@example.com.>", "address"),
    (b"FROM:<user@.example.com>", "address"),
    (b"FROM:<user@exa_mple.com>", "address"),
    (b"FROM:<user@" + LONG_DOMAIN + b">", "address"),
    # address literals
    (b"FROM:<user@[192.0.2.256]>", "address"),
    (b"FROM:<user@[192.0.2]>", "address"),
    (b"FROM:<user@[192.0.2.1>", "address"),
    (b"FROM:<user@[]>", "address"),
    (b"FROM:<user@[IPv6:2001:db8::g]>", "address"),
    (b"FROM:<user@[IPv6:192.0.2.1]>", "address"),
    (b"FROM:<user@[2001:db8::1]>", "address"),
    (b"FROM:<user@[tag:]>", "address"),
    (b"FROM:<user@[:content]>", "address"),
    (b"FROM:<user@[tag:a b]>", "address"),
    (b"FROM:<user@[tag:a[b]>", "address"),
    # source routes
    (b"FROM:<@relay.example user@example.com>", "address"),
    (b"FROM:<@-bad.example:user@example.com>", "address"),
    (b"FROM:<@relay.example,relay2.example:user@example.com>", "address"),
    (b"FROM:<@:user@example.com>", "address"),
    # parameters
    (b"FROM:<user@example.com> SIZE=", "param"),
    (b"FROM:<user@example.com> =10", "param"),
    (b"FROM:<user@example.com> -SIZE=10", "param"),
    (b"FROM:<user@example.com> SI_ZE=10", "param"),
    (b"FROM:<user@example.com> SIZE=1=2", "param"),
    (b"FROM:<user@example.com> SIZE=1 size=2", "param"),
    (b"FROM:<user@example.com> SMTPUTF8 SMTPUTF8", "param"),
    (b"FROM:<user@example.com> X=a\x7f", "param"),
    (b"FROM:<user@example.com> X=\x01", "param"),
    (b"FROM:<user@example.com> X=a\tb", "param"),
    (b"FROM:<user@example.com> X=\xff SMTPUTF8", "param"),
    # non-ASCII without SMTPUTF8 on this command
    (b"FROM:<j\xc3\xb6s@example.com>", "utf8"),
    (b"FROM:<user@ex\xc3\xa4mple.com>", "utf8"),
    (b'FROM:<"j\xc3\xb6s"@example.com>', "utf8"),
    (b"FROM:<user@example.com> X-NAME=caf\xc3\xa9", "utf8"),
    (b"FROM:<j\xc3\xb6s@example.com> SIZE=10", "utf8"),
    # non-UTF-8 even with SMTPUTF8
    (b"FROM:<j\xff@example.com> SMTPUTF8", "address"),
    (b"FROM:<j\xc3@example.com> SMTPUTF8", "address"),
]

# (args, utf8, address, params) accepted by parse_rcpt
RCPT_OK: list[tuple[bytes, bool, str, Params]] = [
    (b"TO:<user@example.com>", False, "user@example.com", {}),
    (b"to:<user@example.com>", False, "user@example.com", {}),
    (b"To: <user@example.com>", False, "user@example.com", {}),
    (b"TO:<Postmaster>", False, "Postmaster", {}),
    (b"TO:<postmaster>", False, "postmaster", {}),
    (b"TO:<POSTMASTER> NOTIFY=NEVER", False, "POSTMASTER", {"NOTIFY": "NEVER"}),
    (b"TO:<postmaster@example.com>", False, "postmaster@example.com", {}),
    (b"TO:<@relay.example:user@example.com>", False, "user@example.com", {}),
    (b'TO:<"a>b"@example.com>', False, '"a>b"@example.com', {}),
    (b"TO:<user@[IPv6:::1]>", False, "user@[IPv6:::1]", {}),
    (
        b"TO:<user@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;user@example.com",
        False,
        "user@example.com",
        {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;user@example.com"},
    ),
    (b"TO:<j\xc3\xb6s@ex\xc3\xa4mple.com>", True, "jös@exämple.com", {}),
    (b"TO:<user@example.com> X=caf\xc3\xa9", True, "user@example.com", {"X": "café"}),
    (b"TO:<user@example.com>", True, "user@example.com", {}),
]

# (args, utf8, kind) refused by parse_rcpt
RCPT_BAD: list[tuple[bytes, bool, str]] = [
    (b"TO:<>", False, "address"),
    (b"TO:", False, "syntax"),
    (b"TO", False, "syntax"),
    (b"FROM:<user@example.com>", False, "syntax"),
    (b"TO<user@example.com>", False, "syntax"),
    (b"TO:<Postmaster", False, "address"),
    (b"TO:Postmaster", False, "address"),
    (b"TO:user@example.com", False, "address"),
    (b"TO:<Post master>", False, "address"),
    (b"TO:<postmaster@>", False, "address"),
    (b"TO:<user@example-.com>", False, "address"),
    (b"TO:<user@example.com> NOTIFY=NEVER notify=NEVER", False, "param"),
    (b"TO:<user@example.com> NOTIFY=", False, "param"),
    (b"TO:<j\xc3\xb6s@example.com>", False, "utf8"),
    # SMTPUTF8 is a MAIL parameter: on RCPT only utf8=True allows UTF-8
    (b"TO:<j\xc3\xb6s@example.com> SMTPUTF8", False, "utf8"),
    (b"TO:<user@example.com> X=caf\xc3\xa9", False, "utf8"),
    (b"TO:<j\xff@example.com>", True, "address"),
    (b"TO:<user@example.com> X=\xff", True, "param"),
]


@pytest.mark.parametrize(("args", "address", "params"), MAIL_OK)
def test_parse_mail_accepts(wire: ModuleType, args: bytes, address: str, params: Params) -> None:
    assert wire.parse_mail(args) == (address, params)


@pytest.mark.parametrize(("args", "kind"), MAIL_BAD)
def test_parse_mail_refuses(wire: ModuleType, args: bytes, kind: str) -> None:
    with pytest.raises(ParseError) as info:
        wire.parse_mail(args)
    assert info.value.kind == kind


@pytest.mark.parametrize(("args", "utf8", "address", "params"), RCPT_OK)
def test_parse_rcpt_accepts(
    wire: ModuleType, args: bytes, utf8: bool, address: str, params: Params
) -> None:
    assert wire.parse_rcpt(args, utf8=utf8) == (address, params)


@pytest.mark.parametrize(("args", "utf8", "kind"), RCPT_BAD)
def test_parse_rcpt_refuses(wire: ModuleType, args: bytes, utf8: bool, kind: str) -> None:
    with pytest.raises(ParseError) as info:
        wire.parse_rcpt(args, utf8=utf8)
    assert info.value.kind == kind


@pytest.mark.parametrize(
    ("args", "address", "params"),
    [
        (b"FROM:user@example.com", "user@example.com", {}),
        (b"FROM: user@example.com SIZE=10", "user@example.com", {"SIZE": "10"}),
        (b"FROM:<user@example.com>", "user@example.com", {}),
        (b"FROM:<>", "", {}),
    ],
)
def test_lenient_mail_accepts_a_path_without_brackets(
    wire: ModuleType, args: bytes, address: str, params: Params
) -> None:
    assert wire.parse_mail(args, lenient=True) == (address, params)


@pytest.mark.parametrize(
    ("args", "address"),
    [(b"TO:user@example.com", "user@example.com"), (b"TO:Postmaster", "Postmaster")],
)
def test_lenient_rcpt_accepts_a_path_without_brackets(
    wire: ModuleType, args: bytes, address: str
) -> None:
    assert wire.parse_rcpt(args, lenient=True) == (address, {})


@pytest.mark.parametrize(
    ("args", "kind"),
    [
        (b"FROM:", "syntax"),
        (b"FROM:<user@example.com", "address"),
        (b"FROM:user@-example.com", "address"),
        (b"FROM:user", "address"),
        (b"FROM:j\xc3\xb6s@example.com", "utf8"),
    ],
)
def test_lenient_still_checks_the_address(wire: ModuleType, args: bytes, kind: str) -> None:
    with pytest.raises(ParseError) as info:
        wire.parse_mail(args, lenient=True)
    assert info.value.kind == kind


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_accepts_any_bytes_like(wire: ModuleType, kind: type) -> None:
    assert wire.parse_mail(kind(b"FROM:<a@b.example> SIZE=1")) == ("a@b.example", {"SIZE": "1"})
    assert wire.parse_rcpt(kind(b"TO:<c@d.example>")) == ("c@d.example", {})


def test_parse_error_is_a_value_error(wire: ModuleType) -> None:
    with pytest.raises(ValueError):
        wire.parse_mail(b"FROM:<nope>")
