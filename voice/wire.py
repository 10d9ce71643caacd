"""The frames of ``GET /voice/ws`` (docs/voice.md): parsing what the client sends, refusing
what breaks the contract, and the server's text frames.

Client → server: ``session.start`` first (JSON text), then binary frames of 16-bit
little-endian mono PCM at the announced rate, typed turns (``text``) and ``session.end``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from protocol.errors import Refusal
from protocol.input import Id

THREAD_ID = TypeAdapter(Id)  # the one rule for ids on every face
SAMPLE_RATES = (8_000, 16_000, 24_000, 48_000)
MAX_FRAME_SECONDS = 1.0  # one binary frame holds at most this much audio
MAX_TEXT_FRAME = 16 * 1024
MAX_TYPED_TURN = 4_000  # characters
# The client may send ahead of real time by this much (network bursts), and no faster.
FLOOD_AHEAD_SECONDS = 2.0
FLOOD_SPEED = 1.5
# How audio files begin (WAV, Ogg, WebM/Matroska, MP3, FLAC): not raw PCM.
CONTAINERS = (b"RIFF", b"OggS", b"\x1aE\xdf\xa3", b"ID3", b"fLaC")


@dataclass(frozen=True, slots=True)
class Start:
    thread_id: str | None
    sample_rate: int


@dataclass(frozen=True, slots=True)
class Typed:
    text: str


@dataclass(frozen=True, slots=True)
class End:
    pass


ClientFrame = Start | Typed | End


def parse_text(frame: str) -> ClientFrame:
    """One client text frame; :class:`Refusal` ``invalid_input`` for anything else."""
    if len(frame) > MAX_TEXT_FRAME:
        raise Refusal("payload_too_large", f"a text frame holds at most {MAX_TEXT_FRAME} bytes")
    try:
        data = orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise Refusal("invalid_input", "a text frame must be a JSON object") from None
    if not isinstance(data, dict):
        raise Refusal("invalid_input", "a text frame must be a JSON object")
    kind = data.get("type")
    if kind == "session.start":
        return Start(_thread_id(data.get("threadId")), _sample_rate(data.get("sampleRate")))
    if kind == "text":
        text = data.get("text")
        if not isinstance(text, str) or not text.strip():
            raise Refusal("invalid_input", "text: a non-empty string is required")
        if len(text) > MAX_TYPED_TURN or "\x00" in text:
            raise Refusal("invalid_input", f"text: at most {MAX_TYPED_TURN} characters, no NUL")
        return Typed(text.strip())
    if kind == "session.end":
        return End()
    raise Refusal("invalid_input", f"type: {kind!r} is not one of session.start, text, session.end")


def _thread_id(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return THREAD_ID.validate_python(value, strict=True)
    except ValidationError:
        raise Refusal("invalid_input", "threadId: 1 to 256 printable ASCII characters") from None


def _sample_rate(value: Any) -> int:
    if value is None:
        return 16_000
    if type(value) is not int or value not in SAMPLE_RATES:
        rates = ", ".join(map(str, SAMPLE_RATES))
        raise Refusal("invalid_input", f"sampleRate: one of {rates}")
    return value


class AudioGate:
    """Checks each binary frame against the contract: whole 16-bit samples, at most
    :data:`MAX_FRAME_SECONDS` per frame, and no faster than real time (with a burst)."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.max_bytes = int(sample_rate * MAX_FRAME_SECONDS) * 2
        self._first: float | None = None
        self._received = 0.0  # seconds of audio

    def check(self, frame: bytes, now: float) -> None:
        if len(frame) % 2:
            raise Refusal("invalid_audio", "audio frames are 16-bit PCM: an even byte count")
        if len(frame) > self.max_bytes:
            raise Refusal(
                "payload_too_large", f"an audio frame holds at most {MAX_FRAME_SECONDS:g} s"
            )
        if self._first is None:
            if frame.startswith(CONTAINERS):
                raise Refusal("invalid_audio", "send raw PCM samples, not an audio file")
            self._first = now
        self._received += len(frame) / 2 / self.sample_rate
        allowed = (now - self._first) * FLOOD_SPEED + FLOOD_AHEAD_SECONDS
        if self._received > allowed:
            raise Refusal("audio_too_fast", "audio arrives faster than real time")


def frame(kind: str, **fields: Any) -> str:
    """A server text frame."""
    return orjson.dumps({"type": kind, **fields}).decode()


def error_frame(refusal: Refusal) -> str:
    return frame("error", code=refusal.code, message=refusal.message)
