"""Citadel on several workers: runs spread over them while an administrator watches the feed.

The load test (tests/e2e/test_load.py) checks a :class:`WatchedLoad` for correctness: every
stream a correct AG-UI stream, the feed carrying each event exactly once. ``make bench``
(:func:`main`) measures, in one run, side by side:

* server CPU per delivered event (user+sys of every worker process over the load, divided by
  the events the clients received): one worker on the in-process bus vs two workers on Redis
  (goal: at most 1.5x), with one worker on Redis between them to tell what Redis costs from
  what splitting the load over two processes costs;
* the admin feed's delay: produced (the scripted model stamps each delta with the system-wide
  monotonic clock) to received by the admin client, p50 and p99 (goal p99 < 50 ms).

Both set-ups run side by side on the machine's Postgres (a fresh schema each), with an admin
watching a worker; the loads alternate between them, each figure is the median of the repetitions.

Any stream that is not a whole AG-UI stream, or a feed that misses or reorders an event, stops
the benchmark with an error (exit 1). ``--smoke``: 20 runs, one repetition; goals not evaluated.
``--redis-db``: the Redis database of the set-ups on Redis (default: the tests' spine database,
``CITADEL_TEST_REDIS_DB``), emptied before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import psutil

from bench.client import Stream, frame_data, post_sse, raise_fd_limit, run_input
from bench.servers import ServerProcess, running
from bench.verdicts import SMOKE
from protocol.verifier import verify_events
from tests.support.database import isolated_database_url
from tests.support.redis import SPINE_DB, empty_redis

RUNS = 500
PROMPT = "deltas=10 interval=0.1 stamp"  # 1 s runs: all 500 are open at once
REPETITIONS = 5
WARM_UP_RUNS = 50
SMOKE_RUNS = 20
GOAL_CPU_RATIO = 1.5
GOAL_FEED_P99_MS = 50.0
TERMINAL = ("RUN_FINISHED", "RUN_ERROR")


@dataclass
class WatchedLoad:
    streams: dict[str, Stream] = field(default_factory=dict)  # run id -> what its client got
    feed: list[tuple[int, dict]] = field(default_factory=list)  # (arrival ns, item)
    cpu: float = 0.0  # worker CPU seconds from the first run's start to the feed's last event
    seconds: float = 0.0

    @property
    def events(self) -> int:
        return sum(stream.frames for stream in self.streams.values())

    def problems(self) -> list[str]:
        """Why this load was not served correctly (empty: it was)."""
        found = []
        by_run: dict[str, list[dict]] = {}
        for _, item in self.feed:
            if item["kind"] == "run":
                by_run.setdefault(item["runId"], []).append(item)
        for run_id, stream in self.streams.items():
            events = [orjson.loads(frame_data(frame)) for frame in stream.kept]
            if stream.status != 200:
                found.append(f"{run_id}: HTTP {stream.status}")
            found += [f"{run_id}: {finding}" for finding in verify_events(events)]
            watched = by_run.get(run_id, [])
            if [item["seq"] for item in watched] != list(range(1, len(events) + 1)):
                found.append(f"{run_id}: the feed had seqs {[i['seq'] for i in watched]}")
            elif [item["event"] for item in watched] != events:
                found.append(f"{run_id}: the feed's events differ from the stream's")
        return found

    def feed_delays_ms(self) -> list[float]:
        return [
            (arrived - int(item["event"]["delta"])) / 1e6
            for arrived, item in self.feed
            if item["kind"] == "run" and item["event"]["type"] == "TEXT_MESSAGE_CONTENT"
        ]


@contextlib.asynccontextmanager
async def citadel_workers(
    count: int, shared: bool, redis_db: int = SPINE_DB, **settings: str
) -> AsyncIterator[list[ServerProcess]]:
    """``count`` workers on one fresh database schema, on Redis database ``redis_db`` (emptied)
    when ``shared``, with these ``CITADEL_*`` settings."""
    async with contextlib.AsyncExitStack() as stack:
        database = await stack.enter_async_context(isolated_database_url())
        redis_url = await stack.enter_async_context(empty_redis(redis_db)) if shared else None
        env: dict[str, str | None] = {
            "BENCH_DATABASE_URL": database,
            "BENCH_REDIS_URL": redis_url,
            "CITADEL_MAX_STREAMS_PER_USER": "100000",
            **settings,
        }
        yield [stack.enter_context(running("citadel_postgres", env=env)) for _ in range(count)]


async def watched_load(
    workers: list[ServerProcess], admin: ServerProcess, runs: int = RUNS, prompt: str = PROMPT
) -> WatchedLoad:
    """``runs`` runs at once, dealt round-robin over ``workers``, with an admin reading the
    feed of ``admin`` until it has seen every run end (at most a minute)."""
    load = WatchedLoad()
    connected, all_ended = asyncio.Event(), asyncio.Event()
    ended: set[str] = set()
    expected: set[str] = set()

    def on_feed(frames: list[bytes], arrived: int) -> None:
        for frame in frames:
            data = frame_data(frame)
            if not data:
                continue  # a keep-alive
            item = orjson.loads(data)
            load.feed.append((arrived, item))
            if item["kind"] == "connected":
                connected.set()
            elif item["kind"] == "run" and item["event"]["type"] in TERMINAL:
                ended.add(item["runId"])
                if expected and ended >= expected:
                    all_ended.set()

    watcher = asyncio.create_task(
        post_sse(admin.port, b"", path="/admin/events", method="GET", on_frames=on_feed)
    )
    processes = [psutil.Process(worker.pid) for worker in workers]
    try:
        await asyncio.wait_for(connected.wait(), 30)
        cpu = sum(_cpu(process) for process in processes)
        started = time.perf_counter()
        run_ids = [uuid.uuid4().hex for _ in range(runs)]
        expected.update(run_ids)
        streams = await asyncio.gather(
            *(
                post_sse(
                    workers[n % len(workers)].port, run_input(prompt, run_id=run_id), keep=True
                )
                for n, run_id in enumerate(run_ids)
            )
        )
        load.streams = dict(zip(run_ids, streams, strict=True))
        if not ended >= expected:
            await asyncio.wait_for(all_ended.wait(), 60)
        load.seconds = time.perf_counter() - started
        load.cpu = sum(_cpu(process) for process in processes) - cpu
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    return load


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def _check(load: WatchedLoad) -> WatchedLoad:
    problems = load.problems()
    if problems:
        raise RuntimeError(f"{len(problems)} problems, e.g. {problems[:3]}")
    return load


def _percentile(values: list[float], fraction: float) -> float:
    return statistics.quantiles(values, n=100)[int(fraction * 100) - 1]


@dataclass
class Figures:
    """One set-up's repetitions; each figure is the median over them."""

    loads: list[WatchedLoad] = field(default_factory=list)

    def cpu_per_event_us(self) -> list[float]:
        return [load.cpu / load.events * 1e6 for load in self.loads]

    def feed_p50_ms(self) -> list[float]:
        return [statistics.median(load.feed_delays_ms()) for load in self.loads]

    def feed_p99_ms(self) -> list[float]:
        return [_percentile(load.feed_delays_ms(), 0.99) for load in self.loads]


def _spread(values: list[float], unit: str, digits: int) -> str:
    return (
        f"{statistics.median(values):.{digits}f} {unit} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


SETUPS = (  # (name, workers, on Redis); the goal compares the last with the first
    ("1 worker, in-process bus", 1, False),
    ("1 worker, Redis", 1, True),
    ("2 workers, Redis", 2, True),
)


def _met(met: bool, smoke: bool) -> str:
    if smoke:
        return SMOKE
    return "met" if met else "NOT met"


def summary(figures: list[Figures], runs: int = RUNS, smoke: bool = False) -> list[str]:
    per_event = [statistics.median(f.cpu_per_event_us()) for f in figures]
    ratio = per_event[-1] / per_event[0]
    p99 = statistics.median(figures[-1].feed_p99_ms())
    lines = [
        f"{runs} runs at once (`{PROMPT}`), an admin watching the feed of the last worker; "
        f"{len(figures[0].loads)} repetitions alternating between the set-ups, median (min-max).",
        "",
        "| set-up | events per repetition | CPU per event | vs in-process "
        "| feed delay p50 | feed delay p99 |",
        "|---|---|---|---|---|---|",
    ]
    for (name, _, _), found, micros in zip(SETUPS, figures, per_event, strict=True):
        lines.append(
            f"| {name} | {found.loads[0].events} "
            f"| {_spread(found.cpu_per_event_us(), 'µs', 0)} | {micros / per_event[0]:.2f}x "
            f"| {_spread(found.feed_p50_ms(), 'ms', 1)} "
            f"| {_spread(found.feed_p99_ms(), 'ms', 1)} |"
        )
    lines += [
        "",
        f"Two workers on Redis / one in-process worker, CPU per event: **{ratio:.2f}x** "
        f"(goal <= {GOAL_CPU_RATIO}x: {_met(ratio <= GOAL_CPU_RATIO, smoke)}); "
        f"admin feed p99 on two workers: **{p99:.1f} ms** "
        f"(goal < {GOAL_FEED_P99_MS:g} ms: {_met(p99 < GOAL_FEED_P99_MS, smoke)}).",
    ]
    return lines


async def _main(
    repetitions: int, runs: int = RUNS, redis_db: int = SPINE_DB, smoke: bool = False
) -> list[str]:
    raise_fd_limit()
    figures = [Figures() for _ in SETUPS]
    warm_up = min(WARM_UP_RUNS, runs)
    async with contextlib.AsyncExitStack() as stack:
        setups = [
            await stack.enter_async_context(citadel_workers(count, shared, redis_db))
            for _, count, shared in SETUPS
        ]
        for workers in setups:  # warm-up: imports, pools
            _check(await watched_load(workers, workers[-1], runs=warm_up))
        for repetition in range(repetitions):
            for workers, found in zip(setups, figures, strict=True):
                found.loads.append(_check(await watched_load(workers, workers[-1], runs=runs)))
            print(f"scale-out: repetition {repetition + 1}/{repetitions}", file=sys.stderr)
    return summary(figures, runs, smoke)


def main(
    repetitions: int = REPETITIONS, runs: int = RUNS, redis_db: int = SPINE_DB, smoke: bool = False
) -> list[str]:
    return asyncio.run(_main(repetitions, runs, redis_db, smoke))


def spine_arguments(doc: str | None, repetitions: int, smoke_runs: int) -> argparse.Namespace:
    """The command line of a benchmark on workers sharing one Redis database."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n", 1)[0])
    parser.add_argument("--repetitions", type=int, default=repetitions)
    parser.add_argument(
        "--redis-db",
        type=int,
        default=SPINE_DB,
        help=f"emptied before and after (default {SPINE_DB}: CITADEL_TEST_REDIS_DB, else 3)",
    )
    parser.add_argument("--smoke", action="store_true", help=f"{smoke_runs} runs: does it work?")
    return parser.parse_args()


def cli() -> None:
    args = spine_arguments(__doc__, REPETITIONS, SMOKE_RUNS)
    if args.smoke:
        lines = main(1, SMOKE_RUNS, args.redis_db, smoke=True)
    else:
        lines = main(args.repetitions, RUNS, args.redis_db)
    print("\n".join(lines))


if __name__ == "__main__":
    cli()
