"""``GET /admin/runs`` and ``GET /admin/runs/{run_id}`` over real HTTP: a production-mode
server verifying Clerk test tokens, runs stored in the real Postgres. The chat model is the
Ollama backend on OllamaDouble (a TEST DOUBLE: no Ollama server runs here)."""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from tests.doubles.ollama import ScriptedReply, text_reply
from tests.server.test_access import run_body, server
from tests.support.agui import stream, types
from tests.support.clerk import admin_token, bearer, session_token
from tests.support.database import table_rows


def as_admin() -> dict[str, str]:
    return bearer(admin_token("root"))  # issued now: tokens are short-lived


def as_user(name: str) -> dict[str, str]:
    return bearer(session_token(name))


@dataclass
class History:
    """A server where alice's run succeeded, then bob's failed."""

    client: httpx.AsyncClient
    database: str
    alice: dict[str, Any]  # the run's body
    alice_events: list[dict[str, Any]]  # as streamed
    bob: dict[str, Any]


@contextlib.asynccontextmanager
async def history(ollama) -> AsyncIterator[History]:
    ollama.enqueue(
        ScriptedReply(text_reply("Hello Alice.", prompt_tokens=26, chunks=3)),
        ScriptedReply([text_reply("Part")[0], {"error": "model crashed: out of memory"}]),
    )
    async with server(ollama) as (url, database), httpx.AsyncClient(base_url=url) as client:
        # Alice speaks AG-UI 1.0, so what she was sent is the stored events as they are (an
        # older client's RUN_STARTED is sent without its protocolVersion).
        alice = run_body(text="hello") | {"protocolVersion": "1.0"}
        bob = run_body(text="hi")
        alice_status, alice_events = await stream(client, "/agui", alice, as_user("alice"))
        bob_status, bob_events = await stream(client, "/agui", bob, as_user("bob"))
        assert (alice_status, types(alice_events)[-1]) == (200, "RUN_FINISHED")
        assert (bob_status, types(bob_events)[-1]) == (200, "RUN_ERROR")
        yield History(client, database, alice, alice_events, bob)


async def get_json(client: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    response = await client.get(path, params=params, headers=as_admin())
    assert response.status_code == 200, response.text
    return response.json()


def keys(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(run["threadId"], run["runId"]) for run in runs]


async def test_only_administrators_see_the_run_history(ollama):
    async with history(ollama) as h:
        for path in ("/admin/runs", f"/admin/runs/{h.alice['runId']}"):
            for user in ("alice", "bob"):
                denied = await h.client.get(path, headers=as_user(user))
                assert denied.status_code == 403, path
                assert denied.json()["error"]["code"] == "forbidden"
            assert (await h.client.get(path)).status_code == 401
            assert (await h.client.get(path, headers=as_admin())).status_code == 200


async def test_runs_of_every_user_newest_first_with_outcome_tokens_and_errors(ollama):
    async with history(ollama) as h:
        listed = (await get_json(h.client, "/admin/runs"))["runs"]
    assert keys(listed) == [
        (h.bob["threadId"], h.bob["runId"]),
        (h.alice["threadId"], h.alice["runId"]),
    ]
    failed, succeeded = listed
    assert failed["userId"] == "user_bob" and succeeded["userId"] == "user_alice"

    assert (succeeded["status"], succeeded["outcome"]) == ("succeeded", "success")
    assert succeeded["errorCode"] is None and succeeded["errorMessage"] is None
    assert (succeeded["inputTokens"], succeeded["outputTokens"]) == (26, 3)
    assert succeeded["usage"] and succeeded["usage"][0]["inputTokens"] == 26
    assert succeeded["lastSeq"] == len(h.alice_events)
    started = datetime.fromisoformat(succeeded["startedAt"])
    finished = datetime.fromisoformat(succeeded["finishedAt"])
    assert isinstance(succeeded["durationMs"], int) and succeeded["durationMs"] >= 0
    assert abs((finished - started).total_seconds() * 1000 - succeeded["durationMs"]) < 1
    assert succeeded["workerId"]

    assert (failed["status"], failed["outcome"]) == ("failed", None)
    assert failed["errorCode"] == "model_error" and "out of memory" in failed["errorMessage"]
    assert failed["finishedAt"] is not None and failed["durationMs"] >= 0
    assert set(failed) == set(succeeded)  # one shape; missing values are null
    assert {"firstEventAt", "protocolVersion"} <= set(failed)


async def test_runs_are_filtered_and_paged(ollama):
    async with history(ollama) as h:
        alice = (h.alice["threadId"], h.alice["runId"])
        bob = (h.bob["threadId"], h.bob["runId"])

        async def listed(**params: Any) -> list[tuple[str, str]]:
            return keys((await get_json(h.client, "/admin/runs", **params))["runs"])

        assert await listed(status="failed") == [bob]
        assert await listed(status="succeeded,failed") == [bob, alice]
        assert await listed(status=["succeeded", "running"]) == [alice]  # repeated
        assert await listed(status="running") == []
        assert await listed(user="user_alice") == [alice]
        assert await listed(thread=h.bob["threadId"]) == [bob]
        assert await listed(errorCode="model_error") == [bob]
        assert await listed(errorCode="timeout") == []
        bob_run = (await get_json(h.client, "/admin/runs"))["runs"][0]
        assert await listed(since=bob_run["startedAt"]) == [bob]  # inclusive
        assert await listed(until=bob_run["startedAt"]) == [alice]  # exclusive
        assert await listed(since="2000-01-01T00:00:00Z", until="2000-01-02T00:00:00") == []

        first = await get_json(h.client, "/admin/runs", limit=1)
        assert keys(first["runs"]) == [bob] and first["nextBefore"]
        second = await get_json(h.client, "/admin/runs", limit=1, before=first["nextBefore"])
        assert keys(second["runs"]) == [alice] and "nextBefore" not in second
        whole = await get_json(h.client, "/admin/runs", limit=2)
        assert "nextBefore" not in whole


async def test_a_runs_events_come_back_in_order_and_in_pages(ollama):
    async with history(ollama) as h:
        path = f"/admin/runs/{h.alice['runId']}"
        run = await get_json(h.client, path)
        first = await get_json(h.client, path, limit=3)
        rest = await get_json(h.client, path, afterSeq=first["nextAfterSeq"], limit=1000)
        failed = await get_json(h.client, f"/admin/runs/{h.bob['runId']}")
    assert (run["userId"], run["status"], run["inputTokens"]) == ("user_alice", "succeeded", 26)
    seqs = [item["seq"] for item in run["events"]]
    assert seqs == list(range(1, len(h.alice_events) + 1)) == list(range(1, run["lastSeq"] + 1))
    assert [item["event"] for item in run["events"]] == h.alice_events
    assert "nextAfterSeq" not in run

    assert [item["seq"] for item in first["events"]] == [1, 2, 3] and first["nextAfterSeq"] == 3
    assert first["events"] + rest["events"] == run["events"] and "nextAfterSeq" not in rest

    assert failed["errorCode"] == "model_error"
    assert failed["events"][-1]["event"]["type"] == "RUN_ERROR"
    assert failed["events"][-1]["event"]["code"] == "model_error"


async def test_a_run_id_on_several_threads_needs_its_thread(ollama):
    ollama.enqueue(*[ScriptedReply(text_reply("ok")) for _ in range(2)])
    async with server(ollama) as (url, _), httpx.AsyncClient(base_url=url) as client:
        threads = []
        for user in ("alice", "bob"):
            body = run_body() | {"runId": "run-shared"}
            status, _ = await stream(client, "/agui", body, as_user(user))
            assert status == 200
            threads.append(body["threadId"])
        ambiguous = await client.get("/admin/runs/run-shared", headers=as_admin())
        named = await client.get(
            "/admin/runs/run-shared", params={"thread": threads[1]}, headers=as_admin()
        )
        wrong_thread = await client.get(
            "/admin/runs/run-shared", params={"thread": "nope"}, headers=as_admin()
        )
        unknown = await client.get("/admin/runs/run-nope", headers=as_admin())
    assert ambiguous.status_code == 409
    error = ambiguous.json()["error"]
    assert error["code"] == "ambiguous_run" and error["threadIds"] == sorted(threads)
    assert all(thread in error["message"] for thread in threads)
    assert named.status_code == 200
    assert (named.json()["threadId"], named.json()["userId"]) == (threads[1], "user_bob")
    assert named.json()["events"][0]["event"]["type"] == "RUN_STARTED"
    for missing in (wrong_thread, unknown):
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "run_not_found"


async def test_bad_parameters_are_refused_with_422_and_change_nothing(ollama):
    cursor_of_numbers = "WzEsMiwzXQ=="  # base64 of [1,2,3]: not a cursor this server issued
    bad = {
        "/admin/runs": [
            {"limit": "0"},
            {"limit": "201"},
            {"limit": "ten"},
            {"limit": "1.5"},
            {"before": "not-a-cursor"},
            {"before": cursor_of_numbers},
            {"status": "bogus"},
            {"status": "failed,bogus"},
            {"status": ""},
            {"since": "yesterday"},
            {"until": "2026-13-01T00:00:00Z"},
            {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        ],
        "/admin/runs/{run}": [
            {"afterSeq": "-1"},
            {"afterSeq": "x"},
            {"limit": "0"},
            {"limit": "10001"},
        ],
        "/admin/runs/run-unknown": [{"limit": "10001"}],  # checked before the lookup
        "/admin/audit": [{"limit": "0"}, {"before": "x"}],
    }
    async with history(ollama) as h:
        listing = await get_json(h.client, "/admin/runs")  # the admin's login is audited now
        before = await table_rows(h.database)
        for template, cases in bad.items():
            path = template.format(run=h.alice["runId"])
            for params in cases:
                response = await h.client.get(path, params=params, headers=as_admin())
                query = urllib.parse.urlencode(params)
                assert response.status_code == 422, (path, query, response.text)
                assert response.json()["error"]["code"] == "invalid_input", (path, query)
                assert response.json()["error"]["message"]
        assert await table_rows(h.database) == before
        assert await get_json(h.client, "/admin/runs") == listing
