"""What the load benchmark measures: loads, runs and their summaries.

``Cell`` is one load of the matrix (size, sessions, connection reuse,
recipients), ``Run`` one client run against one server, ``Summary`` the
medians over rounds, ``LoadResults`` everything one ``bench.load`` run
measured (``bench/report.py`` turns it into Markdown, JSON and a chart).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.memory import MemoryResults
from bench.servers import ServerSpec

__all__ = [
    "DEFAULT_CELLS",
    "GIB",
    "KIB",
    "MIB",
    "Cell",
    "LoadResults",
    "Run",
    "Summary",
    "parse_size",
    "size_label",
    "summarize",
]

KIB = 1024
MIB = 1024 * 1024
GIB = 1024 * MIB


def size_label(size: int) -> str:
    """``1 KiB``, ``100 KiB``, ``1 MiB``."""
    if size % MIB == 0:
        return f"{size // MIB} MiB"
    if size % KIB == 0:
        return f"{size // KIB} KiB"
    return f"{size} B"


def parse_size(text: str) -> int:
    """``1k``, ``100KiB``, ``1m``, ``2048`` → bytes."""
    value = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = {"k": KIB, "m": MIB}.get(value[-1:], 1)
    return int(value.rstrip("km")) * scale


@dataclass(frozen=True, slots=True)
class Cell:
    """One load of the matrix."""

    size: int
    sessions: int
    reuse: bool
    rcpts: int = 1

    @property
    def label(self) -> str:
        conn = "reuse" if self.reuse else "new conn."
        rcpts = f", {self.rcpts} rcpts" if self.rcpts > 1 else ""
        sessions = "1 session" if self.sessions == 1 else f"{self.sessions} sessions"
        return f"{size_label(self.size)}, {sessions}, {conn}{rcpts}"

    @property
    def key(self) -> str:
        conn = "reuse" if self.reuse else "new"
        return f"{size_label(self.size).replace(' ', '')}-s{self.sessions}-{conn}-r{self.rcpts}"


#: the issue's five loads first, then the single-session and extra rows
DEFAULT_CELLS = (
    Cell(KIB, 1, False),
    Cell(KIB, 20, False, 10),
    Cell(KIB, 20, True),
    Cell(100 * KIB, 20, True),
    Cell(MIB, 20, True),
    Cell(KIB, 20, False),
    Cell(KIB, 1, True),
    Cell(100 * KIB, 1, True),
    Cell(MIB, 1, True),
)


@dataclass(frozen=True, slots=True)
class Run:
    """One client run against one server."""

    messages: int
    seconds: float
    #: server CPU seconds (user + system, its processes)
    cpu: float
    error: str = ""
    #: client CPU seconds
    client_cpu: float = 0.0
    #: CPU used by everything else on the machine, in CPUs (0.5: half a core)
    other: float = 0.0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class Summary:
    """Medians over the successful rounds of one server on one load."""

    rate: float
    low: float
    high: float
    cpu_per_msg: float
    rounds: int
    errors: list[str] = field(default_factory=list)
    client_cpu_per_msg: float = 0.0
    other: float = 0.0


def summarize(runs: Sequence[Run]) -> Summary | None:
    """``None`` when no round succeeded."""
    ok = [r for r in runs if not r.error and r.messages > 0 and r.seconds > 0]
    if not ok:
        return None
    rates = [r.rate for r in ok]
    cpu = statistics.median(r.cpu / r.messages for r in ok)
    errors = [r.error for r in runs if r.error]
    client = statistics.median(r.client_cpu / r.messages for r in ok)
    other = statistics.median(r.other for r in ok)
    return Summary(
        statistics.median(rates), min(rates), max(rates), cpu, len(ok), errors, client, other
    )


@dataclass
class LoadResults:
    """Everything one ``bench.load`` run measured, for Markdown, JSON and the chart."""

    client: str
    rounds: int
    duration: float
    cells: list[Cell]
    servers: list[ServerSpec]
    unavailable: dict[str, str] = field(default_factory=dict)
    runs: dict[str, dict[str, list[Run]]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    decode: dict[str, float] = field(default_factory=dict)
    memory: MemoryResults | None = None
    quiet: dict[str, float] = field(default_factory=dict)

    def summary(self, cell: Cell, server: str) -> Summary | None:
        return summarize(self.runs.get(cell.key, {}).get(server, []))
