"""Timeouts, retries and a circuit breaker for the HTTP model backends.

Both HTTP backends (OpenAI-compatible and Ollama) talk to their servers through one
:class:`ResilientHTTP`, so each backend only knows its wire format. The rules live here once:

- a request is retried only while nothing has been received: connect errors, no first line
  within ``Timeouts.first_byte``, HTTP 429/502/503/504 (honouring ``Retry-After``). Once the
  first line of the body has arrived the stream is committed and failures are raised, never
  retried, so no delta is ever produced twice;
- every attempt passes the :class:`CircuitBreaker`, which fails fast while a backend is down;
- between lines of a stream, ``Timeouts.idle`` bounds the wait;
- closing waits for the requests in flight: a client that a configuration reload replaced
  is closed as soon as it has nothing left to do, and no answer is cut off.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import orjson

from agent_server.backends.errors import BackendError, BackendTimeout, BackendUnavailable
from agent_server.observability.logs import propagate_ids
from agent_server.urls import redact_url

if TYPE_CHECKING:
    from agent_server.config import Settings

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
MESSAGE_LIMIT = 300  # characters of a server's error text we pass on

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to wait. ``first_byte`` covers connecting, sending and the model's load and
    prefill up to the first line of the body; ``idle`` bounds each gap after that."""

    connect: float = 5.0
    first_byte: float = 60.0
    idle: float = 30.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff. ``attempts`` counts the first try. A ``jitter`` fraction of each
    delay is random so that clients which failed together do not retry together."""

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 is the first retry). A server's
        ``Retry-After`` wins over the backoff but never exceeds ``max_delay``."""
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return ceiling * (1 - self.jitter * random.random())


def model_policies(settings: Settings) -> tuple[Timeouts, RetryPolicy]:
    """The timeouts and retries ``CITADEL_LLM_*`` give a remote chat model."""
    timeouts = Timeouts(connect=settings.llm_connect_timeout, idle=settings.llm_idle_timeout)
    return timeouts, RetryPolicy(attempts=settings.llm_retries + 1)


DEFAULT_TIMEOUTS = Timeouts()
DEFAULT_RETRY = RetryPolicy()


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops calling a backend that keeps failing, so callers get an error at once instead of
    each waiting out its own timeouts.

    Closed: calls pass; ``failure_threshold`` consecutive failures open the circuit. Open: calls
    raise :class:`BackendUnavailable` without touching the network. After ``reset_after`` seconds
    it is half-open: one trial call passes; its success closes the circuit, its failure opens
    it for another ``reset_after``. Every call admitted by :meth:`acquire` must end in exactly
    one of :meth:`record_success`, :meth:`record_failure` or :meth:`release`.
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_after: float = 30.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False
        self._last_failure = ""

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - self._opened_at < self.reset_after:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def acquire(self) -> None:
        """Admit one call, or raise :class:`BackendUnavailable` if the circuit is open."""
        state = self.state
        if state is CircuitState.CLOSED:
            return
        if state is CircuitState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return
        if state is CircuitState.OPEN:
            assert self._opened_at is not None
            wait = self.reset_after - (self._clock() - self._opened_at)
            next_try = f"next trial in {wait:.1f} s"
        else:
            next_try = "a trial request is in flight"
        raise BackendUnavailable(
            f"circuit open after {self._failures} consecutive failures ({next_try}); "
            f"last failure: {self._last_failure}"
        )

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def record_failure(self, reason: str) -> None:
        self._failures += 1
        self._last_failure = reason
        if self._trial_in_flight or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
        self._trial_in_flight = False

    def release(self) -> None:
        """The admitted call ended without a verdict (it was cancelled): the next call may be
        the trial."""
        self._trial_in_flight = False


def error_text(payload: Any) -> str:
    """The human part of an error a server sent: OpenAI ``{"error": {"message"}}``, Ollama
    ``{"error": "..."}``, FastAPI ``{"detail": ...}``. llama_cpp.server appends a Python
    traceback naming server paths; it is dropped. Cut to :data:`MESSAGE_LIMIT` characters."""
    if isinstance(payload, dict):
        payload = payload.get("error", payload.get("detail", payload))
    if isinstance(payload, dict) and "message" in payload:
        payload = payload["message"]
    text = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    text = " ".join(text.split('\n  File "')[0].split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def _body_text(body: bytes) -> str:
    try:
        return error_text(orjson.loads(body))
    except orjson.JSONDecodeError:
        return error_text(body.decode("utf-8", "replace")) or "(empty body)"


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _StatusError(Exception):
    def __init__(self, response: httpx.Response, body: bytes) -> None:
        self.status = response.status_code
        self.message = _body_text(body)
        self.retry_after = _retry_after(response)


ErrorDescriber = Callable[[int, str], BackendError]


def _model_error(status: int, message: str) -> BackendError:
    return BackendError(message)


class ResilientHTTP:
    """One backend's HTTP client: every request goes through the breaker, retries and timeouts.

    ``name`` prefixes every error message (e.g. ``"ollama at http://host:11434"``). ``api_key``
    is sent as a bearer token and masked in every server message. ``http`` is borrowed, never
    closed; without it the instance owns a client, which sends the request and run ids
    (:func:`~agent_server.observability.logs.propagate_ids`), and :meth:`aclose` closes it.
    ``sleep`` is injectable for tests.
    """

    def __init__(
        self,
        name: str,
        *,
        timeouts: Timeouts,
        retry: RetryPolicy,
        breaker: CircuitBreaker,
        http: httpx.AsyncClient | None = None,
        api_key: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self.timeouts = timeouts
        self.retry = retry
        self.breaker = breaker
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(event_hooks={"request": [propagate_ids]})
        self._api_key = api_key
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._sleep = sleep
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @asynccontextmanager
    async def stream_lines(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        describe_error: ErrorDescriber = _model_error,
    ) -> AsyncIterator[AsyncIterator[str]]:
        """Open a streaming request and yield its body as lines. Leaving the block closes the
        response, which is how a cancelled consumer stops the server's work.

        ``describe_error`` turns a non-retryable HTTP status and the ready-made message (name,
        status and the server's text) into the error to raise."""
        with self._in_use():
            response, (lines, first) = await self._open(
                self._request(method, url, json), _first_line, self.retry.attempts, describe_error
            )
            guarded = self._guarded(lines, first)
            try:
                yield guarded
            finally:
                await guarded.aclose()
                await response.aclose()

    async def post_json(
        self, url: str, json: Any, *, describe_error: ErrorDescriber = _model_error
    ) -> Any:
        """POST ``json`` and return the decoded answer, with retries: for idempotent requests
        whose whole answer must arrive within the first-byte timeout (embeddings)."""
        with self._in_use():
            _, body = await self._open(
                self._request("POST", url, json), _whole_body, self.retry.attempts, describe_error
            )
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BackendError(f"{self.name}: {redact_url(url)} did not return JSON") from None

    async def get_json(self, url: str) -> Any:
        """One attempt, no retries: for health checks, which must answer quickly."""
        with self._in_use():
            _, body = await self._open(self._request("GET", url), _whole_body, 1, _model_error)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BackendError(f"{self.name}: {redact_url(url)} did not return JSON") from None

    async def aclose(self) -> None:
        """Close once the requests in flight are done (new ones are not expected)."""
        await self._idle.wait()
        if self._owns_http:
            await self._http.aclose()

    @contextmanager
    def _in_use(self) -> Iterator[None]:
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    def _request(self, method: str, url: str, json: Any = None) -> httpx.Request:
        # Reads are bounded by asyncio timeouts (first byte, then idle), not by httpx.
        timeout = httpx.Timeout(None, connect=self.timeouts.connect)
        return self._http.build_request(
            method, url, json=json, headers=self._headers, timeout=timeout
        )

    async def _open(
        self,
        request: httpx.Request,
        begin: Callable[[httpx.Response], Awaitable[_T]],
        attempts: int,
        describe_error: ErrorDescriber,
    ) -> tuple[httpx.Response, _T]:
        attempt = 0
        while True:
            attempt += 1
            self.breaker.acquire()
            retry_after = None
            try:
                result = await self._attempt(request, begin)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                error: BackendError = BackendUnavailable(f"{self.name}: cannot connect: {exc!r}")
                cause: BaseException = exc
            except TimeoutError as exc:
                error = BackendTimeout(
                    f"{self.name}: no response within {self.timeouts.first_byte:g} s"
                )
                cause = exc
            except httpx.TransportError as exc:
                self.breaker.record_failure(repr(exc))
                raise BackendUnavailable(f"{self.name}: request failed: {exc!r}") from exc
            except _StatusError as exc:
                message = self.scrub(exc.message)
                if exc.status not in RETRYABLE_STATUS:
                    self.breaker.record_success()  # it answered: the backend is up
                    raise describe_error(
                        exc.status, f"{self.name}: HTTP {exc.status}: {message}"
                    ) from None
                error = BackendUnavailable(f"{self.name}: HTTP {exc.status}: {message}")
                cause, retry_after = exc, exc.retry_after
            except BaseException:
                self.breaker.release()
                raise
            else:
                self.breaker.record_success()
                return result
            self.breaker.record_failure(str(error))
            if attempt == attempts or self.breaker.state is CircuitState.OPEN:
                raise error from cause
            delay = self.retry.delay(attempt, retry_after)
            log.warning("%s; retry %d/%d in %.2f s", error, attempt, attempts - 1, delay)
            await self._sleep(delay)

    async def _attempt(
        self, request: httpx.Request, begin: Callable[[httpx.Response], Awaitable[_T]]
    ) -> tuple[httpx.Response, _T]:
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout(self.timeouts.first_byte):
                response = await self._http.send(request, stream=True)
                if response.is_success:
                    return response, await begin(response)
                body = await response.aread()
        except BaseException:
            if response is not None:
                await response.aclose()
            raise
        await response.aclose()
        raise _StatusError(response, body)

    async def _guarded(self, lines: AsyncIterator[str], first: str | None) -> AsyncIterator[str]:
        if first is None:
            return
        yield first
        while True:
            try:
                async with asyncio.timeout(self.timeouts.idle):
                    line = await anext(lines)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise BackendTimeout(
                    f"{self.name}: stream stalled, nothing for {self.timeouts.idle:g} s"
                ) from None
            except httpx.TransportError as exc:
                raise BackendUnavailable(
                    f"{self.name}: connection lost mid-stream: {exc!r}"
                ) from exc
            yield line

    def scrub(self, text: str) -> str:
        """``text`` with the API key masked: servers sometimes echo a rejected key."""
        return text.replace(self._api_key, "***") if self._api_key else text


async def _first_line(response: httpx.Response) -> tuple[AsyncIterator[str], str | None]:
    lines = response.aiter_lines()
    return lines, await anext(lines, None)


async def _whole_body(response: httpx.Response) -> bytes:
    return await response.aread()
