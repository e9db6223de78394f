"""Reports of a load benchmark run: Markdown, JSON, the PNG chart, the README.

``markdown()`` gives the machine, the msg/s table, the details (spread, CPU
per message of server and client, other load on the machine), every target
of issue 3 with its measured value, and the memory tables.
``update_readme()`` copies that report, with the chart and the latest micro
results, between the markers of ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import memory
from bench.model import KIB, MIB, Cell, LoadResults, Run, Summary
from bench.servers import SERVERS, ServerSpec

__all__ = [
    "README",
    "chart",
    "floor_pair",
    "from_json",
    "main",
    "markdown",
    "targets_markdown",
    "to_json",
    "update_readme",
]

README = Path(__file__).resolve().parent / "README.md"
RESULTS = Path(__file__).resolve().parent / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _ratio(a: Summary | None, b: Summary | None) -> str:
    if a is None or b is None or b.rate == 0:
        return "–"
    return f"{a.rate / b.rate:.2f}×"


def _cell_text(summary: Summary | None, reason: str | None) -> str:
    if reason is not None:
        return "n/a"
    if summary is None:
        return "failed"
    return _rate(summary.rate)


def floor_pair(specs: Sequence[ServerSpec]) -> tuple[ServerSpec, ServerSpec] | None:
    """``(fastsmtp, floor)``: the Python floor and the one-process fastsmtp on its loop."""
    for floor in specs:
        if floor.kind == "floor":
            for spec in specs:
                if spec.is_fastsmtp and spec.extra == floor.extra:  # ("--loop", the same)
                    return spec, floor
    return None


def markdown(results: LoadResults, command: str) -> str:
    """The report: machine, msg/s table, details, targets, memory."""
    env = results.environment
    specs = results.servers
    lines = [
        "# fastsmtp load benchmark",
        "",
        f"{env.get('date', '')} · {env.get('cpus')} CPUs ({env.get('cpu')}) · "
        f"Python {env.get('python')} · Linux {env.get('kernel')}",
        "",
        f"{env.get('fastsmtp')} (wire: `{env.get('wire')}`), "
        f"aiosmtpd {env.get('aiosmtpd')}, uvloop {env.get('uvloop')}, "
        f"Postfix {env.get('postfix')}. Client: {results.client}. "
        f"Source tree: `{env.get('commit')}`.",
        f"Load average before the run: {env.get('load_before')}; "
        f"after: {env.get('load_after', '?')}.",
        "",
        f"Command: `{command}`",
        "",
        f"Median of {results.rounds} interleaved rounds of about {results.duration:g} s "
        "per server and load; MiB/s counts message payload (the client's `-l`).",
        "",
    ]
    quiet = results.quiet
    if quiet.get("threshold"):
        lines += [
            f"Shared machine: runs waited {quiet['waited']:.0f} s in all for other processes "
            f"to use less than {quiet['threshold']:g} CPUs, and {quiet['repeated']:.0f} runs "
            "were measured again because they did not (see *others* below).",
            "",
        ]
    for name, reason in results.unavailable.items():
        lines.append(f"- **{SERVERS[name].label}: n/a** — {reason}")
    if results.unavailable:
        lines.append("")
    bases = [s for s in specs if s.name in ("fastsmtp", "fastsmtp-uvloop")]
    head = ["load", *(s.label for s in specs)]
    for base in bases:
        head += [f"{base.label} ÷ aiosmtpd", f"{base.label} ÷ smtp-sink"]
    # How far fastsmtp is from what Python and the loop cost alone (bench/floor.py).
    pair = floor_pair(specs)
    if pair is not None:
        head.append(f"{pair[0].label} ÷ {pair[1].label}")
    lines += ["## msg/s", "", "| " + " | ".join(head) + " |"]
    lines.append("|---|" + "---:|" * (len(head) - 1))
    for cell in results.cells:
        row = [cell.label]
        for spec in specs:
            summary = results.summary(cell, spec.name)
            row.append(_cell_text(summary, results.unavailable.get(spec.name)))
        for base in bases:
            mine = results.summary(cell, base.name)
            row.append(_ratio(mine, results.summary(cell, "aiosmtpd")))
            row.append(_ratio(mine, results.summary(cell, "smtp-sink")))
        if pair is not None:
            mine = results.summary(cell, pair[0].name)
            row.append(_ratio(mine, results.summary(cell, pair[1].name)))
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "## Details",
        "",
        "Spread is the slowest and fastest round. CPU is user + system time per "
        "message: the server's (all its processes) and the client's. *Others* is the "
        "CPU that the rest of the machine used meanwhile, in cores (median): other "
        "work on a shared machine shows there.",
        "",
        "| load | server | msg/s | MiB/s | spread msg/s | server CPU/msg | client CPU/msg "
        "| others | ÷ aiosmtpd | ÷ smtp-sink |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in results.cells:
        for spec in specs:
            if spec.name in results.unavailable:
                continue
            s = results.summary(cell, spec.name)
            if s is None:
                errors = [r.error for r in results.runs.get(cell.key, {}).get(spec.name, [])]
                lines.append(f"| {cell.label} | {spec.label} | failed: {errors[:1]} | | | | | |")
                continue
            ratios = ["", ""]
            if spec.is_fastsmtp:
                ratios = [
                    _ratio(s, results.summary(cell, "aiosmtpd")),
                    _ratio(s, results.summary(cell, "smtp-sink")),
                ]
            lines.append(
                f"| {cell.label} | {spec.label} | {_rate(s.rate)} | "
                f"{s.rate * cell.size / MIB:,.1f} | {_rate(s.low)}–{_rate(s.high)} | "
                f"{s.cpu_per_msg * 1e6:,.0f} µs | {s.client_cpu_per_msg * 1e6:,.0f} µs | "
                f"{s.other:.2f} | {ratios[0]} | {ratios[1]} |"
            )
    lines += ["", *targets_markdown(results)]
    if results.memory is not None:
        lines += ["", *memory.markdown(results.memory, level="##")]
    return "\n".join(lines) + "\n"


def _mark(ok: bool) -> str:
    return "✅" if ok else "❌"


def targets_markdown(results: LoadResults) -> list[str]:
    """Every target of issue 3 with the value measured in this run."""
    variants = [s for s in results.servers if s.is_fastsmtp and s.name not in results.unavailable]
    head = ["target", "load", *(s.label for s in variants)]
    lines = [
        "## Targets of issue 3",
        "",
        "| " + " | ".join(head) + " |",
        "|---|---|" + "---:|" * len(variants),
    ]

    def ratio_row(target: str, cell: Cell, other: str, needed: float) -> None:
        ref = results.summary(cell, other)
        values = []
        for spec in variants:
            mine = results.summary(cell, spec.name)
            if mine is None or ref is None or ref.rate == 0:
                values.append("–")
                continue
            value = mine.rate / ref.rate
            values.append(f"{value:.2f}× {_mark(value >= needed)}")
        lines.append(f"| {target} | {cell.label} | " + " | ".join(values) + " |")

    for cell in results.cells:
        if cell.sessions >= 20:
            ratio_row("≥ 5× aiosmtpd msg/s", cell, "aiosmtpd", 5.0)
    for cell in results.cells:
        if cell.sessions == 1:
            ratio_row("≥ 0.8× smtp-sink msg/s", cell, "smtp-sink", 0.8)
    for cell in results.cells:
        if cell.size == KIB and cell.sessions >= 20 and cell.reuse and cell.rcpts == 1:
            ratio_row("≥ 0.5× smtp-sink msg/s", cell, "smtp-sink", 0.5)
    for cell in results.cells:
        if cell.size == MIB:
            ratio_row("≥ 0.8× smtp-sink MiB/s", cell, "smtp-sink", 0.8)
    decode = results.decode
    if "decode_c" in decode:
        ok = decode["decode_c"] >= 2.0
        lines.append(
            f"| ≥ 2 GiB/s DATA decoding, compiled (copy {decode['copy']:.2f}, "
            f"`count(b'\\n')` {decode['count_lf']:.2f}, per-line loop "
            f"{decode['readline_reference']:.2f} GiB/s) | 10 MiB body, 76-char lines, strict | "
            + " | ".join(f"{decode['decode_c']:.2f} GiB/s {_mark(ok)}" for _ in variants)
            + " |"
        )
    if results.memory is not None:
        lines += memory.target_rows(results.memory, len(variants))
    lines += [
        "",
        "Ratios compare medians measured side by side in this run; the memory rows "
        "are for the asyncio server (`fastsmtp serve --sink --loop asyncio`).",
    ]
    return lines


def chart(results: LoadResults, path: Path) -> bool:
    """Grouped bars: msg/s and server CPU per message, per load. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    specs = [s for s in results.servers if s.name not in results.unavailable]
    cells = results.cells
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(14, 9), sharex=True)
    width = 0.8 / max(len(specs), 1)
    for i, spec in enumerate(specs):
        xs, rates, cpus = [], [], []
        for j, cell in enumerate(cells):
            s = results.summary(cell, spec.name)
            if s is not None:
                xs.append(j + (i - (len(specs) - 1) / 2) * width)
                rates.append(s.rate)
                cpus.append(s.cpu_per_msg * 1e6)
        top.bar(xs, rates, width, label=spec.label)
        bottom.bar(xs, cpus, width, label=spec.label)
    top.set_yscale("log")
    top.set_ylabel("messages / s (median, log)")
    top.set_title(f"SMTP sink servers on loopback, client: {results.client}")
    top.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    top.grid(axis="y", which="both", alpha=0.3)
    bottom.set_yscale("log")
    bottom.set_ylabel("server CPU µs / message (log)")
    bottom.grid(axis="y", which="both", alpha=0.3)
    bottom.set_xticks(range(len(cells)))
    bottom.set_xticklabels([c.label.replace(", ", "\n") for c in cells], fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def to_json(results: LoadResults) -> dict[str, Any]:
    """Raw runs and settings, for later analysis."""
    return {
        "environment": results.environment,
        "client": results.client,
        "rounds": results.rounds,
        "duration": results.duration,
        "unavailable": results.unavailable,
        "cells": [{"key": c.key, "label": c.label, **asdict(c)} for c in results.cells],
        "servers": [s.name for s in results.servers],
        "counts": results.counts,
        "runs": {
            cell: {name: [asdict(r) for r in runs] for name, runs in per.items()}
            for cell, per in results.runs.items()
        },
        "decode": results.decode,
        "quiet": results.quiet,
        "memory": asdict(results.memory) if results.memory is not None else None,
    }


def from_json(data: dict[str, Any]) -> LoadResults:
    """The inverse of ``to_json``: re-render a report or chart without measuring again."""
    fields = ("size", "sessions", "reuse", "rcpts")
    cells = [Cell(**{k: c[k] for k in fields}) for c in data["cells"]]
    results = LoadResults(
        data["client"],
        data["rounds"],
        data["duration"],
        cells,
        [SERVERS[name] for name in data["servers"]],
        unavailable=data["unavailable"],
        counts=data["counts"],
        environment=data["environment"],
        decode=data["decode"],
        quiet=data.get("quiet", {}),
    )
    results.runs = {
        cell: {name: [Run(**r) for r in runs] for name, runs in per.items()}
        for cell, per in data["runs"].items()
    }
    mem = data.get("memory")
    if mem is not None:
        results.memory = memory.MemoryResults(
            idle=[memory.IdleResult(**r) for r in mem["idle"]],
            big=[memory.BigResult(**r) for r in mem["big"]],
            latency=[memory.LatencyResult(**r) for r in mem["latency"]],
        )
    return results


def update_readme(readme: Path, report: str, png: Path, micro: Path | None = None) -> None:
    """Replace the README's results section with ``report`` and the micro results.

    Headings go two levels down; the chart is linked after the first heading;
    ``micro`` (``results/micro-latest.md`` from ``make bench``) follows when it exists.
    """
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} section")
    body = report.splitlines()
    if png.exists():
        relative = os.path.relpath(png, readme.parent)
        body[1:1] = ["", f"![msg/s and server CPU per message]({relative})"]
    if micro is not None and micro.exists():
        body += ["", *micro.read_text().splitlines()]
    # Under the README's "## Latest results": "# x" becomes "### x".
    body = [("##" + line if line.startswith("#") else line) for line in body]
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    readme.write_text(head + START + "\n" + "\n".join(body) + "\n" + END + tail)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.report``: re-render latest.md and latest.png from latest.json."""
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    parser.add_argument("--results", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("--readme", action="store_true", help="also update bench/README.md")
    args = parser.parse_args(argv)
    out: Path = args.results
    results = from_json(json.loads((out / "latest.json").read_text()))
    command = results.environment.get("command", "python -m bench.load")
    report = markdown(results, command)
    (out / "latest.md").write_text(report)
    if not chart(results, out / "latest.png"):
        print("warning: matplotlib is not installed; no chart", file=sys.stderr)
    if args.readme:
        update_readme(README, report, out / "latest.png", out / "micro-latest.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
