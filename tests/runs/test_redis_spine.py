"""The Redis bus and claims against the real Redis: idempotent publishing, reading by cursor,
leases that compare before they write, stop requests by pub/sub."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as redis

from agent_server.runs.bus import BusUnavailable, LocalBus, feed_id_before
from agent_server.runs.claims import Claim, ClaimsUnavailable
from agent_server.runs.redis_bus import FEED_KEY, RedisBus, run_stream_key
from agent_server.runs.redis_claims import RedisClaims
from agent_server.store.base import EventBatch
from tests.support.redis import client, connections, empty_redis
from tests.support.waiting import eventually

BLOCKING = f"citadel-test-blocking-{uuid.uuid4().hex}"  # the blocking client's connections


@contextlib.asynccontextmanager
async def redis_clients(
    blocking_timeout: float = 5, shared_timeout: float | None = 0.5
) -> AsyncIterator[tuple[redis.Redis, redis.Redis]]:
    """A shared client that answers at once and one for blocking reads, on an empty database;
    the blocking client's connections are named :data:`BLOCKING`."""
    async with empty_redis() as url:
        shared = client(url, shared_timeout)
        blocking = client(url, blocking_timeout, name=BLOCKING)
        try:
            yield shared, blocking
        finally:
            await shared.aclose()
            await blocking.aclose()


def batch(seq_from: int, count: int, run: str = "r1", thread: str = "t1") -> EventBatch:
    events = [
        orjson.dumps({"type": "CUSTOM", "name": "n", "value": seq_from + i}) for i in range(count)
    ]
    return EventBatch(thread, run, seq_from, events, owner="alice")


async def test_published_batches_reach_the_run_stream_and_the_feed_once():
    async with redis_clients() as (shared, blocking):
        bus = RedisBus(shared, blocking, retention=60)
        await bus.publish([batch(1, 3), batch(1, 2, run="r2")])
        await bus.publish([batch(1, 3)])  # a retry after an unclear failure: not repeated
        await bus.publish([batch(4, 2)])

        found = await bus.read_run("t1", "r1", 2, block=0)
        assert [(b.seq_from, len(b.events)) for b in found] == [(1, 3), (4, 2)]
        values = [orjson.loads(e)["value"] for b in found for e in b.events]
        assert values == [1, 2, 3, 4, 5]  # the caller skips what it has (seq <= 2)

        feed = await bus.read_feed("0-0", 100, block=0)  # one entry per publish, none for the retry
        assert [[(b.run_id, b.seq_from, b.events) for b in e.batches] for e in feed] == [
            [("r1", 1, batch(1, 3).events), ("r2", 1, batch(1, 2, run="r2").events)],
            [("r1", 4, batch(4, 2).events)],
        ]
        assert {b.owner for e in feed for b in e.batches} == {"alice"}
        assert {e.worker for e in feed} == {bus.worker}
        assert await bus.feed_bounds() == (feed[0].id, feed[-1].id)
        assert await bus.read_feed(feed[-1].id, 100, block=0) == []
        assert [e.id for e in await bus.read_feed(feed_id_before(feed[1].id), 100, 0)] == [
            feed[1].id
        ]
        ttl = await shared.pttl(run_stream_key("t1", "r1"))
        assert 0 < ttl <= 60_000  # run streams expire after the retention


async def test_a_blocked_reader_wakes_when_a_batch_arrives():
    async with redis_clients(blocking_timeout=60) as (shared, blocking):
        bus = RedisBus(shared, blocking, retention=60)
        reader = asyncio.create_task(bus.read_run("t1", "r1", 0, block=30))

        async def reading() -> bool:  # the reader waits in XREAD, in Redis
            return any("b" in c["flags"] for c in await connections(shared, BLOCKING))

        await eventually(reading)
        assert not reader.done()
        await bus.publish([batch(1, 1)])
        found = await asyncio.wait_for(reader, 2)
        assert found is not None and found[0].seq_from == 1


async def test_the_feed_is_trimmed_to_about_its_length():
    async with redis_clients() as (shared, blocking):
        bus = RedisBus(shared, blocking, retention=60, feed_length=100)
        for seq in range(1, 1001):
            await bus.publish([batch(seq, 1)])
        assert 100 <= await shared.xlen(FEED_KEY) < 300


async def test_notes_carry_their_kind_owner_and_body():
    async with redis_clients() as (shared, blocking):
        bus = RedisBus(shared, blocking, retention=60)
        await bus.note("ingest", b'{"id":"job-1"}', "bob")
        [entry] = await bus.read_feed("0-0", 10, 0)
        assert (entry.kind, entry.owner, entry.note) == ("ingest", "bob", b'{"id":"job-1"}')


async def test_an_unreachable_redis_is_bus_unavailable_not_a_hang():
    shared = client("redis://127.0.0.1:1/0", 0.5)
    bus = RedisBus(shared, shared, retention=60)
    async with asyncio.timeout(5):
        with pytest.raises(BusUnavailable):
            await bus.publish([batch(1, 1)])
        with pytest.raises(BusUnavailable):
            await bus.read_feed("0-0", 1, 0)
    claims = RedisClaims(shared, shared)
    with pytest.raises(ClaimsUnavailable):
        await claims.claim("t", Claim("r", "u", "w"))
    await shared.aclose()


async def test_claims_are_exclusive_and_only_their_holder_frees_them():
    async with redis_clients() as (shared, blocking):
        a, b = RedisClaims(shared, blocking), RedisClaims(shared, blocking)
        mine, theirs = Claim("r1", "alice", "worker-a", 4), Claim("r2", "alice", "worker-b")
        assert await a.claim("t1", mine) is None
        assert await b.claim("t1", theirs) == mine  # the holder, start seq included
        await b.release("t1", theirs)  # not theirs to free
        assert await b.holder("t1") == mine
        await a.release("t1", mine)
        assert await b.holder("t1") is None
        assert await b.claim("t1", theirs) is None


async def test_a_claim_lost_with_redis_data_is_claimed_again_at_renewal():
    # No socket timeout on the claims' client: with one, redis-py sends through
    # asyncio.wait_for, which on Python 3.11 can swallow the cancellation aclose() sends the
    # renewal task mid-call (CPython gh-86296); the task then renews on and aclose() waits
    # for it forever. How often depends on how the test's wake-ups line up with renewals.
    async with redis_clients(shared_timeout=None) as (shared, blocking):
        lease = 0.3
        claims = RedisClaims(shared, blocking, lease=lease)
        claim = Claim("r1", "alice", "worker-a")

        async def held() -> bool:
            return await claims.holder("t1") == claim

        await claims.claim("t1", claim)
        await claims.start()
        try:
            await shared.flushdb()  # Redis restarted without persistence
            await eventually(held)  # claimed again by a renewal (one every lease / 3)
            await asyncio.sleep(lease)  # past the lease it was claimed again with
            await eventually(held)  # renewed meanwhile: still the holder
        finally:
            await claims.aclose()


async def test_stop_requests_reach_the_worker_listening():
    async with redis_clients() as (shared, blocking):
        runner, asker = RedisClaims(shared, blocking), RedisClaims(shared, blocking)
        received: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        runner.on_stop = lambda thread, run: received.put_nowait((thread, run))
        await runner.start()
        try:

            async def subscribed() -> bool:  # a request published before would be lost
                return any(int(c["sub"]) > 0 for c in await connections(shared, BLOCKING))

            await eventually(subscribed)
            await asker.request_stop("t1", "r1")
            assert await asyncio.wait_for(received.get(), 3) == ("t1", "r1")
            assert not await asker.watched("t1", "r1")
            await asker.watch("t1", "r1")
            assert await runner.watched("t1", "r1")
        finally:
            await runner.aclose()


async def test_the_local_feed_reads_by_cursor_and_wakes_blocked_readers():
    bus = LocalBus(retention=3)
    assert await bus.feed_bounds() == ("0-0", "0-0")
    reader = asyncio.create_task(bus.read_feed("0-0", 10, block=2))
    await asyncio.sleep(0.05)
    await bus.publish([batch(1, 2)])
    [first] = await asyncio.wait_for(reader, 1)
    assert first.batches == [batch(1, 2)]
    for seq in range(3, 7):
        await bus.publish([batch(seq, 1)])
    kept = await bus.read_feed("0-0", 10, 0)
    assert [e.batches[0].seq_from for e in kept] == [4, 5, 6]  # the last ``retention`` entries
    assert await bus.read_feed(kept[0].id, 1, 0) == [kept[1]]
    assert await bus.read_feed(kept[-1].id, 10, block=0.05) == []
