"""Which VAD, STT and TTS a voice session uses, from the settings: the offline defaults, or
an OpenAI-compatible speech server for either direction when its URL is set. Models are
loaded once per process and shared by every session."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from livekit.agents import stt, tts, vad

from agent_server.config import Settings


@dataclass(frozen=True)
class SpeechConfig:
    """The settings that choose the stack (hashable: one stack per distinct config)."""

    stt_url: str | None = None
    stt_model: str = "whisper-1"
    tts_url: str | None = None
    tts_model: str = "tts-1"
    tts_voice: str = "alloy"
    api_key: str | None = None
    silence: float = 0.3  # seconds of silence that end an utterance
    threads: int = 2

    @classmethod
    def from_settings(cls, settings: Settings) -> SpeechConfig:
        key = settings.speech_api_key
        return cls(
            stt_url=settings.stt_url,
            stt_model=settings.stt_model,
            tts_url=settings.tts_url,
            tts_model=settings.tts_model,
            tts_voice=settings.tts_voice,
            api_key=key.get_secret_value() if key is not None else None,
            silence=settings.voice_silence,
            threads=settings.llm_threads,
        )


@dataclass(frozen=True)
class SpeechStack:
    vad: vad.VAD
    config: SpeechConfig

    def stt(self) -> stt.STT:
        """A recognizer for one session. Each session has its own: livekit-agents reports a
        recognizer's failures to every session using it, and a failed turn is told only to
        the session whose turn it was. The offline model is loaded once per process."""
        config = self.config
        if config.stt_url:
            from livekit.plugins import openai

            return openai.STT(
                model=config.stt_model,
                base_url=config.stt_url,
                api_key=config.api_key or "none",
                language="en",
                use_realtime=False,
            )
        from voice.speech.whisper import WhisperSTT

        return WhisperSTT(threads=config.threads)

    def tts(self, sample_rate: int) -> tts.TTS:
        """A TTS speaking at ``sample_rate``, for one session (cheap: espeak-ng runs per
        sentence; a remote server's audio is resampled by livekit-agents)."""
        config = self.config
        if config.tts_url:
            from livekit.plugins import openai

            return openai.TTS(
                model=config.tts_model,
                voice=config.tts_voice,
                base_url=config.tts_url,
                api_key=config.api_key or "none",
                response_format="pcm",
            )
        from voice.speech.espeak import EspeakTTS

        return EspeakTTS(sample_rate=sample_rate)


@functools.cache
def speech_stack(config: SpeechConfig) -> SpeechStack:
    """The stack for ``config``, built once per process; ``RuntimeError`` naming what is
    missing when the offline models are not installed."""
    from livekit.plugins import silero

    if not config.stt_url:
        from voice.speech.whisper import WhisperSTT

        WhisperSTT(threads=config.threads)  # load the model now (once), or fail now
    detector = silero.VAD.load(min_silence_duration=config.silence)
    if not config.tts_url:
        from voice.speech.espeak import espeak_binary

        espeak_binary()  # fail now, not at the first answer
    return SpeechStack(detector, config)
