"""PROXY protocol headers built from the HAProxy specification, for the tests.

Built here with ``struct``, independently of ``fastsmtp.protocol.proxy``,
so that the reader is checked against the specification, not against itself.
"""

from __future__ import annotations

import ipaddress
import struct

SIGNATURE = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"


def v1(source: tuple[str, int], destination: tuple[str, int] = ("192.0.2.1", 25)) -> bytes:
    """A v1 line for TCP4 or TCP6, chosen by the source address."""
    family = "TCP6" if ":" in source[0] else "TCP4"
    return f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode()


def v2(command: int, family: int, body: bytes, *, version: int = 2) -> bytes:
    """A v2 header: signature, version<<4|command, family<<4|transport, length, body."""
    return SIGNATURE + struct.pack("!BBH", version << 4 | command, family, len(body)) + body


def v2_tcp4(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    """A v2 PROXY header for TCP over IPv4, with optional raw TLVs after the addresses."""
    body = struct.pack(
        "!4s4sHH",
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
        sport,
        dport,
    )
    return v2(0x1, 0x11, body + tlvs)


def v2_tcp6(src: str, dst: str, sport: int, dport: int) -> bytes:
    """A v2 PROXY header for TCP over IPv6."""
    body = struct.pack(
        "!16s16sHH",
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
        sport,
        dport,
    )
    return v2(0x1, 0x21, body)
