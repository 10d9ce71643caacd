"""Speech to text for a recorded clip: what CopilotKit's mic button uploads (a whole WebM/Opus,
Ogg, MP4/AAC, MP3, WAV or FLAC file) heard by the voice sessions' own recognizer, the local
Whisper or the remote OpenAI-compatible server of ``CITADEL_STT_URL``.

The container is decoded with PyAV to 16 kHz mono PCM (the rate Whisper reads, resampled the
same way every run), so a remote server is sent one WAV whatever the browser recorded.
Refusals carry CopilotKit's transcription error codes; the caller answers them.
"""

from __future__ import annotations

import asyncio
import io
from typing import Literal

import av
from livekit import rtc
from livekit.agents import APIError

from voice.speech.pcm import SAMPLE_WIDTH
from voice.speech.stack import SpeechStack

RATE = 16_000
SHORTEST = 0.1  # seconds: less is a click of the button, not speech
LONGEST = 60.0  # seconds: a chat turn, not a meeting

TranscriptionCode = Literal[
    "invalid_audio_format", "audio_too_short", "audio_too_long", "provider_error"
]


class TranscriptionRefused(Exception):
    """Why a clip was not transcribed, as CopilotKit names it (``code``), with the HTTP status
    to answer and whether trying again may help (``retryable``: only a failed recognizer)."""

    def __init__(self, code: TranscriptionCode, message: str) -> None:
        super().__init__(message)
        self.code: TranscriptionCode = code
        self.message = message
        self.status = 500 if code == "provider_error" else 400
        self.retryable = code == "provider_error"


async def transcribe(speech: SpeechStack, data: bytes, *, longest: float = LONGEST) -> str:
    """The words spoken in the recording ``data`` (any container PyAV reads: the format is
    sniffed from the bytes, not taken from a declared type); "" when nothing was said.
    ``TranscriptionRefused`` when it cannot be decoded, lasts under ``SHORTEST`` or over
    ``longest`` seconds, or the recognizer fails (a remote one after its retries)."""
    pcm = await asyncio.to_thread(decode, data, longest)  # FFmpeg off the event loop
    frame = rtc.AudioFrame(pcm, RATE, 1, len(pcm) // SAMPLE_WIDTH)
    recognizer = speech.stt()  # Whisper decodes in a worker thread; a remote one is awaited
    try:
        event = await recognizer.recognize(frame)
    except APIError as failed:
        raise TranscriptionRefused("provider_error", f"speech to text failed: {failed}") from None
    finally:
        await recognizer.aclose()
    return event.alternatives[0].text.strip() if event.alternatives else ""


def decode(data: bytes, longest: float = LONGEST) -> bytes:
    """The first audio stream of the recording ``data`` as 16 kHz mono 16-bit PCM. Decoding
    stops as soon as the clip is known to be too long."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise TranscriptionRefused("invalid_audio_format", "the file has no audio")
            pcm = _resampled(container, longest)
    except av.FFmpegError as unreadable:
        raise TranscriptionRefused(
            "invalid_audio_format", f"the audio cannot be decoded ({unreadable.strerror})"
        ) from None
    if not pcm:
        raise TranscriptionRefused("invalid_audio_format", "no audio could be decoded")
    seconds = len(pcm) / SAMPLE_WIDTH / RATE
    if seconds < SHORTEST:
        raise TranscriptionRefused(
            "audio_too_short", f"{seconds:.2f} s of audio; at least {SHORTEST} s is needed"
        )
    return pcm


def _resampled(container: av.container.InputContainer, longest: float) -> bytes:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    limit = int(longest * RATE) * SAMPLE_WIDTH
    chunks: list[bytes] = []
    size = 0
    for frame in container.decode(container.streams.audio[0]):
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray().astype("<i2").tobytes())
            size += len(chunks[-1])
        if size > limit:
            raise _too_long(longest)
    chunks.extend(out.to_ndarray().astype("<i2").tobytes() for out in resampler.resample(None))
    pcm = b"".join(chunks)
    if len(pcm) > limit:
        raise _too_long(longest)
    return pcm


def _too_long(longest: float) -> TranscriptionRefused:
    return TranscriptionRefused(
        "audio_too_long", f"the audio lasts over {longest:g} s, the longest transcribed"
    )
