"""Voice sessions for admins and operators: each session's start, turns (with latencies)
and end as ``voice`` notes on the admin feed (``/admin/events``, every worker), and the
Prometheus metrics of ``/metrics``."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from agent_server.observability.metrics import Metrics
from agent_server.runs.bus import BusUnavailable

logger = logging.getLogger("citadel.voice")

FEED_KIND = "voice"


@dataclass(frozen=True, slots=True)
class TurnMetrics:
    """Seconds, per answered turn (None: not measured on this turn)."""

    end_of_speech_to_audio: float | None  # the user stopped speaking → the first agent audio
    stt: float | None  # end of speech → final transcript
    runtime_first_token: float | None
    tts_first_byte: float | None
    interrupted: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "endOfSpeechToAudio": self.end_of_speech_to_audio,
            "stt": self.stt,
            "runtimeFirstToken": self.runtime_first_token,
            "ttsFirstByte": self.tts_first_byte,
            "interrupted": self.interrupted,
        }


class Feed(Protocol):
    """Where notes go: the app's :class:`~agent_server.runs.bus.EventBus`, or the LiveKit
    worker's view of one on another event loop (:class:`voice.services_loop.LoopFeed`)."""

    async def note(self, kind: str, body: bytes, owner: str = "") -> None: ...


@dataclass
class VoiceReport:
    bus: Feed
    metrics: Metrics | None  # None: a process that serves no /metrics (the LiveKit worker)
    session_id: str
    owner: str
    thread_id: str
    transport: str  # "ws" or "livekit"

    async def started(self) -> None:
        if self.metrics is not None:
            self.metrics.voice_sessions.inc()
        await self._note("session.started")

    async def turn(self, turn: TurnMetrics) -> None:
        if self.metrics is not None:
            observed = (
                (self.metrics.voice_turn_seconds, turn.end_of_speech_to_audio),
                (self.metrics.voice_stt_seconds, turn.stt),
                (self.metrics.voice_tts_first_byte_seconds, turn.tts_first_byte),
            )
            for histogram, value in observed:
                if value is not None:
                    histogram.observe(value)
        await self._note("turn", **turn.as_json())

    async def ended(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.voice_sessions.dec()
        await self._note("session.ended", reason=reason)

    async def _note(self, event: str, **fields: Any) -> None:
        body = {
            "event": event,
            "sessionId": self.session_id,
            "threadId": self.thread_id,
            "transport": self.transport,
            **fields,
        }
        with contextlib.suppress(BusUnavailable):  # the feed misses it; the session goes on
            await self.bus.note(FEED_KIND, orjson.dumps(body), self.owner)
