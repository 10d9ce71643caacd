"""500 concurrent runs over two workers on the real Redis and Postgres while an admin watches
worker B's feed: every stream is a correct AG-UI stream and the feed carries every event of
every run exactly once, in order. Bounded: loopback only, one-second runs, a minute at most."""

from __future__ import annotations

import pytest

from bench.client import raise_fd_limit
from bench.workers import citadel_workers, watched_load


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_500_runs_over_two_workers_with_an_admin_watching():
    raise_fd_limit()
    # The admin must see everything: a reader this far behind would skip ahead (by design,
    # tested elsewhere), and how far behind it gets under this load depends on the machine.
    async with citadel_workers(2, shared=True, CITADEL_ADMIN_FEED_MAX_LAG="3600") as workers:
        load = await watched_load(workers, admin=workers[1], runs=500)
    assert len(load.streams) == 500
    assert load.problems() == []
    assert load.events == 500 * 16  # 10 deltas and the 6 events around them, per run
    worker_names = {item["worker"] for _, item in load.feed if item["kind"] == "run"}
    assert len(worker_names) == 2  # the admin on B saw A's runs too
