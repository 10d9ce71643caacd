"""``POST /voice/token`` on a real server: a LiveKit token for the caller, one room, the
configured life, and the voice agent dispatched to the caller's thread; refusals before
anything is minted. Tokens are checked with livekit-api's own verifier (no LiveKit server can
run here). Two users are two Clerk sessions signed with the tests' key
(tests/support/clerk.py). The chat model is the Ollama backend on OllamaDouble (a TEST
DOUBLE: no Ollama server runs here)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import orjson
from livekit import api

from agent_server.auth.principals import LOCAL_USER
from tests.conftest import citadel, double_model
from tests.doubles.ollama import ScriptedReply, text_reply
from tests.server.test_access import run_body
from tests.support.agui import stream
from tests.support.clerk import bearer, clerk_settings, session_token
from voice.token import room_name

KEY = "devkey"
SECRET = "a-secret-of-at-least-32-characters-long"
LIVEKIT = {
    "livekit_url": "ws://127.0.0.1:7880",
    "livekit_api_key": KEY,
    "livekit_api_secret": SECRET,
}


@contextlib.asynccontextmanager
async def client_of(ollama, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a real server with ``settings``."""
    async with (
        citadel(double_model(ollama), **settings) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        yield client


async def test_the_token_joins_the_caller_to_one_room_with_the_agent_dispatched_to_the_thread(
    ollama,
):
    settings = {"voice_agent_name": "citadel-test", "voice_token_ttl": 300, **LIVEKIT}
    async with client_of(ollama, **settings) as client:
        response = await client.post("/voice/token", json={"threadId": "thread_talk"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["serverUrl"] == "ws://127.0.0.1:7880" and body["threadId"] == "thread_talk"
    owner = LOCAL_USER.user_id  # authentication is off: every caller is the local user
    assert body["roomName"] == room_name(owner, "thread_talk")

    claims = api.TokenVerifier(KEY, SECRET).verify(body["participantToken"])
    assert claims.identity == owner
    video = claims.video
    assert video is not None and video.room_join and video.room == body["roomName"]
    assert video.can_publish and video.can_subscribe and video.can_publish_data
    assert not (video.room_create or video.room_list or video.room_admin or video.agent)
    assert claims.room_config is not None
    [dispatch] = claims.room_config.agents
    assert dispatch.agent_name == "citadel-test"
    assert orjson.loads(dispatch.metadata) == {"threadId": "thread_talk", "userId": owner}
    raw = jwt.decode(body["participantToken"], options={"verify_signature": False})
    assert 300 <= raw["exp"] - raw["nbf"] <= 301  # two reads of the clock, in whole seconds


async def test_without_a_thread_the_token_speaks_in_a_new_one(ollama):
    async with client_of(ollama, **LIVEKIT) as client:
        response = await client.post("/voice/token")
    assert response.status_code == 200, response.text
    body = response.json()
    claims = api.TokenVerifier(KEY, SECRET).verify(body["participantToken"])
    assert claims.room_config is not None
    [dispatch] = claims.room_config.agents
    assert orjson.loads(dispatch.metadata)["threadId"] == body["threadId"]
    assert body["threadId"].startswith("thread_")


async def test_without_livekit_the_refusal_names_the_missing_settings(ollama):
    partial = {"livekit_url": "ws://127.0.0.1:7880", "livekit_api_key": None}
    async with client_of(ollama, **partial, livekit_api_secret=None) as client:
        response = await client.post("/voice/token", json={"threadId": "thread_talk"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "voice_unavailable"
    assert "LIVEKIT_API_KEY" in error["message"] and "LIVEKIT_API_SECRET" in error["message"]
    assert "LIVEKIT_URL" not in error["message"]


async def test_a_thread_of_someone_else_is_not_found(ollama):
    ollama.enqueue(ScriptedReply(text_reply("Hello Bob.")))
    alice, bob = bearer(session_token("alice")), bearer(session_token("bob"))
    async with client_of(ollama, **clerk_settings(**LIVEKIT)) as client:
        status, _ = await stream(client, "/agui", run_body("thread_bob"), bob)
        assert status == 200
        theirs = await client.post("/voice/token", json={"threadId": "thread_bob"}, headers=alice)
        own = await client.post("/voice/token", json={"threadId": "thread_bob"}, headers=bob)
    assert theirs.status_code == 404
    assert theirs.json()["error"]["code"] == "thread_not_found"
    assert own.status_code == 200
    claims = api.TokenVerifier(KEY, SECRET).verify(own.json()["participantToken"])
    assert claims.identity == "user_bob"


async def test_tokens_have_a_rate_limit_of_their_own(ollama):
    alice, bob = bearer(session_token("alice")), bearer(session_token("bob"))
    async with client_of(ollama, **clerk_settings(rate_voice="2/min", **LIVEKIT)) as client:
        allowed = [(await client.post("/voice/token", headers=alice)).status_code for _ in range(2)]
        limited = await client.post("/voice/token", headers=alice)
        reads = await client.get("/threads", headers=alice)
        other = await client.post("/voice/token", headers=bob)
    assert allowed == [200, 200] and limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert reads.status_code == 200 and other.status_code == 200
