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

A run counts as failed unless it answered 200 and streamed every delta and RUN_FINISHED; the
goal lines say FAIL if any run failed or a figure is missing (bench/verdicts.py).
``--smoke``: 20 runs of 1.5 s, one load, 20 idle streams; goals not evaluated.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import psutil

from bench.client import Stream, frame_data, new_loop, post_sse, raise_fd_limit, run_input
from bench.servers import running
from bench.verdicts import figure, finish, verdict

RUNS = 1_000
# (deltas per run, seconds between deltas): 20 deltas/s per run is the goal's load; runs last
# 10 s so that all 1,000 are open at once for a while. The second load shows the headroom.
LOADS = ((200, 0.05), (50, 0.2))
GOAL_P99_MS = 100.0
GOAL_IDLE_KB = 100.0
OPEN_TIMEOUT = 60.0  # seconds for all idle streams to open
SETTLE_NS = 1_000_000_000  # steady state starts this long after the last run started
# --smoke: a handful of runs long enough for a steady state after a shorter settling time.
SMOKE_RUNS = 20
SMOKE_LOADS = ((30, 0.05),)
SMOKE_SETTLE_NS = 250_000_000


@dataclass
class ClientShare:
    """What one client process saw (times are CLOCK_MONOTONIC ns)."""

    delays: list[int] = field(default_factory=list)  # ns, one per delta
    arrivals: list[int] = field(default_factory=list)
    started: list[int] = field(default_factory=list)  # RUN_STARTED arrival, per run
    finished: list[int] = field(default_factory=list)  # end of body, per run that started
    lengths: list[float] = field(default_factory=list)  # seconds from POST to end, per run
    failed: int = 0  # runs that did not answer 200 with every delta and RUN_FINISHED
    reasons: Counter[str] = field(default_factory=Counter)  # why they failed
    cpu: float = 0.0  # client CPU seconds


async def _timed_runs(port: int, runs: int, prompt: str, deltas: int, share: ClientShare) -> None:
    async def one() -> None:
        received, started, ended = 0, False, ""

        def on_frames(frames: list[bytes], arrived: int) -> None:
            nonlocal received, started, ended
            for frame in frames:
                data = frame_data(frame)
                if not data:
                    continue  # a keep-alive
                event = orjson.loads(data)
                if event["type"] == "TEXT_MESSAGE_CONTENT":
                    received += 1
                    share.arrivals.append(arrived)
                    share.delays.append(arrived - int(event["delta"]))
                elif event["type"] == "RUN_STARTED":
                    share.started.append(arrived)
                    started = True
                elif event["type"] == "RUN_FINISHED":
                    ended = "RUN_FINISHED"
                elif event["type"] == "RUN_ERROR":
                    ended = f"RUN_ERROR {event.get('code')}"

        try:
            stream = await post_sse(port, run_input(prompt), on_frames=on_frames)
            share.lengths.append(stream.elapsed)
            problem = run_problem(stream.status, received, deltas, ended)
        except (OSError, EOFError, ValueError) as error:  # refused, cut short, not JSON
            problem = type(error).__name__
        if problem:
            share.failed += 1
            share.reasons[problem] += 1
        if started:  # a run refused before it started was never open
            share.finished.append(time.monotonic_ns())

    await asyncio.gather(*(one() for _ in range(runs)))


def run_problem(status: int, received: int, deltas: int, ended: str) -> str:
    """Why a stamped run did not complete (empty: it did)."""
    if status != 200:
        return f"HTTP {status}"
    if ended != "RUN_FINISHED":
        return ended or "no RUN_FINISHED"
    if received != deltas:
        return f"{received} of {deltas} deltas"
    return ""


def client_process(port: int, runs: int, prompt: str, deltas: int) -> ClientShare:
    """One client process: ``runs`` concurrent streams on its own event loop."""
    raise_fd_limit()
    share = ClientShare()
    cpu = time.process_time()
    loop = new_loop()
    try:
        loop.run_until_complete(_timed_runs(port, runs, prompt, deltas, share))
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
    all_ms: tuple[float, float, float] | None  # p50, p99, max over all deltas
    steady_ms: tuple[float, float, float] | None  # the same while all runs were open
    server_cpu: float  # server CPU seconds / wall seconds (1.0 = one core busy)
    client_cpu: float  # all client processes' CPU seconds / wall seconds
    gc_tuning: str | None = None  # the server's GC experiment, if any
    reasons: dict[str, int] = field(default_factory=dict)  # why runs failed, with counts

    @property
    def offered_rate(self) -> float:
        return self.runs / self.interval

    @property
    def label(self) -> str:
        return f"{self.server}, {self.runs:,} runs x {self.deltas} deltas per {self.interval:g} s"

    @property
    def steady_p99(self) -> float | None:
        return None if self.steady_ms is None else self.steady_ms[1]

    def broken(self) -> list[str]:
        """Why this measure is broken (empty: every run completed, every figure exists)."""
        found = []
        if self.failed:
            why = ", ".join(f"{count} x {reason}" for reason, count in self.reasons.items())
            found.append(f"{self.label}: {self.failed:,} of {self.runs:,} runs failed ({why})")
        if self.delivered != self.runs * self.deltas:
            found.append(
                f"{self.label}: {self.delivered:,} of {self.runs * self.deltas:,} deltas received"
            )
        if self.steady_ms is None or self.steady_rate is None:
            found.append(
                f"{self.label}: no steady state (all runs open at once and settled before the "
                f"first ended; peak open: {self.peak_open:,})"
            )
        return found


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
    settle_ns: int = SETTLE_NS,
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
        futures = [pool.submit(client_process, process.port, n, prompt, deltas) for n in shares_of]
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
        begin, end = started[-1] + settle_ns, finished[0]
        window = [d for a, d in zip(arrivals, delays, strict=True) if begin <= a - d and a < end]
        steady = _percentiles(window) if window else None
        steady_rate = len(window) / ((end - begin) / 1e9) if end > begin else None
    lengths = [length for s in shares for length in s.lengths] or [float("nan")]
    reasons: Counter[str] = Counter()
    for share in shares:
        reasons.update(share.reasons)
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
        all_ms=_percentiles(delays) if delays else None,
        steady_ms=steady,
        server_cpu=server_cpu,
        client_cpu=sum(s.cpu for s in shares) / wall,
        gc_tuning=gc_tuning,
        reasons=dict(reasons.most_common()),
    )


# Memory per idle run -------------------------------------------------------------------------


@dataclass
class MemoryResult:
    server: str
    runs: int
    rss_before: int | None  # None: the measure broke (error says why)
    rss_after: int | None
    error: str | None = None

    @property
    def per_run_kb(self) -> float | None:
        if self.rss_before is None or self.rss_after is None:
            return None
        return (self.rss_after - self.rss_before) / self.runs / 1024


async def _idle_rss(port: int, pid: int, runs: int) -> tuple[int, int]:
    process = psutil.Process(pid)
    for _ in range(20):  # warm-up: first-request allocations are not per-run memory
        warm = await post_sse(port, run_input("deltas=10"))
        if warm.status != 200:
            raise RuntimeError(f"a warm-up run answered HTTP {warm.status}")
    await asyncio.sleep(0.5)
    before = process.memory_info().rss
    opened: set[int] = set()  # streams that sent their first frame
    all_open = asyncio.Event()

    def on_open(index: int) -> Callable[[list[bytes], int], None]:
        def on_frames(frames: list[bytes], arrived: int) -> None:
            opened.add(index)
            if len(opened) == runs:
                all_open.set()

        return on_frames

    tasks = [
        asyncio.create_task(post_sse(port, run_input("idle"), on_frames=on_open(index)))
        for index in range(runs)
    ]
    waiter = asyncio.create_task(all_open.wait())
    try:
        # Until every stream is open, or one ends (an idle stream never ends by itself).
        await asyncio.wait(
            [waiter, *tasks], timeout=OPEN_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if not all_open.is_set():
            await asyncio.sleep(0.5)  # the others refused at the same time end too
            raise RuntimeError(
                f"{len(opened):,} of {runs:,} idle streams open"
                + (f"; ended: {_endings(tasks)}" if any(t.done() for t in tasks) else "")
            )
        await asyncio.sleep(1.0)
        if any(task.done() for task in tasks):
            raise RuntimeError(f"idle streams ended: {_endings(tasks)}")
        return before, process.memory_info().rss
    finally:
        for task in [waiter, *tasks]:
            task.cancel()
        await asyncio.gather(waiter, *tasks, return_exceptions=True)


def _endings(tasks: list[asyncio.Task[Stream]]) -> str:
    """How the streams that ended did, with counts: ``12 x HTTP 429``."""
    endings = Counter(
        f"HTTP {task.result().status}"
        if task.exception() is None
        else type(task.exception()).__name__
        for task in tasks
        if task.done() and not task.cancelled()
    )
    return ", ".join(f"{count} x {ending}" for ending, count in endings.items())


def measure_idle_memory(server: str = "citadel", runs: int = RUNS) -> MemoryResult:
    """RSS before and with ``runs`` idle streams; a measure that breaks says why instead of
    stopping the benchmark."""
    raise_fd_limit()
    loop = new_loop()
    try:
        with running(server) as process:
            before, after = loop.run_until_complete(_idle_rss(process.port, process.pid, runs))
    except (OSError, RuntimeError, TimeoutError) as error:
        return MemoryResult(server, runs, None, None, f"{type(error).__name__}: {error}")
    finally:
        loop.close()
    return MemoryResult(server, runs, before, after)


# Report ----------------------------------------------------------------------------------------


@dataclass
class ConcurrencyResult:
    delays: list[DelayResult]  # the first is citadel under the load the goal is about
    memory: list[MemoryResult]
    runs: int = RUNS
    smoke: bool = False
    settle_ns: int = SETTLE_NS

    @property
    def goal_p99(self) -> float | None:
        """The goal's figure: citadel's steady p99 under the first load (None: not measured)."""
        return self.delays[0].steady_p99 if self.delays else None

    @property
    def idle_kb(self) -> float | None:
        """The goal's figure: KB per idle citadel run (None: not measured)."""
        citadel = [m for m in self.memory if m.server == "citadel"]
        return citadel[0].per_run_kb if citadel else None

    def broken(self) -> list[str]:
        """Why this benchmark is broken (empty: it is not)."""
        found = [problem for delay in self.delays for problem in delay.broken()]
        found += [f"idle memory, {m.server}: {m.error}" for m in self.memory if m.error]
        return found

    def delay_broken(self) -> bool:
        return bool(not self.delays or self.delays[0].broken())

    def memory_broken(self) -> bool:
        return any(m.error for m in self.memory if m.server == "citadel")

    def summary_rows(self) -> list[str]:
        """The summary's rows: the delay of each load and server, the idle memory."""
        lines = []
        for index, delay in enumerate(self.delays):
            row = (
                f"| p99 delivery delay (steady), {delay.server}, {delay.runs:,} runs x 1 delta "
                f"per {delay.interval * 1000:g} ms | {figure(delay.steady_p99, '.1f', ' ms')} "
            )
            if index == 0:
                met = None if self.goal_p99 is None else self.goal_p99 < GOAL_P99_MS
                row += f"| < {GOAL_P99_MS:g} ms | {self._verdict(met, self.delay_broken())} |"
            elif delay.broken():
                row += "| completes | FAIL |"
            else:
                row += "| | |"
            lines.append(row)
        if self.memory:
            kb = self.idle_kb
            met = None if kb is None else kb < GOAL_IDLE_KB
            lines.append(
                f"| memory per idle run | {figure(kb, '.1f', ' KB')} | < {GOAL_IDLE_KB:g} KB "
                f"| {self._verdict(met, self.memory_broken())} |"
            )
        return lines

    def _verdict(self, met: bool | None, broken: bool) -> str:
        return verdict(met, broken=broken, smoke=self.smoke)


def run(
    client_procs: int = 1,
    loads: tuple[tuple[int, float], ...] = LOADS,
    gc_tuning: str | None = None,
    memory: bool = True,
    runs: int = RUNS,
    settle_ns: int = SETTLE_NS,
    smoke: bool = False,
) -> ConcurrencyResult:
    servers = ("citadel", "bare")
    idle = [measure_idle_memory(server, runs) for server in servers] if memory else []
    delays = [
        measure_delay(server, runs, deltas, interval, client_procs, gc_tuning, settle_ns)
        for server in servers
        for deltas, interval in loads
    ]
    return ConcurrencyResult(delays, idle, runs, smoke, settle_ns)


def smoke(memory: bool = True) -> ConcurrencyResult:
    """A few runs of each kind: does the benchmark work (no goal evaluated)?"""
    return run(
        loads=SMOKE_LOADS,
        memory=memory,
        runs=SMOKE_RUNS,
        settle_ns=SMOKE_SETTLE_NS,
        smoke=True,
    )


def _ms(values: tuple[float, float, float] | None) -> str:
    return "n/a" if values is None else " / ".join(f"{v:.1f}" for v in values)


def report(result: ConcurrencyResult) -> str:
    delays = result.delays
    p99 = result.goal_p99

    def row(label: str, cells: list[str], goal: str = "", verdict: str = "") -> str:
        return f"| {label} | {' | '.join(cells)} | {goal} | {verdict} |"

    lines = [
        f"Delivery delay: {result.runs:,} concurrent runs, each a stream of stamped deltas; "
        f"{delays[0].client_procs} client process(es). Delay = client receipt - model "
        f"production (CLOCK_MONOTONIC); steady = deltas produced from {result.settle_ns / 1e9:g} s "
        "after the last run started until the first run ended (all runs open)."
        + (f" Server GC tuning: {delays[0].gc_tuning}." if delays[0].gc_tuning else "")
        + (" Smoke run: goals not evaluated." if result.smoke else ""),
        "",
        "| measure | "
        + " | ".join(f"{d.server}: {d.deltas} x 1 per {d.interval * 1000:g} ms" for d in delays)
        + " | goal | |",
        "|---|" + "---:|" * len(delays) + "---:|---|",
        row(
            "delay p50 / p99 / max, steady, ms",
            [_ms(d.steady_ms) for d in delays],
            f"citadel p99 < {GOAL_P99_MS:g} (first)",
            result._verdict(None if p99 is None else p99 < GOAL_P99_MS, result.delay_broken()),
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
        f"Memory: server RSS with 0 runs, then with {result.runs:,} open idle streams.",
        "",
        "| server | RSS before, MB | RSS with idle runs, MB | KB per idle run | goal | |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for m in result.memory:
        goal, shown = "", ""
        if m.server == "citadel":
            kb = m.per_run_kb
            goal = f"< {GOAL_IDLE_KB:g}"
            shown = result._verdict(None if kb is None else kb < GOAL_IDLE_KB, bool(m.error))
        before = figure(None if m.rss_before is None else m.rss_before / 2**20, ".1f")
        after = figure(None if m.rss_after is None else m.rss_after / 2**20, ".1f")
        per_run = figure(m.per_run_kb, ".1f")
        lines.append(f"| {m.server} | {before} | {after} | {per_run} | {goal} | {shown} |")
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
    parser.add_argument("--runs", type=int, default=RUNS, help=f"concurrent runs (default {RUNS})")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"{SMOKE_RUNS} runs of {SMOKE_LOADS[0][0]} deltas: does it work? (no goals)",
    )
    args = parser.parse_args()
    if args.smoke:
        result = smoke(not args.no_memory)
    else:
        loads = LOADS
        if args.load:
            loads = tuple((int(n), float(i)) for n, i in (load.split(",") for load in args.load))
        result = run(args.client_procs, loads, args.gc_tuning, not args.no_memory, args.runs)
    finish(report(result), result.broken())


if __name__ == "__main__":
    main()
