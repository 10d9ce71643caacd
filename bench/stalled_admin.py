"""Does an administrator who stops reading the admin feed slow the runs?

Two workers on Redis (the machine's Postgres, a fresh schema); :data:`RUNS` runs at once
(``deltas=100 interval=0.05 stamp``: 5 s each, every delta stamped with the system-wide
monotonic clock when the scripted model produces it), dealt over both workers. Measured: each
delta's delay from produced to received by its run's client. Three set-ups alternate on the
same workers: no admin; an admin reading the second worker's ``GET /admin/events`` as fast as
it can; an admin connected there who reads nothing after the ``connected`` item (a 4 KB
receive window: the worker soon cannot send it the feed). Each figure is the median over the
repetitions (min-max).

A reader costs its worker the feed it is sent, fast or not; the claim is that being slow costs
the runs nothing more. The goal: p99 delay with the admin who reads nothing at most
:data:`GOAL_RATIO` times the p99 with the one who keeps up. tests/e2e/test_faults.py checks,
without timing, that a reader who reads nothing holds no run back; this measures it.

A run that fails or misses a delta stops the benchmark with an error (exit 1). ``--smoke``: 20
runs of 1 s, one repetition; the goal is not evaluated. ``--redis-db``: the Redis database of
the workers (default: the tests' spine database), emptied before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import sys
from collections.abc import AsyncIterator

import orjson

from bench.client import BodyReader, frame_data, post_sse, raise_fd_limit, run_input
from bench.servers import ServerProcess
from bench.verdicts import SMOKE
from bench.workers import citadel_workers, spine_arguments
from tests.support.redis import SPINE_DB

RUNS = 300
DELTAS = 100
PROMPT = f"deltas={DELTAS} interval=0.05 stamp"
REPETITIONS = 5
GOAL_RATIO = 1.25
WARM_UP_RUNS = 50
SMOKE_RUNS = 20
SMOKE_DELTAS = 20
SETUPS = ("no admin", "an admin reading the feed", "an admin who reads nothing")


@contextlib.asynccontextmanager
async def fast_reader(worker: ServerProcess) -> AsyncIterator[None]:
    """An admin reading ``worker``'s feed as fast as it comes."""
    connected = asyncio.Event()
    reading = asyncio.create_task(
        post_sse(
            worker.port,
            b"",
            path="/admin/events",
            method="GET",
            on_frames=lambda frames, _: connected.set(),
        )
    )
    try:
        async with asyncio.timeout(30):
            await connected.wait()
        yield
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading


@contextlib.asynccontextmanager
async def stalled_reader(worker: ServerProcess) -> AsyncIterator[None]:
    """An admin connected to ``worker``'s feed that reads nothing after ``connected``."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", worker.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(b"GET /admin/events HTTP/1.1\r\nHost: citadel\r\n\r\n")
        parser = BodyReader()
        async with asyncio.timeout(30):
            while not any(frame_data(frame) for frame in parser.feed(await reader.read(4096))):
                pass
        yield
    finally:
        writer.close()


async def delays_ms(
    workers: list[ServerProcess], runs: int = RUNS, deltas: int = DELTAS
) -> list[float]:
    """Every delta's delay, produced to received by its run's client, of ``runs`` runs of
    ``deltas`` deltas at once dealt round-robin over ``workers``."""
    delays: list[float] = []
    finished: list[bool] = []
    prompt = f"deltas={deltas} interval=0.05 stamp"

    def on_frames(frames: list[bytes], arrived: int) -> None:
        for frame in frames:
            data = frame_data(frame)
            if data:
                event = orjson.loads(data)
                if event["type"] == "TEXT_MESSAGE_CONTENT":
                    delays.append((arrived - int(event["delta"])) / 1e6)
                elif event["type"] == "RUN_FINISHED":
                    finished.append(True)

    streams = await asyncio.gather(
        *(
            post_sse(workers[n % len(workers)].port, run_input(prompt), on_frames=on_frames)
            for n in range(runs)
        )
    )
    failed = [stream.status for stream in streams if stream.status != 200]
    if failed or len(delays) != runs * deltas or len(finished) != runs:
        raise RuntimeError(
            f"{len(failed)} runs failed, {len(finished)} of {runs} finished; "
            f"{len(delays)} of {runs * deltas} deltas"
        )
    return delays


def _percentile(values: list[float], fraction: float) -> float:
    return statistics.quantiles(values, n=100)[int(fraction * 100) - 1]


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ms ({min(values):.1f}-{max(values):.1f})"


def summary(
    p50: list[list[float]],
    p99: list[list[float]],
    runs: int = RUNS,
    prompt: str = PROMPT,
    smoke: bool = False,
) -> list[str]:
    ratio = statistics.median(p99[2]) / statistics.median(p99[1])
    lines = [
        f"{runs} runs at once (`{prompt}`) on two workers on Redis; {len(p50[0])} repetitions "
        "alternating between the set-ups, median (min-max) of each figure.",
        "",
        "| set-up | run delivery delay p50 | run delivery delay p99 |",
        "|---|---|---|",
    ]
    for name, low, high in zip(SETUPS, p50, p99, strict=True):
        lines.append(f"| {name} | {_spread(low)} | {_spread(high)} |")
    verdict = SMOKE if smoke else "met" if ratio <= GOAL_RATIO else "NOT met"
    lines += [
        "",
        f"p99 with an admin who reads nothing / with one who keeps up: **{ratio:.2f}x** "
        f"(goal <= {GOAL_RATIO}x: {verdict}).",
    ]
    return lines


async def _main(
    repetitions: int,
    runs: int = RUNS,
    deltas: int = DELTAS,
    redis_db: int = SPINE_DB,
    smoke: bool = False,
) -> list[str]:
    raise_fd_limit()
    p50: list[list[float]] = [[] for _ in SETUPS]
    p99: list[list[float]] = [[] for _ in SETUPS]
    admins = (None, fast_reader, stalled_reader)
    async with citadel_workers(2, shared=True, redis_db=redis_db) as workers:
        await delays_ms(workers, min(WARM_UP_RUNS, runs), deltas)  # warm-up: imports, pools
        for repetition in range(repetitions):
            for index, admin in enumerate(admins):
                async with contextlib.AsyncExitStack() as stack:
                    if admin is not None:
                        await stack.enter_async_context(admin(workers[-1]))
                    found = await delays_ms(workers, runs, deltas)
                p50[index].append(statistics.median(found))
                p99[index].append(_percentile(found, 0.99))
            print(f"stalled admin: repetition {repetition + 1}/{repetitions}", file=sys.stderr)
    return summary(p50, p99, runs, f"deltas={deltas} interval=0.05 stamp", smoke)


def main(
    repetitions: int = REPETITIONS,
    runs: int = RUNS,
    deltas: int = DELTAS,
    redis_db: int = SPINE_DB,
    smoke: bool = False,
) -> list[str]:
    return asyncio.run(_main(repetitions, runs, deltas, redis_db, smoke))


def cli() -> None:
    args = spine_arguments(__doc__, REPETITIONS, SMOKE_RUNS)
    if args.smoke:
        lines = main(1, SMOKE_RUNS, SMOKE_DELTAS, args.redis_db, smoke=True)
    else:
        lines = main(args.repetitions, RUNS, DELTAS, args.redis_db)
    print("\n".join(lines))


if __name__ == "__main__":
    cli()
