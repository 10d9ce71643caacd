"""GET /admin/events on one worker (the in-process bus): every event of every run, wrapped,
filtered, replayable, over SSE and WebSocket, for administrators only; a reader that falls
behind skips ahead with a resync item instead of holding anything up."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import httpx
import orjson
import pytest
import time_machine
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from agent_server.api.admin_events import PAGE, FeedQuery, feed_items
from agent_server.observability.metrics import Metrics
from agent_server.runs.bus import LocalBus, feed_id_before
from agent_server.store.base import EventBatch
from tests.conftest import citadel, double_model
from tests.doubles.ollama import ScriptedReply, text_reply
from tests.support.agui import new_id, run_input, stream
from tests.support.clerk import admin_token, bearer, clerk_settings, session_token
from tests.support.feed import admin_feed, ended, run_events


async def test_every_event_of_a_run_arrives_once_in_order_wrapped_with_its_run(ollama):
    ollama.enqueue(ScriptedReply(text_reply("One two three four", chunks=4)))
    async with (
        citadel(double_model(ollama)) as url,
        admin_feed(url) as feed,
        httpx.AsyncClient() as client,
    ):
        thread, run = new_id("thread"), new_id("run")
        status, streamed = await stream(client, f"{url}/agui", run_input(thread, run))
        assert status == 200
        items = run_events(await feed.until(ended(run)), run)
    assert feed.items[0]["kind"] == "connected"
    assert [item["event"] for item in items] == streamed
    assert [item["seq"] for item in items] == list(range(1, len(streamed) + 1))
    assert {(i["threadId"], i["userId"], i["worker"]) for i in items} == {
        (thread, "local", feed.items[0]["worker"])
    }
    assert len({item["id"] for item in items}) == len(items)


async def test_filters_and_replay_from_a_time_or_after_an_item(ollama):
    ollama.enqueue(*(ScriptedReply(text_reply(f"Answer {n}", chunks=2)) for n in range(2)))
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        before = int(time.time() * 1000) - 1
        threads = [new_id("thread"), new_id("thread")]
        runs = [new_id("run"), new_id("run")]
        streams = []
        for thread, run in zip(threads, runs, strict=True):
            streams.append((await stream(client, f"{url}/agui", run_input(thread, run)))[1])

        async with admin_feed(url, since=str(before)) as everything:
            items = await everything.until(ended(runs[1]))
        assert [i["event"] for i in run_events(items, runs[0])] == streams[0]
        assert [i["event"] for i in run_events(items, runs[1])] == streams[1]

        async with admin_feed(url, since=str(before), thread=threads[1]) as one_thread:
            items = await one_thread.until(ended(runs[1]))
        assert {i["threadId"] for i in items if i["kind"] == "run"} == {threads[1]}

        lifecycle = "RUN_STARTED,RUN_FINISHED"
        async with admin_feed(url, since=str(before), types=lifecycle) as typed:
            items = await typed.until(ended(runs[1]))
        assert [i["event"]["type"] for i in items if i["kind"] == "run"] == [
            "RUN_STARTED",
            "RUN_FINISHED",
        ] * 2

        whole = run_events(everything.items, runs[0]) + run_events(everything.items, runs[1])
        cut = 3
        async with admin_feed(url, after=whole[cut]["id"]) as resumed:
            items = await resumed.until(ended(runs[1]))
        assert [i["id"] for i in items if i["kind"] == "run"] == [i["id"] for i in whole[cut + 1 :]]


async def test_the_websocket_face_sends_the_same_items(ollama):
    ollama.enqueue(ScriptedReply(text_reply("Over the socket", chunks=2)))
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        ws_url = url.replace("http://", "ws://") + "/admin/events"
        async with ws_connect(ws_url) as socket:
            connected = orjson.loads(await socket.recv())
            assert connected["kind"] == "connected"
            thread, run = new_id("thread"), new_id("run")
            _, streamed = await stream(client, f"{url}/agui", run_input(thread, run))
            received = []
            async with asyncio.timeout(10):
                while len(received) < len(streamed):
                    item = orjson.loads(await socket.recv())
                    if item["kind"] == "run" and item["runId"] == run:
                        received.append(item["event"])
        assert received == streamed


async def test_bad_starting_points_are_422_and_the_feed_is_for_administrators(ollama):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        for params in ({"since": "yesterday"}, {"after": "garbage"}, {"since": "2026-01-01T00:00"}):
            response = await client.get(f"{url}/admin/events", params=params)
            assert response.status_code == 422, params
            assert response.json()["error"]["code"] == "invalid_input"
    async with citadel(double_model(ollama), **clerk_settings()) as url:
        async with httpx.AsyncClient() as client:
            refused = await client.get(
                f"{url}/admin/events", headers=bearer(session_token("mallory"))
            )
            assert refused.status_code == 403
        async with admin_feed(url, headers=bearer(admin_token("root"))) as feed:
            assert feed.status == 200 and feed.items[0]["kind"] == "connected"
        with pytest.raises(InvalidStatus):  # the handshake is refused
            async with ws_connect(url.replace("http://", "ws://") + "/admin/events"):
                pass


def _feed_services(bus: LocalBus, max_lag: float) -> SimpleNamespace:
    settings = SimpleNamespace(keepalive_interval=0.2, admin_feed_max_lag=max_lag)
    return SimpleNamespace(bus=bus, settings=settings, metrics=Metrics())


async def test_a_reader_that_falls_behind_skips_ahead_with_a_resync_item():
    bus = LocalBus(retention=10 * PAGE)
    services = _feed_services(bus, max_lag=0.2)
    reader = feed_items(services, FeedQuery())  # type: ignore[arg-type]
    [connected] = await anext(reader)
    events = [b'{"type":"CUSTOM","name":"n","value":1}']
    # Feed ids are the wall clock's milliseconds: it stands still, then moves 0.3 s at once.
    with time_machine.travel(1_750_000_000, tick=False) as clock:
        for seq in range(1, 2 * PAGE + 1):  # the reader reads nothing meanwhile: it is slow
            await bus.publish([EventBatch("t", "r", seq, events, "alice")])
        clock.shift(0.3)
        await bus.publish([EventBatch("t", "r", 2 * PAGE + 1, events, "alice")])
    [resync] = await anext(reader)
    marker = orjson.loads(resync[1])
    assert marker["kind"] == "resync" and marker["reason"] == "slow_consumer"
    assert marker["skippedAfter"] == connected[0]
    assert marker["id"] == (await bus.feed_bounds())[1]
    dropped = services.metrics.admin_feed_dropped.labels("slow_consumer")._value.get()
    assert dropped == 1
    await bus.publish([EventBatch("t", "r", 2 * PAGE + 2, events, "alice")])
    [[(_, item)]] = [await anext(reader)]
    assert orjson.loads(item)["seq"] == 2 * PAGE + 2  # live again, from the newest
    await reader.aclose()


async def test_a_cursor_older_than_the_feed_keeps_gets_a_retention_resync():
    bus = LocalBus(retention=5)
    events = [b'{"type":"CUSTOM","name":"n","value":1}']
    for seq in range(1, 4):
        await bus.publish([EventBatch("t", "r", seq, events, "alice")])
    [first, *_] = await bus.read_feed("0-0", 10, 0)
    for seq in range(4, 12):
        await bus.publish([EventBatch("t", "r", seq, events, "alice")])
    services = _feed_services(bus, max_lag=5)
    reader = feed_items(services, FeedQuery(after=first.id, replay=True, resumed=True))  # type: ignore[arg-type]
    await anext(reader)  # connected
    [resync] = await anext(reader)
    assert orjson.loads(resync[1])["reason"] == "retention"
    replayed = await anext(reader)
    assert [orjson.loads(item)["seq"] for _, item in replayed] == list(range(7, 12))
    await reader.aclose()


async def test_items_are_numbered_across_the_runs_of_one_flush_and_resume_inside_it():
    bus = LocalBus()
    custom = [b'{"type":"CUSTOM","name":"n","value":%d}' % n for n in range(5)]
    await bus.publish(
        [
            EventBatch("t1", "r1", 7, custom[:2], "alice"),
            EventBatch("t2", "r2", 1, custom[2:], "bob"),
        ]
    )
    [entry] = await bus.read_feed("0-0", 10, 0)
    services = _feed_services(bus, max_lag=5)

    async def items(**query: object) -> list[dict]:
        reader = feed_items(services, FeedQuery(replay=True, **query))  # type: ignore[arg-type]
        await anext(reader)  # connected
        found = await anext(reader)
        await reader.aclose()
        return [orjson.loads(item) for _, item in found]

    every = await items()
    assert [(i["id"], i["runId"], i["userId"], i["seq"]) for i in every] == [
        (f"{entry.id}.0", "r1", "alice", 7),
        (f"{entry.id}.1", "r1", "alice", 8),
        (f"{entry.id}.2", "r2", "bob", 1),
        (f"{entry.id}.3", "r2", "bob", 2),
        (f"{entry.id}.4", "r2", "bob", 3),
    ]
    assert [i["event"]["value"] for i in every] == [0, 1, 2, 3, 4]
    resumed = await items(after=feed_id_before(entry.id), seen=(entry.id, 2))
    assert [i["id"] for i in resumed] == [f"{entry.id}.3", f"{entry.id}.4"]
    bobs = await items(user="bob", seen=(entry.id, 0), after=feed_id_before(entry.id))
    assert [i["seq"] for i in bobs] == [1, 2, 3]
