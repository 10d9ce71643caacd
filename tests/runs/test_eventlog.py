import asyncio

import orjson

from agent_server.api.streams import sse_batch
from agent_server.runs.eventlog import Batch, EventLog, RunEvent
from protocol import events
from protocol.framing import parse_sse
from protocol.versions import WireVersion


async def collect(log: EventLog, **options) -> list[list[RunEvent]]:
    return [batch.events async for batch in log.follow(**options)]


async def test_events_carry_their_seq_and_replay_from_any_point():
    log = EventLog("t", "run:1")
    log.append(events.run_started("t", "run:1"))
    log.append(events.text_message_start("m"))
    log.append(events.text_message_content("m", "hi"))
    log.close()
    [batch] = await collect(log, after_seq=1)
    assert [event.seq for event in batch] == [2, 3]
    assert batch[1].event["delta"] == "hi"
    framed = sse_batch(Batch(log.run_id, [2, 3], [event.data for event in batch]))
    assert [m.id for m in parse_sse(framed)] == ["run:1:2", "run:1:3"]
    [tail] = await collect(log, after_seq=2)
    assert orjson.loads(tail[0].data)["delta"] == "hi"


async def test_legacy_followers_get_downgraded_frames_and_v1_followers_do_not():
    log = EventLog("t", "r")
    log.append(events.run_started("t", "r"))
    log.append(events.step_started("model"))
    log.append(events.run_finished("t", "r", outcome=events.cancelled_outcome()))
    log.close()
    [v1] = await collect(log)
    [legacy] = await collect(log, version=WireVersion.LEGACY)
    assert b'"cancelled"' in v1[2].data and b"outcome" not in legacy[2].data
    assert b'"protocolVersion"' in v1[0].data and b"protocolVersion" not in legacy[0].data
    assert v1[1].data is legacy[1].data  # unchanged events share their bytes


async def test_a_burst_is_paced_into_few_writes_and_a_slow_stream_is_not_delayed():
    loop = asyncio.get_running_loop()
    interval = 0.02

    async def burst_into(log: EventLog) -> None:  # an event at every turn of the loop
        for n in range(200):
            log.append(events.text_message_content("m", str(n)))
            await asyncio.sleep(0)
        log.close()

    burst = EventLog("t", "burst")
    began = loop.time()
    producer = asyncio.create_task(burst_into(burst))
    burst_batches = await collect(burst, min_interval=interval)
    lasted = loop.time() - began
    await producer
    assert sum(map(len, burst_batches)) == 200
    # Batches follow each other ``interval`` apart at least (only the one after the close may
    # come sooner), however long the burst takes on this machine: one write per interval.
    assert len(burst_batches) <= lasted / interval + 2

    slow = EventLog("t", "slow")
    slow_batches: list[Batch] = []

    async def follow_slow() -> None:
        async for batch in slow.follow(min_interval=interval):
            slow_batches.append(batch)

    follower = asyncio.create_task(follow_slow())
    for n in range(10):
        slow.append(events.text_message_content("m", str(n)))
        for _ in range(10):  # turns of the loop, not time: a follower that waits is delayed
            if len(slow_batches) > n:
                break
            await asyncio.sleep(0)
        assert len(slow_batches) == n + 1, "an event more than an interval after the last waited"
        await asyncio.sleep(interval)  # the next event comes an interval after this one left
    slow.close()
    await follower
    assert [len(batch) for batch in slow_batches] == [1] * 10  # every event on its own


async def test_an_idle_follower_gets_keepalive_ticks():
    log = EventLog("t", "r")
    log.append(events.run_started("t", "r"))
    batches = []
    async for batch in log.follow(idle_timeout=0.01):
        batches.append(batch)
        if sum(not batch for batch in batches) == 2:
            log.close()
    assert batches[0] and [batch.data for batch in batches[1:3]] == [[], []]
