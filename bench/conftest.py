"""Fixtures and the throughput summary for the micro benchmarks.

``wire`` is the implementation under test: ``fastsmtp.wire._py`` (id ``py``)
or ``fastsmtp.wire._c`` (id ``c``). Unlike the test suite, a missing
compiled module skips its benchmarks (with the reason) instead of failing:
benchmarks measure what is there; ``tests/wire`` guards the build.

``throughput(fn, nbytes, ops=1)`` runs ``fn`` under pytest-benchmark and
records bytes (and operations) per round in ``extra_info``, with the
throughput computed from the median round. After the run a table of every
throughput is printed and written to ``bench/results/micro-latest.md``
(not when timing is off, as with ``--benchmark-disable``).
"""

from __future__ import annotations

import importlib
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

RESULTS = Path(__file__).resolve().parent / "results"
GIB = 1 << 30


def load_wire(name: str) -> ModuleType:
    """Import ``fastsmtp.wire._py`` or ``._c``; skip with the reason when not importable."""
    if name == "c" and os.environ.get("FASTSMTP_NO_EXTENSIONS"):
        pytest.skip("FASTSMTP_NO_EXTENSIONS is set: benchmarking pure Python only")
    try:
        return importlib.import_module(f"fastsmtp.wire._{name}")
    except ImportError as exc:
        pytest.skip(
            f"fastsmtp.wire._{name} is not importable ({exc}); "
            "build it with `make build` (python setup.py build_ext --inplace)"
        )


@pytest.fixture(scope="session", params=["py", "c"])
def wire(request: pytest.FixtureRequest) -> ModuleType:
    """The wire implementation under test."""
    return load_wire(request.param)


@dataclass(frozen=True, slots=True)
class Throughput:
    """One benchmark's result, for the summary table."""

    name: str
    group: str
    nbytes: int
    ops: int
    median: float
    best: float

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.median


_results: list[Throughput] = []

Measure = Callable[..., Any]


@pytest.fixture
def throughput(benchmark: Any, request: pytest.FixtureRequest) -> Measure:
    """``throughput(fn, nbytes, ops=1)``: benchmark ``fn()`` and record its rate."""

    def measure(fn: Callable[[], Any], nbytes: int, ops: int = 1) -> Any:
        benchmark.extra_info["bytes_per_round"] = nbytes
        benchmark.extra_info["ops_per_round"] = ops
        result = benchmark(fn)
        stats = getattr(benchmark, "stats", None)
        if stats is not None:  # None when timing is disabled
            median = stats.stats.median
            benchmark.extra_info["gib_per_s"] = round(nbytes / median / GIB, 4)
            benchmark.extra_info["ops_per_s"] = round(ops / median, 1)
            group = benchmark.group or ""
            best = stats.stats.min
            benchmark.extra_info["best_gib_per_s"] = round(nbytes / best / GIB, 4)
            _results.append(Throughput(request.node.name, group, nbytes, ops, median, best))
        return result

    return measure


def _rate(nbytes: int, seconds: float) -> str:
    gib = nbytes / seconds / GIB
    return f"{gib:.3f} GiB/s" if gib >= 0.01 else f"{gib * 1024:.2f} MiB/s"


def _table() -> list[str]:
    rows = [
        "| group | benchmark | bytes/round | median | throughput (median) | best round "
        "| ops/s (median) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    order = {group: i for i, group in reversed(list(enumerate(r.group for r in _results)))}
    for r in sorted(_results, key=lambda r: (order[r.group], r.median / r.nbytes)):
        rows.append(
            f"| {r.group} | `{r.name}` | {r.nbytes:,} | {r.median * 1e6:,.1f} µs "
            f"| {_rate(r.nbytes, r.median)} | {_rate(r.nbytes, r.best)} | {r.ops_per_s:,.0f} |"
        )
    return rows


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print (and save) bytes/s for every benchmark that was timed."""
    if not _results:
        return
    rows = _table()
    terminalreporter.write_sep("-", "throughput (median round, and best round)")
    for row in rows:
        terminalreporter.write_line(row)
    RESULTS.mkdir(exist_ok=True)
    header = [
        "# Micro benchmarks (latest `make bench`)",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average before the run "
        f"{_LOAD_BEFORE[0]:.2f}.",
        "",
    ]
    (RESULTS / "micro-latest.md").write_text("\n".join(header + rows) + "\n")
    terminalreporter.write_line(f"written to {RESULTS / 'micro-latest.md'}")


_LOAD_BEFORE = os.getloadavg()
