"""The offline speech stack on its own: Whisper tiny.en hears espeak-ng's speech well enough,
the same text gives the same samples at whatever rate, and models load once per process."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.voice import spoken, word_error_rate
from voice.speech.espeak import EspeakTTS
from voice.speech.pcm import duration, resample
from voice.speech.stack import SpeechConfig, speech_stack
from voice.speech.whisper import WhisperSTT, shorter_window

SENTENCES = [
    "What is the refund policy for enterprise customers?",
    "How many days does a refund take?",
    "Please book a meeting for tomorrow morning.",
    "What is the weather like in Paris today?",
]


@pytest.mark.slow
async def test_whisper_hears_espeak_speech_with_few_word_errors():
    stt = WhisperSTT()
    errors = [word_error_rate(text, stt.transcribe(await spoken(text))) for text in SENTENCES]
    assert sum(errors) / len(errors) <= 0.25 and max(errors) <= 0.5, errors


@pytest.mark.parametrize("rate", [8_000, 16_000, 24_000, 48_000])
async def test_espeak_gives_the_same_samples_every_time_at_the_chosen_rate(rate):
    tts = EspeakTTS(sample_rate=rate)
    first, second = await tts.speak(SENTENCES[0]), await tts.speak(SENTENCES[0])
    assert first == second and len(first) % 2 == 0
    assert 1.5 < duration(first, rate) < 5.0


def test_resampling_is_deterministic_and_keeps_the_duration():
    pcm = bytes(range(256)) * 250  # 1 s at 32 kHz, not silence
    once, again = resample(pcm, 32_000, 16_000), resample(pcm, 32_000, 16_000)
    assert once == again and abs(duration(once, 16_000) - 1.0) < 0.01
    assert resample(pcm, 16_000, 16_000) is pcm


def test_the_speech_stack_is_loaded_once_per_process():
    config = SpeechConfig(silence=0.3)
    assert speech_stack(config) is speech_stack(SpeechConfig(silence=0.3))
    assert speech_stack(config).stt()._model is WhisperSTT()._model  # the weights, once


@pytest.mark.parametrize(
    ("frames", "window"), [(300, 1_000), (1_000, 1_000), (1_234, 1_300), (4_000, 3_000)]
)
def test_whisper_reads_a_window_fitted_to_the_clip_between_10_and_30_seconds(frames, window):
    features = np.ones((80, frames), dtype=np.float32)
    fitted = shorter_window(features)
    assert fitted.shape == (80, window)
    assert (fitted[:, : min(frames, window)] == 1).all() and (fitted[:, frames:] == 0).all()
