"""What a server's ``GET /metrics`` says, read with Prometheus' own text parser."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: httpx.AsyncClient) -> Samples:
    """Every sample of ``/metrics`` (``client`` has the server's base URL), by name and
    labels."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def gauge_is(client: httpx.AsyncClient, name: str, value: float) -> Callable[[], Awaitable[bool]]:
    """A check for :func:`tests.support.waiting.eventually`: the unlabelled gauge ``name``
    reads ``value`` (e.g. ``citadel_runs_active`` 0: every run has ended and is stored)."""

    async def check() -> bool:
        return (await scrape(client)).get((name, ())) == value

    return check
