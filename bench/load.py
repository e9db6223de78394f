"""The loopback load benchmark: fastsmtp against aiosmtpd and Postfix's smtp-sink.

``python -m bench.load`` (``make bench-load``) starts every server in its own
process on 127.0.0.1 (``bench/servers.py``), then for each load of the matrix
drives them in interleaved rounds with the same client: Postfix's
smtp-source when installed, otherwise the bundled ``bench/client.py``
(``--client python`` forces it). Each server is first calibrated with short
runs (which also warm it up), so that one run lasts about ``--duration``
seconds whatever its speed; then each round runs every server once, in an
order rotated from round to round, so that a slow minute of a shared machine
hits every server alike. Reported: the median over rounds of msg/s and MiB/s
(of message payload), the ratios to aiosmtpd and smtp-sink, and the server's
CPU time (user + system, children included) per message.

Afterwards (unless ``--no-memory``) ``bench/memory.py`` measures memory and
latency. The results go to ``bench/results/latest.md`` (Markdown),
``latest.json`` (raw runs) and ``latest.png`` (matplotlib, when installed).

A server that cannot start (``--workers 2`` before fastsmtp has that flag)
is shown as "n/a" with the reason; nothing is left running: every process is
stopped in a ``finally``, every client run has a deadline.

Beside them runs the Python floor (``bench/floor.py``), a do-nothing
responder: what Python and the event loop cost alone. The report gives
fastsmtp ÷ floor, the part of the gap to smtp-sink that is fastsmtp's own work.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from bench import memory
from bench.bodies import chunks, readline_decode, stuffed
from bench.model import DEFAULT_CELLS, GIB, KIB, MIB, Cell, LoadResults, Run, parse_size
from bench.report import README, chart, markdown, to_json, update_readme
from bench.servers import (
    REPO,
    SERVERS,
    RunningServer,
    ServerSpec,
    ServerUnavailable,
    find_tool,
    start_server,
    subprocess_env,
)

RESULTS = Path(__file__).resolve().parent / "results"


# --- clients ------------------------------------------------------------------


class LoadClient:
    """A load client program run once per measurement, with a deadline."""

    name = ""

    def argv(self, cell: Cell, messages: int, port: int) -> list[str]:
        raise NotImplementedError

    def result(self, proc: subprocess.CompletedProcess[str], messages: int, wall: float) -> Run:
        raise NotImplementedError

    def run(self, server: RunningServer, cell: Cell, messages: int, timeout: float) -> Run:
        """Send ``messages`` messages; time them and the server's CPU."""
        argv = self.argv(cell, messages, server.port)
        cpu = server.cpu_seconds()
        machine = _machine_cpu()
        children = _children_cpu()
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=subprocess_env(),
                check=False,
            )
        except subprocess.TimeoutExpired:  # run() has killed the client
            cpu = server.cpu_seconds() - cpu
            return Run(0, timeout, cpu, f"client timed out after {timeout:.0f} s")
        wall = time.perf_counter() - start
        cpu = server.cpu_seconds() - cpu
        client = _children_cpu() - children
        other = max(0.0, _machine_cpu() - machine - cpu - client) / wall
        run = self.result(proc, messages, wall)
        return Run(run.messages, run.seconds, cpu, run.error, client, other)


def _machine_cpu() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return 0.0
    # user nice system idle iowait irq softirq steal: idle and iowait are not busy
    busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))
    return busy / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    """CPU seconds of the child processes waited for so far (the clients)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class SmtpSource(LoadClient):
    """Postfix's smtp-source: C, one process, no pipelining."""

    name = "smtp-source"

    def __init__(self, path: str) -> None:
        self.path = path

    def argv(self, cell: Cell, messages: int, port: int) -> list[str]:
        argv = [self.path, "-s", str(cell.sessions), "-m", str(messages), "-l", str(cell.size)]
        argv += ["-M", "client.example", "-f", "load@client.example", "-t", "sink@server.example"]
        if cell.reuse:
            argv.append("-d")
        if cell.rcpts > 1:
            argv += ["-r", str(cell.rcpts)]
        return [*argv, f"127.0.0.1:{port}"]

    def result(self, proc: subprocess.CompletedProcess[str], messages: int, wall: float) -> Run:
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            return Run(0, wall, 0.0, f"smtp-source: {why}")
        return Run(messages, wall, 0.0)


class PythonClient(LoadClient):
    """``bench/client.py``: asyncio, one process; times itself (without start-up)."""

    name = "python (bench/client.py)"

    def argv(self, cell: Cell, messages: int, port: int) -> list[str]:
        argv = [sys.executable, "-m", "bench.client", f"127.0.0.1:{port}"]
        argv += ["-s", str(cell.sessions), "-m", str(messages), "-l", str(cell.size)]
        argv += ["-r", str(cell.rcpts)]
        return [*argv, "-d"] if cell.reuse else argv

    def result(self, proc: subprocess.CompletedProcess[str], messages: int, wall: float) -> Run:
        try:
            data = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            return Run(0, wall, 0.0, f"client: {why}")
        error = ""
        if data["errors"]:
            error = f"{data['errors']} failed, first: {data['first_error']}"
        return Run(int(data["messages"]), float(data["elapsed"]), 0.0, error)


def pick_client(choice: str) -> LoadClient:
    """smtp-source when installed (or asked for), else the bundled client."""
    if choice in ("auto", "smtp-source"):
        path = find_tool("smtp-source")
        if path is not None:
            return SmtpSource(path)
        if choice == "smtp-source":
            raise SystemExit("smtp-source is not installed (Debian: apt-get install postfix)")
    return PythonClient()


# --- the matrix ---------------------------------------------------------------


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def calibrate(
    client: LoadClient, server: RunningServer, cell: Cell, duration: float, timeout: float
) -> tuple[int, str]:
    """A message count that takes about ``duration`` seconds; also warms the server up."""
    count = max(cell.sessions * 2, min(200, (20 * MIB) // cell.size))
    for _ in range(6):  # at most 4**5 times the first guess
        run = client.run(server, cell, count, timeout)
        if run.error:
            return count, run.error
        if run.seconds >= duration / 4 or count >= 1_000_000:
            break
        count *= 4
    wanted = int(run.rate * duration)
    return max(cell.sessions * 2, min(wanted, 1_000_000)), ""


class QuietGuard:
    """Measure when the rest of the machine is idle: a shared machine's other work
    halves what two cores can give the server and the client.

    ``wait()`` samples the machine's CPU use until other processes use less than
    ``threshold`` cores; ``measure(fn)`` waits, runs, and runs again (at most
    ``retries`` times) when others used more than ``threshold`` meanwhile. All
    waiting together stays within ``budget`` seconds; 0 as threshold turns it off.
    """

    def __init__(self, threshold: float, budget: float, retries: int = 2) -> None:
        self.threshold = threshold
        self.budget = budget
        self.retries = retries
        self.waited = 0.0
        self.repeated = 0

    def wait(self, interval: float = 0.3) -> None:
        """Return once the machine is quiet, or the budget is spent."""
        while self.threshold > 0 and self.waited < self.budget:
            start, busy = time.monotonic(), _machine_cpu()
            time.sleep(interval)  # a sampling period, not a wait for readiness
            elapsed = time.monotonic() - start
            self.waited += elapsed
            if (_machine_cpu() - busy) / elapsed < self.threshold:
                return

    def measure(self, fn: Callable[[], Run], what: str) -> Run:
        self.wait()
        run = fn()
        for _ in range(self.retries):
            if self.threshold <= 0 or run.error or run.other < self.threshold:
                break
            if self.waited >= self.budget:
                break
            self.repeated += 1
            _log(f"{what}: other processes used {run.other:.2f} cores; measuring again")
            self.wait()
            run = fn()
        return run


def run_matrix(
    cells: Sequence[Cell],
    specs: Sequence[ServerSpec],
    client: LoadClient,
    *,
    rounds: int,
    duration: float,
    messages: int | None,
    guard: QuietGuard,
) -> LoadResults:
    """Start the servers, calibrate and run every load in interleaved rounds, stop them."""
    results = LoadResults(client.name, rounds, duration, list(cells), list(specs))
    timeout = max(60.0, duration * 20 + 30)
    servers: dict[str, RunningServer] = {}
    try:
        for spec in specs:
            try:
                servers[spec.name] = start_server(spec)
                _log(f"started {spec.label} on port {servers[spec.name].port}")
            except ServerUnavailable as exc:
                results.unavailable[spec.name] = str(exc)
                _log(f"{spec.label}: n/a ({exc})")
        for cell in cells:
            runs: dict[str, list[Run]] = {name: [] for name in servers}
            results.runs[cell.key] = runs
            counts: dict[str, int] = {}
            for name, server in servers.items():
                if messages is not None:
                    counts[name] = max(messages, cell.sessions)
                    client.run(server, cell, max(cell.sessions, messages // 10), timeout)
                    continue
                guard.wait()
                counts[name], error = calibrate(client, server, cell, duration, timeout)
                if error:
                    runs[name].append(Run(0, 0.0, 0.0, error))
                    _log(f"{cell.label} | {server.spec.label}: calibration failed: {error}")
            results.counts[cell.key] = counts
            names = [n for n in servers if not runs[n]]
            for index in range(rounds):
                shift = index % len(names) if names else 0
                for name in names[shift:] + names[:shift]:
                    server = servers[name]
                    if not server.alive():
                        runs[name].append(Run(0, 0.0, 0.0, f"server died: {server.log_tail(1)}"))
                        continue
                    what = f"{cell.label} | round {index + 1} | {server.spec.label}"
                    measure = partial(client.run, server, cell, counts[name], timeout)
                    run = guard.measure(measure, what)
                    runs[name].append(run)
                    status = run.error or (
                        f"{run.messages} msgs in {run.seconds:.2f} s = {run.rate:,.0f} msg/s, "
                        f"CPU {run.cpu / max(run.messages, 1) * 1e6:,.0f} µs/msg"
                    )
                    _log(f"{what}: {status}")
    finally:
        for server in servers.values():
            server.stop()
    return results


# --- the DATA decoding target, measured in the same run --------------------------


def decode_probe(size: int = 10 * MIB, repeat: int = 15) -> dict[str, float]:
    """GiB/s of DataDecoder (both twins) on 10 MiB, with the references beside it."""
    src = str(REPO / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    parts, data = chunks(size), stuffed(size)
    out: dict[str, float] = {}

    def rate(fn: Callable[[], object], times: int = repeat) -> float:
        best = statistics.median(timeit.repeat(fn, number=1, repeat=times))
        return len(data) / best / GIB

    for name in ("c", "py"):
        try:
            module = importlib.import_module(f"fastsmtp.wire._{name}")
        except ImportError:
            continue

        def decode(module: Any = module) -> list[bytes]:
            # As bench/test_micro.py and the server: the decoded chunks are kept.
            decoder = module.DataDecoder(max_size=None, max_line_length=1000, strict=True)
            return [decoder.feed(part)[0] for part in parts]

        out[f"decode_{name}"] = rate(decode, repeat if name == "c" else 5)
    out["readline_reference"] = rate(lambda: readline_decode(parts), 3)
    out["copy"] = rate(lambda: bytearray(data))
    out["count_lf"] = rate(lambda: data.count(b"\n"))
    return out


# --- environment ----------------------------------------------------------------


def _command_output(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=30, env=subprocess_env(), check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (proc.stdout.strip() or proc.stderr.strip() or "?").splitlines()[-1]


def environment(client: LoadClient) -> dict[str, str]:
    """The machine and the versions, for the report."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    wire = "import fastsmtp.wire as w; print(w.IMPLEMENTATION)"
    postfix = _command_output(["dpkg-query", "-W", "-f", "${Version}", "postfix"])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "fastsmtp": _command_output([sys.executable, "-m", "fastsmtp", "--version"]),
        "wire": _command_output([sys.executable, "-c", wire]),
        "aiosmtpd": version("aiosmtpd"),
        "uvloop": version("uvloop"),
        "postfix": postfix if postfix != "?" else "not installed",
        "client": client.name,
        "commit": _command_output(["git", "-C", str(REPO), "describe", "--always", "--dirty"]),
        "load_before": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
    }


# --- command line -------------------------------------------------------------


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def select_cells(args: argparse.Namespace) -> list[Cell]:
    """The default rows (or the full cross product), filtered by the flags."""
    if args.matrix == "full":
        cells: Iterable[Cell] = (
            Cell(size, sessions, reuse, rcpts)
            for size in (KIB, 100 * KIB, MIB)
            for sessions in (1, 20)
            for reuse in (False, True)
            for rcpts in (1, 10)
        )
    else:
        cells = DEFAULT_CELLS
    sizes = _split(args.sizes)
    sessions = _split(args.sessions)
    connections = _split(args.connections)
    rcpts = _split(args.rcpts)
    wanted_sizes = {parse_size(s) for s in sizes} if sizes else None
    selected = []
    for cell in cells:
        if wanted_sizes is not None and cell.size not in wanted_sizes:
            continue
        if sessions is not None and str(cell.sessions) not in sessions:
            continue
        if connections is not None and ("reuse" if cell.reuse else "new") not in connections:
            continue
        if rcpts is not None and str(cell.rcpts) not in rcpts:
            continue
        selected.append(cell)
    if not selected and wanted_sizes is not None and sessions is not None:
        # A combination outside the default rows: build it.
        for size in sorted(wanted_sizes):
            for count in sessions:
                for conn in connections or ["reuse"]:
                    for rc in rcpts or ["1"]:
                        selected.append(Cell(size, int(count), conn == "reuse", int(rc)))
    return selected


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description="Loopback load benchmark: fastsmtp against aiosmtpd and smtp-sink.",
    )
    parser.add_argument(
        "--servers",
        help=f"comma-separated, from {','.join(SERVERS)} (default: all)",
    )
    parser.add_argument("--client", choices=("auto", "smtp-source", "python"), default="auto")
    parser.add_argument("--matrix", choices=("default", "full"), default="default")
    parser.add_argument("--sizes", help="e.g. 1k,100k,1m")
    parser.add_argument("--sessions", help="e.g. 1,20")
    parser.add_argument("--connections", help="new,reuse")
    parser.add_argument("--rcpts", help="e.g. 1,10")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--duration", type=float, default=1.5, help="seconds per run, per server (default 1.5)"
    )
    parser.add_argument(
        "--messages", type=int, help="fixed message count per run instead of --duration"
    )
    parser.add_argument("--quick", action="store_true", help="a short run: 2 rounds of 0.4 s")
    parser.add_argument("--no-memory", action="store_true", help="skip bench/memory.py")
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.25,
        help="wait, and measure again, while other processes use more CPUs than this "
        "(default 0.25; 0: off)",
    )
    parser.add_argument(
        "--quiet-budget",
        type=float,
        default=600.0,
        help="seconds that waiting for a quiet machine may take in all (default 600)",
    )
    parser.add_argument(
        "--idle", type=int, default=10_000, help="idle connections for the RSS test"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="results directory")
    parser.add_argument(
        "--readme", action="store_true", help="also put the report into bench/README.md"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.rounds = min(args.rounds, 2)
        args.duration = min(args.duration, 0.4)
        args.idle = min(args.idle, 2000)
        args.quiet_budget = min(args.quiet_budget, 60.0)
    names = _split(args.servers) or list(SERVERS)
    unknown = [n for n in names if n not in SERVERS]
    if unknown:
        raise SystemExit(f"unknown server(s) {unknown}; choose from {', '.join(SERVERS)}")
    specs = [SERVERS[n] for n in names]
    cells = select_cells(args)
    if not cells:
        raise SystemExit("no load selected: check --sizes/--sessions/--connections/--rcpts")
    client = pick_client(args.client)
    command = "python -m bench.load " + " ".join(argv if argv is not None else sys.argv[1:])
    env = environment(client)
    env["command"] = command.strip()
    _log(f"client: {client.name}; {len(cells)} loads × {len(specs)} servers")
    guard = QuietGuard(args.quiet_threshold, args.quiet_budget)
    results = run_matrix(
        cells,
        specs,
        client,
        rounds=args.rounds,
        duration=args.duration,
        messages=args.messages,
        guard=guard,
    )
    results.environment = env
    _log("DATA decoding probe (10 MiB)")
    results.decode = decode_probe()
    if not args.no_memory:
        mem_specs = [s for s in specs if s.name in ("fastsmtp", "aiosmtpd")]
        results.memory = memory.run_memory(
            mem_specs,
            idle=args.idle,
            big=20 * MIB if args.quick else 100 * MIB,
            noop_seconds=1.5 if args.quick else 5.0,
            log=_log,
            before=guard.wait,
        )
    results.quiet = {
        "threshold": guard.threshold,
        "waited": round(guard.waited, 1),
        "repeated": guard.repeated,
    }
    env["load_after"] = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    report = markdown(results, env["command"])
    (out / "latest.md").write_text(report)
    (out / "latest.json").write_text(json.dumps(to_json(results), indent=1) + "\n")
    if not chart(results, out / "latest.png"):
        _log("warning: matplotlib is not installed; no chart (pip install matplotlib)")
    print(report)
    _log(f"written to {out / 'latest.md'}")
    if args.readme:
        update_readme(README, report, out / "latest.png", out / "micro-latest.md")
        _log(f"results copied into {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
