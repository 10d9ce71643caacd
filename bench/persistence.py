"""What the Postgres thread store costs: ``citadel`` (in-memory store) beside ``citadel_postgres``.

* Events persisted per second: ``BURST_RUNS`` concurrent runs, each a burst of
  ``BURST_DELTAS`` deltas. A run's RUN_FINISHED leaves only once its events and its end are
  committed (runs/manager.py), so events / wall time until the last stream ended is the rate
  at which the store took them. The server is then restarted on the same database and every
  run is replayed from Postgres, to count what was really stored.
* Stream delay: the concurrency benchmark's load (bench/concurrency.py, 1,000 runs x 20
  deltas/s) on both stores, alternated ``DELAY_REPETITIONS`` times; the ratio of the median
  p99s is the goal's measure.
* Hydration: one thread of ``HYDRATION_MESSAGES`` messages, then ``POST /agui/connect``
  (MESSAGES_SNAPSHOT + STATE_SNAPSHOT) ``HYDRATIONS`` times in a row.

A burst run that does not answer 200 with all its deltas, a delay run that fails, a hydration
without every message, or a missing figure breaks the benchmark: its goal lines say FAIL
(bench/verdicts.py). ``--smoke``: a few runs of each part, one repetition; goals not evaluated.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from bench import concurrency
from bench.client import frame_data, frame_event, new_loop, post_sse, run_input, user_message
from bench.servers import running
from bench.verdicts import figure, finish, quotient, verdict

STORES = ("citadel", "citadel_postgres")
BURST_RUNS = 100
BURST_DELTAS = 2_000
BURST_REPETITIONS = 3
DELAY_REPETITIONS = 5
HYDRATION_MESSAGES = 1_000
HYDRATIONS = 200
GOAL_DELAY_RATIO = 1.10  # Postgres p99 / memory p99
GOAL_HYDRATION_P95_MS = 50.0


@dataclass(frozen=True)
class Sizes:
    burst_runs: int = BURST_RUNS
    burst_deltas: int = BURST_DELTAS
    burst_repetitions: int = BURST_REPETITIONS
    delay_runs: int = concurrency.RUNS
    delay_load: tuple[int, float] = concurrency.LOADS[0]
    delay_repetitions: int = DELAY_REPETITIONS
    delay_settle_ns: int = concurrency.SETTLE_NS
    hydration_messages: int = HYDRATION_MESSAGES
    hydrations: int = HYDRATIONS
    smoke: bool = False


FULL = Sizes()
SMOKE = Sizes(
    burst_runs=5,
    burst_deltas=200,
    burst_repetitions=1,
    delay_runs=concurrency.SMOKE_RUNS,
    delay_load=concurrency.SMOKE_LOADS[0],
    delay_repetitions=1,
    delay_settle_ns=concurrency.SMOKE_SETTLE_NS,
    hydration_messages=50,
    hydrations=5,
    smoke=True,
)


@dataclass
class Burst:
    server: str
    events: int  # received by the clients, all runs
    wall: float  # seconds from the first request to the end of the last stream
    stored: int | None = None  # replayed from the database after a restart
    failed: list[str] = field(default_factory=list)  # why runs did not stream every delta

    @property
    def rate(self) -> float:
        return self.events / self.wall


@dataclass
class Hydration:
    server: str
    messages: int  # in the MESSAGES_SNAPSHOT (the fewest of all connects)
    bytes: int
    latencies_ms: list[float]
    failed: list[str] = field(default_factory=list)  # connects that were not whole snapshots

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class PersistenceResult:
    bursts: list[Burst]
    delays: list[concurrency.DelayResult]
    hydrations: list[Hydration]
    sizes: Sizes = FULL

    def median_rate(self, server: str) -> float | None:
        rates = [b.rate for b in self.bursts if b.server == server and not b.failed]
        return statistics.median(rates) if rates else None

    def median_p99(self, server: str) -> float | None:
        """The median steady p99 of ``server``'s repetitions; None if one has none."""
        p99s = [d.steady_p99 for d in self.delays if d.server == server]
        if not p99s or None in p99s:
            return None
        return statistics.median(p99s)  # type: ignore[type-var]

    @property
    def delay_ratio(self) -> float | None:
        return quotient(self.median_p99("citadel_postgres"), self.median_p99("citadel"))

    @property
    def lost(self) -> int:
        """Events streamed but not found in the database."""
        return sum(b.events - b.stored for b in self.bursts if b.stored is not None)

    def hydration(self, server: str) -> Hydration | None:
        return next((h for h in self.hydrations if h.server == server), None)

    def hydration_p95(self, server: str = "citadel_postgres") -> float | None:
        found = self.hydration(server)
        return found.percentile(0.95) if found and found.latencies_ms else None

    def bursts_broken(self) -> list[str]:
        found = [f"burst, {b.server}: {'; '.join(b.failed[:3])}" for b in self.bursts if b.failed]
        found += [
            f"burst, {b.server}: nothing replayed from the database"
            for b in self.bursts
            if b.server == "citadel_postgres" and b.stored is None
        ]
        found += [
            f"bursts: {server} has no repetition measured"
            for server in STORES
            if self.bursts and self.median_rate(server) is None
        ]
        return found

    def delays_broken(self) -> list[str]:
        found = [problem for d in self.delays for problem in d.broken()]
        if self.delays and self.delay_ratio is None:
            found.append("delays: no ratio of steady p99s (a repetition without a steady p99)")
        return found

    def hydrations_broken(self) -> list[str]:
        found = [
            f"hydration, {h.server}: {'; '.join(h.failed[:3])}" for h in self.hydrations if h.failed
        ]
        if self.hydrations and self.hydration_p95() is None:
            found.append("hydration: no citadel_postgres latency measured")
        return found

    def broken(self) -> list[str]:
        """Why this benchmark is broken (empty: it is not)."""
        return self.bursts_broken() + self.delays_broken() + self.hydrations_broken()


async def _burst(port: int, server: str, sizes: Sizes) -> tuple[Burst, list[tuple[str, str, int]]]:
    """All runs at once; returns the measure and (thread, run, events) of each run."""
    runs = [(uuid.uuid4().hex, uuid.uuid4().hex) for _ in range(sizes.burst_runs)]
    prompt = f"deltas={sizes.burst_deltas}"
    ends: dict[str, bytes] = {}  # run id -> its last frame

    def last_frame(run_id: str) -> Callable[[list[bytes], int], None]:
        def on_frames(frames: list[bytes], arrived: int) -> None:
            ends[run_id] = frames[-1]

        return on_frames

    start = time.perf_counter()
    streams = await asyncio.gather(
        *(
            post_sse(port, run_input(prompt, thread_id=t, run_id=r), on_frames=last_frame(r))
            for t, r in runs
        )
    )
    wall = time.perf_counter() - start
    burst = Burst(server, sum(s.frames for s in streams), wall)
    for (_, run_id), stream in zip(runs, streams, strict=True):
        if stream.status != 200 or stream.frames < sizes.burst_deltas:
            burst.failed.append(f"HTTP {stream.status}, {stream.frames} frames")
        elif b'"RUN_FINISHED"' not in frame_data(ends.get(run_id, b"")):
            burst.failed.append("no RUN_FINISHED")
    counted = [(t, r, s.frames) for (t, r), s in zip(runs, streams, strict=True)]
    return burst, counted


async def _replayed(port: int, thread_id: str, run_id: str) -> int:
    body = orjson.dumps(
        {"threadId": thread_id, "protocolVersion": "1.0", "lastEventId": f"{run_id}:0"}
    )
    stream = await post_sse(port, body, path="/agui/connect")
    if stream.status != 200:
        raise RuntimeError(f"replay of {run_id} answered {stream.status}")
    return stream.frames


def measure_bursts(sizes: Sizes = FULL) -> list[Burst]:
    bursts: list[Burst] = []
    loop = new_loop()
    try:
        for _ in range(sizes.burst_repetitions):
            for server in STORES:
                with tempfile.TemporaryDirectory() as data_dir:
                    with running(server, data_dir=data_dir) as process:
                        burst, runs = loop.run_until_complete(_burst(process.port, server, sizes))
                    if server == "citadel_postgres":
                        with running(server, data_dir=data_dir) as process:
                            burst.stored = sum(
                                loop.run_until_complete(_replayed(process.port, t, r))
                                for t, r, _ in runs
                            )
                bursts.append(burst)
    finally:
        loop.close()
    return bursts


def measure_delays(sizes: Sizes = FULL) -> list[concurrency.DelayResult]:
    deltas, interval = sizes.delay_load
    return [
        concurrency.measure_delay(
            server, sizes.delay_runs, deltas, interval, settle_ns=sizes.delay_settle_ns
        )
        for _ in range(sizes.delay_repetitions)
        for server in STORES
    ]


async def _hydrate(port: int, server: str, sizes: Sizes) -> Hydration:
    """Build the thread with one run (its history sent by the client, as an import would),
    then time connects. The answer makes the last of ``HYDRATION_MESSAGES`` messages."""
    thread_id = uuid.uuid4().hex
    sentence = "A message of about the length people write in a chat panel, give or take. " * 2
    history = [
        {"id": uuid.uuid4().hex, "role": "assistant", "content": sentence}
        if index % 2
        else user_message(sentence)
        for index in range(sizes.hydration_messages - 2)
    ]
    history.append(user_message("deltas=20"))
    built = await post_sse(port, run_input(history, thread_id=thread_id))
    if built.status != 200:
        raise RuntimeError(f"{server}: building the thread answered {built.status}")
    body = orjson.dumps({"threadId": thread_id, "protocolVersion": "1.0"})
    latencies, size, fewest, failed = [], 0, sizes.hydration_messages, []
    for _ in range(sizes.hydrations):
        stream = await post_sse(port, body, path="/agui/connect", keep=True)
        latencies.append(stream.elapsed * 1000)
        size = stream.bytes
        snapshots = [
            e
            for e in map(frame_event, filter(frame_data, stream.kept))
            if e["type"] == "MESSAGES_SNAPSHOT"
        ]
        messages = len(snapshots[0]["messages"]) if snapshots else 0
        fewest = min(fewest, messages)
        if stream.status != 200 or messages != sizes.hydration_messages:
            failed.append(
                f"HTTP {stream.status}, {messages} of {sizes.hydration_messages} messages"
            )
    return Hydration(server, fewest, size, latencies, failed)


def measure_hydration(sizes: Sizes = FULL) -> list[Hydration]:
    loop = new_loop()
    try:
        results = []
        for server in STORES:
            with running(server) as process:
                results.append(loop.run_until_complete(_hydrate(process.port, server, sizes)))
        return results
    finally:
        loop.close()


def run(sizes: Sizes = FULL) -> PersistenceResult:
    return PersistenceResult(
        measure_bursts(sizes), measure_delays(sizes), measure_hydration(sizes), sizes
    )


def smoke() -> PersistenceResult:
    """A few runs of each part on both stores: does the benchmark work (no goal evaluated)?"""
    return run(SMOKE)


def goals(result: PersistenceResult) -> list[tuple[str, str, str, str]]:
    """(measure, value, target, verdict) for the summary."""
    sizes = result.sizes
    memory, postgres = result.median_rate("citadel"), result.median_rate("citadel_postgres")
    ratio, hydration = result.delay_ratio, result.hydration_p95()
    per_second = 1 / sizes.delay_load[1]

    def shown(met: bool | None, broken: list[str]) -> str:
        return verdict(met, broken=bool(broken), smoke=sizes.smoke)

    stored = shown(
        None if postgres is None or memory is None else result.lost == 0,
        result.bursts_broken(),
    )
    return [
        (
            f"events persisted/s, {sizes.burst_runs} concurrent runs "
            "(Postgres / memory stream rate)",
            f"{figure(postgres, ',.0f', '/s')} ({figure(quotient(postgres, memory), '.2f', 'x')}),"
            f" {result.lost} lost",
            "keeps up, 0 lost",
            # Losing events fails even a smoke run: it is not a timing goal.
            "FAIL" if result.lost else stored,
        ),
        (
            f"p99 stream delay Postgres / memory, {sizes.delay_runs:,} runs x "
            f"{figure(per_second, 'g')} deltas/s",
            figure(ratio, ".2f", "x"),
            f"<= {GOAL_DELAY_RATIO:.2f}x",
            shown(None if ratio is None else ratio <= GOAL_DELAY_RATIO, result.delays_broken()),
        ),
        (
            f"hydration p95, {sizes.hydration_messages:,}-message thread (Postgres)",
            figure(hydration, ".1f", " ms"),
            f"< {GOAL_HYDRATION_P95_MS:g} ms",
            shown(
                None if hydration is None else hydration < GOAL_HYDRATION_P95_MS,
                result.hydrations_broken(),
            ),
        ),
    ]


def summary_rows(result: PersistenceResult) -> list[str]:
    return [
        f"| {label} | {value} | {target} | {shown} |"
        for label, value, target, shown in goals(result)
    ]


def report(result: PersistenceResult) -> str:
    """The parts measured, each a table."""
    parts = [
        _bursts_table(result) if result.bursts else [],
        _delays_table(result) if result.delays else [],
        _hydration_table(result) if result.hydrations else [],
    ]
    return "\n\n".join("\n".join(part) for part in parts if part)


def _bursts_table(result: PersistenceResult) -> list[str]:
    sizes = result.sizes
    lines = [
        f"Bursts: {sizes.burst_runs} concurrent runs x {sizes.burst_deltas:,} deltas, "
        f"{sizes.burst_repetitions} repetitions per store, a fresh database each; events/s = "
        "events received / time to the end of the last stream (RUN_FINISHED follows the commit "
        "of a run's events). Stored = replayed from Postgres after a restart.",
        "",
        "| store | events/s per repetition | median | events received | stored |",
        "|---|---|---:|---:|---:|",
    ]
    for server in STORES:
        bursts = [b for b in result.bursts if b.server == server]
        stored = [b.stored for b in bursts if b.stored is not None]
        if server == "citadel":
            shown = "-"  # the in-memory store keeps nothing to replay
        else:
            shown = f"{sum(stored):,}" if len(stored) == len(bursts) else "n/a"
        lines.append(
            f"| {server} | {', '.join(f'{b.rate:,.0f}' for b in bursts)} "
            f"| {figure(result.median_rate(server), ',.0f')} | {sum(b.events for b in bursts):,} "
            f"| {shown} |"
        )
    return lines


def _delays_table(result: PersistenceResult) -> list[str]:
    sizes = result.sizes
    lines = [
        f"Delivery delay, {sizes.delay_runs:,} runs x 1 stamped delta per "
        f"{sizes.delay_load[1] * 1000:g} ms, alternating stores, {sizes.delay_repetitions} "
        "repetitions (steady state as in the concurrency benchmark).",
        "",
        "| store | p99 per repetition, ms | median p99, ms | p50 per repetition, ms "
        "| failed runs | server CPU |",
        "|---|---|---:|---|---:|---|",
    ]
    for server in STORES:
        delays = [d for d in result.delays if d.server == server]
        p = [d.steady_ms for d in delays]
        lines.append(
            f"| {server} | {', '.join(figure(x and x[1], '.1f') for x in p)} "
            f"| {figure(result.median_p99(server), '.1f')} "
            f"| {', '.join(figure(x and x[0], '.1f') for x in p)} "
            f"| {sum(d.failed for d in delays)} "
            f"| {', '.join(f'{d.server_cpu:.2f}' for d in delays)} |"
        )
    lines += [
        "",
        f"Ratio of median p99s, Postgres / memory: {figure(result.delay_ratio, '.2f', 'x')} "
        f"(goal <= {GOAL_DELAY_RATIO:.2f}x).",
    ]
    return lines


def _hydration_table(result: PersistenceResult) -> list[str]:
    sizes = result.sizes
    lines = [
        f"Hydration: one thread of {sizes.hydration_messages:,} messages, `POST /agui/connect` "
        f"{sizes.hydrations} times in a row, client-side time to the end of the body.",
        "",
        "| store | messages | bytes | p50, ms | p95, ms | max, ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for h in result.hydrations:
        lines.append(
            f"| {h.server} | {h.messages:,} | {h.bytes:,} | {h.percentile(0.5):.1f} "
            f"| {h.percentile(0.95):.1f} | {max(h.latencies_ms):.1f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--part", choices=("bursts", "delays", "hydration"), help="only this part (quick look)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a few runs of each part: does it work? (no goals)"
    )
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    if args.part == "bursts":
        result = PersistenceResult(measure_bursts(sizes), [], [], sizes)
    elif args.part == "delays":
        result = PersistenceResult([], measure_delays(sizes), [], sizes)
    elif args.part == "hydration":
        result = PersistenceResult([], [], measure_hydration(sizes), sizes)
    else:
        result = run(sizes)
    text = report(result)
    if not args.part:  # the goals need every part
        text += "\n\n" + "\n".join(
            ["| goal | measured | target | |", "|---|---:|---:|---|", *summary_rows(result)]
        )
    finish(text, result.broken())


if __name__ == "__main__":
    main()
