"""Circuit breaker, retry policy and ResilientHTTP against ``Flaky``, a TEST DOUBLE of a
misbehaving HTTP backend on 127.0.0.1 (error statuses, ``Retry-After``, silence, a stall or a
drop mid-stream, as scripted): a real server cannot fail on demand, and no real one is tested
here (tests/doubles/__init__.py lists every double)."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import AsyncIterator

import pytest
import time_machine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agent_server.backends import resilience
from agent_server.backends.errors import BackendError, BackendTimeout, BackendUnavailable
from agent_server.backends.resilience import (
    CircuitBreaker,
    CircuitState,
    ResilientHTTP,
    RetryPolicy,
    Timeouts,
)
from tests.support.servers import serve

# Circuit breaker -------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, reset_after=10.0, clock=clock)


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.acquire()
        breaker.record_failure("HTTP 503")


def test_breaker_opens_after_consecutive_failures(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    assert breaker.state is CircuitState.CLOSED

    fail(breaker, 1)

    assert breaker.state is CircuitState.OPEN
    assert breaker.consecutive_failures == 3
    with pytest.raises(BackendUnavailable, match=r"circuit open after 3 .*next trial in 10\.0 s"):
        breaker.acquire()


def test_a_success_resets_the_count(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    breaker.acquire()
    breaker.record_success()
    fail(breaker, 2)

    assert breaker.state is CircuitState.CLOSED
    assert breaker.consecutive_failures == 2


def test_half_open_admits_one_trial_that_closes_on_success(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    fail(breaker, 3)
    clock.now += 9.9
    assert breaker.state is CircuitState.OPEN
    clock.now += 0.1
    assert breaker.state is CircuitState.HALF_OPEN

    breaker.acquire()  # the trial
    with pytest.raises(BackendUnavailable, match="trial request is in flight"):
        breaker.acquire()
    breaker.record_success()

    assert breaker.state is CircuitState.CLOSED
    breaker.acquire()


def test_failed_trial_reopens_for_a_full_period(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 3)
    clock.now += 10

    fail(breaker, 1)  # the trial fails

    assert breaker.state is CircuitState.OPEN
    clock.now += 9.9
    assert breaker.state is CircuitState.OPEN
    clock.now += 0.1
    assert breaker.state is CircuitState.HALF_OPEN


def test_a_released_trial_lets_the_next_call_try(breaker: CircuitBreaker, clock: FakeClock) -> None:
    fail(breaker, 3)
    clock.now += 10
    breaker.acquire()

    breaker.release()  # the trial was cancelled: no verdict

    assert breaker.state is CircuitState.HALF_OPEN
    breaker.acquire()


# Retry policy ----------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=6, base_delay=0.5, max_delay=3.0, jitter=0)

    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_shortens_each_delay_by_at_most_its_fraction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resilience, "random", random.Random(1234))  # the same draws every run
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, jitter=0.5)

    delays = [policy.delay(3) for _ in range(200)]

    assert all(2.0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 100


def test_retry_after_wins_but_is_capped() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=5.0)

    assert policy.delay(1, retry_after=2.0) == 2.0
    assert policy.delay(1, retry_after=120.0) == 5.0


# ResilientHTTP against a flaky server ----------------------------------------------------


class Flaky:
    """A server whose first ``failures`` requests fail in a scripted way; later requests stream
    ``a``, ``b``, ``c`` lines."""

    def __init__(
        self,
        failures: int = 0,
        *,
        status: int = 503,
        retry_after: str | None = None,
        silence: float = 0.0,
        then: str = "ok",
    ) -> None:
        self.failures = failures
        self.status = status
        self.retry_after = retry_after
        self.silence = silence  # seconds a failing request waits before answering
        self.then = then  # after the first line: "ok", "stall" or "drop"
        self.requests = 0
        self.arrived = asyncio.Event()
        self.app = Starlette(routes=[Route("/stream", self.stream, methods=["POST", "GET"])])

    async def stream(self, request: Request) -> Response:
        self.requests += 1
        self.arrived.set()
        if self.requests <= self.failures:
            await asyncio.sleep(self.silence)
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return JSONResponse({"error": "try later"}, status_code=self.status, headers=headers)
        return StreamingResponse(self.lines(), media_type="text/plain")

    async def lines(self) -> AsyncIterator[bytes]:
        yield b"a\n"
        if self.then == "stall":
            await asyncio.sleep(30)
        if self.then == "drop":
            raise RuntimeError("the server dies mid-stream")
        yield b"b\nc\n"


class Sleeps:
    """Records backoff delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


RETRY = RetryPolicy(attempts=3, base_delay=0.1, max_delay=1.0, jitter=0)
TIMEOUTS = Timeouts(first_byte=2.0, idle=0.3)


def client(
    sleeps: Sleeps,
    *,
    retry: RetryPolicy = RETRY,
    timeouts: Timeouts = TIMEOUTS,
    breaker: CircuitBreaker | None = None,
) -> ResilientHTTP:
    return ResilientHTTP(
        "flaky",
        timeouts=timeouts,
        retry=retry,
        breaker=breaker or CircuitBreaker(failure_threshold=100),
        sleep=sleeps,
    )


async def read_all(http: ResilientHTTP, url: str) -> list[str]:
    async with http.stream_lines("POST", f"{url}/stream") as lines:
        return [line async for line in lines]


async def test_transient_failures_are_retried_with_backoff() -> None:
    flaky, sleeps = Flaky(failures=2), Sleeps()
    http = client(sleeps)

    async with serve(flaky.app) as url:
        assert await read_all(http, url) == ["a", "b", "c"]

    assert flaky.requests == 3
    assert sleeps.delays == [0.1, 0.2]
    await http.aclose()


async def test_retries_stop_after_the_last_attempt() -> None:
    flaky, sleeps = Flaky(failures=5, status=502), Sleeps()
    http = client(sleeps)

    async with serve(flaky.app) as url:
        with pytest.raises(BackendUnavailable, match="flaky: HTTP 502: try later"):
            await read_all(http, url)

    assert flaky.requests == 3
    assert len(sleeps.delays) == 2
    await http.aclose()


@pytest.mark.parametrize("status", [400, 401, 404, 422, 500])
async def test_other_statuses_are_not_retried(status: int) -> None:
    flaky, sleeps = Flaky(failures=1, status=status), Sleeps()
    http = client(sleeps)

    async with serve(flaky.app) as url:
        with pytest.raises(BackendError, match=f"HTTP {status}: try later") as caught:
            await read_all(http, url)

    assert not isinstance(caught.value, BackendUnavailable)
    assert flaky.requests == 1
    assert sleeps.delays == []
    await http.aclose()


@pytest.mark.parametrize(("header", "expected"), [("2", 2.0), ("120", 5.0)])
async def test_retry_after_is_honoured_up_to_the_max_delay(header: str, expected: float) -> None:
    flaky, sleeps = Flaky(failures=1, status=429, retry_after=header), Sleeps()
    http = client(sleeps, retry=RetryPolicy(base_delay=0.1, max_delay=5.0))

    async with serve(flaky.app) as url:
        await read_all(http, url)

    assert sleeps.delays == [expected]
    await http.aclose()


async def test_retry_after_as_http_date() -> None:
    # The wall clock stands still (a whole second: HTTP dates have no fractions), so the
    # delay is exact whatever the time the request takes.
    with time_machine.travel(1_750_000_000, tick=False):
        when = email.utils.formatdate(time.time() + 30, usegmt=True)
        flaky, sleeps = Flaky(failures=1, status=503, retry_after=when), Sleeps()
        http = client(sleeps, retry=RetryPolicy(max_delay=60.0))

        async with serve(flaky.app) as url:
            await read_all(http, url)

    assert sleeps.delays == [30.0]
    await http.aclose()


async def test_no_first_byte_in_time_is_retried() -> None:
    flaky, sleeps = Flaky(failures=1, silence=0.5), Sleeps()
    http = client(sleeps, timeouts=Timeouts(first_byte=0.2))

    async with serve(flaky.app) as url:
        assert await read_all(http, url) == ["a", "b", "c"]

    assert flaky.requests == 2
    await http.aclose()


async def test_connect_errors_are_retried_then_unavailable() -> None:
    async with serve(Flaky().app) as url:
        pass  # now nothing listens there
    sleeps = Sleeps()
    http = client(sleeps)

    with pytest.raises(BackendUnavailable, match="cannot connect"):
        await read_all(http, url)

    assert len(sleeps.delays) == 2
    await http.aclose()


@pytest.mark.parametrize(
    ("then", "error"), [("stall", BackendTimeout), ("drop", BackendUnavailable)]
)
async def test_no_retry_once_the_first_line_arrived(then: str, error: type[BackendError]) -> None:
    flaky, sleeps = Flaky(then=then), Sleeps()
    http = client(sleeps)
    received: list[str] = []

    async with serve(flaky.app) as url:
        with pytest.raises(error):
            async with http.stream_lines("POST", f"{url}/stream") as lines:
                async for line in lines:
                    received.append(line)

    assert received == ["a"]
    assert flaky.requests == 1
    assert sleeps.delays == []
    await http.aclose()


async def test_open_breaker_stops_retries_and_spares_the_network() -> None:
    flaky, sleeps = Flaky(failures=100), Sleeps()
    breaker = CircuitBreaker(failure_threshold=2, reset_after=60)
    http = client(sleeps, retry=RetryPolicy(attempts=5, jitter=0), breaker=breaker)

    async with serve(flaky.app) as url:
        with pytest.raises(BackendUnavailable, match="HTTP 503") as caught:
            await read_all(http, url)
        assert "circuit open" not in str(caught.value)  # the real failure, not the breaker
        assert flaky.requests == 2  # opened after two failures: no third attempt
        assert len(sleeps.delays) == 1  # and no pointless wait before giving up
        assert breaker.state is CircuitState.OPEN

        with pytest.raises(BackendUnavailable, match="circuit open"):
            await read_all(http, url)
        assert flaky.requests == 2

    await http.aclose()


async def test_get_json_makes_one_attempt() -> None:
    flaky, sleeps = Flaky(failures=1), Sleeps()
    http = client(sleeps)

    async with serve(flaky.app) as url:
        with pytest.raises(BackendUnavailable):
            await http.get_json(f"{url}/stream")

    assert flaky.requests == 1
    await http.aclose()


async def test_cancelled_trial_does_not_wedge_the_breaker() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after=5, clock=clock)
    flaky = Flaky(failures=1, silence=0.3)
    http = client(Sleeps(), breaker=breaker, timeouts=Timeouts(first_byte=60))
    breaker.acquire()
    breaker.record_failure("earlier outage")
    clock.now += 5

    async with serve(flaky.app) as url:
        trial = asyncio.create_task(read_all(http, url))
        await flaky.arrived.wait()
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial

        assert breaker.state is CircuitState.HALF_OPEN
        assert await read_all(http, url) == ["a", "b", "c"]  # the next call is the trial
        assert breaker.state is CircuitState.CLOSED

    await http.aclose()


async def test_closing_waits_for_the_requests_in_flight() -> None:
    # A configuration reload closes the client it replaced while answers may be streaming.
    flaky = Flaky()
    http = client(Sleeps())

    async with serve(flaky.app) as url:
        async with http.stream_lines("POST", f"{url}/stream") as lines:
            received = [await anext(lines)]
            closing = asyncio.create_task(http.aclose())
            await asyncio.sleep(0)  # the close has begun: it waits for this stream
            assert not closing.done()
            received += [line async for line in lines]
        await closing

    assert received == ["a", "b", "c"]
