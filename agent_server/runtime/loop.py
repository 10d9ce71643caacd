"""The agent runtime: a RunAgentInput in, AG-UI events out.

Nothing here knows about HTTP, SSE or WebSockets. A run has two phases:

* :meth:`Agent.prepare` checks everything that can make a request invalid (thread owner,
  unanswered interrupts, tool name clashes) and changes nothing, so a refused request leaves
  no trace (:meth:`Agent.prepare_unstored` prepares a run that no store will know of);
* :meth:`Agent.run` streams the run: answers to interrupts, then model turns and tool calls
  until the model answers, a frontend tool or an approval is needed, or the round limit is hit.

The events it yields are folded into a :class:`~protocol.transcript.Transcript`, the same
mirror the client builds, which is what gets stored, also when the run is cancelled midway.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson

from agent_server.backends.errors import BackendError
from agent_server.models.base import (
    ChatModel,
    ChatRequest,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolChoice,
    ToolSpec,
    Usage,
)
from agent_server.runtime.grounded import (
    Similarity,
    passage_request,
    small_talk_reply,
    written_answer,
)
from agent_server.runtime.history import Message, merge_history
from agent_server.runtime.prompt import chat_messages, system_prompt, user_text
from agent_server.runtime.routing import Route, route
from agent_server.runtime.state import SharedState
from agent_server.runtime.tools import BackendTool, ToolContext, ToolRegistry, is_error_result
from agent_server.store.base import (
    EventBatch,
    PendingInterrupt,
    RunEnd,
    RunStart,
    RunStatus,
    ThreadRecord,
    ThreadStore,
)
from protocol import events
from protocol.errors import Refusal
from protocol.events import Event
from protocol.input import ResumeEntry, RunAgentInput, Tool
from protocol.text import scrub
from protocol.transcript import Transcript

DEFAULT_SYSTEM_PROMPT = (
    "You are Citadel, a helpful assistant. Answer briefly and accurately. "
    "Use a tool when it gives a better answer than you can; otherwise answer directly."
)

# The model's budget under the guided policy, for small talk and passage answers.
GUIDED_MAX_TOKENS = 96
# Under the guided policy the model only makes small talk: what it can do is the runtime's.
SMALL_TALK_PROMPT = (
    "You answer questions from the documents in your knowledge base, do arithmetic and tell "
    "the time. Reply to greetings and small talk in one or two short sentences."
)

APPROVAL_SCHEMA = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}},
    "required": ["approved"],
}


@dataclass(frozen=True)
class AgentSettings:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_tool_rounds: int = 8
    max_tokens: int | None = None
    temperature: float | None = None
    model: str | None = None  # a model name of the backend's server; None: the backend's own
    # The tool the runtime calls itself, with the user's words, before the model answers a
    # new question (the "always" retrieval policy); None: the model decides ("auto").
    retrieve_first: str | None = None
    # The runtime routes each question to a tool and answers from its result itself; the
    # model only makes small talk (runtime/routing.py, runtime/grounded.py). For small
    # models: the default of the embedded backend. "model": the model writes the knowledge
    # answers from numbered passages instead (measured in bench/answer_quality.py).
    guided: Literal["extract", "model"] | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass
class PreparedRun:
    """A request that passed every check; running it is now safe.

    The run fills in the rest as it goes: the transcript grows, and what the client must do
    next (answer frontend tool calls, approve interrupts) is recorded for the run's end.
    """

    input: RunAgentInput
    record: ThreadRecord
    new_thread: bool
    transcript: Transcript
    client_messages: list[Message]  # what this request added to the stored history
    previous_seq: int  # events a resumed run already has under the same run id
    state: SharedState
    frontend_tools: dict[str, Tool]
    answers: list[tuple[PendingInterrupt, ResumeEntry]]
    usage: Usage = field(default_factory=Usage)
    pending_tool_call_ids: list[str] = field(default_factory=list)
    interrupts: list[PendingInterrupt] = field(default_factory=list)

    @property
    def thread_id(self) -> str:
        return self.input.thread_id

    @property
    def run_id(self) -> str:
        return self.input.run_id


@dataclass
class _ToolCall:
    id: str
    name: str = ""
    arguments: str = ""
    started: bool = False


class _Turn:
    """Turns one model turn's deltas into events, tracking what is open."""

    def __init__(self) -> None:
        self.calls: list[_ToolCall] = []
        self.text_id: str | None = None
        self.text_open = False
        self.reasoning_id: str | None = None
        self.by_index: dict[int, _ToolCall] = {}

    def feed(self, delta: TextDelta | ReasoningDelta | ToolCallDelta) -> list[Event]:
        # What a model writes is stored: a stray NUL or half a surrogate pair must not be.
        if isinstance(delta, TextDelta):
            return self._text(scrub(delta.text)) if delta.text else []
        if isinstance(delta, ReasoningDelta):
            # Reasoning after the answer started is not shown.
            if not delta.text or self.text_open:
                return []
            return self._reasoning(scrub(delta.text))
        return self._tool_call(delta)

    def close(self) -> list[Event]:
        closing = self._end_reasoning() + self._end_text()
        for call in self.calls:
            if not call.started:
                raise BackendError("the model started a tool call without naming the tool")
            closing.append(events.tool_call_end(call.id))
        return closing

    def _text(self, text: str) -> list[Event]:
        out = self._end_reasoning()
        if not self.text_open:
            self.text_id, self.text_open = new_id("msg"), True
            out.append(events.text_message_start(self.text_id))
        out.append(events.text_message_content(self.text_id, text))
        return out

    def _reasoning(self, text: str) -> list[Event]:
        out = []
        if self.reasoning_id is None:
            self.reasoning_id = new_id("rsn")
            out += [
                events.reasoning_start(self.reasoning_id),
                events.reasoning_message_start(self.reasoning_id),
            ]
        out.append(events.reasoning_message_content(self.reasoning_id, text))
        return out

    def _tool_call(self, delta: ToolCallDelta) -> list[Event]:
        out = self._end_reasoning() + self._end_text()
        call = self.by_index.get(delta.index)
        if call is None:
            # Our own ids: backends reuse theirs across turns (Ollama numbers them).
            call = self.by_index[delta.index] = _ToolCall(new_id("call"))
            self.calls.append(call)
        call.name = call.name or scrub(delta.name or "")  # some servers repeat it per fragment
        arguments = scrub(delta.arguments)
        call.arguments += arguments
        if not call.started and call.name:
            call.started = True
            # Attach to this turn's text, else to the turn's first call, which the client
            # turns into the assistant message.
            first = self.calls[0]
            parent = self.text_id or (first.id if call is not first else None)
            out.append(events.tool_call_start(call.id, call.name, parent_message_id=parent))
            if call.arguments:
                out.append(events.tool_call_args(call.id, call.arguments))
        elif call.started and arguments:
            out.append(events.tool_call_args(call.id, arguments))
        return out

    def _end_text(self) -> list[Event]:
        if not self.text_open:
            return []
        self.text_open = False
        return [events.text_message_end(self.text_id)]

    def _end_reasoning(self) -> list[Event]:
        if self.reasoning_id is None:
            return []
        reasoning_id, self.reasoning_id = self.reasoning_id, None
        return [events.reasoning_message_end(reasoning_id), events.reasoning_end(reasoning_id)]


class Agent:
    def __init__(
        self,
        model: ChatModel,
        tools: ToolRegistry,
        store: ThreadStore,
        settings: AgentSettings = AgentSettings(),
        similarity: Similarity | None = None,
    ) -> None:
        self.model = model
        self.tools = tools
        self.store = store
        self.settings = settings
        # How close in meaning sentences are to a question, for guided knowledge answers.
        self.similarity = similarity
        # Told of each backend tool call: (tool name, seconds, whether it answered an error).
        self.tool_calls: list[Callable[[str, float, bool], None]] = []

    # Phase 1: checks -------------------------------------------------------------------------

    async def prepare(self, input: RunAgentInput, owner: str) -> PreparedRun:
        record = await self.store.load(input.thread_id)
        new_thread = record is None
        if record is None:
            record = ThreadRecord(input.thread_id, owner, title=_title(input.messages))
        elif record.owner != owner:
            # Not 403: whether someone else's thread exists is not ours to reveal.
            raise Refusal("thread_not_found", f"no thread {input.thread_id!r}")
        self._check_tools(input)
        answers = _match_answers(record.pending_interrupts, input.resume)
        previous = None if new_thread else await self.store.get_run(input.thread_id, input.run_id)
        if previous is not None and not any(
            pending.run_id == input.run_id for pending in record.pending_interrupts
        ):
            # Only a resume may reuse the interrupted run's id, as CopilotKit does.
            raise Refusal("run_exists", f"run {input.run_id!r} already ran on this thread")
        return self._prepared(
            input, record, new_thread, previous.last_seq if previous else 0, answers
        )

    def prepare_unstored(self, input: RunAgentInput, owner: str) -> PreparedRun:
        """A run on a new thread that no store knows of, for a face that keeps nothing: its
        history is the input's messages alone, and nothing is loaded or saved."""
        self._check_tools(input)
        answers = _match_answers([], input.resume)
        record = ThreadRecord(input.thread_id, owner, title=_title(input.messages))
        return self._prepared(input, record, True, 0, answers)

    def _check_tools(self, input: RunAgentInput) -> None:
        clashes = sorted(tool.name for tool in input.tools if tool.name in self.tools)
        if clashes:
            raise Refusal(
                "invalid_input", f"tool names reserved by the server: {', '.join(clashes)}"
            )

    def _prepared(
        self,
        input: RunAgentInput,
        record: ThreadRecord,
        new_thread: bool,
        previous_seq: int,
        answers: list[tuple[PendingInterrupt, ResumeEntry]],
    ) -> PreparedRun:
        transcript = Transcript(record.messages)
        client_messages = merge_history(
            transcript,
            input.messages,
            new_thread=new_thread,
            answered_by_server={pending.tool_call_id for pending, _ in answers},
        )
        # The client already holds the state it sent; stored state it must be told.
        if input.state is not None:
            state = SharedState(input.state, client_holds=True)
        else:
            state = SharedState(record.state, client_holds=record.state is None)
        return PreparedRun(
            input=input,
            record=record,
            new_thread=new_thread,
            transcript=transcript,
            client_messages=client_messages,
            previous_seq=previous_seq,
            state=state,
            frontend_tools={tool.name: tool for tool in input.tools},
            answers=answers,
        )

    # Phase 2: the run ------------------------------------------------------------------------

    def run_start(self, prepared: PreparedRun) -> RunStart:
        """What the store records before the run's first byte."""
        return RunStart(
            prepared.thread_id,
            prepared.run_id,
            prepared.record.owner,
            prepared.record.title,
            prepared.client_messages,
            prepared.input.protocol_version,
        )

    def run_end(self, prepared: PreparedRun, terminal: Event, events: EventBatch) -> RunEnd:
        """What the store records before the run's terminal event is sent."""
        outcome = (
            terminal.get("outcome", {}).get("type") if terminal["type"] != "RUN_ERROR" else None
        )
        if terminal["type"] == "RUN_ERROR":
            status = RunStatus.FAILED
        elif outcome == "interrupt":
            status = RunStatus.INTERRUPTED
        elif outcome == "cancelled":
            status = RunStatus.CANCELLED
        else:
            status, outcome = RunStatus.SUCCEEDED, "success"
        stored = len(prepared.record.messages) + len(prepared.client_messages)
        return RunEnd(
            prepared.thread_id,
            prepared.run_id,
            status,
            outcome,
            terminal.get("code"),
            terminal.get("message"),
            prepared.transcript.messages[stored:],
            prepared.state.value,
            prepared.interrupts if status is RunStatus.INTERRUPTED else [],
            self._usage(prepared),
            events.seq_from + len(events.events) - 1,
            events,
        )

    async def run(self, prepared: PreparedRun) -> AsyncIterator[Event]:
        """Stream the run; every event is also applied to ``prepared.transcript``."""
        transcript = prepared.transcript
        async for event in self._run(prepared):
            transcript.apply(event)
            yield event

    async def _run(self, prepared: PreparedRun) -> AsyncIterator[Event]:
        # Model deltas stream through here one generator deep: every layer costs per token.
        input = prepared.input
        yield events.run_started(input.thread_id, input.run_id, parent_run_id=input.parent_run_id)
        for event in prepared.state.announce():
            yield event
        try:
            if prepared.answers:
                # Results below answer calls made in an earlier run: resend the history that
                # holds them, so every consumer (and validator) knows those calls.
                history = orjson.loads(orjson.dumps(prepared.transcript.messages))
                yield events.messages_snapshot(history)
                for pending, answer in prepared.answers:
                    async for event in self._answer_interrupt(prepared, pending, answer):
                        yield event
            guided = self._guided_request(prepared) if self.settings.guided else None
            if guided is not None:
                async for event in self._guide(prepared, guided):
                    yield event
            else:
                async for event in self._retrieve_first(prepared):
                    yield event
            # Guided: the answer is written, or the model answers once without tools.
            last_round = 0 if guided is not None else self.settings.max_tool_rounds
            for round_number in range(last_round + 1):
                # Out of rounds: the model must answer with what it has.
                choice: ToolChoice = "auto" if round_number < last_round else "none"
                if guided is None:
                    # The runtime searches itself: the model is never offered that tool.
                    request = self._request(prepared, choice, without=self.settings.retrieve_first)
                elif guided.request is None:
                    break  # the runtime wrote the answer
                else:
                    request = guided.request
                turn = _Turn()
                yield events.step_started("model")
                # aclosing: however this generator ends, the backend's stream closes at once.
                async with contextlib.aclosing(self.model.stream(request)) as deltas:
                    async for delta in deltas:
                        if isinstance(delta, Usage):
                            prepared.usage += delta
                            continue
                        for event in turn.feed(delta):
                            yield event
                for event in turn.close():
                    yield event
                yield events.step_finished("model")
                if not turn.calls:
                    break
                async for event in self._dispatch(prepared, turn.calls):
                    yield event
                if prepared.interrupts or prepared.pending_tool_call_ids:
                    break
        except BackendError as error:
            yield events.run_error(
                str(error) or error.code, error.code, usage=self._usage(prepared)
            )
            return
        yield events.run_finished(
            input.thread_id,
            input.run_id,
            outcome=_outcome_event(prepared),
            usage=self._usage(prepared),
        )

    def _guided_request(self, prepared: PreparedRun) -> _Guided | None:
        """The route of a new question, or None (an approval answered, a tool result)."""
        messages = prepared.transcript.messages
        if not messages or messages[-1]["role"] != "user":
            return None
        available = {tool.name for tool in self.tools if not tool.requires_approval}
        # The search tool is the one the runtime would call first under "always" retrieval.
        return _Guided(route(messages, available, self.settings.retrieve_first or ""))

    async def _guide(self, prepared: PreparedRun, guided: _Guided) -> AsyncIterator[Event]:
        """Call the routed tool as the model would have, then write the answer from its
        result, or leave a tool-less request for the model (small talk)."""
        found = guided.route
        if found.tool is None:
            if found.small_talk is None or self.settings.guided == "model":
                guided.request = self._small_talk(prepared)
                return
            for event in _written(small_talk_reply(found.small_talk, found.said)):
                yield event
            return
        result = ""
        async for event in self._call(prepared, found.tool, found.arguments):
            if event["type"] == "TOOL_CALL_RESULT":
                result = event["content"]
            yield event
        if found.intent == "knowledge" and self.settings.guided == "model":
            guided.request = self._passage_request(found.question, result)
            return
        for event in _written(await written_answer(found, result, self.similarity)):
            yield event

    def _small_talk(self, prepared: PreparedRun) -> ChatRequest:
        request = self._request(prepared, "none", extra=(SMALL_TALK_PROMPT,))
        return replace(request, max_tokens=self._guided_budget())

    def _passage_request(self, question: str, result: str) -> ChatRequest:
        return replace(
            passage_request(question, result),
            max_tokens=self._guided_budget(),
            model=self.settings.model,
        )

    def _guided_budget(self) -> int:
        configured = self.settings.max_tokens
        return min(configured, GUIDED_MAX_TOKENS) if configured else GUIDED_MAX_TOKENS

    async def _retrieve_first(self, prepared: PreparedRun) -> AsyncIterator[Event]:
        """Search before the model answers a new question: a call of the retrieval tool
        with the question as query."""
        tool_name = self.settings.retrieve_first
        messages = prepared.transcript.messages
        if tool_name not in self.tools or not messages or messages[-1]["role"] != "user":
            return
        question = user_text(messages[-1]["content"]).strip()
        if question:
            async for event in self._call(prepared, tool_name, {"query": question[:1000]}):
                yield event

    async def _call(
        self, prepared: PreparedRun, tool_name: str, arguments: dict[str, Any]
    ) -> AsyncIterator[Event]:
        """A tool call the runtime makes itself, streamed like one the model made."""
        turn = _Turn()
        encoded = orjson.dumps(arguments).decode()
        for event in turn.feed(ToolCallDelta(0, name=tool_name, arguments=encoded)):
            yield event
        for event in turn.close():
            yield event
        async for event in self._dispatch(prepared, turn.calls):
            yield event

    async def _dispatch(
        self, prepared: PreparedRun, calls: list[_ToolCall]
    ) -> AsyncIterator[Event]:
        """Run backend tools now; leave frontend calls to the client and approvals to a
        person, recording both in ``prepared``."""
        for call in calls:
            tool = self.tools.get(call.name)
            if call.name in prepared.frontend_tools:
                prepared.pending_tool_call_ids.append(call.id)
            elif tool is None:
                yield _result(call.id, {"error": f"there is no tool named {call.name!r}"})
            elif tool.requires_approval:
                prepared.interrupts.append(
                    PendingInterrupt(
                        new_id("int"), call.id, call.name, call.arguments, prepared.run_id
                    )
                )
            else:
                async for event in self._execute(prepared, tool, call.id, call.arguments):
                    yield event

    def _request(
        self,
        prepared: PreparedRun,
        choice: ToolChoice,
        without: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> ChatRequest:
        input = prepared.input
        system = system_prompt(
            self.settings.system_prompt, input.context, prepared.state.value, extra
        )
        tools: list[ToolSpec] = []
        if choice != "none":
            tools = [tool.spec for tool in self.tools if tool.name != without]
            tools += [
                ToolSpec(tool.name, tool.description, tool.parameters or {"type": "object"})
                for tool in prepared.frontend_tools.values()
            ]
        return ChatRequest(
            chat_messages(system, prepared.transcript.messages),
            tools=tools,
            tool_choice=choice if tools else "none",
            max_tokens=self.settings.max_tokens,
            temperature=self.settings.temperature,
            model=self.settings.model,
        )

    async def _execute(
        self, prepared: PreparedRun, tool: BackendTool, call_id: str, arguments: str
    ) -> AsyncIterator[Event]:
        step = f"tool:{tool.name}"
        yield events.step_started(step)
        context = ToolContext(
            prepared.thread_id, prepared.run_id, prepared.state.working, prepared.record.owner
        )
        started = time.perf_counter()
        result = await tool.invoke(arguments, context)
        for observer in self.tool_calls:
            observer(tool.name, time.perf_counter() - started, is_error_result(result))
        prepared.state.working = context.state
        yield events.tool_call_result(new_id("msg"), call_id, result)
        for event in prepared.state.publish():
            yield event
        yield events.step_finished(step)

    async def _answer_interrupt(
        self, prepared: PreparedRun, pending: PendingInterrupt, answer: ResumeEntry
    ) -> AsyncIterator[Event]:
        tool = self.tools.get(pending.tool_name)
        approved = answer.status == "resolved" and not (
            isinstance(answer.payload, dict) and answer.payload.get("approved") is False
        )
        if approved and tool is not None:
            async for event in self._execute(
                prepared, tool, pending.tool_call_id, pending.arguments
            ):
                yield event
        else:
            yield _result(
                pending.tool_call_id,
                {"declined": True, "message": "The user did not approve this call."},
            )

    def _usage(self, prepared: PreparedRun) -> list[dict[str, Any]]:
        usage = prepared.usage
        if not (usage.input_tokens or usage.output_tokens):
            return []
        entry = {
            "provider": self.model.provider,
            "model": self.model.model,
            "inputTokens": usage.input_tokens,
            "outputTokens": usage.output_tokens,
            "totalTokens": usage.input_tokens + usage.output_tokens,
        }
        if usage.reasoning_tokens is not None:
            entry["reasoningTokens"] = usage.reasoning_tokens
        if usage.cached_input_tokens is not None:
            entry["cachedInputTokens"] = usage.cached_input_tokens
        return [entry]


@dataclass
class _Guided:
    route: Route
    request: ChatRequest | None = None  # what the model answers; None: the runtime wrote it


# A written answer streams a sentence (or line) at a time.
_SENTENCE_PIECES = re.compile(r"[^\n]*?(?:[.!?:](?=\s)|\n|$)\s*")


def _written(answer: str) -> list[Event]:
    """An answer the runtime wrote, as the events of a streamed one."""
    turn = _Turn()
    written = [
        event for piece in _SENTENCE_PIECES.findall(answer) for event in turn.feed(TextDelta(piece))
    ]
    return written + turn.close()


def _result(call_id: str, content: dict[str, Any]) -> Event:
    return events.tool_call_result(new_id("msg"), call_id, orjson.dumps(content).decode())


def _outcome_event(prepared: PreparedRun) -> dict[str, Any]:
    if prepared.interrupts:
        return approval_outcome(prepared.interrupts)
    return events.success_outcome(prepared.pending_tool_call_ids)


def _title(messages: list[Any]) -> str:
    """A new thread's title: the start of its first user message."""
    for message in messages:
        if message.role == "user":
            text = message.content if isinstance(message.content, str) else ""
            if not text:
                text = " ".join(part.text for part in message.content if part.type == "text")
            text = " ".join(text.split())
            return text if len(text) <= 80 else text[:79] + "…"
    return ""


def approval_outcome(pending: list[PendingInterrupt]) -> dict[str, Any]:
    """The interrupt outcome that asks a person to approve each pending tool call."""
    return events.interrupt_outcome(
        [
            events.interrupt(
                item.id,
                "tool_call",
                message=f"Allow the assistant to run {item.tool_name}?",
                tool_call_id=item.tool_call_id,
                response_schema=APPROVAL_SCHEMA,
                metadata={"toolName": item.tool_name, "arguments": item.arguments},
            )
            for item in pending
        ]
    )


def _match_answers(
    pending: list[PendingInterrupt], resume: list[ResumeEntry]
) -> list[tuple[PendingInterrupt, ResumeEntry]]:
    answers = {entry.interrupt_id: entry for entry in resume}
    known = {interrupt.id for interrupt in pending}
    unknown = sorted(answers.keys() - known)
    if unknown:
        raise Refusal("unknown_interrupt", f"no pending interrupt {', '.join(unknown)}")
    unanswered = sorted(known - answers.keys())
    if unanswered:
        raise Refusal(
            "interrupts_pending",
            f"the thread has {len(unanswered)} pending interrupt(s) not answered by resume: "
            + ", ".join(unanswered),
        )
    return [(interrupt, answers[interrupt.id]) for interrupt in pending]
