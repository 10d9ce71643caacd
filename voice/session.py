"""One voice session: livekit-agents' ``AgentSession`` (VAD → STT → the Citadel runtime →
TTS) in a user's thread, whatever carries its audio (a LiveKit room or a browser socket).

Decisions, and why:

* **No preemptive generation.** A run is stored and may call tools; a speculative run on a
  half-heard sentence would put turns in the thread that the user never finished. The turn
  starts when it is committed.
* **Barge-in stops the run**, and the stored answer becomes what was actually said: the
  session's outputs go through a ``TranscriptSynchronizer``, whose truncated text replaces
  the answer's message in the thread (the run's events keep what was generated).
* **No AEC warm-up.** livekit-agents ignores interruptions for the first 3 s of speech by
  default, for rooms without echo cancellation; browsers and LiveKit clients cancel echo
  themselves, and a user must be able to interrupt at once.
* **A speech server that fails loses one turn, not the session.** When speech to text or
  text to speech still fails after livekit-agents' retries, the listener is told
  (``stt_unavailable``: the turn was not heard; ``tts_unavailable``: the answer, in the
  thread, was not spoken) and the session goes on: the user may speak again or type.
  livekit-agents would otherwise close the session after a few failures in a row, leaving
  its transport open on a session that no longer answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import Agent, AgentSession, io, room_io
from livekit.agents.voice import events as session_events
from livekit.agents.voice.agent_session import SessionConnectOptions
from livekit.agents.voice.transcription.synchronizer import TranscriptSynchronizer

from voice.report import TurnMetrics, VoiceReport
from voice.runtime_llm import CitadelLLM, Conversation
from voice.speech.stack import SpeechStack

logger = logging.getLogger("citadel.voice")

# What the listener is told when a speech server still fails after its retries.
SPEECH_FAILURES = {
    "stt_error": (
        "stt_unavailable",
        "speech recognition failed: this turn was not heard; speak again, or type",
    ),
    "tts_error": (
        "tts_unavailable",
        "speech synthesis failed: the answer was not spoken (the thread has it)",
    ),
}
NEVER = 1_000_000  # failures in a row after which livekit-agents would close the session


class VoiceListener:
    """What a transport is told; each method does nothing unless overridden."""

    async def agui(self, event: bytes) -> None:
        """One AG-UI event (JSON) of the session's runs."""

    def state(self, state: str) -> None:
        """``listening``, ``thinking`` or ``speaking``."""

    def transcript(self, role: str, text: str, final: bool) -> None:
        """The user's words as heard; the agent's as spoken (final: what the thread keeps)."""

    def turn(self, metrics: TurnMetrics) -> None:
        """An answered turn's latencies."""

    def error(self, code: str, message: str) -> None:
        """A speech server failed (``stt_unavailable``, ``tts_unavailable``); the session
        goes on."""


@dataclass
class VoiceSession:
    stack: SpeechStack
    conversation: Conversation
    listener: VoiceListener
    report: VoiceReport | None = None
    sample_rate: int = 16_000
    session: AgentSession = field(init=False)
    _user: dict[str, Any] = field(default_factory=dict, init=False)  # the last user turn's metrics
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set, init=False)
    _sync: TranscriptSynchronizer | None = field(default=None, init=False)
    _started: bool = field(default=False, init=False)  # reported as started
    _closed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.session = AgentSession(
            vad=self.stack.vad,
            stt=self.stack.stt(),
            llm=CitadelLLM(self.conversation),
            tts=self.stack.tts(self.sample_rate),
            turn_handling={
                "turn_detection": "vad",
                "endpointing": {"min_delay": 0.0, "max_delay": 3.0},
                # Nothing to resume: a browser drops what it was told to stop playing.
                "interruption": {
                    "mode": "vad",
                    "min_duration": 0.5,
                    "resume_false_interruption": False,
                },
                "preemptive_generation": {"enabled": False},
            },
            aec_warmup_duration=None,
            user_away_timeout=None,
            # A transport that closes has nobody left to answer: no waiting for a last
            # transcript (livekit-agents waits 2 s by default).
            session_close_transcript_timeout=0.0,
            conn_options=SessionConnectOptions(max_unrecoverable_errors=NEVER),
        )
        self.session.on("agent_state_changed", self._on_state)
        self.session.on("user_input_transcribed", self._on_transcribed)
        self.session.on("conversation_item_added", self._on_item)
        self.session.on("error", self._on_error)

    async def start(
        self,
        *,
        audio_input: io.AudioInput | None = None,
        audio_output: io.AudioOutput | None = None,
        text_output: io.TextOutput | None = None,
        room: Any = None,
        participant: str | None = None,
    ) -> None:
        """Start listening: on a room (RoomIO publishes audio and transcripts, and hears
        ``participant`` only, when named), or on the given input and outputs, synchronized so
        that transcripts follow the audio."""
        if audio_output is not None:
            self._sync = TranscriptSynchronizer(
                next_in_chain_audio=audio_output, next_in_chain_text=text_output
            )
            self.session.output.audio = self._sync.audio_output
            self.session.output.transcription = self._sync.text_output
        if audio_input is not None:
            self.session.input.audio = audio_input
        if room is None:
            await self.session.start(Agent(instructions=""))
        else:
            options = room_io.RoomOptions()
            if participant is not None:
                options.participant_identity = participant
            await self.session.start(Agent(instructions=""), room=room, room_options=options)
        if self.report is not None:
            await self.report.started()
        self._started = True

    def say_typed(self, text: str) -> None:
        """A typed turn: it interrupts the agent and is answered like a spoken one."""
        self.listener.transcript("user", text, True)
        self.session.interrupt()
        self.session.generate_reply(user_input=text)

    async def aclose(self, reason: str = "ended") -> None:
        """Close once; a session that never started is not reported as ended."""
        if self._closed:
            return
        self._closed = True
        await self.session.aclose()
        for part in (self.session.stt, self.session.tts):  # this session's own
            if part is not None:
                await part.aclose()
        if self._sync is not None:
            await self._sync.aclose()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.report is not None and self._started:
            await self.report.ended(reason)

    # Session events ---------------------------------------------------------------------------

    def _on_state(self, event: session_events.AgentStateChangedEvent) -> None:
        if event.new_state in ("listening", "thinking", "speaking"):
            self.listener.state(event.new_state)

    def _on_transcribed(self, event: session_events.UserInputTranscribedEvent) -> None:
        if event.transcript.strip():
            self.listener.transcript("user", event.transcript, event.is_final)

    def _on_error(self, event: session_events.ErrorEvent) -> None:
        failure = SPEECH_FAILURES.get(getattr(event.error, "type", ""))
        if failure is None or event.error.recoverable:  # retrying: not the turn's outcome yet
            return
        logger.warning("voice: %s (%s)", failure[0], event.error.error)
        self.listener.error(*failure)

    def _on_item(self, event: session_events.ConversationItemAddedEvent) -> None:
        item = event.item
        role = getattr(item, "role", None)
        if role == "user":
            self._user = dict(item.metrics or {})  # type: ignore[union-attr]
        elif role == "assistant":
            metrics = item.metrics or {}  # type: ignore[union-attr]
            interrupted = bool(item.interrupted)  # type: ignore[union-attr]
            turn = TurnMetrics(
                end_of_speech_to_audio=metrics.get("e2e_latency"),
                stt=self._user.get("transcription_delay"),
                runtime_first_token=metrics.get("llm_node_ttft"),
                tts_first_byte=metrics.get("tts_node_ttfb"),
                interrupted=interrupted,
            )
            spoken = item.text_content or ""  # type: ignore[union-attr]
            self.listener.transcript("assistant", spoken, True)
            self.listener.turn(turn)
            if self.report is not None:
                self._spawn(self.report.turn(turn))
            if interrupted:
                self._spawn(self._keep_spoken(spoken))

    async def _keep_spoken(self, spoken: str) -> None:
        """The interrupted answer's message becomes what was said, once its run has ended."""
        conversation = self.conversation
        answer = conversation.last_answer
        if answer is None:
            return
        await answer.ended.wait()
        if answer.message_id is not None:
            await conversation.runs.amend_answer(
                conversation.owner, conversation.thread_id, answer.message_id, spoken
            )

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
