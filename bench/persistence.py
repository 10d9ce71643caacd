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
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass

import orjson

from bench import concurrency
from bench.client import frame_event, new_loop, post_sse, run_input, user_message
from bench.servers import running

STORES = ("citadel", "citadel_postgres")
BURST_RUNS = 100
BURST_DELTAS = 2_000
BURST_REPETITIONS = 3
DELAY_REPETITIONS = 5
HYDRATION_MESSAGES = 1_000
HYDRATIONS = 200
GOAL_DELAY_RATIO = 1.10  # Postgres p99 / memory p99
GOAL_HYDRATION_P95_MS = 50.0


@dataclass
class Burst:
    server: str
    events: int  # received by the clients, all runs
    wall: float  # seconds from the first request to the end of the last stream
    stored: int | None = None  # replayed from the database after a restart

    @property
    def rate(self) -> float:
        return self.events / self.wall


@dataclass
class Hydration:
    server: str
    messages: int  # in the MESSAGES_SNAPSHOT
    bytes: int
    latencies_ms: list[float]

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class PersistenceResult:
    bursts: list[Burst]
    delays: list[concurrency.DelayResult]
    hydrations: list[Hydration]

    def median_rate(self, server: str) -> float:
        return statistics.median(b.rate for b in self.bursts if b.server == server)

    def median_p99(self, server: str) -> float:
        return statistics.median(
            (d.steady_ms or d.all_ms)[1] for d in self.delays if d.server == server
        )

    @property
    def delay_ratio(self) -> float:
        return self.median_p99("citadel_postgres") / self.median_p99("citadel")

    @property
    def lost(self) -> int:
        """Events streamed but not found in the database."""
        return sum(b.events - b.stored for b in self.bursts if b.stored is not None)

    def hydration(self, server: str) -> Hydration:
        return next(h for h in self.hydrations if h.server == server)


async def _burst(port: int, server: str) -> tuple[Burst, list[tuple[str, str, int]]]:
    """All runs at once; returns the measure and (thread, run, events) of each run."""
    runs = [(uuid.uuid4().hex, uuid.uuid4().hex) for _ in range(BURST_RUNS)]
    prompt = f"deltas={BURST_DELTAS}"
    start = time.perf_counter()
    streams = await asyncio.gather(
        *(post_sse(port, run_input(prompt, thread_id=t, run_id=r)) for t, r in runs)
    )
    wall = time.perf_counter() - start
    for stream in streams:
        if stream.status != 200 or stream.frames < BURST_DELTAS:
            raise RuntimeError(f"{server}: a burst run ended with {stream.frames} frames")
    counted = [(t, r, s.frames) for (t, r), s in zip(runs, streams, strict=True)]
    return Burst(server, sum(s.frames for s in streams), wall), counted


async def _replayed(port: int, thread_id: str, run_id: str) -> int:
    body = orjson.dumps(
        {"threadId": thread_id, "protocolVersion": "1.0", "lastEventId": f"{run_id}:0"}
    )
    stream = await post_sse(port, body, path="/agui/connect")
    if stream.status != 200:
        raise RuntimeError(f"replay of {run_id} answered {stream.status}")
    return stream.frames


def measure_bursts() -> list[Burst]:
    bursts: list[Burst] = []
    loop = new_loop()
    try:
        for _ in range(BURST_REPETITIONS):
            for server in STORES:
                with tempfile.TemporaryDirectory() as data_dir:
                    with running(server, data_dir=data_dir) as process:
                        burst, runs = loop.run_until_complete(_burst(process.port, server))
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


def measure_delays() -> list[concurrency.DelayResult]:
    deltas, interval = concurrency.LOADS[0]
    return [
        concurrency.measure_delay(server, concurrency.RUNS, deltas, interval)
        for _ in range(DELAY_REPETITIONS)
        for server in STORES
    ]


async def _hydrate(port: int, server: str) -> Hydration:
    """Build the thread with one run (its history sent by the client, as an import would),
    then time connects. The answer makes the last of ``HYDRATION_MESSAGES`` messages."""
    thread_id = uuid.uuid4().hex
    sentence = "A message of about the length people write in a chat panel, give or take. " * 2
    history = [
        {"id": uuid.uuid4().hex, "role": "assistant", "content": sentence}
        if index % 2
        else user_message(sentence)
        for index in range(HYDRATION_MESSAGES - 2)
    ]
    history.append(user_message("deltas=20"))
    built = await post_sse(port, run_input(history, thread_id=thread_id))
    if built.status != 200:
        raise RuntimeError(f"{server}: building the thread answered {built.status}")
    body = orjson.dumps({"threadId": thread_id, "protocolVersion": "1.0"})
    latencies, size, messages = [], 0, 0
    for _ in range(HYDRATIONS):
        stream = await post_sse(port, body, path="/agui/connect", keep=True)
        latencies.append(stream.elapsed * 1000)
        size = stream.bytes
        snapshot = next(
            e for e in map(frame_event, stream.kept) if e["type"] == "MESSAGES_SNAPSHOT"
        )
        messages = len(snapshot["messages"])
    return Hydration(server, messages, size, latencies)


def measure_hydration() -> list[Hydration]:
    loop = new_loop()
    try:
        results = []
        for server in STORES:
            with running(server) as process:
                results.append(loop.run_until_complete(_hydrate(process.port, server)))
        return results
    finally:
        loop.close()


def run() -> PersistenceResult:
    return PersistenceResult(measure_bursts(), measure_delays(), measure_hydration())


def goals(result: PersistenceResult) -> list[tuple[str, str, str, bool]]:
    """(measure, value, target, met) for the summary."""
    memory, postgres = result.median_rate("citadel"), result.median_rate("citadel_postgres")
    hydration = result.hydration("citadel_postgres").percentile(0.95)
    return [
        (
            f"events persisted/s, {BURST_RUNS} concurrent runs (Postgres / memory stream rate)",
            f"{postgres:,.0f}/s ({postgres / memory:.2f}x), {result.lost} lost",
            "keeps up, 0 lost",
            result.lost == 0,
        ),
        (
            f"p99 stream delay Postgres / memory, {concurrency.RUNS:,} runs x 20 deltas/s",
            f"{result.delay_ratio:.2f}x",
            f"<= {GOAL_DELAY_RATIO:.2f}x",
            result.delay_ratio <= GOAL_DELAY_RATIO,
        ),
        (
            f"hydration p95, {HYDRATION_MESSAGES:,}-message thread (Postgres)",
            f"{hydration:.1f} ms",
            f"< {GOAL_HYDRATION_P95_MS:g} ms",
            hydration < GOAL_HYDRATION_P95_MS,
        ),
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
    lines = [
        f"Bursts: {BURST_RUNS} concurrent runs x {BURST_DELTAS:,} deltas, "
        f"{BURST_REPETITIONS} repetitions per store, a fresh database each; events/s = events "
        "received / time to the end of the last stream (RUN_FINISHED follows the commit of a "
        "run's events). Stored = replayed from Postgres after a restart.",
        "",
        "| store | events/s per repetition | median | events received | stored |",
        "|---|---|---:|---:|---:|",
    ]
    for server in STORES:
        bursts = [b for b in result.bursts if b.server == server]
        stored = [b.stored for b in bursts]
        lines.append(
            f"| {server} | {', '.join(f'{b.rate:,.0f}' for b in bursts)} "
            f"| {result.median_rate(server):,.0f} | {sum(b.events for b in bursts):,} "
            f"| {'n/a' if None in stored else f'{sum(stored):,}'} |"
        )
    return lines


def _delays_table(result: PersistenceResult) -> list[str]:
    lines = [
        f"Delivery delay, {concurrency.RUNS:,} runs x 1 stamped delta per "
        f"{concurrency.LOADS[0][1] * 1000:g} ms, alternating stores, {DELAY_REPETITIONS} "
        "repetitions (steady state as in the concurrency benchmark).",
        "",
        "| store | p99 per repetition, ms | median p99, ms | p50 per repetition, ms "
        "| failed runs | server CPU |",
        "|---|---|---:|---|---:|---|",
    ]
    for server in STORES:
        delays = [d for d in result.delays if d.server == server]
        p = [(d.steady_ms or d.all_ms) for d in delays]
        lines.append(
            f"| {server} | {', '.join(f'{x[1]:.1f}' for x in p)} "
            f"| {result.median_p99(server):.1f} | {', '.join(f'{x[0]:.1f}' for x in p)} "
            f"| {sum(d.failed for d in delays)} "
            f"| {', '.join(f'{d.server_cpu:.2f}' for d in delays)} |"
        )
    lines += [
        "",
        f"Ratio of median p99s, Postgres / memory: {result.delay_ratio:.2f}x "
        f"(goal <= {GOAL_DELAY_RATIO:.2f}x).",
    ]
    return lines


def _hydration_table(result: PersistenceResult) -> list[str]:
    lines = [
        f"Hydration: one thread of {HYDRATION_MESSAGES:,} messages, `POST /agui/connect` "
        f"{HYDRATIONS} times in a row, client-side time to the end of the body.",
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
    args = parser.parse_args()
    if args.part == "bursts":
        result = PersistenceResult(measure_bursts(), [], [])
    elif args.part == "delays":
        result = PersistenceResult([], measure_delays(), [])
    elif args.part == "hydration":
        result = PersistenceResult([], [], measure_hydration())
    else:
        result = run()
    print(report(result))


if __name__ == "__main__":
    main()
