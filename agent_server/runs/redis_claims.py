"""Claims in Redis: a key per busy thread with a lease, stop requests by pub/sub.

``citadel:thread:<id>`` holds the claim (run, owner, worker) for ``lease`` seconds; the
worker renews all its claims every third of that in one script call, which also claims again
a key that vanished (Redis restarted without persistence). Writes compare before they
change, in scripts, so a worker never frees or renews a claim that is not its own.
Stop requests are published on ``citadel:stop``; every worker listens and stops the run if it
is its own. A request sent while a worker reconnects is lost, so requesters repeat it until
the run has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import orjson
from redis.exceptions import RedisError

from agent_server.tasks import stop_tasks

from .channels import listen
from .claims import Claim, ClaimsUnavailable, StopHandler

if TYPE_CHECKING:
    import redis.asyncio as redis

logger = logging.getLogger(__name__)

STOP_CHANNEL = "citadel:stop"

_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW = """
local lost = {}
for i, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  if not held or held == ARGV[i + 1] then
    redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
  else
    lost[#lost + 1] = key
  end
end
return lost
"""


def _key(thread_id: str) -> str:
    return f"citadel:thread:{thread_id}"


def _watch_key(thread_id: str, run_id: str) -> str:
    return f"citadel:watched:{thread_id} {run_id}"


def _value(claim: Claim) -> bytes:
    return orjson.dumps(
        {"run": claim.run_id, "owner": claim.owner, "worker": claim.worker, "seq": claim.start_seq}
    )


def _claim(value: bytes | None) -> Claim | None:
    if value is None:
        return None
    data = orjson.loads(value)
    return Claim(data["run"], data["owner"], data["worker"], data["seq"])


class RedisClaims:
    def __init__(
        self, client: redis.Redis, blocking_client: redis.Redis, *, lease: float = 15.0
    ) -> None:
        """``blocking_client`` carries the stop subscription."""
        self.on_stop: StopHandler | None = None
        self._client = client
        self._blocking = blocking_client
        self._lease = lease
        self._held: dict[str, bytes] = {}  # thread id -> this worker's claim
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)
        self._tasks: list[asyncio.Task[None]] = []

    async def claim(self, thread_id: str, claim: Claim) -> Claim | None:
        value = _value(claim)
        async with _unavailable():
            holder = await self._claim(keys=[_key(thread_id)], args=[value, self._ms(self._lease)])
        if holder is None:
            self._held[thread_id] = value
        return _claim(holder)

    async def release(self, thread_id: str, claim: Claim) -> None:
        value = _value(claim)
        if self._held.get(thread_id) == value:
            del self._held[thread_id]
        async with _unavailable():
            await self._release(keys=[_key(thread_id)], args=[value])

    async def holder(self, thread_id: str) -> Claim | None:
        async with _unavailable():
            return _claim(await self._client.get(_key(thread_id)))

    async def request_stop(self, thread_id: str, run_id: str) -> None:
        async with _unavailable():
            await self._client.publish(
                STOP_CHANNEL, orjson.dumps({"thread": thread_id, "run": run_id})
            )

    async def watch(self, thread_id: str, run_id: str) -> None:
        async with _unavailable():
            await self._client.set(_watch_key(thread_id, run_id), b"1", px=self._ms(self._lease))

    async def watched(self, thread_id: str, run_id: str) -> bool:
        async with _unavailable():
            return bool(await self._client.exists(_watch_key(thread_id, run_id)))

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._renewing(), name="claims renewal"),
            asyncio.create_task(self._listening(), name="stop requests"),
        ]

    async def aclose(self) -> None:
        await stop_tasks(self._tasks)

    async def _renewing(self) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            held = dict(self._held)
            if not held:
                continue
            try:
                lost = await self._renew(
                    keys=[_key(thread) for thread in held],
                    args=[self._ms(self._lease), *held.values()],
                )
            except RedisError as error:
                logger.warning("claims not renewed: %s", error)
                continue
            for key in lost:
                logger.error("%s: claimed by another worker while Redis was away", key.decode())

    async def _listening(self) -> None:
        await listen(self._blocking, STOP_CHANNEL, self._stop_requested, "stop requests")

    async def _stop_requested(self, request: dict[str, str]) -> None:
        if self.on_stop is not None:
            self.on_stop(request["thread"], request["run"])

    @staticmethod
    def _ms(seconds: float) -> int:
        return int(seconds * 1000)


@contextlib.asynccontextmanager
async def _unavailable():
    try:
        yield
    except RedisError as error:
        raise ClaimsUnavailable(f"Redis: {error}") from error
