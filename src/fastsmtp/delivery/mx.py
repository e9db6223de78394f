"""Where a domain's mail goes: MX lookup with dnspython's async resolver (RFC 5321 §5.1).

``MXResolver.lookup(domain)`` returns the addresses to try, best first:

* MX records sorted by preference, shuffled among equal preferences (§5.1:
  the client SHOULD spread load over them), each target resolved to its
  IPv4 then IPv6 addresses;
* no MX record at all: the domain itself is the one "implicit MX" (§5.1);
* ``MX 0 .``, a Null MX (RFC 7505): the domain takes no mail, ``NullMX``
  (556 5.1.10) at once, without trying anything;
* an address literal (``user@[192.0.2.1]``, ``[IPv6:2001:db8::1]``, §4.1.3)
  is that address, without DNS.

Failures are exceptions carrying the reply the queue records for every
recipient of the domain: NXDOMAIN is permanent (``NoSuchDomain``), a
timeout, SERVFAIL or REFUSED is temporary (``TemporaryDNSFailure``), so the
message is retried later rather than bounced for a resolver's hiccup.

The nameservers come from the ``dns_servers`` setting (``HOST:PORT``, so
tests can run a local dnsmasq on a high port), or from the system's
configuration when none is given.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from ..config import ConfigError, parse_hostport
from ..protocol import replies as R
from ..protocol.replies import Reply

__all__ = [
    "DeliveryError",
    "MXHost",
    "MXResolver",
    "NoMailHost",
    "NoSuchDomain",
    "NullMX",
    "TemporaryDNSFailure",
    "address_literal",
    "parse_dns_server",
]


@dataclass(frozen=True, slots=True)
class MXHost:
    """One address to try: ``name`` is the MX target (the domain, for an implicit MX)."""

    name: str
    address: str
    preference: int


class DeliveryError(Exception):
    """Every recipient of a destination gets ``reply``: the domain cannot be reached now or ever."""

    def __init__(self, reply: Reply, detail: str = "") -> None:
        super().__init__(f"{reply}{': ' + detail if detail else ''}")
        self.reply = reply
        self.detail = detail

    @property
    def temporary(self) -> bool:
        """A 4xx: retry later; a 5xx fails the recipients."""
        return not self.reply.is_permanent


class NullMX(DeliveryError):
    """The domain publishes ``MX 0 .``: it accepts no mail (RFC 7505 §3)."""


class NoSuchDomain(DeliveryError):
    """NXDOMAIN for the recipient domain: permanent."""


class NoMailHost(DeliveryError):
    """The domain exists, but neither its MX targets nor the domain itself have an address."""


class TemporaryDNSFailure(DeliveryError):
    """Timeout, SERVFAIL or REFUSED: the lookup may succeed later."""


def parse_dns_server(spec: str) -> tuple[str, int]:
    """``"127.0.0.1:5353"``, ``"[::1]:53"`` or a bare IP (port 53) as ``(ip, port)``."""
    try:
        return str(ipaddress.ip_address(spec)), 53
    except ValueError:
        pass
    host, port = parse_hostport(spec, setting="dns_servers")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"dns_servers needs an IP address and port, not {spec!r}") from None
    return host, port


def address_literal(domain: str) -> str | None:
    """The IP of an address literal domain (``[192.0.2.1]``, ``[IPv6:::1]``), else None."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None


# Answers that mean "nobody says this name exists right now": retry later.
_TEMPORARY = (dns.resolver.NoNameservers, dns.exception.Timeout)


class MXResolver:
    """Look up the hosts that take a domain's mail, in the order to try them.

    ``nameservers`` are ``HOST:PORT`` strings (the ``dns_servers``
    setting); empty means the system configuration (``/etc/resolv.conf``).
    ``timeout`` bounds each whole lookup. ``rng`` shuffles equal
    preferences; tests pass a seeded one.
    """

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        *,
        timeout: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port)
                for host, port in map(parse_dns_server, nameservers)
            ]
        else:
            try:
                resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                raise ConfigError(
                    "no system DNS configuration (/etc/resolv.conf): set dns_servers"
                ) from None
        resolver.lifetime = timeout
        self._resolver = resolver
        self._rng = rng or random.Random()

    async def lookup(self, domain: str) -> list[MXHost]:
        """Addresses to deliver ``domain``'s mail to, best first; raise a ``DeliveryError``."""
        literal = address_literal(domain)
        if literal is not None:
            return [MXHost(domain, literal, 0)]
        domain = domain.rstrip(".").lower()
        answer = await self._query(domain, "MX")
        if answer is None:
            raise NoSuchDomain(R.NO_SUCH_DOMAIN, domain)
        records = list(answer.rrset or ())
        if any(r.exchange == dns.name.root for r in records):
            raise NullMX(R.NULL_MX, domain)
        if records:
            targets = self._order(
                [(r.exchange.to_text(omit_final_dot=True).lower(), r.preference) for r in records]
            )
        else:
            targets = [(domain, 0)]  # RFC 5321 §5.1: the implicit MX
        found = await asyncio.gather(
            *(self._addresses(name) for name, _ in targets), return_exceptions=True
        )
        hosts: list[MXHost] = []
        temporary: BaseException | None = None
        for (name, preference), addresses in zip(targets, found, strict=True):
            if isinstance(addresses, BaseException):
                if not isinstance(addresses, TemporaryDNSFailure):
                    raise addresses
                temporary = addresses
                continue
            hosts.extend(MXHost(name, address, preference) for address in addresses)
        if hosts:
            return hosts
        if temporary is not None:
            raise TemporaryDNSFailure(R.DNS_TEMPORARY, f"{domain}: {temporary}")
        raise NoMailHost(R.NO_MAIL_HOST, domain)

    def _order(self, targets: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """By preference; among equal preferences in random order (RFC 5321 §5.1)."""
        ordered: list[tuple[str, int]] = []
        for _, group in groupby(sorted(targets, key=lambda t: t[1]), key=lambda t: t[1]):
            same = list(dict.fromkeys(group))
            self._rng.shuffle(same)
            ordered.extend(same)
        return ordered

    async def _addresses(self, name: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``name``; [] when it has none."""
        answers = await asyncio.gather(self._query(name, "A"), self._query(name, "AAAA"))
        return [record.address for answer in answers if answer for record in answer.rrset or ()]

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        """The answer (its ``rrset`` None for no data), or None for NXDOMAIN."""
        try:
            return await self._resolver.resolve(name, rdtype, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return None
        except _TEMPORARY as exc:
            raise TemporaryDNSFailure(R.DNS_TEMPORARY, f"{name} {rdtype}: {exc}") from None
        except dns.exception.DNSException as exc:
            # A name that cannot be a DNS name (empty or over-long label): it never will be.
            raise NoSuchDomain(R.NO_SUCH_DOMAIN, f"{name}: {exc}") from None
