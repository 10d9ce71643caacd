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
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from dataclasses import dataclass, field

import psutil

from bench.baseline import checkout
from bench.client import Stream, check_agui, new_loop, post_sse, run_input
from bench.servers import running

DELTAS = 10_000
SCENARIOS = {"burst": f"deltas={DELTAS}", "tick": f"deltas={DELTAS} tick"}
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
    def median(self) -> float:
        return statistics.median(self.rates)


@dataclass
class ThroughputResult:
    repetitions: int
    series: dict[tuple[str, str], Series]
    problems: dict[str, list[str]]  # server/scenario -> why its stream is not valid AG-UI
    rss: dict[str, int]  # each server's resident memory after all its streams, bytes

    def ratio(self, scenario: str, other: str) -> float:
        return self.series[("citadel", scenario)].median / self.series[(other, scenario)].median

    def goals(self) -> list[tuple[str, float, float, bool]]:
        """``(label, measured ratio, goal, met)`` for each scenario and peer."""
        return [
            (f"citadel/{other} ({scenario})", ratio, goal, ratio >= goal)
            for scenario in SCENARIOS
            for other, goal in GOALS.items()
            for ratio in [self.ratio(scenario, other)]
        ]

    def adoption(self) -> list[tuple[str, float, float, bool]]:
        """``(label, citadel/other, threshold, adopt?)``: the other is worth adopting when
        citadel is not more than the threshold faster."""
        return [
            (f"citadel/{other} ({scenario})", ratio, limit, ratio <= limit)
            for scenario in SCENARIOS
            for other, limit in ADOPTION.items()
            for ratio in [self.ratio(scenario, other)]
        ]


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def _stream(port: int, scenario: str, *, keep: bool = False) -> Stream:
    return await post_sse(port, run_input(SCENARIOS[scenario]), keep=keep)


def run(repetitions: int = 7) -> ThroughputResult:
    plan = [(server, scenario) for scenario in SCENARIOS for server in SERVERS]
    series = {(s, c): Series(s, c) for s, c in plan}
    problems: dict[str, list[str]] = {}
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
                stream = loop.run_until_complete(_stream(ports[server], scenario, keep=True))
                found = check_agui(stream, DELTAS)
                if found:
                    problems[f"{server}/{scenario}"] = found[:5]
            for _ in range(repetitions):
                for server, scenario in plan:
                    cpu = _cpu(processes[server])
                    stream = loop.run_until_complete(_stream(ports[server], scenario))
                    cpu = _cpu(processes[server]) - cpu
                    if stream.status != 200 or stream.frames < DELTAS:
                        raise RuntimeError(f"{server}/{scenario}: {stream.frames} frames")
                    measured = series[(server, scenario)]
                    measured.rates.append(stream.frames / stream.elapsed)
                    measured.cpu_us.append(cpu / stream.frames * 1e6)
                    measured.busy.append(cpu / stream.elapsed)
            rss = {name: process.memory_info().rss for name, process in processes.items()}
    finally:
        loop.close()
    return ThroughputResult(repetitions, series, problems, rss)


def report(result: ThroughputResult) -> str:
    lines = [
        f"AG-UI throughput: one answer of {DELTAS:,} text deltas, "
        f"{result.repetitions} interleaved repetitions after a validated warm-up",
        "",
        "| server | model script | events/s median | min | max "
        "| server CPU us/event | server busy |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for series in result.series.values():
        lines.append(
            f"| {series.server} | {series.scenario} | {series.median:,.0f} "
            f"| {min(series.rates):,.0f} | {max(series.rates):,.0f} "
            f"| {statistics.median(series.cpu_us):.1f} | {statistics.median(series.busy):.0%} |"
        )
    lines += ["", "| ratio | measured | goal | |", "|---|---:|---:|---|"]
    for label, ratio, goal, met in result.goals():
        lines.append(f"| {label} | {ratio:.2f}x | >= {goal:g}x | {'PASS' if met else 'FAIL'} |")
    lines += [
        "",
        "| candidate | citadel/candidate | adopt if <= | verdict |",
        "|---|---:|---:|---|",
    ]
    for label, ratio, limit, adopt in result.adoption():
        verdict = "adopt" if adopt else "keep our framing"
        lines.append(f"| {label} | {ratio:.2f}x | {limit:g}x | {verdict} |")
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
    lines.append(f"Server RSS after {streams} streams of {DELTAS:,} deltas each: {memory}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repetitions", type=int, default=7)
    print(report(run(parser.parse_args().repetitions)))


if __name__ == "__main__":
    main()
