"""Events per second of one 10,000-delta answer: Citadel vs pydantic-ai vs a bare route, and
Citadel vs its own baseline commit and vs Citadel framed by sse-starlette.

The servers run side by side, each in its own process, read by the same client:

* ``citadel``: this checkout;
* ``citadel_baseline``: the same server at :data:`bench.baseline.BASELINE_REF` (the
  Starlette app before the FastAPI move and the run API), from a checkout beside this one;
* ``citadel_sse_starlette``: this checkout with ``/agui`` framed by sse-starlette;
* ``pydantic_ai`` and ``bare``: the peers (see :mod:`bench.servers`).

Each server streams one warm-up answer, which is also validated as an AG-UI 1.0 stream, then
the measured repetitions are interleaved between servers so that machine noise hits all of
them.

Two scripts for the model: ``burst`` (the whole answer as fast as the model can, without
yielding to the event loop) and ``tick`` (one event-loop turn per delta, like a backend that
reads one token per socket read). The bare route writes the same pre-encoded frames, in
``tick`` with one event-loop turn before each content frame too.

Every measured stream must answer 200 and end with RUN_FINISHED after all its deltas, and
every warm-up stream must be valid AG-UI; otherwise the benchmark is broken and every goal line
says FAIL (bench/verdicts.py). ``--smoke``: answers of 300 deltas, one repetition, every
server (the baseline checkout too); goals not evaluated.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from bench.baseline import checkout
from bench.client import Stream, check_agui, new_loop, post_sse, run_input
from bench.servers import running
from bench.verdicts import SMOKE, figure, finish, quotient, verdict

DELTAS = 10_000
SMOKE_DELTAS = 300
SCRIPTS = {"burst": "", "tick": " tick"}  # what the scenario adds to ``deltas=N``
SCENARIOS = {name: f"deltas={DELTAS}{extra}" for name, extra in SCRIPTS.items()}
SERVERS = ("citadel", "citadel_baseline", "citadel_sse_starlette", "pydantic_ai", "bare")
# citadel at least this many times the other: the peers' goals, no more than 5 % slower than
# its baseline, and sse-starlette adopted only if citadel is not more than 10 % faster.
GOALS = {"pydantic_ai": 3.0, "bare": 0.5, "citadel_baseline": 0.95}
ADOPTION = {"citadel_sse_starlette": 1.10}  # adopt the other if citadel/other stays below


@dataclass
class Series:
    server: str
    scenario: str
    rates: list[float] = field(default_factory=list)  # events/s, one per repetition
    cpu_us: list[float] = field(default_factory=list)  # server CPU microseconds per event
    busy: list[float] = field(default_factory=list)  # server CPU time / stream wall time

    @property
    def median(self) -> float | None:
        return statistics.median(self.rates) if self.rates else None


@dataclass
class ThroughputResult:
    repetitions: int
    series: dict[tuple[str, str], Series]
    problems: dict[str, list[str]]  # server/scenario -> why its stream is not valid AG-UI
    rss: dict[str, int]  # each server's resident memory after all its streams, bytes
    failed: dict[str, list[str]] = field(default_factory=dict)  # server/scenario -> failures
    deltas: int = DELTAS
    smoke: bool = False

    def ratio(self, scenario: str, other: str) -> float | None:
        citadel, other_series = self.series[("citadel", scenario)], self.series[(other, scenario)]
        return quotient(citadel.median, other_series.median)

    def broken(self) -> list[str]:
        """Why this benchmark is broken: invalid warm-up streams, failed streams, missing series."""
        found = [f"invalid stream {name}: {'; '.join(p)}" for name, p in self.problems.items()]
        found += [f"{name}: {'; '.join(f[:3])}" for name, f in self.failed.items()]
        found += [
            f"{s.server}/{s.scenario}: {len(s.rates)} of {self.repetitions} repetitions measured"
            for s in self.series.values()
            if len(s.rates) != self.repetitions
        ]
        return found

    def goals(self) -> list[tuple[str, float | None, float, str]]:
        """``(label, measured ratio or None, goal, verdict)`` for each scenario and peer."""
        broken = bool(self.broken())
        return [
            (
                f"citadel/{other} ({scenario})",
                measured,
                goal,
                verdict(
                    None if measured is None else measured >= goal, broken=broken, smoke=self.smoke
                ),
            )
            for scenario in SCRIPTS
            for other, goal in GOALS.items()
            for measured in [self.ratio(scenario, other)]
        ]

    def adoption(self) -> list[tuple[str, float | None, float, str]]:
        """``(label, citadel/other, threshold, verdict)``: the other is worth adopting when
        citadel is not more than the threshold faster."""
        rows = []
        for scenario in SCRIPTS:
            for other, limit in ADOPTION.items():
                measured = self.ratio(scenario, other)
                if measured is None or self.broken():
                    shown = "FAIL (broken)"
                elif self.smoke:
                    shown = SMOKE
                else:
                    shown = "adopt" if measured <= limit else "keep our framing"
                rows.append((f"citadel/{other} ({scenario})", measured, limit, shown))
        return rows

    def summary_rows(self) -> list[str]:
        return [
            f"| events/s {label} | {figure(measured, '.2f', 'x')} | >= {goal:g}x | {shown} |"
            for label, measured, goal, shown in self.goals()
        ]


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def _stream(
    port: int, scenario: str, deltas: int, *, keep: bool = False
) -> tuple[Stream, bytes]:
    """The stream of one answer and its last frame."""
    last = [b""]

    def on_frames(frames: list[bytes], arrived: int) -> None:
        last[0] = frames[-1]

    prompt = run_input(f"deltas={deltas}{SCRIPTS[scenario]}")
    return await post_sse(port, prompt, keep=keep, on_frames=on_frames), last[0]


def _failure(stream: Stream, last: bytes, deltas: int) -> str:
    """Why a measured stream is not a whole answer (empty: it is)."""
    if stream.status != 200:
        return f"HTTP {stream.status}"
    if stream.frames < deltas:
        return f"{stream.frames} frames for {deltas} deltas"
    if b'"RUN_FINISHED"' not in last:
        return f"the last frame is not RUN_FINISHED: {last[:120]!r}"
    return ""


def run(repetitions: int = 7, deltas: int = DELTAS, smoke: bool = False) -> ThroughputResult:
    plan = [(server, scenario) for scenario in SCRIPTS for server in SERVERS]
    series = {(s, c): Series(s, c) for s, c in plan}
    problems: dict[str, list[str]] = {}
    failed: dict[str, list[str]] = {}
    loop = new_loop()
    try:
        with contextlib.ExitStack() as stack:
            old = stack.enter_context(checkout())
            servers = {
                "citadel": stack.enter_context(running("citadel")),
                "citadel_baseline": stack.enter_context(running("citadel", checkout=old)),
                "citadel_sse_starlette": stack.enter_context(running("citadel_sse_starlette")),
                "pydantic_ai": stack.enter_context(running("pydantic_ai")),
                "bare": stack.enter_context(running("bare")),
            }
            ports = {name: server.port for name, server in servers.items()}
            processes = {name: psutil.Process(server.pid) for name, server in servers.items()}
            for server, scenario in plan:  # warm-up, validated
                stream, _ = loop.run_until_complete(
                    _stream(ports[server], scenario, deltas, keep=True)
                )
                found = check_agui(stream, deltas)
                if found:
                    problems[f"{server}/{scenario}"] = found[:5]
            for _ in range(repetitions):
                for server, scenario in plan:
                    cpu = _cpu(processes[server])
                    stream, last = loop.run_until_complete(_stream(ports[server], scenario, deltas))
                    cpu = _cpu(processes[server]) - cpu
                    failure = _failure(stream, last, deltas)
                    if failure:
                        failed.setdefault(f"{server}/{scenario}", []).append(failure)
                        continue
                    measured = series[(server, scenario)]
                    measured.rates.append(stream.frames / stream.elapsed)
                    measured.cpu_us.append(cpu / stream.frames * 1e6)
                    measured.busy.append(cpu / stream.elapsed)
            rss = {name: process.memory_info().rss for name, process in processes.items()}
    finally:
        loop.close()
    return ThroughputResult(repetitions, series, problems, rss, failed, deltas, smoke)


def smoke() -> ThroughputResult:
    """Every server, one short answer each: does the benchmark work (no goal evaluated)?"""
    return run(1, SMOKE_DELTAS, smoke=True)


def _stat(values: list[float], pick: Callable[[list[float]], float], spec: str) -> str:
    return figure(pick(values) if values else None, spec)


def report(result: ThroughputResult) -> str:
    lines = [
        f"AG-UI throughput: one answer of {result.deltas:,} text deltas, "
        f"{result.repetitions} interleaved repetitions after a validated warm-up"
        + (" (smoke run: goals not evaluated)" if result.smoke else ""),
        "",
        "| server | model script | events/s median | min | max "
        "| server CPU us/event | server busy |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for series in result.series.values():
        lines.append(
            f"| {series.server} | {series.scenario} "
            f"| {_stat(series.rates, statistics.median, ',.0f')} "
            f"| {_stat(series.rates, min, ',.0f')} | {_stat(series.rates, max, ',.0f')} "
            f"| {_stat(series.cpu_us, statistics.median, '.1f')} "
            f"| {_stat(series.busy, statistics.median, '.0%')} |"
        )
    lines += ["", "| ratio | measured | goal | |", "|---|---:|---:|---|"]
    for label, measured, goal, shown in result.goals():
        lines.append(f"| {label} | {figure(measured, '.2f', 'x')} | >= {goal:g}x | {shown} |")
    lines += [
        "",
        "| candidate | citadel/candidate | adopt if <= | verdict |",
        "|---|---:|---:|---|",
    ]
    for label, measured, limit, shown in result.adoption():
        lines.append(f"| {label} | {figure(measured, '.2f', 'x')} | {limit:g}x | {shown} |")
    lines.append("")
    if result.problems:
        lines += [f"INVALID STREAM {name}: {'; '.join(p)}" for name, p in result.problems.items()]
    else:
        lines.append("Every server's warm-up stream is valid AG-UI 1.0 (protocol.verifier).")
    lines.append(
        "Server busy = server CPU time / stream wall time: near 100% means the server, not "
        "the client, set the pace."
    )
    streams = (result.repetitions + 1) * len(SCENARIOS)
    memory = ", ".join(f"{kind} {rss / 2**20:,.0f} MB" for kind, rss in result.rss.items())
    lines.append(f"Server RSS after {streams} streams of {result.deltas:,} deltas each: {memory}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repetitions", type=int, default=7)
    parser.add_argument(
        "--smoke", action="store_true", help="one short answer per server: does it work?"
    )
    args = parser.parse_args()
    result = smoke() if args.smoke else run(args.repetitions)
    finish(report(result), result.broken())


if __name__ == "__main__":
    main()
