"""OllamaDouble: a TEST DOUBLE of an Ollama server.

No Ollama server can run on our machines, so tests that need one talk to this small Starlette
app instead. It runs no model: ``POST /api/chat`` replays scripted replies in FIFO order, in
Ollama's wire shapes as recorded in shared/reference/models.md §4 (NDJSON lines, a final
``done`` line with token counts, tool-call arguments as JSON objects, ``{"error": ...}`` lines
after HTTP 200). It listens on 127.0.0.1 on a free port for the duration of an ``async with``::

    async with OllamaDouble() as ollama:
        ollama.enqueue(
            ScriptedReply(tool_call_reply([("get_current_time", {"timezone": "UTC"})])),
            ScriptedReply(text_reply("It is noon in UTC.")),
        )
        model = OllamaChatModel(ollama.url, DEFAULT_MODEL)
        ...  # run the agent
        assert ollama.requests[1]["messages"][-1]["tool_name"] == "get_current_time"

With an empty queue ``/api/chat`` answers :data:`DEFAULT_TEXT`. Every ``/api/chat`` body is
kept in :attr:`OllamaDouble.requests` and its headers in :attr:`OllamaDouble.request_headers`
(same order); clients that hang up before a reply ends are counted in
:attr:`OllamaDouble.disconnects` (await :meth:`OllamaDouble.wait_for_disconnects`). ``GET /``,
``GET /api/tags`` and ``POST /api/show`` describe the ``models`` given to the constructor;
``/api/chat`` does not check the model name, the script decides every answer.

``POST /api/embed`` answers in Ollama's shape with stand-in vectors: unit vectors of
``embed_dimensions`` seeded by each text's hash (the same text always gets the same vector;
they carry no meaning). Bodies are kept in :attr:`OllamaDouble.embed_requests` and headers in
:attr:`OllamaDouble.embed_headers`; an unknown model is a 404 as in Ollama, and
:attr:`OllamaDouble.embed_status` set to an error status makes every embed request fail with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import math
import random
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.support.servers import serve
from tests.support.waiting import PATIENCE

DEFAULT_MODEL = "llama3.2:latest"
DEFAULT_TEXT = "Hello from the Ollama test double."

Line = Mapping[str, Any] | str


@dataclass(frozen=True, slots=True)
class ScriptedReply:
    """One answer to ``POST /api/chat``.

    ``lines`` are sent as NDJSON (a ``str`` is sent verbatim, for malformed-line tests), each
    after ``delay`` seconds; with a ``gate``, not one before the test sets it (the model is
    silent for exactly as long as the test needs), and with ``holds`` ``{i: event}``, line
    ``i`` not before ``event`` is set (the reply pauses mid-answer where the test says). With
    ``hang`` the reply then stays open, sending nothing, until the client disconnects or the
    double shuts down. A ``status`` of 400 or more sends ``error_body`` (default
    ``{"error": "scripted HTTP <status>"}``) instead of lines, with ``headers`` (e.g.
    ``Retry-After``).
    """

    lines: Sequence[Line] = ()
    status: int = 200
    delay: float = 0.0
    hang: bool = False
    error_body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None
    gate: asyncio.Event | None = None
    holds: Mapping[int, asyncio.Event] | None = None


# Line builders: realistic /api/chat streams -------------------------------------------------


def text_reply(
    text: str, *, model: str = DEFAULT_MODEL, chunks: int = 3, prompt_tokens: int = 26
) -> list[dict[str, Any]]:
    """``text`` streamed in ``chunks`` content lines, then the ``done`` line."""
    pieces = _split(text, chunks)
    return [_line(model, {"content": p}) for p in pieces] + [
        _done_line(model, prompt_tokens, len(pieces))
    ]


def tool_call_reply(
    calls: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    model: str = DEFAULT_MODEL,
    ids: bool = True,
    prompt_tokens: int = 142,
) -> list[dict[str, Any]]:
    """One line carrying ``(name, arguments)`` calls, then the ``done`` line. Servers since
    0.33 add ``id`` and ``function.index``; ``ids=False`` gives the older shape without them."""
    wire_calls = []
    for index, (name, arguments) in enumerate(calls):
        function: dict[str, Any] = {"name": name, "arguments": dict(arguments)}
        call: dict[str, Any] = {"function": function}
        if ids:
            function["index"] = index
            call["id"] = f"call_{hashlib.sha256(f'{name}{index}'.encode()).hexdigest()[:8]}"
        wire_calls.append(call)
    return [
        _line(model, {"content": "", "tool_calls": wire_calls}),
        _done_line(model, prompt_tokens, 18 * len(calls)),
    ]


def thinking_reply(
    *,
    thinking: str,
    text: str,
    model: str = DEFAULT_MODEL,
    chunks: int = 2,
    prompt_tokens: int = 31,
) -> list[dict[str, Any]]:
    """A thinking model's stream: ``thinking`` lines, then ``text`` lines, then ``done``."""
    thoughts = [_line(model, {"content": "", "thinking": p}) for p in _split(thinking, chunks)]
    answer = [_line(model, {"content": p}) for p in _split(text, chunks)]
    return [*thoughts, *answer, _done_line(model, prompt_tokens, len(thoughts) + len(answer))]


def _split(text: str, parts: int) -> list[str]:
    parts = max(1, min(parts, len(text)))
    size, extra = divmod(len(text), parts)
    bounds = [i * size + min(i, extra) for i in range(parts + 1)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _line(model: str, message: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": _now(),
        "message": {"role": "assistant", **message},
        "done": False,
        **extra,
    }


def _done_line(model: str, prompt_tokens: int, output_tokens: int) -> dict[str, Any]:
    prompt_ns, eval_ns, load_ns = prompt_tokens * 7_000_000, output_tokens * 21_000_000, 9_000_000
    return _line(
        model,
        {"content": ""},
        done=True,
        done_reason="stop",
        total_duration=load_ns + prompt_ns + eval_ns,
        load_duration=load_ns,
        prompt_eval_count=prompt_tokens,
        prompt_eval_duration=prompt_ns,
        eval_count=output_tokens,
        eval_duration=eval_ns,
    )


# The server ------------------------------------------------------------------------------


class OllamaDouble:
    """A TEST DOUBLE of an Ollama server; see the module docstring. ``url`` is set on entry."""

    def __init__(
        self,
        *,
        models: Sequence[str] = (DEFAULT_MODEL,),
        capabilities: Sequence[str] = ("completion", "tools"),
        embed_dimensions: int = 768,
    ) -> None:
        self.models = list(models)
        self.capabilities = list(capabilities)
        self.url = ""
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[Headers] = []
        self.embed_dimensions = embed_dimensions
        self.embed_requests: list[dict[str, Any]] = []
        self.embed_headers: list[Headers] = []
        self.embed_status = 200
        self.disconnects = 0
        self._replies: deque[ScriptedReply] = deque()
        self._closing = asyncio.Event()
        self._changed = asyncio.Condition()
        self._exit_stack = contextlib.AsyncExitStack()
        self.app = Starlette(
            routes=[
                Route("/", self._root, methods=["GET", "HEAD"]),
                Route("/api/tags", self._tags, methods=["GET"]),
                Route("/api/show", self._show, methods=["POST"]),
                Route("/api/chat", self._chat, methods=["POST"]),
                Route("/api/embed", self._embed, methods=["POST"]),
            ]
        )

    def enqueue(self, *replies: ScriptedReply) -> None:
        """Script the next ``/api/chat`` answers, in order."""
        self._replies.extend(replies)

    async def wait_for_requests(self, count: int = 1) -> None:
        """Wait until ``/api/chat`` has been called ``count`` times; fail after PATIENCE."""
        async with asyncio.timeout(PATIENCE), self._changed:
            await self._changed.wait_for(lambda: len(self.requests) >= count)

    async def wait_for_disconnects(self, count: int = 1) -> None:
        """Wait until at least ``count`` clients have hung up mid-reply; fail after PATIENCE
        rather than hang the test."""
        async with asyncio.timeout(PATIENCE), self._changed:
            await self._changed.wait_for(lambda: self.disconnects >= count)

    async def __aenter__(self) -> OllamaDouble:
        self.url = await self._exit_stack.enter_async_context(serve(self.app))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing.set()  # release hanging replies so the server can stop
        await self._exit_stack.aclose()

    async def _root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def _tags(self, request: Request) -> Response:
        return JSONResponse({"models": [_tag(name) for name in self.models]})

    async def _show(self, request: Request) -> Response:
        name = (await request.json()).get("model", "")
        if not self._has(name):
            return JSONResponse({"error": f"model '{name}' not found"}, status_code=404)
        return JSONResponse(
            {
                "modelfile": f"FROM {name}",
                "parameters": 'stop "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": _DETAILS,
                "model_info": {
                    "general.architecture": "llama",
                    "llama.context_length": 131072,
                    "llama.embedding_length": 3072,
                },
                "capabilities": self.capabilities,
                "modified_at": _now(),
            }
        )

    async def _chat(self, request: Request) -> Response | _Replay:
        body = await request.json()
        async with self._changed:
            self.requests.append(body)
            self.request_headers.append(request.headers)
            self._changed.notify_all()
        if self._replies:
            reply = self._replies.popleft()
        else:
            reply = ScriptedReply(text_reply(DEFAULT_TEXT))
        if reply.status >= 400:
            body = reply.error_body or {"error": f"scripted HTTP {reply.status}"}
            return JSONResponse(dict(body), status_code=reply.status, headers=reply.headers)
        return _Replay(self, reply)

    async def _embed(self, request: Request) -> Response:
        body = await request.json()
        self.embed_requests.append(body)
        self.embed_headers.append(request.headers)
        if self.embed_status != 200:
            return JSONResponse({"error": "scripted failure"}, status_code=self.embed_status)
        if not self._has(body.get("model", "")):
            return JSONResponse({"error": f"model '{body.get('model')}' not found"}, 404)
        texts = body.get("input", [])
        texts = [texts] if isinstance(texts, str) else texts
        return JSONResponse(
            {
                "model": body["model"],
                "embeddings": [self._stand_in_vector(text) for text in texts],
                "total_duration": 1000,
                "load_duration": 0,
                "prompt_eval_count": sum(len(text.split()) for text in texts),
            }
        )

    def _stand_in_vector(self, text: str) -> list[float]:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
        rng = random.Random(seed)
        vector = [rng.gauss(0, 1) for _ in range(self.embed_dimensions)]
        norm = math.sqrt(sum(x * x for x in vector))
        return [x / norm for x in vector]

    def _has(self, name: str) -> bool:
        return any(name in (m, m.removesuffix(":latest")) for m in self.models)

    async def _count_disconnect(self) -> None:
        async with self._changed:
            self.disconnects += 1
            self._changed.notify_all()


class _Replay:
    """Streams one scripted reply while watching for the client hanging up."""

    def __init__(self, double: OllamaDouble, reply: ScriptedReply) -> None:
        self._double = double
        self._reply = reply

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/x-ndjson")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        writer = asyncio.create_task(self._write(send))
        hangup = asyncio.create_task(_hangup(receive))
        await asyncio.wait({writer, hangup}, return_when=asyncio.FIRST_COMPLETED)
        if not writer.done():
            await self._double._count_disconnect()
        for task in (writer, hangup):
            task.cancel()
        await asyncio.gather(writer, hangup, return_exceptions=True)

    async def _write(self, send: Send) -> None:
        if self._reply.gate is not None:
            await _first_of(self._reply.gate, self._double._closing)
        holds = self._reply.holds or {}
        for index, line in enumerate(self._reply.lines):
            if index in holds:
                await _first_of(holds[index], self._double._closing)
            if self._reply.delay:
                await asyncio.sleep(self._reply.delay)
            data = line.encode() if isinstance(line, str) else orjson.dumps(line)
            await send({"type": "http.response.body", "body": data + b"\n", "more_body": True})
        if self._reply.hang:
            await self._double._closing.wait()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _first_of(*events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def _hangup(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


_DETAILS = {
    "parent_model": "",
    "format": "gguf",
    "family": "llama",
    "families": ["llama"],
    "parameter_size": "3.2B",
    "quantization_level": "Q4_K_M",
}


def _tag(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": _now(),
        "size": 2_019_393_189,
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": _DETAILS,
    }
