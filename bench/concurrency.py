"""1,000 concurrent runs against Citadel: delivery delay under load, memory per idle run.

Delay: for each load in ``LOADS`` every run streams ``deltas=D interval=S stamp``; each delta
carries the monotonic time the model produced it, so the client (another process, same
system-wide CLOCK_MONOTONIC) measures produced-to-received delay for every delta. Reported
over all deltas and over the steady state: deltas produced from 1 s after the last
RUN_STARTED until the first run ended, while all runs are open. Server and client CPU are
reported so that a saturated side is visible; the client can be split over several
processes (``--client-procs``).

Memory: server RSS with 0 runs, then with N open ``idle`` runs (streams open, nothing
flowing), difference / N. The same for the bare route, whose idle "run" is an open SSE
response: the share of the ASGI stack itself.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import statistics
import time
from dataclasses import dataclass, field

import psutil

from bench.client import frame_event, new_loop, post_sse, raise_fd_limit, run_input
from bench.servers import running

RUNS = 1_000
# (deltas per run, seconds between deltas): 20 deltas/s per run is the goal's load; runs last
# 10 s so that all 1,000 are open at once for a while. The second load shows the headroom.
LOADS = ((200, 0.05), (50, 0.2))
GOAL_P99_MS = 100.0
GOAL_IDLE_KB = 100.0
OPEN_TIMEOUT = 60.0  # seconds for all idle streams to open
SETTLE_NS = 1_000_000_000  # steady state starts this long after the last run started


@dataclass
class ClientShare:
    """What one client process saw (times are CLOCK_MONOTONIC ns)."""

    delays: list[int] = field(default_factory=list)  # ns, one per delta
    arrivals: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)  # RUN_STARTED arrival, per run
    finished: list[int] = field(default_factory=list)  # end of body, per run
    lengths: list[float] = field(default_factory=list)  # seconds from POST to end, per run
    failed: int = 0
    cpu: float = 0.0  # client CPU seconds


async def _timed_runs(port: int, runs: int, prompt: str, share: ClientShare) -> None:
    def on_frames(frames: list[bytes], arrived: int) -> None:
        for frame in frames:
            event = frame_event(frame)
            if event["type"] == "TEXT_MESSAGE_CONTENT":
                share.arrivals.append(arrived)
                share.delays.append(arrived - int(event["delta"]))
            elif event["type"] == "RUN_STARTED":
                share.started.append(arrived)

    async def one() -> None:
        try:
            stream = await post_sse(port, run_input(prompt), on_frames=on_frames)
            share.lengths.append(stream.elapsed)
            if stream.status != 200:
                share.failed += 1
        except OSError:
            share.failed += 1
        share.finished.append(time.monotonic_ns())

    await asyncio.gather(*(one() for _ in range(runs)))


def client_process(port: int, runs: int, prompt: str) -> ClientShare:
    """One client process: ``runs`` concurrent streams on its own event loop."""
    raise_fd_limit()
    share = ClientShare()
    cpu = time.process_time()
    loop = new_loop()
    try:
        loop.run_until_complete(_timed_runs(port, runs, prompt, share))
    finally:
        loop.close()
    share.cpu = time.process_time() - cpu
    return share


@dataclass
class DelayResult:
    server: str
    runs: int
    deltas: int
    interval: float
    client_procs: int
    wall: float
    delivered: int
    steady_rate: float | None  # deltas/s received while all runs were open
    run_length: tuple[float, float]  # median and longest run, seconds (nominal: deltas*interval)
    failed: int
    peak_open: int  # runs open at once, as the client saw them
    all_ms: tuple[float, float, float]  # p50, p99, max over all deltas
    steady_ms: tuple[float, float, float] | None  # the same while all runs were open
    server_cpu: float  # server CPU seconds / wall seconds (1.0 = one core busy)
    client_cpu: float  # all client processes' CPU seconds / wall seconds
    gc_tuning: str | None = None  # the server's GC experiment, if any

    @property
    def offered_rate(self) -> float:
        return self.runs / self.interval


def _percentiles(delays_ns: list[int]) -> tuple[float, float, float]:
    ordered = sorted(delays_ns)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    return pick(0.50), pick(0.99), ordered[-1] / 1e6


def measure_delay(
    server: str,
    runs: int,
    deltas: int,
    interval: float,
    client_procs: int = 1,
    gc_tuning: str | None = None,
) -> DelayResult:
    prompt = f"deltas={deltas} interval={interval} stamp"
    shares_of = [runs // client_procs + (i < runs % client_procs) for i in range(client_procs)]
    spawn = multiprocessing.get_context("spawn")
    with (
        running(server, gc_tuning=gc_tuning) as process,
        concurrent.futures.ProcessPoolExecutor(client_procs, mp_context=spawn) as pool,
    ):
        pool.submit(time.sleep, 0).result()  # let the workers start before the clock does
        server_process = psutil.Process(process.pid)
        cpu_before, start = sum(server_process.cpu_times()[:2]), time.perf_counter()
        futures = [pool.submit(client_process, process.port, n, prompt) for n in shares_of]
        shares = [future.result() for future in futures]
        wall = time.perf_counter() - start
        server_cpu = (sum(server_process.cpu_times()[:2]) - cpu_before) / wall
    delays = [d for s in shares for d in s.delays]
    arrivals = [a for s in shares for a in s.arrivals]
    started = sorted(t for s in shares for t in s.started)
    finished = sorted(t for s in shares for t in s.finished)
    events = sorted([(t, 1) for t in started] + [(t, -1) for t in finished])
    open_now = peak = 0
    for _, step in events:
        open_now += step
        peak = max(peak, open_now)
    steady, steady_rate = None, None
    if len(started) == runs and started[-1] < finished[0]:
        # Produced once the ramp has settled (arrival - delay = production), received before
        # the first run ended: the 1,000 connections' start-up work is not steady state.
        begin, end = started[-1] + SETTLE_NS, finished[0]
        window = [d for a, d in zip(arrivals, delays, strict=True) if begin <= a - d and a < end]
        steady = _percentiles(window) if window else None
        steady_rate = len(window) / ((end - begin) / 1e9) if end > begin else None
    lengths = [length for s in shares for length in s.lengths] or [float("nan")]
    return DelayResult(
        server=server,
        runs=runs,
        deltas=deltas,
        interval=interval,
        client_procs=client_procs,
        wall=wall,
        delivered=len(delays),
        steady_rate=steady_rate,
        run_length=(statistics.median(lengths), max(lengths)),
        failed=sum(s.failed for s in shares),
        peak_open=peak,
        all_ms=_percentiles(delays) if delays else (float("nan"),) * 3,
        steady_ms=steady,
        server_cpu=server_cpu,
        client_cpu=sum(s.cpu for s in shares) / wall,
        gc_tuning=gc_tuning,
    )


# Memory per idle run -------------------------------------------------------------------------


@dataclass
class MemoryResult:
    server: str
    runs: int
    rss_before: int
    rss_after: int

    @property
    def per_run_kb(self) -> float:
        return (self.rss_after - self.rss_before) / self.runs / 1024


async def _idle_rss(port: int, pid: int, runs: int) -> tuple[int, int]:
    process = psutil.Process(pid)
    for _ in range(20):  # warm-up: first-request allocations are not per-run memory
        await post_sse(port, run_input("deltas=10"))
    await asyncio.sleep(0.5)
    before = process.memory_info().rss
    opened = asyncio.Semaphore(0)

    def on_frames(frames: list[bytes], arrived: int) -> None:
        opened.release()

    tasks = [
        asyncio.create_task(post_sse(port, run_input("idle"), on_frames=on_frames))
        for _ in range(runs)
    ]
    try:
        async with asyncio.timeout(OPEN_TIMEOUT):
            for _ in range(runs):
                await opened.acquire()
        await asyncio.sleep(1.0)
        if any(task.done() for task in tasks):
            raise RuntimeError("an idle stream ended early")
        return before, process.memory_info().rss
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def measure_idle_memory(server: str = "citadel", runs: int = RUNS) -> MemoryResult:
    raise_fd_limit()
    loop = new_loop()
    try:
        with running(server) as process:
            before, after = loop.run_until_complete(_idle_rss(process.port, process.pid, runs))
    finally:
        loop.close()
    return MemoryResult(server, runs, before, after)


# Report ----------------------------------------------------------------------------------------


@dataclass
class ConcurrencyResult:
    delays: list[DelayResult]  # the first is citadel under the load the goal is about
    memory: list[MemoryResult]

    @property
    def goal_p99(self) -> float:
        return (self.delays[0].steady_ms or self.delays[0].all_ms)[1]


def run(
    client_procs: int = 1,
    loads: tuple[tuple[int, float], ...] = LOADS,
    gc_tuning: str | None = None,
    memory: bool = True,
) -> ConcurrencyResult:
    idle = [measure_idle_memory("citadel"), measure_idle_memory("bare")] if memory else []
    delays = [
        measure_delay(server, RUNS, deltas, interval, client_procs, gc_tuning)
        for server in ("citadel", "bare")
        for deltas, interval in loads
    ]
    return ConcurrencyResult(delays, idle)


def _ms(values: tuple[float, float, float] | None) -> str:
    return "n/a" if values is None else " / ".join(f"{v:.1f}" for v in values)


def report(result: ConcurrencyResult) -> str:
    delays = result.delays
    p99 = result.goal_p99

    def row(label: str, cells: list[str], goal: str = "", verdict: str = "") -> str:
        return f"| {label} | {' | '.join(cells)} | {goal} | {verdict} |"

    lines = [
        f"Delivery delay: {RUNS:,} concurrent runs, each a stream of stamped deltas; "
        f"{delays[0].client_procs} client process(es). Delay = client receipt - model "
        "production (CLOCK_MONOTONIC); steady = deltas produced from 1 s after the last run "
        "started until the first run ended (all runs open)."
        + (f" Server GC tuning: {delays[0].gc_tuning}." if delays[0].gc_tuning else ""),
        "",
        "| measure | "
        + " | ".join(f"{d.server}: {d.deltas} x 1 per {d.interval * 1000:g} ms" for d in delays)
        + " | goal | |",
        "|---|" + "---:|" * len(delays) + "---:|---|",
        row(
            "delay p50 / p99 / max, steady, ms",
            [_ms(d.steady_ms) for d in delays],
            f"citadel p99 < {GOAL_P99_MS:g} (first)",
            "PASS" if p99 < GOAL_P99_MS else "FAIL",
        ),
        row("delay p50 / p99 / max, all deltas, ms", [_ms(d.all_ms) for d in delays]),
        row("deltas received / sent", [f"{d.delivered:,} / {d.runs * d.deltas:,}" for d in delays]),
        row("deltas/s offered", [f"{d.offered_rate:,.0f}" for d in delays]),
        row(
            "deltas/s received, steady",
            ["n/a" if d.steady_rate is None else f"{d.steady_rate:,.0f}" for d in delays],
        ),
        row(
            "run length median / max, s (nominal)",
            [
                f"{d.run_length[0]:.1f} / {d.run_length[1]:.1f} ({d.deltas * d.interval:g})"
                for d in delays
            ],
        ),
        row("runs open at once (peak) / failed", [f"{d.peak_open:,} / {d.failed}" for d in delays]),
        row("wall time, s", [f"{d.wall:.1f}" for d in delays]),
        row(
            "server CPU / client CPU (1.0 = one core)",
            [f"{d.server_cpu:.2f} / {d.client_cpu:.2f}" for d in delays],
        ),
    ]
    if not result.memory:
        return "\n".join(lines)
    lines += [
        "",
        f"Memory: server RSS with 0 runs, then with {RUNS:,} open idle streams.",
        "",
        "| server | RSS before, MB | RSS with idle runs, MB | KB per idle run | goal | |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for m in result.memory:
        goal, verdict = "", ""
        if m.server == "citadel":
            goal = f"< {GOAL_IDLE_KB:g}"
            verdict = "PASS" if m.per_run_kb < GOAL_IDLE_KB else "FAIL"
        lines.append(
            f"| {m.server} | {m.rss_before / 2**20:.1f} | {m.rss_after / 2**20:.1f} "
            f"| {m.per_run_kb:.1f} | {goal} | {verdict} |"
        )
    lines.append("The bare route's idle run is an open SSE response: the ASGI stack's share.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument("--gc-tuning", metavar="T0,T1,T2", help="see bench.servers (experiment)")
    parser.add_argument("--no-memory", action="store_true", help="skip the idle-memory part")
    parser.add_argument(
        "--load",
        action="append",
        metavar="DELTAS,INTERVAL",
        help=f"deltas per run and seconds between them (repeatable; default {LOADS})",
    )
    args = parser.parse_args()
    loads = LOADS
    if args.load:
        loads = tuple((int(n), float(i)) for n, i in (load.split(",") for load in args.load))
    print(report(run(args.client_procs, loads, args.gc_tuning, not args.no_memory)))


if __name__ == "__main__":
    main()
