"""Memory and latency: idle connections, one big message, NOOP under load.

``python -m bench.memory`` (also run at the end of ``python -m bench.load``)
measures, for fastsmtp and for aiosmtpd, each on a freshly started server:

- the RSS of the server holding N idle connections (default 10,000), each
  greeted with ``220`` before counting it. The client raises its
  ``RLIMIT_NOFILE`` as far as the hard limit allows (the server inherits
  it) and says so when that caps N;
- the peak RSS (``VmHWM``) of the server while one 100 MiB message passes
  through it, against its RSS before the message. fastsmtp runs with its
  defaults, so the body goes to a spool file past ``spool_threshold``
  (1 MiB) and what stays in memory is that threshold plus the writer's
  bounded backlog; aiosmtpd keeps the message (several times) in memory;
- the NOOP round-trip time seen by one client (p50/p99/max) while ten
  others send 20 MiB messages over reused connections (smtp-source when
  installed, else ``bench/client.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from bench.bodies import stuffed, text
from bench.servers import (
    SERVERS,
    RunningServer,
    ServerSpec,
    ServerUnavailable,
    find_tool,
    running_server,
    subprocess_env,
)

MIB = 1024 * 1024
RESULTS = Path(__file__).resolve().parent / "results"
Log = Callable[[str], None]


@dataclass(slots=True)
class IdleResult:
    """RSS of a server holding idle connections."""

    server: str
    requested: int
    connected: int = 0
    baseline_rss: int = 0
    rss: int = 0
    peak_rss: int = 0
    note: str = ""
    error: str = ""


@dataclass(slots=True)
class BigResult:
    """Peak RSS of a server while one big message passes through."""

    server: str
    size: int
    baseline_rss: int = 0
    peak_rss: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass(slots=True)
class LatencyResult:
    """NOOP round trips seen by one client while others send big messages."""

    server: str
    senders: int
    size: int
    samples: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    server_busy: float = 0.0
    sender_client: str = ""
    error: str = ""


@dataclass(slots=True)
class MemoryResults:
    """Everything ``run_memory`` measured."""

    idle: list[IdleResult] = field(default_factory=list)
    big: list[BigResult] = field(default_factory=list)
    latency: list[LatencyResult] = field(default_factory=list)


# --- SMTP over a blocking socket ----------------------------------------------


def _expect(stream: BinaryIO, code: int) -> bytes:
    """Read one reply (all its lines); raise unless it has ``code``."""
    while True:
        line = stream.readline()
        if not line.endswith(b"\n"):
            raise ConnectionError("connection closed by the server")
        if line[3:4] != b"-":
            break
    if line[:3] != str(code).encode():
        raise ConnectionError(f"expected {code}, got {line.decode(errors='replace').strip()}")
    return line


def _hello(address: tuple[str, int], timeout: float) -> tuple[socket.socket, BinaryIO]:
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stream = sock.makefile("rb")
    _expect(stream, 220)
    sock.sendall(b"EHLO probe.client.example\r\n")
    _expect(stream, 250)
    return sock, stream


# --- idle connections ---------------------------------------------------------


def raise_nofile(connections: int, margin: int = 512) -> tuple[int, str]:
    """Raise the soft RLIMIT_NOFILE for ``connections``; return how many fit and a note."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + margin
    limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if limit > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    if limit < wanted:
        allowed = max(limit - margin, 0)
        return allowed, f"capped at {allowed:,} by the hard RLIMIT_NOFILE ({hard})"
    return connections, ""


async def _hold_idle(server: RunningServer, count: int, result: IdleResult) -> None:
    """Open ``count`` connections, wait for each greeting, measure, close them all."""
    limit = asyncio.Semaphore(256)  # connections being opened at once (listen backlogs)
    writers: list[asyncio.StreamWriter] = []
    greeted = 0

    async def one() -> None:
        nonlocal greeted
        async with limit:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(*server.address), 30
                )
            except (OSError, TimeoutError) as exc:
                result.error = result.error or f"connect: {exc!r}"
                return
            writers.append(writer)
            try:
                line = await asyncio.wait_for(reader.readline(), 30)
            except (OSError, TimeoutError) as exc:
                result.error = result.error or f"greeting: {exc!r}"
                return
            if line.startswith(b"220"):
                greeted += 1
            else:
                result.error = result.error or f"greeting: {line!r}"

    try:
        await asyncio.gather(*(one() for _ in range(count)))
        result.connected = greeted
        result.rss, result.peak_rss = server.memory()
    finally:
        for writer in writers:
            writer.close()
        await asyncio.wait_for(
            asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True), 60
        )


def idle_connections(spec: ServerSpec, count: int, log: Log) -> IdleResult:
    """RSS of ``spec`` holding ``count`` idle, greeted connections."""
    allowed, note = raise_nofile(count)
    result = IdleResult(spec.name, count, note=note)
    try:
        with running_server(spec) as server:
            result.baseline_rss = server.memory()[0]
            asyncio.run(_hold_idle(server, allowed, result))
    except ServerUnavailable as exc:
        result.error = str(exc)
    log(f"{spec.label}: {result.connected:,} idle connections, RSS {result.rss / MIB:.1f} MiB")
    return result


# --- one big message ----------------------------------------------------------


def big_message(spec: ServerSpec, size: int, log: Log) -> BigResult:
    """Peak RSS of ``spec`` while one ``size``-byte message passes through it."""
    body = stuffed(size)
    result = BigResult(spec.name, len(text(size)))
    try:
        with running_server(spec, max_message_size=2 * size + MIB) as server:
            result.baseline_rss = server.memory()[0]
            sock, stream = _hello(server.address, timeout=300)
            with sock, stream:
                sock.sendall(f"MAIL FROM:<big@client.example> SIZE={len(body)}\r\n".encode())
                _expect(stream, 250)
                sock.sendall(b"RCPT TO:<sink@server.example>\r\n")
                _expect(stream, 250)
                sock.sendall(b"DATA\r\n")
                _expect(stream, 354)
                start = time.perf_counter()
                sock.sendall(body)
                _expect(stream, 250)
                result.seconds = time.perf_counter() - start
                sock.sendall(b"QUIT\r\n")
            result.peak_rss = server.memory()[1]
    except (ServerUnavailable, OSError) as exc:
        result.error = str(exc)
    extra = (result.peak_rss - result.baseline_rss) / MIB
    log(f"{spec.label}: {size / MIB:.0f} MiB message, peak RSS +{extra:.0f} MiB")
    return result


# --- NOOP latency under load --------------------------------------------------


def _sender_argv(port: int, senders: int, size: int) -> tuple[list[str], str]:
    """Ten clients sending big messages until stopped (at most 10,000 messages)."""
    tool = find_tool("smtp-source")
    if tool is not None:
        argv = [tool, "-s", str(senders), "-m", "10000", "-l", str(size), "-d"]
        return [*argv, "-M", "client.example", f"127.0.0.1:{port}"], "smtp-source"
    argv = [sys.executable, "-m", "bench.client", f"127.0.0.1:{port}", "-s", str(senders)]
    return [*argv, "-m", "10000", "-l", str(size), "-d"], "bench/client.py"


def _probe(address: tuple[str, int], seconds: float) -> list[float]:
    """NOOP round trips, one at a time with a 2 ms pause, for ``seconds``."""
    samples: list[float] = []
    sock, stream = _hello(address, timeout=60)
    with sock, stream:
        end = time.monotonic() + seconds
        while time.monotonic() < end and len(samples) < 100_000:
            start = time.perf_counter()
            sock.sendall(b"NOOP\r\n")
            _expect(stream, 250)
            samples.append(time.perf_counter() - start)
            time.sleep(0.002)
        sock.sendall(b"QUIT\r\n")
    return samples


def noop_latency(
    spec: ServerSpec, seconds: float, log: Log, senders: int = 10, size: int = 20 * MIB
) -> LatencyResult:
    """NOOP latency of one client while ``senders`` others send ``size``-byte messages."""
    result = LatencyResult(spec.name, senders, size)
    try:
        with running_server(spec, max_message_size=2 * size) as server:
            argv, result.sender_client = _sender_argv(server.port, senders, size)
            with tempfile.TemporaryFile() as errors:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=errors,
                    env=subprocess_env(),
                    start_new_session=True,
                )
                try:
                    _measure_noop(server, proc, seconds, result)
                finally:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(30)
                if result.error and proc.returncode not in (None, -signal.SIGKILL):
                    errors.seek(0)
                    result.error += f" (senders: {errors.read().decode(errors='replace')[-200:]})"
    except (ServerUnavailable, OSError) as exc:
        result.error = result.error or str(exc)
    log(
        f"{spec.label}: NOOP p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
        f"max {result.max_ms:.2f} ms ({result.samples} samples) {result.error}"
    )
    return result


def _measure_noop(
    server: RunningServer, senders: subprocess.Popen[bytes], seconds: float, result: LatencyResult
) -> None:
    # Wait until the senders keep the server busy: its CPU time grows.
    start_cpu = server.cpu_seconds()
    deadline = time.monotonic() + 30
    while server.cpu_seconds() - start_cpu < 0.2:
        if senders.poll() is not None:
            result.error = f"the senders exited with status {senders.returncode}"
            return
        if time.monotonic() > deadline:
            result.error = "the senders did not load the server within 30 s"
            return
        time.sleep(0.01)
    cpu, wall = server.cpu_seconds(), time.monotonic()
    samples = _probe(server.address, seconds)
    result.server_busy = (server.cpu_seconds() - cpu) / (time.monotonic() - wall)
    if senders.poll() is not None:
        result.error = f"the senders stopped early (status {senders.returncode})"
    if len(samples) < 2:
        result.error = result.error or "too few samples"
        return
    ms = sorted(s * 1000 for s in samples)
    result.samples = len(ms)
    result.p50_ms = statistics.median(ms)
    result.p99_ms = statistics.quantiles(ms, n=100, method="inclusive")[98]
    result.max_ms = ms[-1]


# --- all of it ----------------------------------------------------------------


def run_memory(
    specs: Sequence[ServerSpec],
    *,
    idle: int = 10_000,
    big: int = 100 * MIB,
    noop_seconds: float = 5.0,
    log: Log,
    before: Callable[[], None] = lambda: None,
) -> MemoryResults:
    """Every measurement for every server in ``specs``, each on a fresh server.

    The Python floor is left out, with a log line (see ``measures_memory``).
    ``before()`` is called before each measurement (``bench.load`` waits there
    for a quiet machine).
    """
    results = MemoryResults()
    for spec in [s for s in specs if not s.measures_memory]:
        log(f"{spec.label}: not measured here (a throughput reference; it keeps nothing)")
    specs = [s for s in specs if s.measures_memory]
    for spec in specs:
        before()
        results.idle.append(idle_connections(spec, idle, log))
    for spec in specs:
        before()
        results.big.append(big_message(spec, big, log))
    for spec in specs:
        before()
        results.latency.append(noop_latency(spec, noop_seconds, log))
    return results


def _mib(value: int) -> str:
    return f"{value / MIB:,.1f} MiB"


def markdown(results: MemoryResults, level: str = "#") -> list[str]:
    """The memory and latency tables."""
    lines = [f"{level} Memory and latency", ""]
    lines += [
        "| measurement | server | result | detail |",
        "|---|---|---:|---|",
    ]
    for r in results.idle:
        label = SERVERS[r.server].label
        what = f"peak RSS with {r.requested:,} idle connections"
        if r.error and not r.connected:
            lines.append(f"| {what} | {label} | failed | {r.error} |")
            continue
        per = (r.peak_rss - r.baseline_rss) / max(r.connected, 1) / 1024
        detail = (
            f"{r.connected:,} connected and greeted; {_mib(r.baseline_rss)} before, "
            f"{_mib(r.rss)} at the end; {per:.1f} KiB per connection"
        )
        for remark in (r.note, r.error):
            if remark:
                detail += f"; {remark}"
        lines.append(f"| {what} | {label} | {_mib(r.peak_rss)} | {detail} |")
    for b in results.big:
        label = SERVERS[b.server].label
        what = f"peak RSS, one {b.size / MIB:.0f} MiB message in flight"
        if b.error:
            lines.append(f"| {what} | {label} | failed | {b.error} |")
            continue
        extra = b.peak_rss - b.baseline_rss
        detail = (
            f"{_mib(b.baseline_rss)} before; +{_mib(extra)} = {extra / b.size:.2f}× the "
            f"message; sent and accepted in {b.seconds:.2f} s"
        )
        if SERVERS[b.server].is_fastsmtp:
            detail += "; the sink keeps no body (no on_message): discarded as it arrives"
        lines.append(f"| {what} | {label} | {_mib(b.peak_rss)} | {detail} |")
    for t in results.latency:
        label = SERVERS[t.server].label
        what = f"NOOP latency while {t.senders} clients send {t.size / MIB:.0f} MiB messages"
        if t.error and not t.samples:
            lines.append(f"| {what} | {label} | failed | {t.error} |")
            continue
        detail = (
            f"p50 / p99 / max over {t.samples} NOOPs; server CPU busy "
            f"{t.server_busy:.0%}; senders: {t.sender_client}"
        )
        if t.error:
            detail += f"; {t.error}"
        value = f"{t.p50_ms:.2f} / {t.p99_ms:.1f} / {t.max_ms:.1f} ms"
        lines.append(f"| {what} | {label} | {value} | {detail} |")
    return lines


def target_rows(results: MemoryResults, columns: int) -> list[str]:
    """Rows for the targets table (the first fastsmtp column: the asyncio server)."""
    rows = []
    blanks = " | –" * max(columns - 1, 0)
    for r in results.idle:
        if r.server == "fastsmtp" and r.connected:
            mark = "✅" if r.peak_rss < 200 * MIB else "❌"
            if r.connected < 10_000:
                mark = "(fewer connections than the target)"
            rows.append(
                f"| 10,000 idle connections in < 200 MiB RSS | {r.connected:,} idle "
                f"| {_mib(r.peak_rss)} {mark}{blanks} |"
            )
    for b in results.big:
        if b.server == "fastsmtp" and not b.error:
            extra = b.peak_rss - b.baseline_rss
            mark = "✅" if extra <= 2 * b.size else "❌"
            rows.append(
                f"| a {b.size / MIB:.0f} MiB message in flight in ≤ 2× its size "
                f"| one message, sink | +{_mib(extra)} = {extra / b.size:.3f}× {mark}{blanks} |"
            )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.memory``: print the tables, write ``memory-latest.md``."""
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--servers", default="fastsmtp,aiosmtpd", help="comma-separated")
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections")
    parser.add_argument("--big", type=int, default=100, help="big message size in MiB")
    parser.add_argument("--noop-seconds", type=float, default=5.0, help="NOOP sampling time")
    args = parser.parse_args(argv)
    specs = [SERVERS[name] for name in args.servers.split(",") if name]

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results = run_memory(
        specs, idle=args.idle, big=args.big * MIB, noop_seconds=args.noop_seconds, log=log
    )
    report = "\n".join(markdown(results)) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory-latest.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
