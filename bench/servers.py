"""The servers under test: each runs in its own process on 127.0.0.1.

``start_server(spec)`` starts one on a free port in a new process group and
returns once it has answered a connection with its ``220`` greeting (no
fixed sleeps); a server that exits first (a CLI that rejects a flag, a
missing program) raises ``ServerUnavailable`` with the reason, so a table can
say "n/a" instead of failing the whole run. ``RunningServer.stop()`` always
ends the whole process group, with SIGKILL after a deadline.

CPU time and memory are read from ``/proc``: the server process and every
live descendant (``--workers`` children), plus the CPU of children already
reaped (``cutime``/``cstime``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FLOOR_LOOP",
    "SERVERS",
    "RunningServer",
    "ServerSpec",
    "ServerUnavailable",
    "find_tool",
    "free_port",
    "running_server",
    "start_server",
    "subprocess_env",
]

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class ServerUnavailable(RuntimeError):
    """A server could not be started; the message says why (shown as "n/a")."""


def find_tool(name: str) -> str | None:
    """The path of a program, looking in the sbin directories too (Postfix tools)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


def subprocess_env() -> dict[str, str]:
    """The environment for child processes: this checkout's ``src`` first on the path."""
    env = dict(os.environ)
    paths = [str(REPO / "src"), str(REPO)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """How to start one server under test."""

    #: key used on the command line (``--servers``) and in the JSON results
    name: str
    #: column heading in the tables
    label: str
    #: ``fastsmtp``, ``aiosmtpd``, ``smtp-sink`` or ``floor`` (``bench/floor.py``)
    kind: str
    #: extra command-line flags (fastsmtp variants; the floor's ``--loop``)
    extra: tuple[str, ...] = ()

    @property
    def is_fastsmtp(self) -> bool:
        """True for the fastsmtp variants (the rows that get ratios)."""
        return self.kind == "fastsmtp"

    @property
    def measures_memory(self) -> bool:
        """False for the Python floor: it keeps nothing, so its memory and latency
        would be the event loop's alone, and the memory targets are fastsmtp's."""
        return self.kind != "floor"

    def argv(self, port: int, max_message_size: int | None = None) -> list[str]:
        """The command line that serves on ``127.0.0.1:port`` and discards mail."""
        listen = f"{HOST}:{port}"
        if self.kind == "fastsmtp":
            argv = [sys.executable, "-m", "fastsmtp", "serve", "--sink", "--log-level", "WARNING"]
            argv += ["--listen", listen, "--hostname", "bench.fastsmtp.test", *self.extra]
            # Every benchmark client is 127.0.0.1 and the idle test holds 10,000
            # connections: lift the abuse limits, which the other servers lack.
            # The NOOP latency probe sends NOOPs for seconds: no junk-command limit.
            argv += ["--max-connections", "0", "--max-connections-per-ip", "0"]
            argv += ["--max-junk-commands", "0"]
            if max_message_size:
                argv += ["--max-message-size", str(max_message_size)]
            return argv
        if self.kind == "aiosmtpd":
            argv = [sys.executable, "-m", "aiosmtpd", "-n", "-l", listen]
            argv += ["-c", "aiosmtpd.handlers.Sink"]
            if max_message_size:
                argv += ["-s", str(max_message_size)]
            return argv
        if self.kind == "smtp-sink":
            tool = find_tool("smtp-sink")
            if tool is None:
                raise ServerUnavailable("smtp-sink is not installed (Debian package postfix)")
            # As root smtp-sink must drop privileges (-u); 1024 is the listen backlog.
            user = ["-u", "nobody"] if os.geteuid() == 0 else []
            return [tool, *user, listen, "1024"]
        if self.kind == "floor":
            # It takes any size: it keeps no body.
            return [sys.executable, "-m", "bench.floor", "--listen", listen, *self.extra]
        raise ValueError(f"unknown server kind {self.kind!r}")


#: the Python floor runs on uvloop, as the fastsmtp it is compared with, when installed
FLOOR_LOOP = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"

#: every server the suite knows, in table order
SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        # The loop is always named: the default (auto) depends on what is installed.
        ServerSpec("fastsmtp", "fastsmtp asyncio", "fastsmtp", ("--loop", "asyncio")),
        ServerSpec("fastsmtp-uvloop", "fastsmtp uvloop", "fastsmtp", ("--loop", "uvloop")),
        ServerSpec(
            "fastsmtp-w2",
            "fastsmtp uvloop 2 workers",
            "fastsmtp",
            ("--workers", "2", "--loop", "uvloop"),
        ),
        # The CLI's default log level, INFO: a log line per message (the others
        # run at WARNING, which logs nothing per message, as aiosmtpd and
        # smtp-sink do). Its --log-level comes after, and argparse takes the last.
        ServerSpec(
            "fastsmtp-info",
            "fastsmtp uvloop INFO log",
            "fastsmtp",
            ("--loop", "uvloop", "--log-level", "INFO"),
        ),
        ServerSpec("aiosmtpd", "aiosmtpd", "aiosmtpd"),
        ServerSpec("smtp-sink", "smtp-sink", "smtp-sink"),
        ServerSpec("floor", f"Python floor ({FLOOR_LOOP})", "floor", ("--loop", FLOOR_LOOP)),
    )
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 is index 0)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()


def _descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


class RunningServer:
    """A started server process (and its children)."""

    def __init__(self, spec: ServerSpec, proc: subprocess.Popen[bytes], port: int, log: Path):
        self.spec = spec
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` to connect to."""
        return HOST, self.port

    def cpu_seconds(self) -> float:
        """User + system CPU of the server and its children so far, in seconds."""
        ticks = 0
        for pid in _descendants(self.proc.pid):
            fields = _stat_fields(pid)
            if fields is not None:
                # utime, stime, cutime, cstime: fields 14-17 of proc(5)
                ticks += sum(int(v) for v in fields[11:15])
        return ticks / _CLK_TCK

    def memory(self) -> tuple[int, int]:
        """``(rss, peak_rss)`` in bytes, summed over the process tree (VmRSS, VmHWM)."""
        rss = peak = 0
        for pid in _descendants(self.proc.pid):
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    peak += int(line.split()[1]) * 1024
        return rss, peak

    def alive(self) -> bool:
        """True while the server process runs."""
        return self.proc.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        """The last lines the server wrote to stderr."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def failure(self) -> str:
        """The last line of the server's log, with where a traceback ended."""
        tail = self.log_tail(40).splitlines()
        if not tail:
            return ""
        where = [line.strip() for line in tail if line.strip().startswith('File "')]
        if not where:
            return tail[-1]
        # 'File "/x/src/fastsmtp/server.py", line 209, in connection_made'
        path, _, rest = where[-1][6:].partition('", ')
        short = "/".join(Path(path).parts[-3:])
        return f"{tail[-1]} at {short}, {rest}"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` seconds."""
        pgid = self.proc.pid  # start_new_session: the server leads its own group
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                self.proc.wait(timeout)
        # Children (workers) that outlived their parent.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.log.unlink()


def _greeting(port: int) -> bool | None:
    """True: 127.0.0.1:port greets with 220. None: nothing listens yet. False: no 220."""
    try:
        sock = socket.create_connection((HOST, port), timeout=2.0)
    except OSError:
        return None
    with sock:
        greeting = b""
        try:
            while b"\n" not in greeting:
                chunk = sock.recv(512)
                if not chunk:
                    break
                greeting += chunk
            with contextlib.suppress(OSError):
                sock.sendall(b"QUIT\r\n")
                sock.recv(512)
        except OSError:
            return False
        return greeting.startswith(b"220")


def start_server(
    spec: ServerSpec, *, max_message_size: int | None = None, timeout: float = 30.0
) -> RunningServer:
    """Start ``spec`` on a free port; return once it greets, or raise ServerUnavailable."""
    port = free_port()
    argv = spec.argv(port, max_message_size)
    fd, log_name = tempfile.mkstemp(prefix=f"bench-{spec.name}-", suffix=".log")
    log = Path(log_name)
    try:
        # stderr to a file, never a pipe: a pipe nobody reads can block the server.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=fd,
            env=subprocess_env(),
            start_new_session=True,
        )
    except OSError as exc:
        log.unlink()
        raise ServerUnavailable(f"cannot run {argv[0]}: {exc}") from None
    finally:
        os.close(fd)
    server = RunningServer(spec, proc, port, log)
    deadline = time.monotonic() + timeout
    refused = 0
    try:
        while True:
            if proc.poll() is not None:
                reason = server.failure() or f"exited with status {proc.returncode}"
                raise ServerUnavailable(reason)
            greeted = _greeting(port)
            if greeted:
                return server
            refused = refused + 1 if greeted is False else 0
            if refused >= 5:
                tail = server.failure()
                why = "it closes connections without a 220 greeting"
                raise ServerUnavailable(f"{why}; its log ends: {tail}" if tail else why)
            if time.monotonic() > deadline:
                raise ServerUnavailable(f"no 220 greeting within {timeout:.0f} s")
            time.sleep(0.02)  # between connection attempts, not a guess at readiness
    except BaseException:
        server.stop()
        raise


@contextlib.contextmanager
def running_server(
    spec: ServerSpec, *, max_message_size: int | None = None
) -> Iterator[RunningServer]:
    """``with running_server(spec) as server:`` — started, then always stopped."""
    server = start_server(spec, max_message_size=max_message_size)
    try:
        yield server
    finally:
        server.stop()
