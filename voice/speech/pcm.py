"""16-bit little-endian mono PCM: the one audio format of the voice faces.

Resampling goes through PyAV (libswresample), which gives the same samples every run;
LiveKit's own resampler does not (livekit.md §5), and transcripts would vary with it.
"""

from __future__ import annotations

import av
import numpy as np

SAMPLE_WIDTH = 2  # bytes per sample


def resample(pcm: bytes, rate: int, target: int) -> bytes:
    """``pcm`` at ``rate`` as PCM at ``target`` (all of it: the resampler is flushed)."""
    if rate == target or not pcm:
        return pcm
    resampler = av.AudioResampler(format="s16", layout="mono", rate=target)
    samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = rate
    out = [*resampler.resample(frame), *resampler.resample(None)]
    return b"".join(f.to_ndarray().astype("<i2").tobytes() for f in out)


def duration(pcm: bytes, rate: int) -> float:
    return len(pcm) / SAMPLE_WIDTH / rate


def to_float(pcm: bytes) -> np.ndarray:
    """Samples in [-1, 1), what Whisper takes."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
