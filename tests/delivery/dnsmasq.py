"""A real DNS server for MX tests: dnsmasq on a loopback port, started and stopped by a test.

``DNSMasq(mx=..., hosts=..., null_mx=...)`` runs ``/usr/sbin/dnsmasq`` in
the foreground with no upstream servers, no ``/etc/hosts`` and no config
file, answering only what the test gave it. Every name under ``.test`` that
the test did not give is NXDOMAIN (``--local=/test/``); names elsewhere get
REFUSED, which a resolver reports as a temporary failure.

``start()`` returns once dnsmasq answers a query (polled with a deadline,
never a fixed sleep); ``stop()`` terminates it and waits for it.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Mapping, Sequence

import dns.exception
import dns.resolver

from interop.conftest import require_tool

START_DEADLINE = 10.0  # seconds for dnsmasq to answer its first query


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port that nothing listens on now (dnsmasq takes the same TCP port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class DNSMasq:
    """One dnsmasq process serving MX, A/AAAA and Null MX records for ``.test`` names.

    ``mx`` maps a domain to ``[(target, preference), ...]``; ``hosts`` maps a
    name to its addresses (IPv4 and/or IPv6); ``null_mx`` lists domains that
    publish ``MX 0 .`` (RFC 7505).
    """

    def __init__(
        self,
        *,
        mx: Mapping[str, Sequence[tuple[str, int]]] = {},
        hosts: Mapping[str, Sequence[str]] = {},
        null_mx: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.binary = require_tool("dnsmasq")
        self.host = host
        self.port = 0
        self.records: list[str] = ["--local=/test/", "--host-record=dnsmasq-ready.test,127.0.0.9"]
        for domain, targets in mx.items():
            for target, preference in targets:
                self.records.append(f"--mx-host={domain},{target},{preference}")
        for name, addresses in hosts.items():
            self.records.append(f"--host-record={name},{','.join(addresses)}")
        for domain in null_mx:
            # RDATA of MX 0 "." (RFC 7505 §3): preference 0x0000, the root name 0x00.
            self.records.append(f"--dns-rr={domain},15,000000")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``HOST:PORT`` as the ``dns_servers`` setting takes it."""
        return f"{self.host}:{self.port}"

    def start(self) -> DNSMasq:
        """Start dnsmasq on a free port and wait until it answers; retry a taken port."""
        for _ in range(3):
            self.port = free_udp_port(self.host)
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--keep-in-foreground",
                    "--no-resolv",
                    "--no-hosts",
                    "--conf-file=/dev/null",
                    "--pid-file=",
                    f"--listen-address={self.host}",
                    "--bind-interfaces",
                    f"--port={self.port}",
                    "--log-facility=-",
                    *self.records,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"dnsmasq did not start on {self.host}: {self.output}")

    def _wait_ready(self) -> bool:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.host]
        resolver.port = self.port
        resolver.lifetime = 0.2
        deadline = time.monotonic() + START_DEADLINE
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # exited: most likely the port was taken meanwhile
            try:
                resolver.resolve("dnsmasq-ready.test", "A")
                return True
            except dns.exception.DNSException:
                continue  # not listening yet; the query itself waited 0.2 s
        return False

    @property
    def output(self) -> str:
        """What dnsmasq wrote (after ``stop()``), for failure messages."""
        return getattr(self, "_output", "")

    def stop(self) -> None:
        """Terminate dnsmasq and wait for it (killed if it lingers)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
        try:
            _, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=5)
        self._output = err.decode("utf-8", "replace")
