"""The servers under test, each in its own process: ``python -m bench.servers KIND --port N``.

* ``citadel``: our real app, ``create_app(Settings(...), model=ScriptedModel())``, on the
  in-memory thread store: the runtime's own cost;
* ``citadel_sse_starlette``: ``citadel`` whose ``/agui`` frames events with sse-starlette's
  ``EventSourceResponse`` (``sep="\\n"``), one ``ServerSentEvent`` per event, instead of its own
  framing: the candidate the FastAPI move was measured against;
* ``citadel_postgres``: the same on Postgres, as deployed: ``BENCH_DATABASE_URL`` or, unset,
  an embedded server under ``BENCH_DATA_DIR`` (:func:`running` makes a fresh one);
* ``citadel_clerk``: ``citadel`` with Clerk authentication (a PEM from the environment):
  the access layer's cost (bench/auth.py);
* ``pydantic_ai``: pydantic-ai's AG-UI adapter (``AGUIAdapter.dispatch_request``) over an
  agent whose ``FunctionModel`` plays the same script (:func:`bench.scripted.play`);
* ``citadel_openai``: ``citadel`` with ``CITADEL_LLM=openai`` on the OpenAI-compatible server
  at ``BENCH_LLM_URL`` (model ``scripted``): the chat-completions face over a real backend
  client (bench/chat_completions.py);
* ``citadel_voice``: ``citadel`` with the offline speech stack for ``GET /voice/ws``, a model
  answering every turn with one short sentence (:class:`bench.scripted.SpokenAnswerModel`),
  the voice settings pinned (``BENCH_VOICE_SILENCE`` seconds of silence end a turn),
  voice sockets not rate-limited, ``POST /bench/gc`` to collect garbage and trim the C heap
  before its memory is read, and ``GET /bench/decode``: Whisper's time on the last turn
  (bench/voice.py);
* ``citadel_web``: ``citadel`` serving the built web app in ``BENCH_WEB_DIR`` at ``/`` (the
  app's build, or bench/web.py's bare page): the browser's path (bench/web.py);
* ``openai_scripted``: a TEST DOUBLE of an OpenAI-compatible model server, a
  ``/v1/chat/completions`` whose model plays the script of the last user message, streamed
  as OpenAI streams (role chunk, one chunk per delta, finish chunk, usage chunk, ``[DONE]``);
* ``bare``: a Starlette route writing pre-encoded frames, the same events and bytes Citadel
  produces for a ``deltas=N`` answer, one ``yield`` per event: what uvicorn+Starlette can do
  (with ``tick``, one event-loop turn before each content frame, as the model would take).
  Paced, stamped and idle scripts are played live with :func:`bench.scripted.play`: the
  baseline for the concurrency and idle-memory measures.

All run under one uvicorn worker with its default loop and HTTP parser (uvloop and
httptools when installed), log level warning, bound to 127.0.0.1. Citadel's servers use Redis
only at ``BENCH_REDIS_URL`` (bench/workers.py), never the shell's ``REDIS_URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from agent_server.models.base import ChatModel
from bench.client import raise_fd_limit
from bench.scripted import Script, ScriptedModel, SpokenAnswerModel, parse_script, play
from protocol import events
from protocol.events import Event
from protocol.framing import SSE_HEADERS, SSE_MEDIA_TYPE, encode, event_id, sse_frame

HOST = "127.0.0.1"
KINDS = (
    "citadel",
    "citadel_sse_starlette",
    "citadel_postgres",
    "citadel_clerk",
    "citadel_openai",
    "citadel_voice",
    "citadel_web",
    "openai_scripted",
    "pydantic_ai",
    "bare",
)
SCRIPTED_MODEL = "scripted"  # the model openai_scripted serves


def last_user_text(data: dict) -> str:
    return next((m["content"] for m in reversed(data["messages"]) if m.get("role") == "user"), "")


def citadel_app(
    store: str = "memory", scripted: bool = True, model: ChatModel | None = None, **access: object
) -> Starlette:
    from agent_server.app import create_app
    from agent_server.config import Settings

    logging.getLogger("citadel").setLevel(logging.ERROR)  # not "authentication is OFF" each time
    # Pinned so that CITADEL_* variables in the environment cannot change what is measured.
    pinned: dict[str, object] = {
        "env": "development",
        "llm": "embedded",
        "auth": "off",
        "cors_origins": [],
        "store": store,
        "database_url": os.environ.get("BENCH_DATABASE_URL") or None,
        # Not REDIS_URL: a shell that sets it would put every server on Redis unseen.
        "redis_url": os.environ.get("BENCH_REDIS_URL") or None,
        "data_dir": os.environ.get("BENCH_DATA_DIR", "data"),
        "max_messages": 10_000,
        "retrieval": "off",  # the runtime's cost alone: no knowledge base, no demo ingestion
        "demo_docs": None,
        "rate_runs": "1000000/s",  # the load is the benchmark's, not abuse
        "rate_requests": "1000000/s",
        "max_streams_per_user": 1_000_000,  # 1,000 streams of one user at once
    }
    settings = Settings(**(pinned | access))
    return create_app(settings, model=model or (ScriptedModel() if scripted else None))


def citadel_sse_starlette_app() -> Starlette:
    """Citadel with ``/agui`` framed by sse-starlette's ``EventSourceResponse`` (LF
    separators) instead of its own framing: the same run API, one event dict per event.
    Dicts, not ``ServerSentEvent`` objects: ``sep`` reaches only what the response builds
    itself, and an event built by hand keeps CRLF, which AG-UI clients never split on."""
    from fastapi import FastAPI
    from sse_starlette import EventSourceResponse

    from protocol.input import parse_run_input

    app = citadel_app()
    assert isinstance(app, FastAPI)

    async def run(request: Request) -> Response:
        services = request.app.state.services
        input = parse_run_input(await request.body(), services.input_limits)
        stream = await services.runs.start("local", input)

        async def framed() -> AsyncIterator[dict[str, str]]:
            async for batch in stream:
                for seq, data in zip(batch.seqs, batch.data, strict=True):
                    yield {"data": data.decode(), "id": f"{batch.run_id}:{seq}"}

        return EventSourceResponse(framed(), sep="\n", ping=15, headers=SSE_HEADERS)

    app.router.routes.insert(0, Route("/agui", run, methods=["POST"]))
    return app


def citadel_postgres_app() -> Starlette:
    return citadel_app("postgres")


def citadel_clerk_app() -> Starlette:
    """Citadel verifying Clerk sessions with ``BENCH_CLERK_JWT_KEY`` (a PEM; no network), the
    failed-authentication guard at ``BENCH_AUTH_FAILURES``, other limits out of the way."""
    return citadel_app(
        auth="clerk",
        clerk_issuer=os.environ["BENCH_CLERK_ISSUER"],
        clerk_jwt_key=os.environ["BENCH_CLERK_JWT_KEY"],
        clerk_authorized_parties=[os.environ["BENCH_CLERK_APP"]],
        rate_auth_failures=os.environ.get("BENCH_AUTH_FAILURES", "60/min"),
    )


def citadel_openai_app() -> Starlette:
    """Citadel's own OpenAI-compatible backend client on ``BENCH_LLM_URL``."""
    return citadel_app(
        scripted=False,
        llm="openai",
        llm_url=os.environ["BENCH_LLM_URL"],
        llm_model=SCRIPTED_MODEL,
        llm_retries=0,
    )


def citadel_voice_app() -> Starlette:
    """Citadel's voice socket on the offline stack (Whisper tiny.en, silero VAD, espeak-ng)."""
    from voice.speech.stack import SpeechConfig

    defaults = SpeechConfig()
    app = citadel_app(
        model=SpokenAnswerModel(),
        voice_silence=float(os.environ.get("BENCH_VOICE_SILENCE") or defaults.silence),
        llm_threads=defaults.threads,  # Whisper's threads
        stt_url=None,
        tts_url=None,
        rate_voice="1000000/s",
    )

    async def collect(request: Request) -> Response:
        """A full garbage collection, and the C heap's free pages given back, so that the RSS
        read next is live memory: under ``tune_garbage_collector``'s thresholds a closed
        session can stay uncollected long, and glibc keeps freed pages (a decode's buffers,
        freed in a worker thread's arena) until it trims."""
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):  # glibc only
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        return Response(status_code=204)

    async def decode(request: Request) -> Response:
        """Seconds Whisper took on the server's last recognition (one session at a time)."""
        from voice.speech.whisper import last_decode

        return Response(orjson.dumps({"seconds": last_decode() or None}))

    app.router.routes.insert(0, Route("/bench/gc", collect, methods=["POST"]))
    app.router.routes.insert(0, Route("/bench/decode", decode, methods=["GET"]))
    return app


def citadel_web_app() -> Starlette:
    """Citadel serving the web app built in ``BENCH_WEB_DIR``."""
    return citadel_app(web_dir=Path(os.environ["BENCH_WEB_DIR"]))


def openai_scripted_app() -> Starlette:
    head = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0}
    prefix = b"data: " + orjson.dumps(head | {"model": SCRIPTED_MODEL})[:-1] + b',"choices":['

    def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return prefix + orjson.dumps(choice) + b"]}\n\n"

    token = chunk({"content": "tok "})
    usage = {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}

    async def answer(script: Script) -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        count = 0
        async for text in play(script):
            count += 1
            yield token if text == "tok " else chunk({"content": text})
        yield chunk({}, "stop")
        counted = usage | {"completion_tokens": count, "total_tokens": count + 1}
        yield prefix + b'],"usage":' + orjson.dumps(counted) + b"}\n\n"
        yield b"data: [DONE]\n\n"

    async def completions(request: Request) -> Response:
        script = parse_script(last_user_text(orjson.loads(await request.body())))
        return StreamingResponse(answer(script), media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)

    async def models(request: Request) -> Response:
        listing = {"object": "list", "data": [{"id": SCRIPTED_MODEL, "object": "model"}]}
        return Response(orjson.dumps(listing), media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


def pydantic_ai_app() -> Starlette:
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelMessage, ModelRequest, UserPromptPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.ui.ag_ui import AGUIAdapter

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        prompt = next(
            part.content
            for message in reversed(messages)
            if isinstance(message, ModelRequest)
            for part in message.parts
            if isinstance(part, UserPromptPart) and isinstance(part.content, str)
        )
        async for text in play(parse_script(prompt)):
            yield text

    agent = Agent(FunctionModel(stream_function=stream, model_name="scripted"))

    async def run(request: Request) -> Response:
        return await AGUIAdapter.dispatch_request(request, agent=agent)

    return Starlette(routes=[Route("/agui", run, methods=["POST"])])


MESSAGE_ID = "msg_" + "0" * 32  # the shape of runtime.loop.new_id("msg")


def citadel_events(thread_id: str, run_id: str, texts: Iterable[str]) -> Iterator[Event]:
    """The events Citadel sends for an answer made of ``texts``."""
    yield events.run_started(thread_id, run_id)
    yield events.step_started("model")
    yield events.text_message_start(MESSAGE_ID)
    for text in texts:
        yield events.text_message_content(MESSAGE_ID, text)
    yield events.text_message_end(MESSAGE_ID)
    yield events.step_finished("model")
    yield events.run_finished(thread_id, run_id, outcome=events.success_outcome())


def citadel_frames(deltas: int, thread_id: str, run_id: str) -> list[bytes]:
    """The SSE frames Citadel sends for a ``deltas=N`` answer, built with its own encoders."""
    sequence = citadel_events(thread_id, run_id, ["tok "] * deltas)
    return [sse_frame(encode(e), event_id(run_id, i)) for i, e in enumerate(sequence, 1)]


def bare_app() -> Starlette:
    cache: dict[tuple[int, int, int], list[bytes]] = {}

    async def played(script: Script, thread_id: str, run_id: str) -> AsyncIterator[bytes]:
        """Frames encoded as the script plays (paced, stamped or idle answers)."""
        ends = list(citadel_events(thread_id, run_id, ()))  # 3 events before the text, 3 after
        for seq, event in enumerate(ends[:3], 1):
            yield sse_frame(encode(event), event_id(run_id, seq))
        seq = 3
        async for text in play(script):
            seq += 1
            content = events.text_message_content(MESSAGE_ID, text)
            yield sse_frame(encode(content), event_id(run_id, seq))
        for event in ends[3:]:
            seq += 1
            yield sse_frame(encode(event), event_id(run_id, seq))

    async def pre_encoded(script: Script, thread_id: str, run_id: str) -> AsyncIterator[bytes]:
        """Frames encoded once per answer shape; only the boundary events echo this run."""
        key = (script.deltas, len(thread_id), len(run_id))
        if key not in cache:
            cache[key] = citadel_frames(script.deltas, "t" * len(thread_id), "r" * len(run_id))
        frames = cache[key]
        started = events.run_started(thread_id, run_id)
        yield sse_frame(encode(started), event_id(run_id, 1))
        for frame in itertools.islice(frames, 1, len(frames) - 1):
            if script.tick:
                await asyncio.sleep(0)
            yield frame
        finished = events.run_finished(thread_id, run_id, outcome=events.success_outcome())
        yield sse_frame(encode(finished), event_id(run_id, len(frames)))

    async def run(request: Request) -> Response:
        data = orjson.loads(await request.body())
        script = parse_script(last_user_text(data))
        live = script.idle or script.interval or script.stamp
        body = (played if live else pre_encoded)(script, data["threadId"], data["runId"])
        return StreamingResponse(body, media_type=SSE_MEDIA_TYPE, headers=SSE_HEADERS)

    return Starlette(routes=[Route("/agui", run, methods=["POST"])])


APPS = {
    "citadel": citadel_app,
    "citadel_sse_starlette": citadel_sse_starlette_app,
    "citadel_postgres": citadel_postgres_app,
    "citadel_clerk": citadel_clerk_app,
    "citadel_openai": citadel_openai_app,
    "citadel_voice": citadel_voice_app,
    "citadel_web": citadel_web_app,
    "openai_scripted": openai_scripted_app,
    "pydantic_ai": pydantic_ai_app,
    "bare": bare_app,
}


def serve(
    kind: str, port: int, backlog: int, profile: str | None = None, gc_tuning: str | None = None
) -> None:
    raise_fd_limit()
    config = uvicorn.Config(
        APPS[kind](),
        host=HOST,
        port=port,
        log_level="warning",
        backlog=backlog,
        workers=1,
        # The voice socket as tests/support/servers.py serves it; the others as they were.
        ws="websockets-sansio" if kind == "citadel_voice" else "auto",
    )
    server = uvicorn.Server(config)
    if gc_tuning:  # an experiment: see RESULTS.md
        gc.collect()
        gc.freeze()  # what exists now (modules, the app) is never scanned again
        gc.set_threshold(*(int(value) for value in gc_tuning.split(",")))
    elif kind.startswith("citadel"):
        from agent_server.cli import tune_garbage_collector

        tune_garbage_collector()  # as `citadel serve` does
    if profile is None:
        with contextlib.suppress(KeyboardInterrupt):  # SIGINT is how `running` stops us
            server.run()
        return
    import cProfile

    with cProfile.Profile() as profiler, contextlib.suppress(KeyboardInterrupt):
        server.run()
    profiler.dump_stats(profile)


# Managing server processes -------------------------------------------------------------------


@dataclass
class ServerProcess:
    kind: str
    port: int
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_ready(process: subprocess.Popen[bytes], port: int, timeout: float) -> None:
    """Until the port accepts connections (uvicorn binds after the lifespan startup)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"server on port {port} not ready after {timeout:g} s")


@contextlib.contextmanager
def running(
    kind: str,
    *,
    backlog: int = 4096,
    profile: str | None = None,
    gc_tuning: str | None = None,
    timeout: float = 60.0,
    data_dir: str | None = None,
    env: dict[str, str | None] | None = None,
    checkout: str | None = None,
) -> Iterator[ServerProcess]:
    """Start ``kind`` in a subprocess, wait until it listens, and always stop it at the end;
    ``checkout``: the folder of another checkout of Citadel to run it from (bench/baseline.py).

    ``citadel_postgres`` without ``BENCH_DATABASE_URL`` keeps its embedded database in
    ``data_dir``, or else in a new one each time: earlier runs' rows never weigh on a measure.
    ``env`` is added to the server's environment (a None value removes the variable)."""
    with contextlib.ExitStack() as stack:
        merged = {**os.environ, **(env or {})}
        server_env = {name: value for name, value in merged.items() if value is not None}
        if kind == "citadel_postgres" and not server_env.get("BENCH_DATABASE_URL"):
            temporary = stack.enter_context(tempfile.TemporaryDirectory())
            server_env["BENCH_DATA_DIR"] = data_dir or temporary
        yield from _running(kind, server_env, backlog, profile, gc_tuning, timeout, checkout)


def _running(
    kind: str,
    env: dict[str, str],
    backlog: int,
    profile: str | None,
    gc_tuning: str | None,
    timeout: float,
    checkout: str | None,
) -> Iterator[ServerProcess]:
    port = free_port()
    command = [sys.executable, "-m", "bench.servers", kind, "--port", str(port)]
    command += ["--backlog", str(backlog)] + (["--profile", profile] if profile else [])
    command += ["--gc-tuning", gc_tuning] if gc_tuning else []
    root = checkout or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # The server's stdout goes to our stderr: stdout is for the summary alone.
    process = subprocess.Popen(command, cwd=root, env=env, stdout=sys.stderr)
    try:
        wait_ready(process, port, timeout)
        yield ServerProcess(kind, port, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # graceful: lets a profiler write its stats
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backlog", type=int, default=4096)
    parser.add_argument("--profile", help="write cProfile stats of the server to this file")
    parser.add_argument(
        "--gc-tuning",
        metavar="T0,T1,T2",
        help="gc.freeze() after import and gc.set_threshold(T0, T1, T2) (experiment)",
    )
    args = parser.parse_args()
    serve(args.kind, args.port, args.backlog, args.profile, args.gc_tuning)


if __name__ == "__main__":
    main()
