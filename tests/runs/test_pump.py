"""LogPump: what reaches the sink, and when a sink that is down gets it."""

import asyncio

import orjson

from agent_server.runs.eventlog import EventLog
from agent_server.runs.pump import LogPump
from agent_server.store.base import EventBatch
from protocol import events


class Sink:
    """Records every call; refuses while ``down``."""

    def __init__(self) -> None:
        self.calls: list[list[EventBatch]] = []
        self.down = False
        self.called = asyncio.Event()
        self.refused = asyncio.Event()

    async def __call__(self, batches: list[EventBatch]) -> None:
        if self.down:
            self.refused.set()
            raise ConnectionError("sink down")
        self.calls.append(batches)
        self.called.set()

    async def next_call(self) -> list[EventBatch]:
        await asyncio.wait_for(self.called.wait(), 5)
        self.called.clear()
        return self.calls[-1]

    async def next_refusal(self) -> None:
        await asyncio.wait_for(self.refused.wait(), 5)
        self.refused.clear()


def texts(batch: EventBatch) -> list[str]:
    return [orjson.loads(event).get("delta", orjson.loads(event)["type"]) for event in batch.events]


def started(run_id: str) -> EventLog:
    log = EventLog("thread", run_id)
    log.append(events.run_started("thread", run_id))
    return log


async def test_only_runs_with_news_are_sent_in_the_order_they_had_it_and_closed_ones_forgotten():
    sink = Sink()
    pump = LogPump("test", sink, ConnectionError, interval=0.01)
    quiet, first, second = started("quiet"), started("first"), started("second")
    pump.track(quiet, "alice")
    pump.track(first, "carol")
    pump.track(second, "bob")
    pump.start()
    try:
        second.append(events.text_message_content("m", "b1"))
        first.append(events.text_message_content("m", "a1"))
        second.append(events.text_message_content("m", "b2"))
        batches = await sink.next_call()
        assert [(b.run_id, b.seq_from, b.owner, texts(b)) for b in batches] == [
            ("second", 2, "bob", ["b1", "b2"]),
            ("first", 2, "carol", ["a1"]),
        ]
        first.append(events.run_finished("thread", "first"))
        first.close()
        [ended] = await sink.next_call()
        assert (ended.run_id, ended.seq_from, texts(ended)) == ("first", 3, ["RUN_FINISHED"])
        assert first.listeners == [] and quiet.listeners and second.listeners
    finally:
        await pump.close()


async def test_a_sink_that_is_down_gets_everything_once_it_is_back_and_the_lag_shows_it():
    sink = Sink()
    pump = LogPump("test", sink, ConnectionError, interval=0.01)
    log = started("run")
    pump.track(log)
    pump.start()
    try:
        sink.down = True
        log.append(events.text_message_content("m", "while down"))
        await sink.next_refusal()
        await sink.next_refusal()  # tried again after a backoff: the batch was kept
        assert sink.calls == [] and pump.lag > 0
        log.append(events.text_message_content("m", "still down"))
        sink.down = False
        sent = []
        while sum(len(b.events) for b in sent) < 2:
            sent += await sink.next_call()
        assert [text for batch in sent for text in texts(batch)] == ["while down", "still down"]
        assert [batch.seq_from for batch in sent] == [2, 3][: len(sent)]
        assert pump.lag == 0
    finally:
        await pump.close()
