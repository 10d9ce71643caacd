"""Speech in and out: the offline defaults (Whisper tiny.en, espeak-ng, silero VAD) and any
OpenAI-compatible speech server, behind livekit-agents' STT, TTS and VAD interfaces."""
