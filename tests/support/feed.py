"""A client of ``GET /admin/events`` that keeps reading in the background: connected (its
starting point taken) once the first item, kind "connected", has come."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from protocol.framing import parse_sse_stream

Item = dict[str, Any]


class FeedReader:
    def __init__(self) -> None:
        self.items: list[Item] = []
        self.status: int | None = None
        self._news = asyncio.Condition()

    async def until(self, done: Callable[[list[Item]], bool], within: float = 20) -> list[Item]:
        """The items read so far, once ``done`` says they are enough."""
        async with asyncio.timeout(within), self._news:
            await self._news.wait_for(lambda: done(self.items))
        return self.items

    async def _read(self, client: httpx.AsyncClient, url: str, params: dict[str, str]) -> None:
        async with client.stream("GET", url, params=params, timeout=None) as response:
            self.status = response.status_code
            async with self._news:
                self._news.notify_all()
            if response.status_code != 200:
                await response.aread()
                return
            async for item in parse_sse_stream(response.aiter_bytes()):
                async with self._news:
                    self.items.append(item)
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
