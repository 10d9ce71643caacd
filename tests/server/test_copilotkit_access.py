"""/api/copilotkit under Clerk authentication (production settings, tokens signed against the
tests' key): the same credentials, thread ownership and rate limits as /agui, for the REST
routes and the single endpoint alike. The model is the scripted Ollama TEST DOUBLE."""

from __future__ import annotations

import asyncio

import httpx

from tests.doubles.ollama import OllamaDouble, ScriptedReply, text_reply
from tests.server.test_access import server
from tests.server.test_copilotkit import BASE, legacy_input
from tests.support.agui import new_id, stream, types
from tests.support.clerk import bearer, session_token


def as_user(user: str) -> dict[str, str]:
    """A fresh token of ``user`` (a session token lives a minute: made when used)."""
    return bearer(session_token(user))


async def test_another_users_thread_is_not_found_and_connects_to_nothing(ollama: OllamaDouble):
    ollama.enqueue(ScriptedReply(text_reply("Alice's answer.")))
    thread_id = new_id("thread")
    async with server(ollama) as (url, _), httpx.AsyncClient(base_url=url) as client:
        status, _ = await stream(
            client, f"{url}{BASE}/agent/default/run", legacy_input(thread_id), as_user("alice")
        )
        assert status == 200
        body = legacy_input(thread_id, "Bob writes into Alice's thread")
        refused = await client.post(f"{BASE}/agent/default/run", json=body, headers=as_user("bob"))
        peek = await client.post(f"{BASE}/agent/default/connect", json=body, headers=as_user("bob"))
        stop = await client.post(f"{BASE}/agent/default/stop/{thread_id}", headers=as_user("bob"))
        mine = await client.post(
            f"{BASE}/agent/default/connect", json=body, headers=as_user("alice")
        )
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "thread_not_found"
    assert peek.status_code == 200 and peek.content == b""
    assert stop.status_code == 200 and stop.json()["stopped"] is False
    assert b"Alice's answer." in mine.content
    assert len(ollama.requests) == 1


async def test_without_a_credential_every_route_is_401(ollama: OllamaDouble):
    async with server(ollama) as (url, _), httpx.AsyncClient(base_url=url) as client:
        answers = [
            await client.get(f"{BASE}/info"),
            await client.post(f"{BASE}/agent/default/run", json=legacy_input("t")),
            await client.post(f"{BASE}/agent/default/connect", json=legacy_input("t")),
            await client.post(f"{BASE}/agent/default/stop/t"),
            await client.post(f"{BASE}/transcribe"),
            await client.post(BASE, json={"method": "info"}),
        ]
    assert [answer.status_code for answer in answers] == [401] * len(answers)


async def test_runs_through_the_single_endpoint_count_against_the_run_limit(
    ollama: OllamaDouble,
):
    ollama.enqueue(ScriptedReply(text_reply("One.")))
    async with (
        server(ollama, rate_runs="1/min") as (url, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        first = {"method": "agent/run", "params": {"agentId": "default"}}
        status, events = await stream(
            client,
            f"{url}{BASE}",
            {**first, "body": legacy_input(new_id("thread"))},
            as_user("alice"),
        )
        assert status == 200 and types(events)[-1] == "RUN_FINISHED"
        second = await client.post(
            BASE, json={**first, "body": legacy_input(new_id("thread"))}, headers=as_user("alice")
        )
        rest = await client.post(
            f"{BASE}/agent/default/run",
            json=legacy_input(new_id("thread")),
            headers=as_user("alice"),
        )
        info = await client.post(BASE, json={"method": "info"}, headers=as_user("alice"))
    assert second.status_code == 429 and second.json()["error"]["code"] == "rate_limited"
    assert int(second.headers["retry-after"]) >= 1
    assert rest.status_code == 429  # one bucket for runs, whichever route
    assert info.status_code == 200  # other methods are requests, not runs
    assert len(ollama.requests) == 1


async def test_a_stopped_run_of_a_signed_in_user_ends_its_stream(ollama: OllamaDouble):
    never = asyncio.Event()
    ollama.enqueue(ScriptedReply(text_reply("Cut short here."), holds={1: never}))
    thread_id = new_id("thread")
    async with server(ollama) as (url, _), httpx.AsyncClient(base_url=url) as client:
        run = asyncio.create_task(
            stream(
                client, f"{url}{BASE}/agent/default/run", legacy_input(thread_id), as_user("alice")
            )
        )
        await ollama.wait_for_requests(1)
        stopped = await client.post(
            f"{BASE}/agent/default/stop/{thread_id}", headers=as_user("alice")
        )
        status, events = await run
    assert stopped.json()["stopped"] is True
    assert status == 200 and types(events)[-1] == "RUN_FINISHED"
