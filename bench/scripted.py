"""ScriptedModel: a TEST DOUBLE of a chat model, whose answer is a script written in the last
user message (benchmarks measure the server, not a model).

The script is a few space-separated words:

* ``deltas=N``: answer with N text deltas ``"tok "`` (default 1), as fast as possible;
* ``interval=S``: one delta every S seconds instead, on a fixed schedule (no drift);
* ``stamp``: each delta's text is ``str(time.monotonic_ns())`` when it is produced.
  CLOCK_MONOTONIC is system-wide on Linux, so a client process can compute delivery delay;
* ``tick``: yield to the event loop once per delta (``asyncio.sleep(0)``), like a backend
  that reads one token per socket read, instead of producing the whole answer in one go;
* ``idle``: produce nothing and wait until cancelled (idle-run memory).

:func:`play` is the script itself; :class:`ScriptedModel` plays it as Citadel's ChatModel and
``bench.servers`` plays the same script through pydantic-ai's ``FunctionModel``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from agent_server.models.base import ChatRequest, Delta, TextDelta


@dataclass(frozen=True, slots=True)
class Script:
    deltas: int = 1
    interval: float = 0.0
    stamp: bool = False
    tick: bool = False
    idle: bool = False


def parse_script(prompt: str) -> Script:
    """``"deltas=20 interval=0.05 stamp"`` -> ``Script(20, 0.05, stamp=True)``; unknown words
    are ignored."""
    words = dict(word.partition("=")[::2] for word in prompt.split())
    return Script(
        deltas=int(words.get("deltas") or 1),
        interval=float(words.get("interval") or 0.0),
        stamp="stamp" in words,
        tick="tick" in words,
        idle="idle" in words,
    )


async def play(script: Script) -> AsyncIterator[str]:
    """The texts of the answer's deltas, paced as the script says."""
    if script.idle:
        await asyncio.Event().wait()  # until cancelled
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index in range(script.deltas):
        if script.interval:
            await asyncio.sleep(max(0.0, start + index * script.interval - loop.time()))
        elif script.tick:
            await asyncio.sleep(0)
        yield str(time.monotonic_ns()) if script.stamp else "tok "


class ScriptedModel:
    """Citadel ChatModel (provider ``"scripted"``) playing the script of the last user message."""

    provider = "scripted"
    model = "script"

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        prompt = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        async for text in play(parse_script(prompt)):
            yield TextDelta(text)

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


SPOKEN_ANSWER = "Here is a short answer to your question."


class SpokenAnswerModel(ScriptedModel):
    """A TEST DOUBLE for voice (bench/voice.py): the prompt is a transcribed question, not a
    script (its words could read as one: "idle" would never answer), so every turn is
    answered at once with :data:`SPOKEN_ANSWER`, one short sentence a TTS can say."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        yield TextDelta(SPOKEN_ANSWER)
