"""Streamed ``/v1/chat/completions`` through Citadel vs straight from the model server.

A scripted OpenAI-compatible server (``openai_scripted``) plays a ``deltas=N`` answer as fast
as it can; Citadel (``citadel_openai``) is configured with ``CITADEL_LLM=openai`` on that
server. The same client sends the same body to both, side by side, interleaved: the direct
stream is the baseline, so what the table shows is what Citadel's face adds (its backend
client reading the upstream SSE, the face re-encoding each delta as a chunk).

* time to first token: from sending the request to receiving the first content chunk, on a
  one-token answer (in a burst, three busy processes on a small machine would measure the
  scheduler);
* time per token: on a ``DELTAS``-token burst, from the first content chunk to the end of the
  stream, per later token (both servers work at once, so Citadel's figure is the slower
  stage, not a sum);
* Citadel's CPU time per token, from its process' counters.

A warm-up stream that is not a whole OpenAI stream, or a measured one short of its tokens,
breaks the benchmark (exit 1, bench/verdicts.py). ``--smoke``: 200 tokens, one repetition.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field

import orjson
import psutil

from bench.client import Stream, frame_data, new_loop, post_sse
from bench.servers import SCRIPTED_MODEL, running
from bench.verdicts import figure, finish, quotient

DELTAS = 2_000
SMOKE_DELTAS = 200
PATH = "/v1/chat/completions"
TOKEN = b'"content":"tok '
ROUTES = ("direct", "citadel")


@dataclass
class Series:
    route: str
    ttft_ms: list[float] = field(default_factory=list)
    per_token_us: list[float] = field(default_factory=list)

    def median_ttft(self) -> float | None:
        return statistics.median(self.ttft_ms) if self.ttft_ms else None

    def median_per_token(self) -> float | None:
        return statistics.median(self.per_token_us) if self.per_token_us else None


@dataclass
class ChatResult:
    repetitions: int
    series: dict[str, Series]
    citadel_cpu_us: list[float]  # Citadel's CPU time per token, one per repetition
    problems: list[str]
    deltas: int = DELTAS
    smoke: bool = False

    def broken(self) -> list[str]:
        """Why this benchmark is broken: bad streams, repetitions not measured."""
        found = [f"invalid stream {problem}" for problem in self.problems]
        found += [
            f"{s.route}: {len(s.per_token_us)} of {self.repetitions} repetitions measured"
            for s in self.series.values()
            if len(s.per_token_us) != self.repetitions or len(s.ttft_ms) != self.repetitions
        ]
        if len(self.citadel_cpu_us) != self.repetitions:
            found.append("citadel: CPU time per token not measured")
        return found


@dataclass
class _Timed:
    stream: Stream
    ttft_ms: float
    per_token_us: float
    tokens: int


def _body(deltas: int) -> bytes:
    script = {"role": "user", "content": f"deltas={deltas}"}
    return orjson.dumps({"model": SCRIPTED_MODEL, "messages": [script], "stream": True})


async def _timed(port: int, deltas: int, *, keep: bool = False) -> _Timed:
    arrivals: list[int] = []  # monotonic ns at which each token arrived
    last: list[int] = []  # ... and the last frame

    def on_frames(frames: list[bytes], arrived: int) -> None:
        arrivals.extend([arrived] * sum(1 for frame in frames if TOKEN in frame))
        last[:] = [arrived]

    sent = time.monotonic_ns()
    stream = await post_sse(port, _body(deltas), path=PATH, keep=keep, on_frames=on_frames)
    if not arrivals:
        raise RuntimeError(f"port {port}: HTTP {stream.status}, no token")
    return _Timed(
        stream,
        (arrivals[0] - sent) / 1e6,
        (last[0] - arrivals[0]) / max(len(arrivals) - 1, 1) / 1e3,
        len(arrivals),
    )


def _check(route: str, timed: _Timed, deltas: int) -> list[str]:
    """Why a warm-up stream is not a whole OpenAI stream of ``deltas`` tokens (empty: it is)."""
    frames = [frame_data(frame) for frame in timed.stream.kept]
    problems = []
    if timed.stream.status != 200 or timed.tokens != deltas:
        problems.append(f"{route}: HTTP {timed.stream.status}, {timed.tokens} tokens")
    if not frames or frames[-1] != b"[DONE]":
        problems.append(f"{route}: the stream does not end with [DONE]")
    chunks = [orjson.loads(data) for data in frames[:-1]]
    if any(chunk.get("object") != "chat.completion.chunk" for chunk in chunks):
        problems.append(f"{route}: a frame that is not a chat.completion.chunk")
    return problems


def run(repetitions: int = 9, deltas: int = DELTAS, smoke: bool = False) -> ChatResult:
    series = {route: Series(route) for route in ROUTES}
    cpu: list[float] = []
    loop = new_loop()
    try:
        with running("openai_scripted") as upstream:
            url = f"http://127.0.0.1:{upstream.port}/v1"
            with running("citadel_openai", env={"BENCH_LLM_URL": url}) as citadel:
                ports = {"direct": upstream.port, "citadel": citadel.port}
                process = psutil.Process(citadel.pid)
                problems = [
                    problem
                    for route in ROUTES
                    for problem in _check(
                        route,
                        loop.run_until_complete(_timed(ports[route], deltas, keep=True)),
                        deltas,
                    )
                ]
                for _ in range(repetitions):
                    for route in ROUTES:
                        first = loop.run_until_complete(_timed(ports[route], 1))
                        series[route].ttft_ms.append(first.ttft_ms)
                        before = process.cpu_times()
                        timed = loop.run_until_complete(_timed(ports[route], deltas))
                        if timed.stream.status != 200 or timed.tokens != deltas:
                            raise RuntimeError(
                                f"{route}: HTTP {timed.stream.status}, "
                                f"{timed.tokens} tokens of {deltas}"
                            )
                        series[route].per_token_us.append(timed.per_token_us)
                        if route == "citadel":
                            after = process.cpu_times()
                            used = after.user + after.system - before.user - before.system
                            cpu.append(used / deltas * 1e6)
    finally:
        loop.close()
    return ChatResult(repetitions, series, cpu, problems, deltas, smoke)


def smoke() -> ChatResult:
    """One short answer each way: does the benchmark work?"""
    return run(1, SMOKE_DELTAS, smoke=True)


def _spread(values: list[float], spec: str) -> tuple[str, str]:
    return figure(min(values) if values else None, spec), figure(
        max(values) if values else None, spec
    )


def report(result: ChatResult) -> str:
    direct, citadel = result.series["direct"], result.series["citadel"]
    lines = [
        f"Streamed chat completions: time to first token of a one-token answer, time per "
        f"token of a {result.deltas:,}-token burst; {result.repetitions} interleaved repetitions "
        "after a checked warm-up; medians" + (" (smoke run)" if result.smoke else ""),
        "",
        "| route | time to first token | min | max | time per token | min | max |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for series in (direct, citadel):
        ttft_min, ttft_max = _spread(series.ttft_ms, ".2f")
        token_min, token_max = _spread(series.per_token_us, ".1f")
        lines.append(
            f"| {series.route} | {figure(series.median_ttft(), '.2f', ' ms')} | {ttft_min} "
            f"| {ttft_max} | {figure(series.median_per_token(), '.1f', ' us')} "
            f"| {token_min} | {token_max} |"
        )
    ttft = citadel.median_ttft(), direct.median_ttft()
    token = citadel.median_per_token(), direct.median_per_token()
    added_ttft = None if None in ttft else ttft[0] - ttft[1]  # type: ignore[operator]
    added_token = None if None in token else token[0] - token[1]  # type: ignore[operator]
    cpu = statistics.median(result.citadel_cpu_us) if result.citadel_cpu_us else None
    lines += [
        "",
        "| citadel vs direct | added | ratio |",
        "|---|---:|---:|",
        f"| time to first token | {figure(added_ttft, '+.2f', ' ms')} "
        f"| {figure(quotient(*ttft), '.2f', 'x')} |",
        f"| time per token | {figure(added_token, '+.1f', ' us')} "
        f"| {figure(quotient(*token), '.2f', 'x')} |",
        "",
        f"Citadel's CPU time per token: {figure(cpu, '.1f', ' us')} (median).",
    ]
    if result.problems:
        lines += [f"INVALID STREAM {problem}" for problem in result.problems]
    else:
        lines.append("Both warm-up streams are whole OpenAI streams ending with [DONE].")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repetitions", type=int, default=9)
    parser.add_argument("--smoke", action="store_true", help="one short answer: does it work?")
    args = parser.parse_args()
    result = smoke() if args.smoke else run(args.repetitions)
    finish(report(result), result.broken())


if __name__ == "__main__":
    main()
