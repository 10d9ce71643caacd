"""Token buckets per caller, and a cap on each caller's open streams (clerk.md §7).

A bucket holds up to ``capacity`` tokens and gains ``per_second`` of them every second; a
request takes ``cost`` tokens or is refused with the seconds to wait. With Redis the buckets
are shared by every worker; without it (or while it is down, if allowed) each process keeps
its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import redis.asyncio as redis
from redis.exceptions import RedisError

logger = logging.getLogger("citadel.auth")

KEY_PREFIX = "citadel:rl:"
FAIL_CLOSED_RETRY = 1.0  # what a refused caller is told to wait while Redis is down
REDIS_RETRY_EVERY = 1.0  # after a failure, Redis is tried again this many seconds later
LOG_FAILURES_EVERY = 60.0


class RateClass(StrEnum):
    """Which of a caller's buckets a route charges (each route declares one)."""

    RUNS = "runs"
    INGEST = "ingest"
    REQUESTS = "requests"
    VOICE = "voice"


@dataclass(frozen=True, slots=True)
class Rate:
    capacity: int  # the burst
    per_second: float  # the refill

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.per_second <= 0:
            raise ValueError(f"{self} must have a capacity of 1 or more and a positive refill")


class RateLimiter(Protocol):
    async def take(self, key: str, rate: Rate, cost: int = 1) -> float:
        """0.0 when allowed (the tokens are taken); else the seconds until ``cost`` tokens
        will be there (nothing is taken)."""
        ...


def _check_cost(rate: Rate, cost: int) -> None:
    # More than a full bucket would be refused forever, whatever Retry-After said.
    if not 1 <= cost <= rate.capacity:
        raise ValueError(f"cost {cost} is not between 1 and the capacity {rate.capacity}")


class MemoryRateLimiter:
    """Buckets in this process: one worker's view only.

    At most ``max_keys`` buckets are kept; past that the least recently used goes. It is the
    likeliest to be full again, and a full bucket is the same as none.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self._clock = clock
        self._max_keys = max_keys
        # key -> (tokens, when they were counted), least recently used first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def take(self, key: str, rate: Rate, cost: int = 1) -> float:
        _check_cost(rate, cost)
        now = self._clock()
        tokens, then = self._buckets.pop(key, (rate.capacity, now))
        tokens = min(rate.capacity, tokens + max(0.0, now - then) * rate.per_second)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / rate.per_second
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait


# KEYS[1]: the bucket; ARGV: capacity, per_second, cost. Returns the milliseconds to wait, 0
# when the tokens were taken. Redis's own clock, so workers whose clocks differ agree; ``ts``
# never goes back (a failover to a server whose clock is behind refills nothing meanwhile).
# The key expires when the bucket would be full again: an absent bucket is a full one.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2]) / 1000
local cost = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
if now > ts then
    tokens = math.min(capacity, tokens + (now - ts) * rate)
    ts = now
end
local wait = 0
if tokens >= cost then
    tokens = tokens - cost
else
    wait = math.ceil((cost - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', ts)
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((capacity - tokens) / rate)))
return wait
"""

# Redis down, slow, out of memory, read-only after a failover: all mean "no answer".
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


class RedisRateLimiter:
    """Buckets in Redis, shared by every worker.

    A call waits for Redis ``timeout`` seconds at most, whatever the client's own timeouts
    and retries (redis-py retries a refused connection for seconds by default). After a
    failure Redis is left alone for ``REDIS_RETRY_EVERY`` seconds, and meanwhile ``fail_open``
    decides: the ``fallback`` buckets of this process, or a refusal.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        fallback: MemoryRateLimiter,
        fail_open: bool,
        timeout: float = 0.5,
    ) -> None:
        # EVALSHA, loading the script when Redis does not know it (NOSCRIPT).
        self._script = client.register_script(_TAKE)
        self._fallback = fallback
        self._fail_open = fail_open
        self._timeout = timeout
        self._retry_at = 0.0  # monotonic: when to try Redis again
        self._failures = 0  # since the last log line
        self._logged_at = -LOG_FAILURES_EVERY

    async def take(self, key: str, rate: Rate, cost: int = 1) -> float:
        _check_cost(rate, cost)
        if time.monotonic() >= self._retry_at:
            try:
                async with asyncio.timeout(self._timeout):
                    wait_ms = await self._script(
                        keys=[KEY_PREFIX + key], args=[rate.capacity, rate.per_second, cost]
                    )
            except _REDIS_ERRORS as error:
                self._failed(error)
            else:
                return int(wait_ms) / 1000
        if self._fail_open:
            return await self._fallback.take(key, rate, cost)
        return FAIL_CLOSED_RETRY

    def _failed(self, error: BaseException) -> None:
        now = time.monotonic()
        self._retry_at = now + REDIS_RETRY_EVERY
        self._failures += 1
        if now - self._logged_at < LOG_FAILURES_EVERY:
            return
        # The error, never the key: keys name callers and their addresses.
        logger.warning(
            "rate limits: %d Redis failure(s) since the last report, the last %s: %s; %s",
            self._failures,
            type(error).__name__,
            str(error) or f"no answer within {self._timeout:g} s",
            "using this process's buckets" if self._fail_open else "refusing limited requests",
        )
        self._logged_at = now
        self._failures = 0


class StreamSlots:
    """How many streams each caller has open, in this process: a cap per worker, since a
    stream lives on the worker that serves it."""

    def __init__(self, per_principal: int) -> None:
        self.per_principal = per_principal  # a configuration reload may change it
        self._open: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        """Take a slot; False when ``key`` already has ``per_principal`` open."""
        count = self._open.get(key, 0)
        if count >= self.per_principal:
            return False
        self._open[key] = count + 1
        return True

    def release(self, key: str) -> None:
        """Free a slot; freeing one that is not held changes nothing."""
        count = self._open.pop(key, 0)
        if count > 1:
            self._open[key] = count - 1

    def open(self, key: str) -> int:
        return self._open.get(key, 0)

    @property
    def total(self) -> int:
        """Streams open in this process, all callers together."""
        return sum(self._open.values())
