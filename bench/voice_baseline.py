"""The baseline of bench/voice.py: the same VAD, STT, TTS and turn handling as Citadel's voice
session (voice/session.py) in a bare livekit-agents ``AgentSession``, with no room: an
instant ``llm.LLM``, a custom ``io.AudioInput`` given the microphone's frames as they are
sent and a collecting ``io.AudioOutput`` modelled on livekit-agents' ``cli/tcp_console.py``
(livekit.md §4.2). Its own module: livekit-agents is imported only when a run needs it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from livekit import rtc
from livekit.agents import Agent, AgentSession, io, llm
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)
from livekit.plugins import silero

from bench.scripted import SPOKEN_ANSWER
from bench.voice_user import RATE, TURN_HANDLING, Ear, Microphone, Turn, Utterance, ask
from voice.report import TurnMetrics
from voice.speech.espeak import EspeakTTS
from voice.speech.stack import SpeechConfig
from voice.speech.whisper import WhisperSTT


class InstantLLM(llm.LLM):
    """Answers every turn at once with :data:`SPOKEN_ANSWER`, as Citadel's model does."""

    @property
    def model(self) -> str:
        return "instant"

    @property
    def provider(self) -> str:
        return "bench"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        return _InstantStream(self, chat_ctx=chat_ctx, tools=[], conn_options=conn_options)


class _InstantStream(llm.LLMStream):
    async def _run(self) -> None:
        delta = llm.ChoiceDelta(role="assistant", content=SPOKEN_ANSWER)
        self._event_ch.send_nowait(llm.ChatChunk(id="instant", delta=delta))


class PacedInput(io.AudioInput):
    """The microphone's frames, as they are sent."""

    def __init__(self) -> None:
        super().__init__(label="bench-microphone")
        self._frames: asyncio.Queue[rtc.AudioFrame] = asyncio.Queue()

    async def send(self, pcm: bytes) -> None:
        self._frames.put_nowait(rtc.AudioFrame(pcm, RATE, 1, len(pcm) // 2))

    async def __anext__(self) -> rtc.AudioFrame:
        return await self._frames.get()


class CollectingOutput(io.AudioOutput):
    """The agent's audio, "played" in real time from its first frame (as tcp_console.py's
    output waits for the console to play it out)."""

    def __init__(self, ear: Ear) -> None:
        super().__init__(
            label="bench-speaker",
            next_in_chain=None,
            sample_rate=RATE,
            capabilities=io.AudioOutputCapabilities(pause=False),
        )
        self._ear = ear
        self._pushed = 0.0
        self._capture_start = 0.0
        self._playout: asyncio.Task[None] | None = None

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if not self._pushed:
            self._capture_start = time.monotonic()
            self._ear.audio_started()
            self._ear.audio(self._capture_start)
            self.on_playback_started(created_at=time.time())
        self._pushed += frame.duration

    def flush(self) -> None:
        super().flush()
        if self._pushed and self._playout is None:
            self._playout = asyncio.create_task(self._play_out())

    def clear_buffer(self) -> None:
        if self._pushed:
            played = min(time.monotonic() - self._capture_start, self._pushed)
            self._finish(played, interrupted=True)

    async def _play_out(self) -> None:
        await asyncio.sleep(max(0.0, self._capture_start + self._pushed - time.monotonic()))
        self._playout = None
        self._finish(self._pushed, interrupted=False)

    def _finish(self, played: float, interrupted: bool) -> None:
        if self._playout is not None and self._playout is not asyncio.current_task():
            self._playout.cancel()
        self._playout, self._pushed = None, 0.0
        self.on_playback_finished(playback_position=played, interrupted=interrupted)
        self._ear.audio_ended()


class Baseline:
    def __init__(self, silence: float) -> None:
        config = SpeechConfig(silence=silence)
        self.ear = Ear()
        self.stt = WhisperSTT(threads=config.threads)
        self.input = PacedInput()
        self.microphone = Microphone(self.input.send)
        self.session = AgentSession(
            vad=silero.VAD.load(min_silence_duration=config.silence),
            stt=self.stt,
            llm=InstantLLM(),
            tts=EspeakTTS(sample_rate=RATE),
            turn_handling=TURN_HANDLING,  # type: ignore[arg-type]
            aec_warmup_duration=None,
            user_away_timeout=None,
            session_close_transcript_timeout=0.0,
        )
        self._user: dict[str, Any] = {}
        self.session.on("conversation_item_added", self._on_item)

    async def start(self) -> None:
        self.session.input.audio = self.input
        self.session.output.audio = CollectingOutput(self.ear)
        await self.session.start(Agent(instructions=""))

    async def ask(self, question: Utterance) -> Turn:
        turn = await ask(self.microphone, self.ear, question)
        turn.decode = self.stt.last_decode or None
        return turn

    def _on_item(self, event: Any) -> None:
        item = event.item
        role = getattr(item, "role", None)
        if role == "user":
            self._user = dict(item.metrics or {})
            self.ear.heard(item.text_content or "")
        elif role == "assistant":
            metrics = item.metrics or {}
            turn = TurnMetrics(  # as voice/session.py reports Citadel's
                end_of_speech_to_audio=metrics.get("e2e_latency"),
                stt=self._user.get("transcription_delay"),
                runtime_first_token=metrics.get("llm_node_ttft"),
                tts_first_byte=metrics.get("tts_node_ttfb"),
                interrupted=bool(item.interrupted),
            )
            self.ear.metrics(turn.as_json())

    async def close(self) -> None:
        await self.session.aclose()
