"""Reloads across workers, through Redis pub/sub.

Every worker subscribes to ``CITADEL_RELOAD_CHANNEL`` for as long as it runs (again after
Redis comes back, as for stop requests). A worker asked to reload everywhere publishes
``{"id", "worker"}`` there, having subscribed first to ``<channel>:<id>``; each worker that
receives it, the asker's own listener included, answers on that channel: the others reload
their own file and environment and send their :class:`~.reloader.Outcome`, the asker's
listener only says it heard. ``PUBLISH`` says how many listeners received the request, so
the asker knows how many answers to wait for (at most :data:`PEER_TIMEOUT` seconds) and how
many never came.

Pub/sub ignores Redis database numbers: deployments that share a Redis need a channel each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from redis.exceptions import RedisError

from agent_server.reload.reloader import Outcome
from agent_server.runs.channels import POLL, listen
from agent_server.tasks import stop_tasks

if TYPE_CHECKING:
    import redis.asyncio as redis

logger = logging.getLogger("citadel.config")

PEER_TIMEOUT = 10.0  # seconds the asking worker waits for the others' answers


class PeersUnavailable(Exception):
    """Redis could not carry the request; the message says why."""


@dataclass(frozen=True, slots=True)
class PeerAnswers:
    outcomes: list[Outcome]  # of the other workers that answered
    unanswered: int  # workers that received the request and did not answer in time


class ReloadPeers:
    def __init__(
        self,
        client: redis.Redis,
        blocking_client: redis.Redis,
        channel: str,
        worker: str,
        reload: Callable[[], Outcome],
    ) -> None:
        """``blocking_client`` carries the subscriptions; ``reload`` reloads this worker."""
        self._client = client
        self._blocking = blocking_client
        self._channel = channel
        self._worker = worker
        self._reload = reload
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listening(), name="configuration reloads")

    async def aclose(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task])

    async def reload_others(self) -> PeerAnswers:
        """Have every other worker reload, and gather what each did."""
        request_id = uuid.uuid4().hex
        pubsub = self._blocking.pubsub()
        try:
            await pubsub.subscribe(f"{self._channel}:{request_id}")
            # Confirmed: Redis has the subscription before it handles the publication below.
            await pubsub.get_message(timeout=PEER_TIMEOUT)
            request = orjson.dumps({"id": request_id, "worker": self._worker})
            told = await self._client.publish(self._channel, request)
            outcomes, heard = [], 0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PEER_TIMEOUT):
                    while heard < told:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=POLL
                        )
                        if message is None:
                            continue
                        heard += 1
                        answer = orjson.loads(message["data"])
                        if answer["worker"] != self._worker:
                            outcomes.append(Outcome.from_json(answer))
            return PeerAnswers(outcomes, told - heard)
        except RedisError as error:
            raise PeersUnavailable(f"Redis: {error}") from error
        finally:
            with contextlib.suppress(RedisError):
                await pubsub.aclose()

    async def _listening(self) -> None:
        await listen(self._blocking, self._channel, self._answer, "reload requests")

    async def _answer(self, request: dict[str, str]) -> None:
        if request["worker"] == self._worker:
            answer = {"worker": self._worker}  # the asker reloaded already: it only counts
        else:
            answer = self._reload().as_json()
        await self._client.publish(f"{self._channel}:{request['id']}", orjson.dumps(answer))
