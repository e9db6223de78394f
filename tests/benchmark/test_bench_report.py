"""The load report puts the Python floor beside fastsmtp: fastsmtp ÷ floor per load."""

from __future__ import annotations

from bench.memory import run_memory
from bench.model import KIB, Cell, LoadResults, Run
from bench.report import floor_pair, from_json, markdown, to_json
from bench.servers import FLOOR_LOOP, SERVERS, ServerSpec

ONE = Cell(KIB, 1, False)
TWENTY = Cell(KIB, 20, True)
NAMES = ("fastsmtp", "fastsmtp-uvloop", "aiosmtpd", "smtp-sink", "floor")


def results_with(rates: dict[str, dict[Cell, float]], unavailable: dict[str, str]) -> LoadResults:
    """Three rounds per server and load, whose median is ``rates[server][cell]`` msg/s."""
    results = LoadResults("test", 3, 1.0, [ONE, TWENTY], [SERVERS[n] for n in NAMES])
    results.unavailable = unavailable
    for cell in (ONE, TWENTY):
        results.runs[cell.key] = {
            name: [Run(int(per[cell] * s), s, 0.001 * s) for s in (0.5, 1.0, 2.0)]
            for name, per in rates.items()
        }
    return results


def msg_table(report: str) -> list[list[str]]:
    """The cells of the msg/s table, header first."""
    lines = report.split("## msg/s\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines if "---" not in line]


def column(table: list[list[str]], heading: str) -> list[str]:
    index = table[0].index(heading)
    return [row[index] for row in table[1:]]


RATES = {
    "fastsmtp": {ONE: 1000, TWENTY: 5000},
    "fastsmtp-uvloop": {ONE: 1500, TWENTY: 6000},
    "aiosmtpd": {ONE: 400, TWENTY: 1000},
    "smtp-sink": {ONE: 2200, TWENTY: 14000},
    "floor": {ONE: 2000, TWENTY: 4800},
}


def test_the_msg_table_gives_fastsmtp_divided_by_the_floor_for_each_load() -> None:
    report = markdown(results_with(RATES, {}), "python -m bench.load")
    table = msg_table(report)
    fast, floor = floor_pair([SERVERS[n] for n in NAMES]) or (None, None)
    assert fast is not None and floor is not None
    heading = f"{fast.label} ÷ {floor.label}"
    assert floor.label == f"Python floor ({FLOOR_LOOP})"
    expected = [RATES[fast.name][cell] / RATES["floor"][cell] for cell in (ONE, TWENTY)]
    assert column(table, heading) == [f"{value:.2f}×" for value in expected]
    assert column(table, floor.label) == ["2,000", "4,800"]
    # The floor is a reference, not a contender: no ratios of its own.
    assert not [h for h in table[0] if h.startswith(f"{floor.label} ÷")]
    assert f"| {ONE.label} | {floor.label} | 2,000 |" in report
    for cell in (ONE, TWENTY):  # the details table: its ratio cells stay empty
        details = [line for line in report.splitlines() if line.startswith(f"| {cell.label} | ")]
        floor_row = [line for line in details if f" | {floor.label} | " in line]
        assert len(floor_row) == 1 and floor_row[0].endswith("|  |  |")
    targets = report.split("## Targets of issue 3", 1)[1].splitlines()[2]
    assert floor.label not in targets
    # Re-rendered from latest.json, the report is the same.
    assert markdown(from_json(to_json(results_with(RATES, {}))), "python -m bench.load") == report


def test_a_floor_that_did_not_start_gives_no_ratio() -> None:
    rates = {name: per for name, per in RATES.items() if name != "floor"}
    report = markdown(results_with(rates, {"floor": "no"}), "python -m bench.load")
    fast, floor = floor_pair([SERVERS[n] for n in NAMES]) or (None, None)
    assert fast is not None and floor is not None
    assert column(msg_table(report), f"{fast.label} ÷ {floor.label}") == ["–", "–"]
    assert f"**{floor.label}: n/a** — no" in report


def test_the_floor_is_compared_with_the_fastsmtp_on_its_own_loop() -> None:
    asyncio_floor = ServerSpec("floor", "Python floor (asyncio)", "floor", ("--loop", "asyncio"))
    specs = [SERVERS[n] for n in ("fastsmtp", "fastsmtp-uvloop", "fastsmtp-w2")]
    assert floor_pair([*specs, asyncio_floor]) == (SERVERS["fastsmtp"], asyncio_floor)
    uvloop_floor = ServerSpec("floor", "Python floor (uvloop)", "floor", ("--loop", "uvloop"))
    assert floor_pair([*specs, uvloop_floor]) == (SERVERS["fastsmtp-uvloop"], uvloop_floor)
    assert floor_pair([SERVERS["aiosmtpd"], uvloop_floor]) is None


def test_the_memory_tests_leave_the_floor_out_and_say_so() -> None:
    logged: list[str] = []
    results = run_memory([SERVERS["floor"]], log=logged.append)
    assert (results.idle, results.big, results.latency) == ([], [], [])
    assert logged == [
        f"{SERVERS['floor'].label}: not measured here "
        + "(a throughput reference; it keeps nothing)"
    ]
