"""Listening on a Redis pub/sub channel for as long as the process lives, through outages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

if TYPE_CHECKING:
    import redis.asyncio as redis

logger = logging.getLogger(__name__)

POLL = 1.0  # seconds a listener waits on its subscription before it looks again
MAX_BACKOFF = 5.0


async def listen(
    client: redis.Redis, channel: str, handle: Callable[[Any], Awaitable[None]], what: str
) -> None:
    """Hand each message of ``channel`` (JSON) to ``handle``, in order, forever: a Redis that
    goes away is subscribed to again when it is back, with backoff; ``what`` names the
    messages in the log."""
    delay = 0.1
    while True:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel)
            delay = 0.1
            while True:
                message = await pubsub.get_message(timeout=POLL)
                if message is not None:
                    await handle(orjson.loads(message["data"]))
        except RedisError as error:
            logger.warning("%s: %s (listening again in %.1f s)", what, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
        finally:
            with contextlib.suppress(RedisError):
                await pubsub.aclose()
