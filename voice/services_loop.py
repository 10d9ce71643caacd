"""Citadel's services seen from another event loop.

The LiveKit worker opens the services once, on its main loop, and livekit-agents runs each
job (a room) in a thread of its own, on a loop of its own. An asyncpg pool, the event bus
and the run manager belong to the loop that opened them, so a job's session reaches them
only through here: each call runs on the services' loop and its outcome comes back to the
caller's; a run's events are followed by one task there and handed over as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from agent_server.runs.bus import EventBus
from agent_server.runs.eventlog import Batch
from agent_server.runs.service import RunService, RunStream
from protocol.input import RunAgentInput

T = TypeVar("T")
Item = Batch | Exception | None  # a batch, the error that ended the stream, or its end


class ServicesLoop:
    """The loop the services were opened on."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    async def call(self, work: Coroutine[Any, Any, T]) -> T:
        """``work``, run on the services' loop; cancelling the caller cancels it there."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop))


class LoopRuns:
    """The part of the run API a voice session uses (:class:`voice.runtime_llm.RunApi`), of
    a :class:`RunService` on the services' loop."""

    def __init__(self, runs: RunService, home: ServicesLoop) -> None:
        self._runs = runs
        self._home = home

    async def start(self, owner: str, input: RunAgentInput) -> ForwardedStream:
        here = asyncio.get_running_loop()
        items: asyncio.Queue[Item] = asyncio.Queue()

        def hand_over(item: Item) -> None:
            here.call_soon_threadsafe(items.put_nowait, item)

        forwarding = await self._home.call(_begin(self._runs, owner, input, hand_over))
        return ForwardedStream(items, forwarding, self._home)

    async def stop(self, owner: str, thread_id: str, run_id: str | None = None) -> str:
        return await self._home.call(self._runs.stop(owner, thread_id, run_id))

    async def amend_answer(self, owner: str, thread_id: str, message_id: str, text: str) -> bool:
        return await self._home.call(self._runs.amend_answer(owner, thread_id, message_id, text))


class LoopFeed:
    """The admin feed's notes (:class:`voice.report.Feed`) of an event bus on the services'
    loop."""

    def __init__(self, bus: EventBus, home: ServicesLoop) -> None:
        self._bus = bus
        self._home = home

    async def note(self, kind: str, body: bytes, owner: str = "") -> None:
        await self._home.call(self._bus.note(kind, body, owner))


class ForwardedStream:
    """A run's batches on the caller's loop. Closing it stops the task that follows the run
    (the run goes on, as when a :class:`RunStream` is closed)."""

    def __init__(
        self, items: asyncio.Queue[Item], forwarding: asyncio.Task[None], home: ServicesLoop
    ) -> None:
        self._items = items
        self._forwarding = forwarding
        self._home = home
        self._ended = False

    def __aiter__(self) -> ForwardedStream:
        return self

    async def __anext__(self) -> Batch:
        if self._ended:
            raise StopAsyncIteration
        item = await self._items.get()
        if isinstance(item, Batch):
            return item
        self._ended = True
        if item is None:
            raise StopAsyncIteration
        raise item

    async def aclose(self) -> None:
        self._ended = True
        await self._home.call(_stop(self._forwarding))


async def _begin(
    runs: RunService, owner: str, input: RunAgentInput, hand_over: Callable[[Item], None]
) -> asyncio.Task[None]:
    stream = await runs.start(owner, input)
    return asyncio.create_task(_forward(stream, hand_over))


async def _forward(stream: RunStream, hand_over: Callable[[Item], None]) -> None:
    try:
        async with contextlib.aclosing(aiter(stream)) as batches:
            async for batch in batches:
                hand_over(batch)
    except Exception as error:  # the reader raises it: it is the reader's to handle
        hand_over(error)
    else:
        hand_over(None)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.wait({task})
