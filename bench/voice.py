"""End of speech → first agent audio through Citadel's ``GET /voice/ws``, next to the same
pipeline in a bare livekit-agents ``AgentSession``: ``python -m bench.voice``.

Spoken questions are made with espeak-ng at 16 kHz (``EspeakTTS.speak``: PyAV resampling, the
same samples every run; LiveKit's resampler never runs) and trimmed to their audible samples.
Each is said as a microphone would say it: 20 ms frames in real time (each sent once its last
sample has been "spoken"), 0.5 s of silence, the question, then silence until the answer's
first audio arrives and on until the answer has been played out.

* **citadel**: a real server in a subprocess (``bench.servers`` ``citadel_voice``: the
  in-memory store, retrieval off, a model that answers every turn at once with one short
  sentence, the offline speech stack), this process as the browser on ``/voice/ws``;
* **baseline**: livekit-agents' ``AgentSession`` in this process with the same VAD (silero,
  the same silence), STT (``voice.speech.whisper.WhisperSTT``), TTS (``EspeakTTS``) and turn
  handling as voice/session.py, an instant ``llm.LLM`` answering the same sentence, a custom
  ``io.AudioInput`` given the same frames at the same pace and a collecting
  ``io.AudioOutput`` (modelled on livekit-agents' ``cli/tcp_console.py``; livekit.md §4.2;
  bench/voice_baseline.py).

Both are measured alike, on the client's side (bench/voice_user.py): **end of speech** is the
moment the frame holding the question's last audible sample was sent (each question is padded
in front so that it ends on a frame's last sample); **first audio** is the arrival of the
answer's first PCM frame (citadel: the first binary frame after ``audio.start``; baseline: the
first frame the output captures). The two alternate question by question, after a warm-up
question each.
Then ``sessions`` sockets at once, each asking its questions in real time (starts staggered):
their latencies, and the server's memory per open session (its RSS with them all open, after
their answers, minus its RSS with none, after the models were loaded; each read after a
full garbage collection and a trim of the C heap, ``POST /bench/gc``).

Where the time goes: the medians of the server's ``metrics`` frames (livekit-agents' own
figures; the baseline's are the same figures from its chat messages) and Whisper's time per
turn (``WhisperSTT.last_decode``; the server's from ``GET /bench/decode``). Goals: Citadel
adds at most 50 ms to the baseline at p50; its p50 is under 1 s. A question that gets no
answer, or two, or an answer before it ended, an error frame or a turn without metrics
breaks the benchmark (exit 1, bench/verdicts.py).
``--smoke``: 2 questions, 2 sessions of 1 question, no goal evaluated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import re
import sys
import time
from dataclasses import dataclass

import httpx
import orjson
import psutil
from websockets.asyncio.client import ClientConnection, connect

from bench.quiet import cpu_seconds, other_load
from bench.scripted import SPOKEN_ANSWER
from bench.servers import running
from bench.verdicts import figure, finish, p50, p95, quotient, verdict
from bench.voice_user import METRICS, RATE, Ear, Microphone, Turn, Utterance, ask, utterances

STAGGER = 0.35  # seconds between the starts of the simultaneous sessions

GOAL_ADDED_MS = 50.0  # Citadel's socket and runtime over the bare pipeline, at p50
GOAL_P50_S = 1.0

# No commas (a pause could end the turn early), no digits; 1.2 to 3 s each once spoken.
QUESTIONS = (
    "What is the refund policy for enterprise customers",
    "How do I reset my password",
    "Which file types can I upload to the knowledge base",
    "Where can I find my invoices",
    "Can I change the email address on my account",
    "How long do you keep deleted messages",
    "Does the assistant work without an internet connection",
    "Who can see the threads in my workspace",
    "How do I add a new member to my team",
    "What happens when my trial ends",
    "Is there a limit on the size of a document",
    "How can I export my conversation history",
)
WARM_UP = "Hello can you hear me"


@dataclass(frozen=True)
class Sizes:
    questions: int  # measured on each route, after a warm-up question each
    sessions: int  # sockets at once
    per_session: int  # questions each of them asks


FULL = Sizes(questions=12, sessions=4, per_session=4)
SMOKE_SIZES = Sizes(questions=2, sessions=2, per_session=1)


# Citadel: the browser's side of /voice/ws ------------------------------------------------------


class CitadelVoice:
    def __init__(self, socket: ClientConnection, base: str) -> None:
        self.socket = socket
        self.base = base  # the server's http:// URL
        self.ear = Ear()
        self.microphone = Microphone(socket.send)
        self._speaking = False
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, base: str) -> CitadelVoice:
        # The first socket waits for the server to load its models.
        url = base.replace("http://", "ws://") + "/voice/ws"
        socket = await connect(url, open_timeout=120, max_size=None)
        client = cls(socket, base)
        await socket.send(orjson.dumps({"type": "session.start", "sampleRate": RATE}).decode())
        first = orjson.loads(await asyncio.wait_for(socket.recv(), 30))
        if first.get("type") != "session.started":
            raise RuntimeError(f"/voice/ws: {first}")
        client._reader = asyncio.create_task(client._read())
        return client

    async def ask(self, question: Utterance, decode: bool = False) -> Turn:
        """``decode``: ask the server how long Whisper took (only one session speaks)."""
        turn = await ask(self.microphone, self.ear, question)
        if decode:
            async with httpx.AsyncClient(base_url=self.base) as client:
                turn.decode = (await client.get("/bench/decode")).json()["seconds"] or None
        return turn

    async def _read(self) -> None:
        ear = self.ear
        async for message in self.socket:
            if isinstance(message, bytes):
                if self._speaking:
                    ear.audio(time.monotonic())
                continue
            data = orjson.loads(message)
            kind = data.get("type")
            if kind == "audio.start":
                self._speaking = True
                ear.audio_started()
            elif kind == "audio.end":
                self._speaking = False
                ear.audio_ended()
            elif kind == "metrics":
                ear.metrics(data)
            elif kind == "transcript" and data.get("role") == "user" and data.get("final"):
                ear.heard(data.get("text", ""))
            elif kind == "error":
                ear.failed(f"error frame {data.get('code')}: {data.get('message')}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.socket.send(orjson.dumps({"type": "session.end"}).decode())
            await asyncio.wait_for(self.socket.wait_closed(), 10)
        await self.socket.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


# The benchmark ---------------------------------------------------------------------------------


def word_errors(said: str, heard: str) -> tuple[int, int]:
    """(word edits from ``said`` to ``heard``, words said), case and punctuation ignored."""
    a, b = (re.findall(r"[a-z']+", text.lower()) for text in (said, heard))
    row = list(range(len(b) + 1))
    for i, word in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, other in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (word != other))
    return row[-1], len(a)


@dataclass
class Route:
    name: str
    turns: list[Turn]

    def add(self, turn: Turn) -> None:
        self.turns.append(turn)
        numbers = {"latency": turn.latency, "stt": turn.metrics.get("stt"), "decode": turn.decode}
        shown = " ".join(f"{k}={v:.3f}" for k, v in numbers.items() if v is not None)
        print(
            f"bench.voice: {self.name}: {shown} heard {turn.transcript!r}"
            + (f" PROBLEM {turn.problem}" if turn.problem else ""),
            file=sys.stderr,
            flush=True,
        )

    def latencies(self) -> list[float]:
        return [t.latency for t in self.turns if t.latency is not None and t.problem is None]

    def metric(self, name: str) -> float | None:
        return p50([v for t in self.turns if (v := t.metrics.get(name)) is not None])

    def decode(self) -> float | None:
        return p50([t.decode for t in self.turns if t.decode is not None])

    def word_error_rate(self) -> float | None:
        counts = [word_errors(t.question, t.transcript) for t in self.turns]
        return quotient(sum(c[0] for c in counts), sum(c[1] for c in counts))


@dataclass
class VoiceResult:
    sizes: Sizes
    silence: float
    warm_up: Route
    citadel: Route
    baseline: Route
    together: Route
    rss_idle: int | None
    rss_open: int | None
    rss_peak: int | None
    smoke: bool = False
    other_load: str = "not measured"  # the CPUs other processes kept busy meanwhile

    @property
    def added(self) -> float | None:
        """Citadel's p50 minus the baseline's, in seconds."""
        ours, theirs = p50(self.citadel.latencies()), p50(self.baseline.latencies())
        return None if ours is None or theirs is None else ours - theirs

    @property
    def memory_per_session(self) -> float | None:
        if self.rss_open is None or self.rss_idle is None:
            return None
        return (self.rss_open - self.rss_idle) / self.sizes.sessions

    def broken(self) -> list[str]:
        found = [
            f"{route.name}: {turn.question!r}: {turn.problem}"
            for route in (
                self.warm_up,
                self.citadel,
                self.baseline,
                self.together,
            )
            for turn in route.turns
            if turn.problem
        ]
        expected = {
            self.citadel.name: self.sizes.questions,
            self.baseline.name: self.sizes.questions,
            self.together.name: self.sizes.sessions * self.sizes.per_session,
        }
        for route in (self.citadel, self.baseline, self.together):
            measured = len(route.latencies())
            if measured != expected[route.name]:
                found.append(f"{route.name}: {measured} of {expected[route.name]} turns measured")
            missing = [name for name in METRICS if route.metric(name) is None]
            if missing:
                found.append(f"{route.name}: no {', '.join(missing)} in the metrics")
        if self.memory_per_session is None:
            found.append("server memory not measured")
        return found

    def summary_rows(self) -> list[str]:
        """The goals' rows: what Citadel adds to the bare pipeline, and its own p50."""
        broken = bool(self.broken())
        added, ours = self.added, p50(self.citadel.latencies())
        added_ms = None if added is None else added * 1000
        small = None if added_ms is None else added_ms <= GOAL_ADDED_MS
        fast = None if ours is None else ours < GOAL_P50_S
        return [
            "| voice: added to bare livekit-agents, end of speech → first audio p50 "
            f"| {figure(added_ms, '+.0f', ' ms')} | ≤ {GOAL_ADDED_MS:g} ms "
            f"| {verdict(small, broken=broken, smoke=self.smoke)} |",
            "| voice: end of speech → first agent audio p50 (Citadel /voice/ws) "
            f"| {figure(ours, '.2f', ' s')} | < {GOAL_P50_S:g} s "
            f"| {verdict(fast, broken=broken, smoke=self.smoke)} |",
        ]


async def measure(sizes: Sizes, silence: float, smoke: bool = False) -> VoiceResult:
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(sizes.questions)]
    said = await utterances(sorted({WARM_UP, *QUESTIONS}))
    env = {"BENCH_VOICE_SILENCE": str(silence)}
    with running("citadel_voice", env=env, timeout=120) as server:
        process = psutil.Process(server.pid)
        base = f"http://127.0.0.1:{server.port}"
        print("bench.voice: one session each way, questions alternating ...", file=sys.stderr)
        from bench.voice_baseline import Baseline  # livekit-agents, in this process

        baseline = Baseline(silence)
        await baseline.start()
        citadel = await CitadelVoice.open(base)
        try:
            warm_up = Route("warm-up", [])
            warm_up.add(await citadel.ask(said[WARM_UP], decode=True))
            warm_up.add(await baseline.ask(said[WARM_UP]))
            ours, theirs = Route("citadel", []), Route("baseline", [])
            for text in questions:
                ours.add(await citadel.ask(said[text], decode=True))
                theirs.add(await baseline.ask(said[text]))
        finally:
            await citadel.close()
            await baseline.close()
        await asyncio.sleep(1.0)  # the closed sessions' tasks are done
        rss_idle = await live_rss(base, process)
        print(f"bench.voice: {sizes.sessions} sessions at once ...", file=sys.stderr)
        together, rss_open, rss_peak = await at_once(base, said, sizes, process)
    return VoiceResult(
        sizes, silence, warm_up, ours, theirs, together, rss_idle, rss_open, rss_peak, smoke
    )


async def live_rss(base: str, process: psutil.Process) -> int:
    """The server's RSS after a full garbage collection (``POST /bench/gc``)."""
    async with httpx.AsyncClient(base_url=base) as client:
        (await client.post("/bench/gc")).raise_for_status()
    return process.memory_info().rss


async def at_once(
    base: str, said: dict[str, Utterance], sizes: Sizes, process: psutil.Process
) -> tuple[Route, int, int]:
    """``sizes.sessions`` sockets open together, each asking ``sizes.per_session`` questions
    (a different order each, starts staggered); the server's live RSS once they have all been
    answered (still open), and its peak meanwhile."""
    clients = [await CitadelVoice.open(base) for _ in range(sizes.sessions)]
    peak = process.memory_info().rss
    route = Route("together", [])

    async def one(index: int, client: CitadelVoice) -> None:
        await asyncio.sleep(index * STAGGER)
        for number in range(sizes.per_session):
            text = QUESTIONS[(index * sizes.per_session + number) % len(QUESTIONS)]
            route.add(await client.ask(said[text]))

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    try:
        await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
        rss_open = await live_rss(base, process)
    finally:
        sampler.cancel()
        for client in clients:
            await client.close()
    return route, rss_open, max(peak, rss_open)


def run(sizes: Sizes = FULL, silence: float | None = None, smoke: bool = False) -> VoiceResult:
    for name in ("livekit", "livekit.agents", "livekit.plugins"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from voice.speech.stack import SpeechConfig

    chosen = SpeechConfig().silence if silence is None else silence
    started, before = time.perf_counter(), cpu_seconds()
    result = asyncio.run(measure(sizes, chosen, smoke))
    result.other_load = other_load(before, time.perf_counter() - started)
    return result


def smoke() -> VoiceResult:
    """Two questions each way, two sessions of one: does the benchmark work?"""
    return run(SMOKE_SIZES, smoke=True)


# The report ------------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return figure(value, ".3f", " s")


def report(result: VoiceResult) -> str:
    sizes, routes = result.sizes, (result.baseline, result.citadel)
    lines = [
        f"End of speech → first agent audio: {sizes.questions} spoken questions (espeak-ng, "
        f"16 kHz) each way, alternating, paced in real time, after a warm-up question; "
        f"silero VAD ({result.silence:g} s of silence ends a turn), Whisper tiny.en int8, "
        f"espeak-ng, an instant model answering {SPOKEN_ANSWER!r}; measured by the client"
        + (" (smoke run)" if result.smoke else ""),
        "",
        "| route | p50 | p95 (nearest rank) | min | max | n |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {"baseline": "bare livekit-agents AgentSession", "citadel": "Citadel /voice/ws"}
    for route in routes:
        values = route.latencies()
        lines.append(
            f"| {names[route.name]} | {_seconds(p50(values))} | {_seconds(p95(values))} "
            f"| {_seconds(min(values) if values else None)} "
            f"| {_seconds(max(values) if values else None)} | {len(values)} |"
        )
    added_ms = None if result.added is None else result.added * 1000
    ratio = quotient(p50(result.citadel.latencies()), p50(result.baseline.latencies()))
    paired = p50(
        [
            (ours.latency - theirs.latency) * 1000
            for ours, theirs in zip(result.citadel.turns, result.baseline.turns, strict=True)
            if ours.latency is not None and theirs.latency is not None
        ]
    )
    lines += [
        "",
        f"Citadel minus baseline at p50: {figure(added_ms, '+.0f', ' ms')}; "
        f"ratio {figure(ratio, '.2f', 'x')}; median of the differences question by question "
        f"(the same question, one after the other): {figure(paired, '+.0f', ' ms')}.",
        "",
        "Where the time goes (medians, seconds; livekit-agents' own figures, which start at the "
        "end of speech as the VAD reckons it, and Whisper's own time on the turn):",
        "",
        "| route | endOfSpeechToAudio | stt (→ final transcript) | runtimeFirstToken "
        "| ttsFirstByte | Whisper decode | word error rate |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for route in (*routes, result.together):
        name = names.get(route.name, f"Citadel, {sizes.sessions} sessions at once")
        cells = " | ".join(_seconds(route.metric(metric)) for metric in METRICS)
        wer = route.word_error_rate()
        decode = _seconds(route.decode()) if route.name != "together" else "not measured"
        lines.append(
            f"| {name} | {cells} | {decode} "
            f"| {figure(None if wer is None else wer * 100, '.0f', ' %')} |"
        )
    alike = sum(
        a.transcript.strip().lower() == b.transcript.strip().lower()
        for a, b in zip(result.citadel.turns, result.baseline.turns, strict=True)
    )
    together = result.together.latencies()
    per_session = result.memory_per_session
    lines += [
        "",
        f"Both routes heard the same words on {alike} of {len(result.citadel.turns)} questions. "
        f"Other processes' CPU use meanwhile: {result.other_load}.",
        "",
        f"{sizes.sessions} sessions at once on /voice/ws, {sizes.per_session} questions each "
        f"(starts {STAGGER:g} s apart):",
        "",
        "| sessions at once | p50 | p95 | max | n | server RSS, none open | with them open "
        "| peak | memory per session |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {sizes.sessions} | {_seconds(p50(together))} | {_seconds(p95(together))} "
        f"| {_seconds(max(together) if together else None)} | {len(together)} "
        f"| {_mb(result.rss_idle)} | {_mb(result.rss_open)} | {_mb(result.rss_peak)} "
        f"| {_mb(per_session)} |",
        "",
        "RSS is read after a full garbage collection and a trim of the C heap; the allocator "
        "still moves it by a few MB, so memory per session is good to a few MB. The peak "
        "(sampled every 0.2 s) holds the buffers of decodes running at once.",
        "",
        "| goal | measured | target | |",
        "|---|---:|---:|---|",
        *result.summary_rows(),
    ]
    return "\n".join(lines)


def _mb(value: float | None) -> str:
    return figure(None if value is None else value / 2**20, ".1f", " MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: does it work?")
    parser.add_argument("--questions", type=int, default=FULL.questions)
    parser.add_argument("--sessions", type=int, default=FULL.sessions)
    parser.add_argument("--per-session", type=int, default=FULL.per_session)
    parser.add_argument(
        "--silence",
        type=float,
        help="seconds of silence that end a turn, on both routes (default: Citadel's)",
    )
    args = parser.parse_args()
    if args.smoke:
        result = smoke()
    else:
        sizes = Sizes(args.questions, args.sessions, args.per_session)
        result = run(sizes, args.silence)
    finish(report(result), result.broken())


if __name__ == "__main__":
    main()
