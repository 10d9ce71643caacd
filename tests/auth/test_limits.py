"""Token buckets in process (fake clock) and in the real Redis at 127.0.0.1:6379, Redis going
down, and the cap on open streams."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace

import pytest
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff

from agent_server.auth import limits
from agent_server.auth.limits import (
    FAIL_CLOSED_RETRY,
    KEY_PREFIX,
    MemoryRateLimiter,
    Rate,
    RedisRateLimiter,
    StreamSlots,
)
from tests.support.proxy import TcpProxy
from tests.support.redis import REDIS_HOST, REDIS_PORT, SHARED_DB
from tests.support.waiting import PATIENCE

# A client that keeps retrying a Redis that is down for minutes: only the limiter's own
# deadline can end a call, so a test bounding the call's time bounds a hang, not a speed.
FOREVER = Retry(ConstantBackoff(0.1), 10_000)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(port: int = REDIS_PORT, timeout: float = 2.0, retry: Retry | None = None) -> redis.Redis:
    kwargs = {} if retry is None else {"retry": retry}
    return redis.Redis(
        host=REDIS_HOST if port == REDIS_PORT else "127.0.0.1",  # else a proxy's port here
        port=port,
        db=SHARED_DB,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        **kwargs,
    )


@pytest.fixture
def retry_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The clock RedisRateLimiter reads (``time.monotonic``) to leave a failed Redis alone
    for REDIS_RETRY_EVERY seconds and to log at most once a minute: it moves when told to."""
    clock = FakeClock()
    monkeypatch.setattr(limits, "time", SimpleNamespace(monotonic=clock))
    return clock


def tries(connection: redis.Redis) -> list[object]:
    """Records every script call the limiter makes on ``connection``: its tries of Redis."""
    made: list[object] = []
    evalsha = connection.evalsha

    def counted(*args: object) -> object:
        made.append(args)
        return evalsha(*args)

    connection.evalsha = counted  # type: ignore[method-assign]
    return made


@pytest.fixture
async def real_redis() -> AsyncIterator[redis.Redis]:
    connection = client()
    try:
        yield connection
    finally:
        await connection.aclose()


@pytest.fixture
async def key(real_redis: redis.Redis) -> AsyncIterator[Callable[[str], str]]:
    """Bucket names of this test only; their Redis keys are deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex}:"
    yield lambda name: prefix + name
    found = [k async for k in real_redis.scan_iter(match=f"{KEY_PREFIX}{prefix}*")]
    if found:
        await real_redis.delete(*found)


def redis_limiter(connection: redis.Redis, *, fail_open: bool = False) -> RedisRateLimiter:
    return RedisRateLimiter(connection, fallback=MemoryRateLimiter(), fail_open=fail_open)


# In process ---------------------------------------------------------------------------------


async def test_memory_burst_then_refusal_then_refill():
    clock = FakeClock()
    limiter = MemoryRateLimiter(clock)
    rate = Rate(3, 2.0)
    assert [await limiter.take("alice", rate) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert await limiter.take("alice", rate) == pytest.approx(0.5)
    clock.now += 0.25
    assert await limiter.take("alice", rate) == pytest.approx(0.25)  # refusals take nothing
    clock.now += 0.25
    assert await limiter.take("alice", rate) == 0.0
    clock.now += 3600  # a long rest fills the bucket, no more
    assert [await limiter.take("alice", rate) for _ in range(4)][-2:] == [0.0, pytest.approx(0.5)]


async def test_memory_keys_are_independent_and_cost_counts():
    limiter = MemoryRateLimiter(FakeClock())
    rate = Rate(5, 1.0)
    assert await limiter.take("alice", rate, cost=3) == 0.0
    assert await limiter.take("alice", rate, cost=3) == pytest.approx(1.0)  # 2 left, 1 short
    assert await limiter.take("alice", rate, cost=2) == 0.0
    assert await limiter.take("bob", rate, cost=5) == 0.0
    with pytest.raises(ValueError, match="cost 6"):
        await limiter.take("bob", rate, cost=6)  # would be refused forever
    with pytest.raises(ValueError, match="cost 0"):
        await limiter.take("bob", rate, cost=0)


async def test_memory_forgets_the_least_recently_used_bucket_past_max_keys():
    limiter = MemoryRateLimiter(FakeClock(), max_keys=2)
    rate = Rate(1, 0.001)
    await limiter.take("a", rate)
    await limiter.take("b", rate)
    assert await limiter.take("a", rate) > 0  # used again: now b is the oldest
    await limiter.take("c", rate)  # b goes
    assert await limiter.take("a", rate) > 0
    assert await limiter.take("b", rate) == 0.0  # forgotten: a full bucket again


def test_rates_must_be_positive():
    with pytest.raises(ValueError):
        Rate(0, 1.0)
    with pytest.raises(ValueError):
        Rate(1, 0.0)


# In Redis -----------------------------------------------------------------------------------


async def test_redis_burst_then_refusal_with_retry_after(real_redis, key):
    limiter = redis_limiter(real_redis)
    rate = Rate(3, 0.5)
    started = time.monotonic()
    assert [await limiter.take(key("alice"), rate) for _ in range(3)] == [0.0, 0.0, 0.0]
    retry = await limiter.take(key("alice"), rate)
    since_the_burst = time.monotonic() - started  # what refilled meanwhile: at most this
    assert 2.0 - since_the_burst <= retry <= 2.0  # 1 / per_second, less that time
    # The bucket expires when it would be full again: an absent bucket is a full one.
    ttl_ms = await real_redis.pttl(KEY_PREFIX + key("alice"))
    since_the_burst = time.monotonic() - started
    assert 6000 - 1000 * since_the_burst - 1 <= ttl_ms <= 6000


async def test_redis_refills_with_time(real_redis, key):
    limiter = redis_limiter(real_redis)
    rate = Rate(2, 0.01)  # a token every 100 s: nothing refills while the test runs
    started = time.monotonic()
    assert [await limiter.take(key("alice"), rate) for _ in range(2)] == [0.0, 0.0]
    retry = await limiter.take(key("alice"), rate)
    assert 100 - (time.monotonic() - started) <= retry <= 100
    # ``retry`` seconds go by for the bucket: its tokens were last counted that long ago
    # (``ts``, in Redis's milliseconds). The refill is the script's, on Redis's clock.
    await real_redis.hincrbyfloat(KEY_PREFIX + key("alice"), "ts", -1000 * retry)
    assert await limiter.take(key("alice"), rate) == 0.0
    assert await limiter.take(key("alice"), rate) > 0  # one token came, not more


async def test_redis_keys_are_independent_and_cost_counts(real_redis, key):
    limiter = redis_limiter(real_redis)
    rate = Rate(5, 0.01)
    started = time.monotonic()
    assert await limiter.take(key("alice"), rate, cost=3) == 0.0
    retry = await limiter.take(key("alice"), rate, cost=3)
    assert 100 - (time.monotonic() - started) <= retry <= 100  # 1 token short
    assert await limiter.take(key("alice"), rate, cost=2) == 0.0
    assert await limiter.take(key("bob"), rate, cost=5) == 0.0
    with pytest.raises(ValueError, match="cost 6"):
        await limiter.take(key("bob"), rate, cost=6)


async def test_redis_takes_are_atomic(real_redis, key):
    limiter = redis_limiter(real_redis)
    rate = Rate(10, 0.001)
    waits = await asyncio.gather(*(limiter.take(key("alice"), rate) for _ in range(50)))
    assert sum(wait == 0.0 for wait in waits) == 10


async def test_redis_reloads_a_flushed_script(real_redis, key):
    limiter = redis_limiter(real_redis)
    rate = Rate(2, 0.01)
    assert await limiter.take(key("alice"), rate) == 0.0
    await real_redis.script_flush()  # a restarted Redis forgets its scripts
    assert await limiter.take(key("alice"), rate) == 0.0
    assert await limiter.take(key("alice"), rate) > 0


# Redis down ---------------------------------------------------------------------------------


async def test_redis_down_fails_open_to_the_memory_buckets(unused_tcp_port, caplog, retry_clock):
    down = client(unused_tcp_port, timeout=0.2, retry=FOREVER)
    tried = tries(down)
    limiter = redis_limiter(down, fail_open=True)
    rate = Rate(2, 0.01)
    with caplog.at_level(logging.WARNING, "citadel.auth"):
        async with asyncio.timeout(PATIENCE):  # the client alone would retry for minutes
            waits = [await limiter.take("secret-caller-key", rate) for _ in range(3)]
    assert len(tried) == 1  # then Redis is left alone for REDIS_RETRY_EVERY
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0
    assert await limiter.take("another", rate) == 0.0
    assert len(caplog.records) == 1
    assert "using this process's buckets" in caplog.text
    assert "secret-caller-key" not in caplog.text
    await down.aclose()


async def test_redis_down_fails_closed(unused_tcp_port, caplog, retry_clock):
    down = client(unused_tcp_port, timeout=0.2, retry=FOREVER)
    tried = tries(down)
    limiter = redis_limiter(down, fail_open=False)
    with caplog.at_level(logging.WARNING, "citadel.auth"):
        async with asyncio.timeout(PATIENCE):  # the client alone would retry for minutes
            waits = [await limiter.take("alice", Rate(100, 1.0)) for _ in range(3)]
    assert len(tried) == 1
    assert waits == [FAIL_CLOSED_RETRY] * 3
    assert "refusing limited requests" in caplog.text
    await down.aclose()


async def test_a_silent_redis_costs_one_timeout_then_nothing(unused_tcp_port, retry_clock):
    """A Redis that accepts but never answers: the limiter's own deadline bounds the call,
    and for a while Redis is not even tried."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hanging = client(port, timeout=30)  # only the limiter's deadline stops the wait
    tried = tries(hanging)
    limiter = RedisRateLimiter(hanging, fallback=MemoryRateLimiter(), fail_open=True, timeout=0.3)
    try:
        started = time.monotonic()
        async with asyncio.timeout(PATIENCE):  # not the client's 30 s
            assert await limiter.take("alice", Rate(1, 0.01)) == 0.0
        assert time.monotonic() - started > 0.25  # Redis was waited for, up to the deadline
        assert await limiter.take("alice", Rate(1, 0.01)) > 0  # the fallback's bucket
        assert len(tried) == 1  # the second call did not try Redis
    finally:
        await hanging.aclose()
        server.close()


async def test_failures_are_logged_once_a_minute(unused_tcp_port, caplog, monkeypatch, retry_clock):
    monkeypatch.setattr(limits, "REDIS_RETRY_EVERY", 0.0)  # every call tries Redis
    down = client(unused_tcp_port, timeout=0.2)
    tried = tries(down)
    limiter = RedisRateLimiter(down, fallback=MemoryRateLimiter(), fail_open=False, timeout=0.1)
    with caplog.at_level(logging.WARNING, "citadel.auth"):
        for _ in range(4):
            assert await limiter.take("alice", Rate(1, 1.0)) == FAIL_CLOSED_RETRY
        retry_clock.now += 60
        assert await limiter.take("alice", Rate(1, 1.0)) == FAIL_CLOSED_RETRY
    assert len(tried) == 5
    assert len(caplog.records) == 2  # at once, then a minute later (with the count)
    assert "5 Redis failure(s)" not in caplog.text and "4 Redis failure(s)" in caplog.text
    await down.aclose()


async def test_redis_is_used_again_once_it_is_back(real_redis, key, retry_clock):
    async with TcpProxy(REDIS_HOST, REDIS_PORT) as proxy:
        through = client(proxy.port, timeout=0.2)
        limiter = redis_limiter(through, fail_open=False)
        rate = Rate(100, 0.001)
        try:
            assert await limiter.take(key("alice"), rate) == 0.0
            proxy.cut()
            assert await limiter.take(key("alice"), rate) == FAIL_CLOSED_RETRY
            proxy.restore()
            # Left alone for a second after a failure.
            assert await limiter.take(key("alice"), rate) == FAIL_CLOSED_RETRY
            retry_clock.now += limits.REDIS_RETRY_EVERY
            assert await limiter.take(key("alice"), rate) == 0.0
        finally:
            await through.aclose()
    tokens = await real_redis.hget(KEY_PREFIX + key("alice"), "tokens")
    assert float(tokens) == pytest.approx(98, abs=0.01)  # both allowed takes went to Redis


# Streams ------------------------------------------------------------------------------------


def test_stream_slots_cap_each_principal():
    slots = StreamSlots(per_principal=2)
    assert slots.acquire("alice") and slots.acquire("alice")
    assert not slots.acquire("alice")
    assert slots.acquire("bob") and slots.open("bob") == 1
    assert slots.open("alice") == 2
    slots.release("alice")
    assert slots.open("alice") == 1 and slots.acquire("alice")
    slots.release("alice")
    slots.release("alice")
    slots.release("alice")  # not held: nothing changes, never below zero
    assert slots.open("alice") == 0
    assert slots.acquire("alice") and slots.acquire("alice") and not slots.acquire("alice")
    assert slots.open("carol") == 0
