"""The HAProxy PROXY protocol, versions 1 and 2, as a sans-IO reader.

Theory of operation
===================

A TCP balancer that speaks the PROXY protocol opens its connection to the
server with one header naming the client it accepted, then relays the
client's bytes unchanged. The server reads that header before anything else
(and says nothing before it), takes the client's address from it, and treats
every byte after it as SMTP input.

``ProxyReader.feed(data)`` buffers bytes until the header is complete and
returns ``(ProxyHeader, rest)``; ``None`` while more is needed. A malformed
header raises ``ProxyError``: the connection is not from a balancer that
speaks the protocol (or the balancer is broken), and the only safe answer is
to close without a word, since nothing said can be trusted to reach a client.

- Version 1 is one text line, ``PROXY TCP4|TCP6|UNKNOWN ...`` and CRLF, at
  most 107 octets; its end is searched for in those octets only.
- Version 2 is binary: a 12-octet signature, version and command, address
  family and transport, a 16-bit length, the addresses, then optional TLVs
  (skipped). The LOCAL command (a balancer's health check) and the UNSPEC
  and UNIX families keep the socket's own addresses.

Validation is strict, as the specification asks of receivers: single
spaces, addresses of the declared family, ports as plain decimal numbers in
0..65535, a length that holds the addresses. ``source`` is ``None`` when the
socket's address stays.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["MAX_V1_LENGTH", "ProxyError", "ProxyHeader", "ProxyReader"]

#: the longest version 1 line, CRLF included
MAX_V1_LENGTH = 107
_V1_PREFIX = b"PROXY "
_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = 16  # signature, version/command, family/transport, length
_V2_COMMANDS = {0x20: "LOCAL", 0x21: "PROXY"}
# family/transport octet -> (address length, address class)
_V2_INET = {0x11: (12, ipaddress.IPv4Address), 0x21: (36, ipaddress.IPv6Address)}
_V2_KEEP = frozenset({0x00, 0x01, 0x31})  # UNSPEC (any transport), UNIX stream
IPAddress = type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address]
_V1_FAMILIES: dict[bytes, IPAddress] = {
    b"TCP4": ipaddress.IPv4Address,
    b"TCP6": ipaddress.IPv6Address,
}


class ProxyError(ValueError):
    """A malformed PROXY header; the message says what was wrong."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What a PROXY header said.

    ``source`` and ``destination`` are ``(ip, port)`` of the client and of
    the address it connected to, or ``None`` when the header carries none
    (v1 ``UNKNOWN``, v2 ``LOCAL``, ``UNSPEC`` or ``UNIX``): the socket's own
    addresses stay then.
    """

    version: int
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None


class ProxyReader:
    """Read the one PROXY header at the start of a connection (see module doc)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | memoryview) -> tuple[ProxyHeader, bytes] | None:
        """Take bytes; ``(header, rest)`` once the header is complete, else ``None``.

        ``rest`` is what followed the header in the input (SMTP, for us).
        Raises ``ProxyError`` as soon as the input cannot be a valid header.
        """
        buf = self._buf
        buf += data
        if buf[:1] == _V2_SIGNATURE[:1]:
            return self._version2()
        if buf[: len(_V1_PREFIX)] != _V1_PREFIX[: len(buf)]:
            raise ProxyError(f"no PROXY header: {bytes(buf[:16])!r}")
        end = buf.find(b"\r\n", 0, MAX_V1_LENGTH)
        if end < 0:
            if len(buf) >= MAX_V1_LENGTH:
                raise ProxyError(f"v1 header without CRLF in {MAX_V1_LENGTH} octets")
            return None
        header = _parse_v1(bytes(buf[:end]))
        return header, bytes(buf[end + 2 :])

    def _version2(self) -> tuple[ProxyHeader, bytes] | None:
        buf = self._buf
        if buf[:12] != _V2_SIGNATURE[: min(len(buf), 12)]:
            raise ProxyError("bad v2 signature")
        if len(buf) < _V2_FIXED:
            return None
        command = _V2_COMMANDS.get(buf[12])
        if command is None:
            raise ProxyError(f"bad v2 version/command 0x{buf[12]:02x}")
        family = buf[13]
        length = int.from_bytes(buf[14:16], "big")
        if len(buf) < _V2_FIXED + length:
            return None
        body = bytes(buf[_V2_FIXED : _V2_FIXED + length])
        rest = bytes(buf[_V2_FIXED + length :])
        if command == "LOCAL":  # a health check from the balancer itself
            return ProxyHeader(2), rest
        inet = _V2_INET.get(family)
        if inet is None:
            if family in _V2_KEEP:
                return ProxyHeader(2), rest
            raise ProxyError(f"unsupported v2 family/transport 0x{family:02x}")
        size, kind = inet
        if length < size:
            raise ProxyError(f"v2 length {length} cannot hold the addresses ({size})")
        half = (size - 4) // 2
        source = str(kind(body[:half])), int.from_bytes(body[size - 4 : size - 2], "big")
        destination = str(kind(body[half : 2 * half])), int.from_bytes(body[size - 2 : size], "big")
        # What follows the addresses (TLVs) is not needed: skipped.
        return ProxyHeader(2, source, destination), rest


def _parse_v1(line: bytes) -> ProxyHeader:
    """``PROXY TCP4|TCP6 src dst sport dport`` or ``PROXY UNKNOWN ...``, without CRLF."""
    parts = line.split(b" ")
    if parts[1:2] == [b"UNKNOWN"]:
        # The balancer could not tell; the rest of the line is to be ignored.
        return ProxyHeader(1)
    if len(parts) != 6 or parts[0] != b"PROXY" or parts[1] not in _V1_FAMILIES:
        raise ProxyError(f"malformed v1 header {line[:MAX_V1_LENGTH]!r}")
    kind = _V1_FAMILIES[parts[1]]
    return ProxyHeader(
        1,
        (_v1_address(kind, parts[2]), _v1_port(parts[4])),
        (_v1_address(kind, parts[3]), _v1_port(parts[5])),
    )


def _v1_address(kind: IPAddress, text: bytes) -> str:
    try:
        if b"%" in text:  # a zone index names an interface of the balancer, not a client
            raise ValueError
        return str(kind(text.decode("ascii")))
    except (ValueError, UnicodeDecodeError):
        raise ProxyError(f"bad v1 address {text!r}") from None


def _v1_port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise ProxyError(f"bad v1 port {text!r}")
    return int(text)
