import asyncio

import orjson

from agent_server.runs.eventlog import EventLog
from protocol import events
from protocol.framing import parse_sse
from protocol.versions import WireVersion


async def collect(log: EventLog, **options) -> list[list[bytes]]:
    return [batch async for batch in log.follow(**options)]


async def test_frames_carry_run_and_seq_ids_and_replay_from_any_point():
    log = EventLog("t", "run:1")
    log.append(events.run_started("t", "run:1"))
    log.append(events.text_message_start("m"))
    log.append(events.text_message_content("m", "hi"))
    log.close()
    [batch] = await collect(log, after_seq=1)
    assert [m.id for m in parse_sse(b"".join(batch))] == ["run:1:2", "run:1:3"]
    [json_batch] = await collect(log, after_seq=2, sse=False)
    assert orjson.loads(json_batch[0])["delta"] == "hi"


async def test_legacy_followers_get_downgraded_frames_and_v1_followers_do_not():
    log = EventLog("t", "r")
    log.append(events.run_started("t", "r"))
    log.append(events.run_finished("t", "r", outcome=events.cancelled_outcome()))
    log.close()
    [v1] = await collect(log)
    [legacy] = await collect(log, version=WireVersion.LEGACY)
    assert b'"cancelled"' in v1[1] and b"outcome" not in legacy[1]
    assert v1[0] is legacy[0]  # unchanged events share their bytes


async def test_a_burst_is_paced_into_few_writes_and_a_slow_stream_is_not_delayed():
    async def produce(log: EventLog, count: int, pause: float) -> None:
        for n in range(count):
            log.append(events.text_message_content("m", str(n)))
            await asyncio.sleep(pause)
        log.close()

    burst, slow = EventLog("t", "burst"), EventLog("t", "slow")
    producers = [
        asyncio.create_task(produce(burst, 200, 0)),
        asyncio.create_task(produce(slow, 10, 0.03)),
    ]
    burst_batches, slow_batches = await asyncio.gather(
        collect(burst, min_interval=0.02), collect(slow, min_interval=0.02)
    )
    await asyncio.gather(*producers)
    assert sum(map(len, burst_batches)) == 200 and len(burst_batches) < 20
    assert [len(batch) for batch in slow_batches] == [1] * 10  # every event on its own


async def test_an_idle_follower_gets_keepalive_ticks():
    log = EventLog("t", "r")
    log.append(events.run_started("t", "r"))
    batches = []
    async for batch in log.follow(idle_timeout=0.01):
        batches.append(batch)
        if batches.count([]) == 2:
            log.close()
    assert batches[0] and batches[1:3] == [[], []]
