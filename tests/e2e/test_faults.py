"""Faults across two workers. Documented behaviour, asserted here:

* **Redis killed and restarted** (no persistence): runs in progress go on and end normally on
  their worker; runs started meanwhile are accepted (the one-run-per-thread rule holds per
  worker until Redis is back); every event is stored; after the restart, without restarting
  any worker, a run on A resumes on B again and the admin feed on B carries new runs again.
* **Redis down, another worker's run stopped**: 503 ``unavailable``; its own worker stops it.
* **Redis down, an admin feed open**: it stays connected, silent, and carries runs again
  (those of the outage included) once Redis is back, on the same connection.
* **Postgres cut mid-run**: streams go on; events reach the store once it is back.
* **The model backend stalling mid-answer, then answering garbage**: each run ends with a
  final ``RUN_ERROR`` (codes ``timeout`` and ``model_error``), its events (the text already
  streamed included) are stored and on the admin feed, the run history names the error, and
  the next run on the same thread succeeds.
* **An admin reader that stops reading**: every run ends, fully delivered, while it reads
  nothing; reading again, it catches up (or skips ahead with a resync item) and follows the
  feed live.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest

from agent_server.runs.bus import parse_feed_id
from bench.client import BodyReader, frame_data, post_sse, raise_fd_limit
from bench.client import run_input as bench_run_input
from bench.workers import citadel_workers, watched_load
from protocol.framing import SSEDecoder
from protocol.verifier import verify_events
from tests.doubles.ollama import DEFAULT_MODEL, OllamaDouble, ScriptedReply, text_reply
from tests.support.agui import new_id, run_input, stream, types
from tests.support.database import isolated_database_url
from tests.support.feed import admin_feed, ended, run_events
from tests.support.processes import citadel_process, clean_env, free_port, two_workers
from tests.support.proxy import proxied_postgres

FAST = {"CITADEL_EVENT_FLUSH_INTERVAL": "0.05", "CITADEL_CLAIM_LEASE": "3"}


@contextlib.contextmanager
def redis_server(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A Redis of our own on ``port`` (without persistence, as on this machine)."""
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with contextlib.suppress(subprocess.CalledProcessError):
                subprocess.run(
                    ["redis-cli", "-p", str(port), "ping"], check=True, capture_output=True
                )
                break
        yield process
    finally:
        process.kill()
        process.wait()


def one_run_on_each(
    client: httpx.AsyncClient, urls: tuple[str, str]
) -> tuple[list[tuple[str, str]], list[asyncio.Task[tuple[int, list[dict]]]]]:
    """A run started on each worker: their (thread, run) ids and the tasks reading them."""
    runs = [(new_id("thread"), new_id("run")) for _ in urls]
    reading = [
        asyncio.create_task(stream(client, f"{url}/agui", run_input(thread, run)))
        for url, (thread, run) in zip(urls, runs, strict=True)
    ]
    return runs, reading


async def stored_events(database: str, run_id: str) -> list[dict]:
    connection = await asyncpg.connect(database)
    try:
        rows = await connection.fetch(
            "SELECT events FROM run_events WHERE run_id = $1 ORDER BY seq_from", run_id
        )
    finally:
        await connection.close()
    return [orjson.loads(line) for row in rows for line in bytes(row["events"]).split(b"\n")]


@pytest.mark.timeout(180)
async def test_redis_killed_and_restarted_during_runs(tmp_path: Path):
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    slow = ScriptedReply(
        text_reply("one two three four five six seven eight", chunks=8), delay=0.25
    )
    async with (
        OllamaDouble() as ollama,
        isolated_database_url() as database,
        two_workers(tmp_path, ollama.url, database, redis_url, **FAST) as (a, b),
        httpx.AsyncClient(timeout=30) as client,
    ):
        with redis_server(port) as redis_process:
            ollama.enqueue(slow, slow)
            runs, during = one_run_on_each(client, (a, b))
            await ollama.wait_for_requests(2)
            redis_process.kill()
            redis_process.wait()
            ollama.enqueue(ScriptedReply(text_reply("Said while Redis was away.")))
            outage_thread, outage_run = new_id("thread"), new_id("run")
            status, outage = await stream(client, f"{a}/agui", run_input(outage_thread, outage_run))
            assert status == 200 and types(outage)[-1] == "RUN_FINISHED"
            results = await asyncio.gather(*during)
        for status, events in results:
            assert status == 200 and verify_events(events) == []
            assert events[-1]["type"] == "RUN_FINISHED"
            assert events[-1].get("outcome", {"type": "success"})["type"] == "success"

        with redis_server(port):
            await asyncio.sleep(1.0)  # the workers' Redis clients reconnect on their next call
            async with admin_feed(b) as feed:
                ollama.enqueue(slow)
                thread, run = new_id("thread"), new_id("run")
                decoder = SSEDecoder()
                first = []
                async with client.stream(
                    "POST", f"{a}/agui", json=run_input(thread, run)
                ) as response:
                    async for chunk in response.aiter_bytes():
                        first += decoder.feed(chunk)
                        if len(first) >= 4:
                            break
                resumed = await client.post(
                    f"{b}/agui/connect",
                    json={"threadId": thread, "protocolVersion": "1.0"},
                    headers={"Last-Event-ID": first[-1].id},
                )
                rest = SSEDecoder().feed(resumed.content)
                events = [orjson.loads(m.data) for m in first + rest]
                assert verify_events(events) == [] and events[-1]["type"] == "RUN_FINISHED"
                assert [m.id for m in first + rest] == [
                    f"{run}:{n}" for n in range(1, len(events) + 1)
                ]
                await feed.until(ended(run))
            assert [i["event"] for i in run_events(feed.items, run)] == events

        # Nothing acknowledged was lost: every event each client saw is in the store.
        for (_, run_id), (_, events) in zip(runs, results, strict=True):
            assert await stored_events(database, run_id) == events
        assert await stored_events(database, outage_run) == outage


async def read_until(
    chunks: AsyncIterator[bytes], decoder: SSEDecoder, done: Callable[[list[dict]], bool]
) -> list[dict]:
    """Events from ``chunks`` until ``done`` says they are enough (the rest stays unread)."""
    received: list[dict] = []
    async for chunk in chunks:
        received += [orjson.loads(message.data) for message in decoder.feed(chunk)]
        if done(received):
            break
    return received


def streaming(events: list[dict]) -> bool:
    return "TEXT_MESSAGE_CONTENT" in types(events)


@pytest.mark.timeout(120)
async def test_stopping_a_run_of_another_worker_while_redis_is_down_is_503_unavailable(
    tmp_path: Path,
):
    """Which worker runs a thread is known to Redis alone: while it is down, B cannot reach
    A's run and says so (503 ``unavailable``, ``Retry-After``) instead of claiming there is
    none; A, which runs it, still stops it."""
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    hanging = ScriptedReply(text_reply("never finished", chunks=3)[:1], hang=True)
    with redis_server(port) as redis_process:
        async with (
            OllamaDouble() as ollama,
            isolated_database_url() as database,
            two_workers(tmp_path, ollama.url, database, redis_url, **FAST) as (a, b),
            httpx.AsyncClient(timeout=30) as client,
        ):
            ollama.enqueue(hanging)
            thread, run = new_id("thread"), new_id("run")
            decoder = SSEDecoder()
            async with client.stream("POST", f"{a}/agui", json=run_input(thread, run)) as running:
                chunks = running.aiter_bytes()
                started = await read_until(chunks, decoder, streaming)
                redis_process.kill()
                redis_process.wait()
                refused = await client.post(f"{b}/agui/stop", json={"threadId": thread})
                stopped = await client.post(f"{a}/agui/stop", json={"threadId": thread})
                rest = await read_until(chunks, decoder, lambda _: False)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "unavailable"
    assert refused.headers["retry-after"] == "5"
    assert stopped.status_code == 200 and stopped.json()["runId"] == run
    events = started + rest
    assert verify_events(events) == []
    assert events[-1]["type"] == "RUN_FINISHED" and events[-1]["outcome"] == {"type": "cancelled"}


@pytest.mark.timeout(120)
async def test_an_admin_feed_stays_connected_through_a_redis_outage_and_carries_the_runs_after_it(
    tmp_path: Path,
):
    """One connection to ``/admin/events`` throughout: while Redis is down the worker keeps
    it open (keep-alives, no items, not even of a run it serves meanwhile); once Redis is back
    the same connection carries that run, published late, and a run started after."""
    port = free_port()
    with redis_server(port) as redis_process:
        async with (
            OllamaDouble() as ollama,
            isolated_database_url() as database,
            citadel_process(
                clean_env(
                    DATABASE_URL=database,
                    REDIS_URL=f"redis://127.0.0.1:{port}/0",
                    CITADEL_LLM="ollama",
                    CITADEL_LLM_URL=ollama.url,
                    CITADEL_LLM_MODEL=DEFAULT_MODEL,
                    CITADEL_RETRIEVAL="off",
                    CITADEL_DATA_DIR=str(tmp_path),
                    # A quiet feed's keep-alives are a minute apart: those that come sooner
                    # are the worker's, finding Redis away.
                    CITADEL_KEEPALIVE_INTERVAL="60",
                    **FAST,
                )
            ) as (_, worker),
            admin_feed(worker) as feed,
            httpx.AsyncClient(timeout=30) as client,
        ):
            runs: dict[str, list[dict]] = {}

            async def run(name: str) -> str:
                thread, run_id = new_id("thread"), new_id("run")
                status, runs[run_id] = await stream(
                    client, f"{worker}/agui", run_input(thread, run_id, name)
                )
                assert status == 200 and types(runs[run_id])[-1] == "RUN_FINISHED"
                return run_id

            before = await run("Before the outage")
            await feed.until(ended(before))
            redis_process.kill()
            redis_process.wait()
            await feed.until_keepalives(feed.keepalives + 2)
            during = await run("During the outage")
            await feed.until_keepalives(feed.keepalives + 1)  # the feed went round after the run
            silent = list(feed.items)
            with redis_server(port):
                after = await run("After the outage")
                await feed.until(ended(during))
                await feed.until(ended(after))
    assert run_events(silent, during) == []
    assert [item["kind"] for item in feed.items].count("connected") == 1
    for run_id in (before, during, after):
        assert [item["event"] for item in run_events(feed.items, run_id)] == runs[run_id]


@pytest.mark.timeout(180)
async def test_postgres_cut_mid_run_on_two_workers(tmp_path: Path):
    slow = ScriptedReply(text_reply("slow and steady wins " * 3, chunks=12), delay=0.1)
    async with (
        OllamaDouble() as ollama,
        isolated_database_url() as database,
        proxied_postgres(database) as (proxy, via),
        empty_redis_url() as redis_url,
        two_workers(tmp_path, ollama.url, via, redis_url, **FAST) as (a, b),
        httpx.AsyncClient(timeout=30) as client,
    ):
        ollama.enqueue(slow, slow)
        runs, during = one_run_on_each(client, (a, b))
        await ollama.wait_for_requests(2)
        proxy.cut()
        await asyncio.sleep(0.5)
        proxy.restore()
        results = await asyncio.gather(*during)
        for (_, run_id), (status, events) in zip(runs, results, strict=True):
            assert status == 200 and verify_events(events) == []
            assert types(events)[-1] == "RUN_FINISHED"
            assert await stored_events(database, run_id) == events


@pytest.mark.timeout(120)
async def test_a_model_that_stalls_then_answers_garbage_fails_runs_not_workers(tmp_path: Path):
    stall = ScriptedReply(text_reply("I was saying", chunks=2)[:1], hang=True)
    garbage = ScriptedReply([text_reply("Fine", chunks=1)[0], "<html>502 Bad Gateway</html>"])
    async with (
        OllamaDouble() as ollama,
        isolated_database_url() as database,
        empty_redis_url() as redis_url,
        two_workers(
            tmp_path, ollama.url, database, redis_url, CITADEL_LLM_IDLE_TIMEOUT="0.5", **FAST
        ) as (a, b),
        admin_feed(b) as feed,
        httpx.AsyncClient(timeout=30) as client,
    ):
        thread = new_id("thread")
        ollama.enqueue(stall, garbage, ScriptedReply(text_reply("All good now.")))
        outcomes = []
        for code in ("timeout", "model_error", None):
            run = new_id("run")
            status, events = await stream(client, f"{a}/agui", run_input(thread, run))
            assert status == 200 and verify_events(events) == []
            if code:
                assert events[-1]["type"] == "RUN_ERROR" and events[-1]["code"] == code
                assert "TEXT_MESSAGE_CONTENT" in types(events)  # what streamed before is kept
            else:
                assert types(events)[-1] == "RUN_FINISHED"
            await feed.until(ended(run))
            assert [i["event"] for i in run_events(feed.items, run)] == events
            assert await stored_events(database, run) == events  # stored before the end is sent
            outcomes.append((await client.get(f"{b}/admin/runs/{run}")).json()["errorCode"])
        assert outcomes == ["timeout", "model_error", None]
        assert (await client.get(f"{a}/health")).status_code == 200


@contextlib.asynccontextmanager
async def empty_redis_url() -> AsyncIterator[str]:
    from tests.support.redis import empty_redis

    async with empty_redis() as url:
        yield url


def unsent_bytes(local_port: int, remote_port: int) -> int:
    """What this machine's TCP socket from ``local_port`` to ``remote_port`` (loopback) has
    written but its peer has not taken yet (``/proc/net/tcp``'s tx_queue)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = (int(address.split(":")[1], 16) for address in fields[1:3])
        if (local, remote) == (local_port, remote_port):
            return int(fields[4].split(":")[0], 16)
    raise LookupError(f"no TCP socket from port {local_port} to port {remote_port}")


@pytest.mark.timeout(180)
async def test_an_admin_reader_that_stops_reading_holds_back_no_run_then_reads_live_again():
    """An admin that reads nothing (a 4 KB receive window) while 300 runs stream on two
    workers. Every run ends, each event delivered to its client and to a fast admin, while
    the worker still has feed bytes it cannot send to the stalled reader. Once it reads again
    it catches up (through the backlog or with a ``slow_consumer`` resync item, whichever
    the machine's speed gives) and then gets a run started after, live and whole.

    Nothing here depends on the machine's speed. What a stalled reader costs the runs'
    timing is measured, not tested: ``python -m bench.stalled_admin``."""
    raise_fd_limit()
    async with citadel_workers(2, shared=True) as (a, b):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", b.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"GET /admin/events HTTP/1.1\r\nHost: citadel\r\n\r\n")
        parser = BodyReader()
        items: list[dict] = []

        async def read_feed_until(found: Callable[[dict], bool]) -> None:
            """Read until an item ``found`` accepts has come."""
            async with asyncio.timeout(60):
                while True:
                    frames = parser.feed(await reader.read(256 * 1024))
                    new = [orjson.loads(frame_data(f)) for f in frames if frame_data(f)]
                    items.extend(new)
                    if any(found(item) for item in new):
                        return

        await read_feed_until(lambda item: True)
        assert items[0]["kind"] == "connected"
        load = await watched_load([a, b], admin=b, runs=300, prompt="deltas=100 interval=0.05")
        assert len(load.streams) == 300 and load.problems() == []
        assert unsent_bytes(b.port, sock.getsockname()[1]) > 0  # the reader was holding it

        last = feed_entry(load.feed[-1][1])
        await read_feed_until(lambda item: feed_entry(item) >= last)
        later = uuid.uuid4().hex
        stream = await post_sse(a.port, bench_run_input("deltas=3", run_id=later), keep=True)
        await read_feed_until(lambda item: run_ended(item, later))
        writer.close()
    assert {item["reason"] for item in items if item["kind"] == "resync"} <= {"slow_consumer"}
    events = [orjson.loads(frame_data(frame)) for frame in stream.kept if frame_data(frame)]
    assert [item["event"] for item in items if item.get("runId") == later] == events


def feed_entry(item: dict) -> tuple[int, int]:
    """The feed entry an item is (a resync) or is part of (a run's event)."""
    return parse_feed_id(item["id"].partition(".")[0])


def run_ended(item: dict, run_id: str) -> bool:
    return item.get("runId") == run_id and item["event"]["type"] in ("RUN_FINISHED", "RUN_ERROR")
