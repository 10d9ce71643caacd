"""The speaker and the listener of bench/voice.py, the same for both routes it compares
(Citadel's socket, and the bare livekit-agents session of bench/voice_baseline.py): questions
spoken by espeak-ng into a real-time microphone, and an ear that times the answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RATE = 16_000
FRAME = 0.02  # seconds per frame, as voice/browser.py cuts its input
FRAME_SAMPLES = int(RATE * FRAME)
FRAME_BYTES = FRAME_SAMPLES * 2
SILENCE = bytes(FRAME_BYTES)
LEAD_FRAMES = round(0.5 / FRAME)  # silence before each question
SPEECH_FLOOR = 328  # |sample| <= 1 % of full scale is not speech (espeak-ng's tail of silence)
ANSWER_TIMEOUT = 20.0  # seconds from end of speech to the answer's first audio
PLAYOUT_TIMEOUT = 30.0  # seconds from the first audio to the end of the answer and its metrics

# As voice/session.py configures its AgentSession.
TURN_HANDLING: dict[str, Any] = {
    "turn_detection": "vad",
    "endpointing": {"min_delay": 0.0, "max_delay": 3.0},
    "interruption": {"mode": "vad", "min_duration": 0.5},
    "preemptive_generation": {"enabled": False},
}
METRICS = ("endOfSpeechToAudio", "stt", "runtimeFirstToken", "ttsFirstByte")


# Speech ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    text: str
    pcm: bytes  # 16 kHz, whole frames, ending on the last audible sample


async def utterances(texts: list[str]) -> dict[str, Utterance]:
    from voice.speech.espeak import EspeakTTS

    tts = EspeakTTS(sample_rate=RATE)
    said: dict[str, Utterance] = {}
    for text in texts:
        samples = np.frombuffer(await tts.speak(text), dtype="<i2")
        audible = np.flatnonzero(np.abs(samples.astype(np.int32)) > SPEECH_FLOOR)
        if not len(audible):
            raise RuntimeError(f"espeak-ng said nothing for {text!r}")
        speech = samples[audible[0] : audible[-1] + 1]
        padding = np.zeros((-len(speech)) % FRAME_SAMPLES, dtype="<i2")
        said[text] = Utterance(text, np.concatenate([padding, speech]).astype("<i2").tobytes())
    return said


class Microphone:
    """Frames to ``send`` in real time: each once its last sample has been said."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        self._send = send
        self._clock = 0.0
        self._frames = 0

    def restart(self) -> None:
        self._clock, self._frames = time.monotonic(), 0

    async def say(self, pcm: bytes) -> float:
        """Send ``pcm``, frame by frame; when its last frame was sent (monotonic seconds)."""
        for start in range(0, len(pcm), FRAME_BYTES):
            self._frames += 1
            delay = self._clock + self._frames * FRAME - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._send(pcm[start : start + FRAME_BYTES])
        return time.monotonic()


# One turn, whatever carries it -----------------------------------------------------------------


@dataclass
class Turn:
    question: str
    latency: float | None = None  # seconds, end of speech → the answer's first audio
    transcript: str = ""
    metrics: dict[str, float | None] = field(default_factory=dict)  # see METRICS
    decode: float | None = None  # seconds Whisper took (not measured with sessions at once)
    problem: str | None = None


class Ear:
    """What the client hears of the current turn."""

    def __init__(self) -> None:
        self.expect("")

    def expect(self, question: str) -> None:
        self.turn = Turn(question)
        self.answers = 0  # audio segments begun
        self.first_audio: float | None = None
        self.ended = False
        self.done = asyncio.Event()

    def audio_started(self) -> None:
        self.answers += 1

    def audio(self, at: float) -> None:
        if self.first_audio is None:
            self.first_audio = at

    def audio_ended(self) -> None:
        self.ended = True
        self._check()

    def heard(self, transcript: str) -> None:
        self.turn.transcript = transcript

    def metrics(self, metrics: dict[str, Any]) -> None:
        self.turn.metrics = {name: metrics.get(name) for name in METRICS}
        self._check()

    def failed(self, problem: str) -> None:
        self.turn.problem = self.turn.problem or problem
        self.done.set()

    def _check(self) -> None:
        if self.ended and self.turn.metrics:
            self.done.set()


async def ask(microphone: Microphone, ear: Ear, question: Utterance) -> Turn:
    """Say ``question`` after 0.5 s of silence, then silence until its answer has been played
    out and its metrics are in."""
    ear.expect(question.text)
    microphone.restart()
    await microphone.say(SILENCE * LEAD_FRAMES)
    spoken = await microphone.say(question.pcm)
    while not ear.done.is_set():
        now = time.monotonic()
        if ear.first_audio is None and now > spoken + ANSWER_TIMEOUT:
            ear.failed(f"no answer {ANSWER_TIMEOUT:g} s after the question")
        elif ear.first_audio is not None and now > ear.first_audio + PLAYOUT_TIMEOUT:
            ear.failed("the answer did not end, or sent no metrics")
        else:
            await microphone.say(SILENCE)
    turn = ear.turn
    if ear.first_audio is not None:
        turn.latency = ear.first_audio - spoken
        if turn.latency <= 0:
            turn.problem = turn.problem or "answered before the question ended (turn cut short)"
    if ear.answers != 1 and turn.problem is None:
        turn.problem = f"{ear.answers} answers to one question"
    return turn
