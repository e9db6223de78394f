"""Run the fuzz targets under atheris for a bounded time and report executions.

Usage (from the repository top, with atheris installed)::

    python tests/fuzz/run.py [--seconds 60] [--runs N] [TARGET ...]

Targets: ``wire`` (the wire twins) and ``server`` (``ServerConnection``
over each twin), both differential: the pure twin is instrumented for
coverage, the compiled one is compared with it. By default they share
``--seconds``. Each runs in its own process (libFuzzer owns the process)
on a scratch copy of the seed corpus, so the checked-in ``corpus/`` never
changes. Known crashes in ``regressions/`` are
replayed first. A crash fails the run; the input is kept and its path
printed: fix the bug, then add the file to ``regressions/``, where
``test_fuzz_harness.py`` replays it in every test run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
REGRESSIONS = HERE / "regressions"
TARGETS = ("wire", "server")
_EXECUTED = re.compile(rb"stat::number_of_executed_units:\s*(\d+)")


def child(target: str, libfuzzer_args: list[str]) -> None:
    """Inside the per-target process: instrument fastsmtp, then hand over to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["fastsmtp"]):
        import fuzz_harness

    if len(fuzz_harness.TWINS) != 2 and not os.environ.get("FASTSMTP_NO_EXTENSIONS"):
        sys.exit(f"fuzz {target}: fastsmtp.wire._c cannot be imported; build it first")
    atheris.Setup([sys.argv[0], *libfuzzer_args], fuzz_harness.TARGETS[target])
    atheris.Fuzz()


def run(target: str, seconds: int, runs: int | None, artifacts: Path) -> int:
    """Fuzz one target in a child process; return its execution count or exit on a crash."""
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as scratch:
        args = [
            f"-max_total_time={seconds}",
            "-max_len=8192",
            "-timeout=10",  # seconds for one input: anything slower is a hang
            "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/{target}-",
            scratch,
            str(CORPUS),
        ]
        if REGRESSIONS.is_dir():
            args.append(str(REGRESSIONS))
        if runs is not None:
            args.insert(0, f"-runs={runs}")
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", target, "--", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=seconds + 120,  # corpus loading and the final stats
            check=False,
        )
    found = _EXECUTED.findall(proc.stdout)
    if proc.returncode or not found:
        sys.stdout.buffer.write(proc.stdout[-6000:])
        sys.exit(
            f"fuzz {target}: FAILED (exit {proc.returncode}); the crashing input is in "
            f"{artifacts}: fix the bug and add the file to {REGRESSIONS}"
        )
    executions = int(found[-1])
    elapsed = time.monotonic() - started
    print(f"fuzz {target}: {executions} executions in {elapsed:.0f} s, no failure", flush=True)
    return executions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=", ".join(TARGETS))
    parser.add_argument("--seconds", type=int, default=60, help="total time for all targets")
    parser.add_argument("--runs", type=int, help="stop each target after this many inputs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    # libFuzzer's own flags (-runs=...) come after "--", past argparse.
    split_at = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split_at])
    if args.child:
        child(args.child, argv[split_at + 1 :])
        return
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown target {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    targets = args.targets or list(TARGETS)
    each = max(1, args.seconds // len(targets))
    artifacts = Path(tempfile.mkdtemp(prefix="fuzz-artifacts-"))
    total = sum(run(target, each, args.runs, artifacts) for target in targets)
    shutil.rmtree(artifacts)  # only libFuzzer's notes on slow inputs, if anything
    print(f"fuzz: {total} executions in all ({', '.join(targets)})")


if __name__ == "__main__":
    main()
