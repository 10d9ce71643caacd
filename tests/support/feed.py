"""A client of ``GET /admin/events`` that keeps reading in the background: connected (its
starting point taken) once the first item, kind "connected", has come. It counts the
keep-alive comments too: the server writing to a feed that has nothing to say."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson

from protocol.framing import parse_sse

Item = dict[str, Any]


class FeedReader:
    def __init__(self) -> None:
        self.items: list[Item] = []
        self.keepalives = 0  # keep-alive comments received
        self.status: int | None = None
        self.ended = False  # the server ended the response
        self._news = asyncio.Condition()

    async def until(self, done: Callable[[list[Item]], bool], within: float = 20) -> list[Item]:
        """The items read so far, once ``done`` says they are enough; fails at once if the
        server ends the feed first."""
        await self._wait(lambda: done(self.items), within)
        return self.items

    async def until_keepalives(self, count: int, within: float = 20) -> None:
        """Once ``count`` keep-alive comments in all have come."""
        await self._wait(lambda: self.keepalives >= count, within)

    async def _wait(self, done: Callable[[], bool], within: float) -> None:
        async with asyncio.timeout(within), self._news:
            await self._news.wait_for(lambda: done() or self.ended)
        if not done():
            raise AssertionError(f"the feed ended after {len(self.items)} items")

    async def _read(self, client: httpx.AsyncClient, url: str, params: dict[str, str]) -> None:
        async with client.stream("GET", url, params=params, timeout=None) as response:
            self.status = response.status_code
            async with self._news:
                self._news.notify_all()
            if response.status_code != 200:
                await response.aread()
                return
            unparsed = b""
            with contextlib.suppress(httpx.TransportError):  # the connection broke: ended too
                async for chunk in response.aiter_bytes():
                    *frames, unparsed = (unparsed + chunk).split(b"\n\n")
                    async with self._news:
                        for frame in frames:
                            if frame.startswith(b":"):
                                self.keepalives += 1
                            else:
                                self.items += [orjson.loads(m.data) for m in parse_sse(frame)]
                        self._news.notify_all()
            async with self._news:
                self.ended = True
                self._news.notify_all()


@contextlib.asynccontextmanager
async def admin_feed(
    base_url: str, headers: dict[str, str] | None = None, **params: str
) -> AsyncIterator[FeedReader]:
    """Connected (the response has started) before it is yielded."""
    reader = FeedReader()
    async with httpx.AsyncClient(headers=headers) as client:
        task = asyncio.create_task(reader._read(client, f"{base_url}/admin/events", params))
        try:
            await reader.until(lambda items: reader.status not in (None, 200) or bool(items), 10)
            yield reader
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def run_events(items: list[Item], run_id: str) -> list[Item]:
    """The run's AG-UI events on the feed, with the feed's wrapping, in order."""
    return [item for item in items if item["kind"] == "run" and item["runId"] == run_id]


def ended(run_id: str) -> Callable[[list[Item]], bool]:
    terminal = {"RUN_FINISHED", "RUN_ERROR"}
    return lambda items: any(i["event"]["type"] in terminal for i in run_events(items, run_id))
