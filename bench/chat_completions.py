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

DELTAS = 2_000
PATH = "/v1/chat/completions"
TOKEN = b'"content":"tok '
ROUTES = ("direct", "citadel")


@dataclass
class Series:
    route: str
    ttft_ms: list[float] = field(default_factory=list)
    per_token_us: list[float] = field(default_factory=list)

    def median_ttft(self) -> float:
        return statistics.median(self.ttft_ms)

    def median_per_token(self) -> float:
        return statistics.median(self.per_token_us)


@dataclass
class ChatResult:
    repetitions: int
    series: dict[str, Series]
    citadel_cpu_us: list[float]  # Citadel's CPU time per token, one per repetition
    problems: list[str]


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


def _check(route: str, timed: _Timed) -> list[str]:
    """Why a warm-up stream is not a whole OpenAI stream of DELTAS tokens (empty: it is)."""
    frames = [frame_data(frame) for frame in timed.stream.kept]
    problems = []
    if timed.stream.status != 200 or timed.tokens != DELTAS:
        problems.append(f"{route}: HTTP {timed.stream.status}, {timed.tokens} tokens")
    if not frames or frames[-1] != b"[DONE]":
        problems.append(f"{route}: the stream does not end with [DONE]")
    chunks = [orjson.loads(data) for data in frames[:-1]]
    if any(chunk.get("object") != "chat.completion.chunk" for chunk in chunks):
        problems.append(f"{route}: a frame that is not a chat.completion.chunk")
    return problems


def run(repetitions: int = 9) -> ChatResult:
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
                        route, loop.run_until_complete(_timed(ports[route], DELTAS, keep=True))
                    )
                ]
                for _ in range(repetitions):
                    for route in ROUTES:
                        first = loop.run_until_complete(_timed(ports[route], 1))
                        series[route].ttft_ms.append(first.ttft_ms)
                        before = process.cpu_times()
                        timed = loop.run_until_complete(_timed(ports[route], DELTAS))
                        if timed.tokens != DELTAS:
                            raise RuntimeError(f"{route}: {timed.tokens} tokens of {DELTAS}")
                        series[route].per_token_us.append(timed.per_token_us)
                        if route == "citadel":
                            after = process.cpu_times()
                            used = after.user + after.system - before.user - before.system
                            cpu.append(used / DELTAS * 1e6)
    finally:
        loop.close()
    return ChatResult(repetitions, series, cpu, problems)


def report(result: ChatResult) -> str:
    direct, citadel = result.series["direct"], result.series["citadel"]
    lines = [
        f"Streamed chat completions: time to first token of a one-token answer, time per "
        f"token of a {DELTAS:,}-token burst; {result.repetitions} interleaved repetitions "
        "after a checked warm-up; medians",
        "",
        "| route | time to first token | min | max | time per token | min | max |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for series in (direct, citadel):
        lines.append(
            f"| {series.route} | {series.median_ttft():.2f} ms | {min(series.ttft_ms):.2f} "
            f"| {max(series.ttft_ms):.2f} | {series.median_per_token():.1f} us "
            f"| {min(series.per_token_us):.1f} | {max(series.per_token_us):.1f} |"
        )
    overhead_ttft = citadel.median_ttft() - direct.median_ttft()
    overhead_token = citadel.median_per_token() - direct.median_per_token()
    lines += [
        "",
        "| citadel vs direct | added | ratio |",
        "|---|---:|---:|",
        f"| time to first token | {overhead_ttft:+.2f} ms "
        f"| {citadel.median_ttft() / direct.median_ttft():.2f}x |",
        f"| time per token | {overhead_token:+.1f} us "
        f"| {citadel.median_per_token() / direct.median_per_token():.2f}x |",
        "",
        f"Citadel's CPU time per token: {statistics.median(result.citadel_cpu_us):.1f} us "
        "(median).",
    ]
    if result.problems:
        lines += [f"INVALID STREAM {problem}" for problem in result.problems]
    else:
        lines.append("Both warm-up streams are whole OpenAI streams ending with [DONE].")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repetitions", type=int, default=9)
    print(report(run(parser.parse_args().repetitions)))


if __name__ == "__main__":
    main()
