"""The ``GET /voice/ws`` contract at its edges: bad input gets an ``error`` frame and a close
code of 4000 + the error's HTTP status, and stores nothing; the credential may come in a
``token`` query parameter; a thread is the caller's or is not found. A real server, the
real speech stack loaded, Postgres; the chat model is the Ollama TEST DOUBLE (never asked)."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import citadel, double_model
from tests.doubles.ollama import ScriptedReply, text_reply
from tests.server.test_access import api_key, server
from tests.support.agui import new_id, stream, user
from tests.support.clerk import bearer, session_token
from tests.support.metrics import gauge_is, scrape
from tests.support.voice import RATE, voice_session
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(120)

SECOND = bytes(RATE * 2)  # one second of silence


def wav(pcm: bytes) -> bytes:
    """``pcm`` in a WAV file: an audio file, not the raw samples the contract asks for."""
    header = b"RIFF" + struct.pack("<I", 36 + len(pcm)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16)
    return header + b"data" + struct.pack("<I", len(pcm)) + pcm


BAD_INPUT: list[tuple[str, dict[str, Any] | None, list[bytes | str], str, int]] = [
    # (case, session.start or None for the default, frames sent after it, error code, close)
    ("audio_before_start", {"raw": SECOND[:640]}, [], "invalid_input", 4422),
    ("wrong_sample_rate", {"sampleRate": 44_100}, [], "invalid_input", 4422),
    ("sample_rate_as_text", {"sampleRate": "16000"}, [], "invalid_input", 4422),
    ("bad_thread_id", {"threadId": "has space"}, [], "invalid_input", 4422),
    ("not_json", {"raw": "hello"}, [], "invalid_input", 4422),
    ("unknown_frame_type", None, ['{"type":"dance"}'], "invalid_input", 4422),
    ("second_start", None, ['{"type":"session.start"}'], "invalid_input", 4422),
    ("empty_typed_turn", None, ['{"type":"text","text":"  "}'], "invalid_input", 4422),
    ("nul_in_typed_turn", None, ['{"type":"text","text":"a\\u0000b"}'], "invalid_input", 4422),
    ("half_a_sample", None, [SECOND[:641]], "invalid_audio", 4422),
    ("a_wav_file", None, [wav(SECOND[:6400])], "invalid_audio", 4422),
    ("oversize_frame", None, [SECOND + SECOND[:2]], "payload_too_large", 4413),
    (
        "oversize_text",
        None,
        ['{"type":"text","text":"' + "a" * 17_000 + '"}'],
        "payload_too_large",
        4413,
    ),
    ("faster_than_real_time", None, [SECOND] * 5, "audio_too_fast", 4429),
]


@pytest.mark.parametrize(
    ("start", "frames", "code", "close"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
async def test_bad_input_is_an_error_frame_and_a_close_code_and_stores_nothing(
    ollama, start, frames, code, close
):
    first = {"type": "session.start", "sampleRate": RATE}
    if start is not None:
        first = start.get("raw", {**first, **start})
    async with citadel(double_model(ollama)) as url:
        async with ws_connect(url.replace("http", "ws") + "/voice/ws") as socket:
            await socket.send(first if isinstance(first, str | bytes) else _json(first))
            for frame in frames:
                await socket.send(frame)
            received = await _until_closed(socket)
            closed = (socket.close_code, socket.close_reason)
        async with httpx.AsyncClient(base_url=url) as client:
            threads = (await client.get("/threads")).json()["threads"]
    errors = [m for m in received if isinstance(m, str) and '"error"' in m]
    assert len(errors) == 1 and f'"code":"{code}"' in errors[0], received
    assert closed == (close, code)
    assert threads == [] and ollama.requests == []


async def _until_closed(socket: Any) -> list[str | bytes]:
    """Every message until the server closes the socket."""
    received = []
    with contextlib.suppress(ConnectionClosed):
        while True:
            received.append(await socket.recv())
    return received


def _json(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode()


async def test_the_credential_may_be_a_token_query_parameter_and_is_required(ollama):
    async with server(ollama) as (url, database):
        _, secret = await api_key(database, "agents")
        ws_url = url.replace("http", "ws") + "/voice/ws"
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(ws_url):
                pass
        with pytest.raises(InvalidStatus) as wrong:
            async with ws_connect(f"{ws_url}?token=ctk_not_a_key"):
                pass
        async with voice_session(f"{url}", microphone=False, query={"token": secret}) as voice:
            started = voice.of("session.started")
    assert refused.value.response.status_code == 401 and wrong.value.response.status_code == 401
    assert started[0]["threadId"].startswith("thread_")


async def test_a_thread_of_someone_else_is_not_found_and_left_alone(ollama):
    ollama.enqueue(ScriptedReply(text_reply("Alice's answer.")))
    thread_id = new_id("thread")
    async with server(ollama) as (url, _):
        alice = bearer(session_token("alice"))
        async with httpx.AsyncClient(base_url=url) as client:
            body = {"threadId": thread_id, "runId": new_id("run"), "messages": [user("mine")]}
            await stream(client, f"{url}/agui", body, headers=alice)
        bob = session_token("bob")
        start = {"type": "session.start", "threadId": thread_id}
        async with voice_session(url, start=start, query={"token": bob}) as voice:
            await voice.until(lambda c: c.closed is not None, 30)
        async with httpx.AsyncClient(base_url=url) as client:
            thread = (await client.get(f"/threads/{thread_id}", headers=alice)).json()
    assert voice.of("error")[0]["code"] == "thread_not_found"
    assert voice.closed == (4404, "thread_not_found")
    assert [m["content"] for m in thread["messages"]] == ["mine", "Alice's answer."]


async def test_voice_sessions_are_counted_on_metrics_while_open(ollama):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient(base_url=url) as client:
        async with voice_session(url, microphone=False):
            during = await scrape(client)
        await eventually(gauge_is(client, "citadel_voice_sessions_active", 0.0))
    assert during[("citadel_voice_sessions_active", ())] == 1.0
    assert ("citadel_voice_turn_latency_seconds_count", ()) in during


async def test_session_end_closes_the_socket_normally(ollama):
    async with (
        citadel(double_model(ollama)) as url,
        voice_session(url, microphone=False) as voice,
    ):
        await voice.send(type="session.end")
        await voice.until(lambda c: c.closed is not None, 30)
    assert voice.closed == (1000, "session.end") and voice.of("error") == []


async def test_a_socket_outliving_the_stream_time_limit_is_closed_with_4408(ollama):
    async with (
        citadel(double_model(ollama), stream_max_duration=1.0) as url,
        voice_session(url) as voice,
    ):
        await voice.until(lambda c: c.closed is not None, 30)
    assert voice.closed == (4408, "stream_time_limit")


async def test_voice_sockets_have_their_own_rate_bucket(ollama):
    alice = session_token("alice")
    async with server(ollama, rate_voice="1/min") as (url, _):
        async with voice_session(url, microphone=False, query={"token": alice}):
            pass
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(url.replace("http", "ws") + f"/voice/ws?token={alice}"):
                pass
        async with httpx.AsyncClient(base_url=url) as client:
            other = await client.get("/threads", headers=bearer(alice))
    assert refused.value.response.status_code == 429 and other.status_code == 200
