"""voice.transcribe: recordings as CopilotKit's mic button uploads them, made in the run from
espeak-ng speech and encoded with PyAV (WebM/Opus at 48 kHz as Chrome's MediaRecorder makes,
Ogg/Opus, MP4/AAC, MP3, WAV, FLAC), heard by the real offline Whisper tiny.en and by the
OpenAI-compatible speech TEST DOUBLE (tests/doubles/speech.py); and each refusal with
CopilotKit's error code. Transcripts are judged by keywords and word error rate."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

from bench.servers import free_port
from tests.doubles.speech import speech_double
from tests.support.voice import RATE, spoken, word_error_rate, words
from voice.speech.stack import SpeechConfig, SpeechStack, speech_stack
from voice.transcribe import LONGEST, TranscriptionRefused, transcribe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SENTENCE = "What is the refund policy for enterprise customers?"
KEYWORDS = {"refund", "policy", "customers"}  # Whisper may hear "enterprise" as "enter price"
PAUSE = bytes(int(0.3 * RATE) * 2)  # a recording starts and ends with a little silence


def encoded(pcm: bytes, container: str, codec: str, rate: int) -> bytes:
    """16 kHz ``pcm`` as a ``container`` file of ``codec`` audio at ``rate``."""
    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as file:
        stream = file.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            file.mux(stream.encode(chunk))
        file.mux(stream.encode(None))
    return out.getvalue()


async def refusal(stack: SpeechStack, recording: bytes, **limits: float) -> tuple[str, int, bool]:
    """(code, HTTP status, retryable) of the refusal transcribing ``recording`` must raise."""
    with pytest.raises(TranscriptionRefused) as refused:
        await transcribe(stack, recording, **limits)
    return refused.value.code, refused.value.status, refused.value.retryable


@pytest.fixture(scope="module")
def offline() -> SpeechStack:
    return speech_stack(SpeechConfig())


@pytest.mark.parametrize(
    ("container", "codec", "rate"),
    [
        ("webm", "libopus", 48_000),
        ("ogg", "libopus", 48_000),
        ("mp4", "aac", 44_100),
        ("mp3", "libmp3lame", 44_100),
        ("wav", "pcm_s16le", 16_000),
        ("flac", "flac", 16_000),
    ],
    ids=["webm-opus", "ogg-opus", "mp4-aac", "mp3", "wav", "flac"],
)
async def test_a_spoken_question_recorded_in_each_format_is_transcribed_by_whisper(
    offline: SpeechStack, container: str, codec: str, rate: int
):
    recording = encoded(PAUSE + await spoken(SENTENCE) + PAUSE, container, codec, rate)
    heard = await transcribe(offline, recording)
    assert set(words(heard)) >= KEYWORDS, heard
    assert word_error_rate(SENTENCE, heard) <= 0.3, heard


async def test_silence_is_transcribed_as_no_words(offline: SpeechStack):
    heard = await transcribe(offline, encoded(bytes(RATE * 2 * 2), "wav", "pcm_s16le", RATE))
    assert words(heard) == []


@pytest.mark.parametrize(
    "data",
    [b"", b"this is not audio, only text pretending " * 200, bytes(range(256)) * 64],
    ids=["empty", "text", "noise-bytes"],
)
async def test_bytes_that_are_not_audio_are_refused_as_invalid_audio_format(
    offline: SpeechStack, data: bytes
):
    assert await refusal(offline, data) == ("invalid_audio_format", 400, False)


async def test_a_50_ms_recording_is_refused_as_audio_too_short(offline: SpeechStack):
    clip = (await spoken(SENTENCE))[: int(0.05 * RATE) * 2]
    recording = encoded(clip, "wav", "pcm_s16le", RATE)
    assert await refusal(offline, recording) == ("audio_too_short", 400, False)


async def test_a_recording_over_the_limit_is_refused_as_audio_too_long(offline: SpeechStack):
    minute = encoded(bytes(int((LONGEST + 1) * RATE) * 2), "webm", "libopus", 48_000)
    assert await refusal(offline, minute) == ("audio_too_long", 400, False)
    # The limit is the caller's: the same 3 s question passes at 60 s and not at 2 s.
    question = encoded(await spoken(SENTENCE), "wav", "pcm_s16le", RATE)
    assert await refusal(offline, question, longest=2.0) == ("audio_too_long", 400, False)


async def test_with_a_remote_speech_server_the_recording_is_sent_to_it_as_16_khz_wav():
    clip = PAUSE + await spoken(SENTENCE) + PAUSE
    recording = encoded(clip, "webm", "libopus", 48_000)
    async with speech_double() as (speech, base_url):
        remote = speech_stack(SpeechConfig(stt_url=base_url, stt_model="whisper-1", api_key="k"))
        heard = await transcribe(remote, recording)
    [request] = speech.transcriptions
    assert (request.content_type, request.sample_rate, request.authorization) == (
        "audio/wav",
        RATE,
        "Bearer k",
    )
    assert request.seconds == pytest.approx(len(clip) / 2 / RATE, abs=0.02)  # all of it
    assert heard == request.text and set(words(heard)) >= KEYWORDS


async def test_a_dead_remote_speech_server_is_a_retryable_provider_error():
    recording = encoded(await spoken(SENTENCE), "wav", "pcm_s16le", RATE)
    dead = speech_stack(SpeechConfig(stt_url=f"http://127.0.0.1:{free_port()}/v1"))
    assert await refusal(dead, recording) == ("provider_error", 500, True)
