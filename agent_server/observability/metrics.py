"""Prometheus metrics, served on ``GET /metrics`` in the text format.

Why it looks the way it does:

- **One registry per app**, not prometheus-client's global one: tests run several apps in one
  process, and each must count its own.
- **Counters where things happen, gauges read at scrape time.** Requests, run ends and
  refusals are counted as they happen; open streams, active runs and the embedding cache's
  hits are read from the objects that already keep them, so nothing is counted twice.
- **Bounded labels.** Routes are the matched route's template (``/threads/{thread_id}``),
  never the raw path; error codes and refusal reasons are the server's own stable codes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from agent_server.store.base import RunEnd, token_totals

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class RunTiming:
    """How a run went, in seconds from its start (None: it never got there)."""

    first_event: float | None
    first_token: float | None
    tokens_per_second: float | None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "citadel_http_requests",
            "HTTP requests and WebSocket sessions answered, by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "citadel_http_request_duration_seconds",
            "Time to the end of the answer (whole streams included), by route template",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.runs = Counter(
            "citadel_runs",
            "Runs ended, by status, outcome and error code",
            ["status", "outcome", "error_code"],
            registry=self.registry,
        )
        self.tool_calls = Counter(
            "citadel_tool_calls",
            "Backend tool calls, by tool and result (error: the model read an error)",
            ["tool", "result"],
            registry=self.registry,
        )
        self.tool_seconds = Histogram(
            "citadel_tool_call_duration_seconds",
            "Backend tool call latency, by tool",
            ["tool"],
            registry=self.registry,
        )
        self.retrieval_seconds = Histogram(
            "citadel_retrieval_duration_seconds",
            "Knowledge-base searches (embedding, search, reranking), by mode",
            ["mode"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.auth_refusals = Counter(
            "citadel_auth_refusals",
            "Credentials refused (401), by reason",
            ["reason"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "citadel_rate_limited",
            "Requests refused with 429, by kind (runs, ingest, requests, address)",
            ["kind"],
            registry=self.registry,
        )

        self.run_first_event = Histogram(
            "citadel_run_first_event_seconds",
            "From a run's start (accepted, stored) to its first event",
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.run_first_token = Histogram(
            "citadel_run_first_token_seconds",
            "From a run's start to its first text delta (retrieval and tools included)",
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.tokens_per_second = Histogram(
            "citadel_model_output_tokens_per_second",
            "A run's output tokens over the time from its first text delta to its end",
            registry=self.registry,
            buckets=(1, 2.5, 5, 10, 20, 40, 80, 160, 320),
        )
        self.model_tokens = Counter(
            "citadel_model_tokens",
            "Tokens the model read (input) and wrote (output), as it reported them",
            ["kind"],
            registry=self.registry,
        )
        self.admin_feed_dropped = Counter(
            "citadel_admin_feed_dropped",
            "Admin feed readers that skipped ahead (drop-and-resync), by reason",
            ["reason"],
            registry=self.registry,
        )
        voice_buckets = (0.1, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10)
        self.voice_sessions = Gauge(
            "citadel_voice_sessions_active",
            "Voice sessions open on this worker (browser sockets and LiveKit rooms)",
            registry=self.registry,
        )
        self.voice_turn_seconds = Histogram(
            "citadel_voice_turn_latency_seconds",
            "Voice turns: the user stopped speaking → the agent's first audio",
            registry=self.registry,
            buckets=voice_buckets,
        )
        self.voice_stt_seconds = Histogram(
            "citadel_voice_stt_duration_seconds",
            "Voice turns: the user stopped speaking → the final transcript",
            registry=self.registry,
            buckets=voice_buckets,
        )
        self.voice_tts_first_byte_seconds = Histogram(
            "citadel_voice_tts_first_byte_seconds",
            "Voice turns: the answer's first text → its first synthesized audio",
            registry=self.registry,
            buckets=voice_buckets,
        )

    def tool_called(self, tool: str, seconds: float, failed: bool) -> None:
        self.tool_calls.labels(tool, "error" if failed else "ok").inc()
        self.tool_seconds.labels(tool).observe(seconds)

    def searched(self, seconds: float, hybrid: bool) -> None:
        self.retrieval_seconds.labels("hybrid" if hybrid else "dense").observe(seconds)

    def run_ended(self, end: RunEnd) -> None:
        self.runs.labels(end.status.value, end.outcome or "", end.error_code or "").inc()
        input_tokens, output_tokens = token_totals(end.usage)
        self.model_tokens.labels("input").inc(input_tokens or 0)
        self.model_tokens.labels("output").inc(output_tokens or 0)

    def run_timed(self, timing: RunTiming) -> None:
        if timing.first_event is not None:
            self.run_first_event.observe(timing.first_event)
        if timing.first_token is not None:
            self.run_first_token.observe(timing.first_token)
        if timing.tokens_per_second is not None:
            self.tokens_per_second.observe(timing.tokens_per_second)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A value read from its owner at each scrape."""
        self.registry.register(_Read(GaugeMetricFamily, name, documentation, read))

    def labelled(
        self,
        name: str,
        documentation: str,
        label: str,
        read: Callable[[], dict[str, float]],
        *,
        gauge: bool = False,
    ) -> None:
        """Counters (or, with ``gauge``, gauges) kept by their owner, one per ``label`` value,
        read at each scrape."""
        family = GaugeMetricFamily if gauge else CounterMetricFamily
        self.registry.register(_Read(family, name, documentation, read, label))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Read(Collector):
    def __init__(
        self,
        family: type[GaugeMetricFamily] | type[CounterMetricFamily],
        name: str,
        documentation: str,
        read: Callable[[], float] | Callable[[], dict[str, float]],
        label: str | None = None,
    ) -> None:
        self._family, self._name, self._doc = family, name, documentation
        self._read, self._label = read, label

    def collect(self) -> Iterator[Metric]:
        value = self._read()
        if self._label is None:
            assert isinstance(value, int | float)
            yield self._family(self._name, self._doc, value=value)
            return
        assert isinstance(value, dict)
        metric = self._family(self._name, self._doc, labels=[self._label])
        for key, count in value.items():
            metric.add_metric([key], count)
        yield metric
