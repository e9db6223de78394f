"""The PROXY protocol reader without sockets: v1 text, v2 binary, split input, bad headers.

The headers come from tests/proxy_headers.py (the HAProxy specification,
v2 with ``struct``), not from the reader.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastsmtp.protocol.proxy import MAX_V1_LENGTH, ProxyError, ProxyHeader, ProxyReader
from proxy_headers import SIGNATURE, v2, v2_tcp4, v2_tcp6


def read(data: bytes) -> tuple[ProxyHeader, bytes] | None:
    return ProxyReader().feed(data)


# --- version 1 ---------------------------------------------------------------------
def test_v1_tcp4_gives_source_and_destination_and_keeps_what_follows():
    result = read(b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 25\r\nEHLO x\r\n")
    assert result == (ProxyHeader(1, ("203.0.113.9", 40000), ("192.0.2.1", 25)), b"EHLO x\r\n")


def test_v1_tcp6():
    header, rest = read(b"PROXY TCP6 2001:db8::9 2001:db8::1 65535 0\r\n")
    assert header == ProxyHeader(1, ("2001:db8::9", 65535), ("2001:db8::1", 0))
    assert rest == b""


def test_v1_unknown_keeps_the_socket_address_and_ignores_the_rest():
    assert read(b"PROXY UNKNOWN\r\n") == (ProxyHeader(1), b"")
    assert read(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nQUIT\r\n") == (ProxyHeader(1), b"QUIT\r\n")


def test_v1_longest_header_is_accepted():
    line = b"PROXY TCP6 " + b"ffff:" * 7 + b"ffff " + b"ffff:" * 7 + b"ffff 65535 65535\r\n"
    assert len(line) == 104
    header, _ = read(line)
    assert header.source == ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)
    unknown = b"PROXY UNKNOWN " + b"x" * (MAX_V1_LENGTH - 16) + b"\r\n"
    assert len(unknown) == MAX_V1_LENGTH
    assert read(unknown) == (ProxyHeader(1), b"")


def test_v1_byte_by_byte():
    reader = ProxyReader()
    data = b"PROXY TCP4 198.51.100.3 192.0.2.1 1234 25\r\nNOOP\r\n"
    for i in range(len(data) - 9):
        assert reader.feed(data[i : i + 1]) is None
    assert reader.feed(data[-9:]) == (
        ProxyHeader(1, ("198.51.100.3", 1234), ("192.0.2.1", 25)),
        b"NOOP\r\n",
    )


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 203.0.113.9 192.0.2.1 40000\r\n",  # a field missing
        b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 25 x\r\n",  # one too many
        b"PROXY TCP4  203.0.113.9 192.0.2.1 40000 25\r\n",  # double space
        b"PROXY TCP5 203.0.113.9 192.0.2.1 40000 25\r\n",  # no such protocol
        b"PROXY tcp4 203.0.113.9 192.0.2.1 40000 25\r\n",  # case matters
        b"PROXY TCP4 2001:db8::1 192.0.2.1 40000 25\r\n",  # v6 address as TCP4
        b"PROXY TCP6 203.0.113.9 2001:db8::1 40000 25\r\n",  # v4 address as TCP6
        b"PROXY TCP4 203.0.113.256 192.0.2.1 40000 25\r\n",
        b"PROXY TCP4 203.0.113.09 192.0.2.1 40000 25\r\n",  # leading zero: ambiguous
        b"PROXY TCP6 fe80::1%eth0 2001:db8::1 40000 25\r\n",  # zone index
        b"PROXY TCP4 203.0.113.9 192.0.2.1 65536 25\r\n",
        b"PROXY TCP4 203.0.113.9 192.0.2.1 -1 25\r\n",
        b"PROXY TCP4 203.0.113.9 192.0.2.1 +25 25\r\n",
        b"PROXY TCP4 203.0.113.9 192.0.2.1 000025 25\r\n",
        b"PROXY TCP4 203.0.113.9 192.0.2.1 \xd9\xa3 25\r\n",  # not ASCII digits
        b"PROXY\r\n",
        b"EHLO client.example\r\n",  # no header at all
        b"proxy TCP4 203.0.113.9 192.0.2.1 40000 25\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    ],
)
def test_v1_malformed_is_an_error(line):
    with pytest.raises(ProxyError):
        read(line)


def test_v1_without_crlf_in_107_octets_is_an_error_without_waiting_for_more():
    reader = ProxyReader()
    assert reader.feed(b"PROXY TCP4 " + b"1" * 95) is None  # 106 octets: may still end
    with pytest.raises(ProxyError):
        reader.feed(b"1")
    with pytest.raises(ProxyError):
        read(b"PROXY UNKNOWN " + b"x" * 200 + b"\r\n")


def test_v1_bare_lf_is_an_error():
    with pytest.raises(ProxyError):
        read(b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 25\n" + b"x" * 100)


# --- version 2 ---------------------------------------------------------------------
def test_v2_tcp4_gives_source_and_destination_and_keeps_what_follows():
    data = v2_tcp4("203.0.113.9", "192.0.2.1", 40000, 25) + b"EHLO x\r\n"
    assert read(data) == (ProxyHeader(2, ("203.0.113.9", 40000), ("192.0.2.1", 25)), b"EHLO x\r\n")


def test_v2_tcp6():
    header, rest = read(v2_tcp6("2001:db8::9", "2001:db8::1", 1, 587))
    assert header == ProxyHeader(2, ("2001:db8::9", 1), ("2001:db8::1", 587))
    assert rest == b""


def test_v2_tlvs_are_skipped():
    # PP2_TYPE_ALPN (0x01) and PP2_TYPE_AUTHORITY (0x02), as HAProxy may send them.
    tlvs = b"\x01\x00\x04smtp" + b"\x02\x00\x0emx.example.com"
    data = v2_tcp4("203.0.113.9", "192.0.2.1", 40000, 25, tlvs) + b"QUIT\r\n"
    header, rest = read(data)
    assert header.source == ("203.0.113.9", 40000)
    assert rest == b"QUIT\r\n"


def test_v2_local_keeps_the_socket_address():
    # LOCAL with an address block (which must be ignored) and without.
    body = v2_tcp4("203.0.113.9", "192.0.2.1", 40000, 25)[16:]
    assert read(v2(0x0, 0x11, body) + b"NOOP\r\n") == (ProxyHeader(2), b"NOOP\r\n")
    assert read(v2(0x0, 0x00, b"")) == (ProxyHeader(2), b"")


@pytest.mark.parametrize("family", [0x00, 0x31])  # UNSPEC, UNIX stream
def test_v2_families_without_an_inet_address_keep_the_socket_address(family):
    assert read(v2(0x1, family, b"\x00" * 216)) == (ProxyHeader(2), b"")


def test_v2_byte_by_byte():
    reader = ProxyReader()
    data = v2_tcp6("2001:db8::9", "2001:db8::1", 1, 587) + b"NOOP\r\n"
    for byte in data[:-7]:
        assert reader.feed(bytes([byte])) is None
    header, rest = reader.feed(data[-7:])
    assert header.source == ("2001:db8::9", 1)
    assert rest == b"NOOP\r\n"


@pytest.mark.parametrize(
    "data",
    [
        SIGNATURE[:11] + b"X" + b"\x21\x11\x00\x0c" + b"\x00" * 12,  # bad signature
        v2(0x1, 0x11, b"\x00" * 12, version=1),  # version must be 2
        v2(0x1, 0x11, b"\x00" * 12, version=3),
        v2(0x2, 0x11, b"\x00" * 12),  # no command 2
        v2(0x1, 0x11, b"\x00" * 11),  # too short for IPv4 addresses
        v2(0x1, 0x21, b"\x00" * 35),  # too short for IPv6 addresses
        v2(0x1, 0x12, b"\x00" * 12),  # UDP: SMTP is a stream
        v2(0x1, 0x22, b"\x00" * 36),
        v2(0x1, 0x41, b"\x00" * 12),  # no family 4
        v2(0x1, 0x13, b"\x00" * 12),  # no transport 3
    ],
)
def test_v2_malformed_is_an_error(data):
    with pytest.raises(ProxyError):
        read(data)


def test_v2_bad_signature_is_an_error_before_the_fixed_part_is_complete():
    with pytest.raises(ProxyError):
        read(b"\r\n\r\nX")


def test_v2_waits_for_the_declared_length():
    data = v2_tcp4("203.0.113.9", "192.0.2.1", 40000, 25, b"\x04\x00\x00")
    reader = ProxyReader()
    assert reader.feed(data[:-1]) is None
    assert reader.feed(data[-1:])[0].source == ("203.0.113.9", 40000)


# --- any split ---------------------------------------------------------------------
@given(
    st.sampled_from(
        [
            b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 25\r\n",
            b"PROXY UNKNOWN\r\n",
            v2_tcp4("203.0.113.9", "192.0.2.1", 40000, 25, b"\x04\x00\x01z"),
            v2_tcp6("2001:db8::9", "2001:db8::1", 1, 587),
        ]
    ),
    st.binary(max_size=20),
    st.lists(st.integers(min_value=1, max_value=40), max_size=30),
)
def test_any_split_gives_the_same_header_and_rest(header, smtp, cuts):
    data = header + smtp
    expected = read(data)
    reader = ProxyReader()
    pos, result = 0, None
    for size in [*cuts, len(data)]:
        result = reader.feed(data[pos : pos + size])
        pos += size
        if result is not None:
            break
    assert result is not None
    assert result[0] == expected[0]
    assert result[1] + data[pos:] == expected[1]
