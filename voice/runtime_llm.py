"""The Citadel runtime as livekit-agents' ``llm.LLM``: each committed user turn becomes a run
of the user's thread through the run API, the run's AG-UI events go to the face (the chat
panel sees tool calls and sources), and only the answer's words go on to speech.

livekit-agents keeps its own chat context; the thread's history is the server's, so a turn
sends only its new user message, as a chat panel does. Cancelling the stream (the user
barged in) stops the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from livekit.agents import llm
from livekit.agents.types import (
    DEFAULT_API_CONNECT_OPTIONS,
    NOT_GIVEN,
    APIConnectOptions,
    NotGivenOr,
)

from agent_server.runs.eventlog import Batch
from protocol.errors import Refusal
from protocol.events import TERMINAL_TYPES
from protocol.input import RunAgentInput, UserMessage
from voice.spoken import SpokenText

logger = logging.getLogger("citadel.voice")

NO_RETRY = APIConnectOptions(max_retry=0, timeout=DEFAULT_API_CONNECT_OPTIONS.timeout)
APOLOGY = "Sorry, I could not answer that."


@dataclass
class Answer:
    """The run a turn started, and what of it became the assistant's message."""

    run_id: str
    message_id: str | None = None
    text: str = ""
    error: str | None = None  # the RUN_ERROR code, if the run failed
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class RunApi(Protocol):
    """What a voice session asks of the run API: the app's
    :class:`~agent_server.runs.service.RunService`, or the LiveKit worker's view of one that
    lives on another event loop (:class:`voice.services_loop.LoopRuns`)."""

    async def start(self, owner: str, input: RunAgentInput) -> AsyncIterable[Batch]: ...

    async def stop(self, owner: str, thread_id: str, run_id: str | None = None) -> str: ...

    async def amend_answer(
        self, owner: str, thread_id: str, message_id: str, text: str
    ) -> bool: ...


@dataclass
class Conversation:
    """Whose thread a voice session speaks in, and where the runs' events go."""

    runs: RunApi
    owner: str
    thread_id: str
    on_event: Callable[[bytes], Awaitable[None]]  # each AG-UI event of the session's runs
    answers: list[Answer] = field(default_factory=list)

    @property
    def last_answer(self) -> Answer | None:
        return self.answers[-1] if self.answers else None


class CitadelLLM(llm.LLM):
    def __init__(self, conversation: Conversation) -> None:
        super().__init__()
        self.conversation = conversation

    @property
    def model(self) -> str:
        return "citadel"

    @property
    def provider(self) -> str:
        return "citadel"

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
        # A run is not idempotent (it is stored): never retried behind the user's back.
        return _RunStream(self, chat_ctx=chat_ctx, tools=[], conn_options=NO_RETRY)


class _RunStream(llm.LLMStream):
    async def _run(self) -> None:
        conversation: Conversation = self._llm.conversation  # type: ignore[attr-defined]
        question = _last_user_text(self._chat_ctx)
        if question is None:
            return
        run_id = f"voice_{uuid.uuid4().hex}"
        answer = Answer(run_id)
        conversation.answers.append(answer)
        spoken = SpokenText()
        input = RunAgentInput(
            thread_id=conversation.thread_id,
            run_id=run_id,
            messages=[UserMessage(id=f"msg_{uuid.uuid4().hex}", role="user", content=question)],
        )
        try:
            try:
                stream = await conversation.runs.start(conversation.owner, input)
            except Refusal as refused:
                answer.error = refused.code
                logger.warning("voice turn refused: %s", refused.code)
                self._say(run_id, APOLOGY)
                return
            async with contextlib.aclosing(aiter(stream)) as batches:
                async for batch in batches:
                    for data in batch.data:
                        await conversation.on_event(data)
                        if self._take(answer, spoken, orjson.loads(data)):
                            self._say(run_id, spoken.end())
                            return
        except asyncio.CancelledError:
            if not answer.ended.is_set():
                await asyncio.shield(_stop(conversation, run_id))
            raise
        finally:
            answer.ended.set()

    def _take(self, answer: Answer, spoken: SpokenText, event: dict[str, Any]) -> bool:
        """Follow one event; True when it ends the run."""
        kind = event["type"]
        if kind == "TEXT_MESSAGE_START" and answer.message_id is None:
            answer.message_id = event["messageId"]
        elif kind == "TEXT_MESSAGE_CONTENT" and event["messageId"] == answer.message_id:
            answer.text += event["delta"]
            self._say(answer.run_id, spoken.feed(event["delta"]))
        elif kind == "RUN_ERROR":
            answer.error = event.get("code") or "internal"
            if not answer.text:
                self._say(answer.run_id, APOLOGY)
        return kind in TERMINAL_TYPES

    def _say(self, run_id: str, text: str) -> None:
        if text:
            delta = llm.ChoiceDelta(role="assistant", content=text)
            self._event_ch.send_nowait(llm.ChatChunk(id=run_id, delta=delta))


def _last_user_text(chat_ctx: llm.ChatContext) -> str | None:
    for item in reversed(chat_ctx.items):
        if getattr(item, "role", None) == "user":
            text = item.text_content  # type: ignore[union-attr]
            return text.strip() or None if text else None
    return None


async def _stop(conversation: Conversation, run_id: str) -> None:
    with contextlib.suppress(Refusal):  # it ended meanwhile
        await conversation.runs.stop(conversation.owner, conversation.thread_id, run_id)
