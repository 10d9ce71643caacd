"""Events per second of one 10,000-delta answer: Citadel vs pydantic-ai vs a bare route.

The three servers run side by side, each in its own process, read by the same client. Each
server streams one warm-up answer, which is also validated as an AG-UI 1.0 stream, then the
measured repetitions are interleaved between servers so that machine noise hits all of them.

Two scripts for the model: ``burst`` (the whole answer as fast as the model can, without
yielding to the event loop) and ``tick`` (one event-loop turn per delta, like a backend that
reads one token per socket read). The bare route writes the same pre-encoded frames, in
``tick`` with one event-loop turn before each content frame too.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field

import psutil

from bench.client import Stream, check_agui, new_loop, post_sse, run_input
from bench.servers import running

DELTAS = 10_000
SCENARIOS = {"burst": f"deltas={DELTAS}", "tick": f"deltas={DELTAS} tick"}
SERVERS = ("citadel", "pydantic_ai", "bare")
GOALS = {"pydantic_ai": 3.0, "bare": 0.5}  # citadel at least this many times the other


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
        with running("citadel") as a, running("pydantic_ai") as b, running("bare") as c:
            ports = {"citadel": a.port, "pydantic_ai": b.port, "bare": c.port}
            processes = {p.kind: psutil.Process(p.pid) for p in (a, b, c)}
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
            rss = {kind: process.memory_info().rss for kind, process in processes.items()}
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
