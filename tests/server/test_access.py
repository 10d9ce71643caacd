"""The access layer over real HTTP: a real server in production mode verifying Clerk tokens
signed with a test RSA key (tests/support/clerk.py), project API keys in the real Postgres,
rate limits, stream caps and CORS. The chat model is the Ollama backend on OllamaDouble (a
TEST DOUBLE: no Ollama server runs here)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import orjson
import pytest
from starlette.routing import Route, WebSocketRoute
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from agent_server.app import ROUTERS, create_app
from agent_server.config import Settings
from agent_server.store.api_keys import ApiKey
from agent_server.store.base import Actor
from agent_server.store.postgres_api_keys import PostgresApiKeyStore
from tests.auth.test_opaque import SECRET, ClerkBackendDouble, clerk_token
from tests.conftest import citadel, double_model
from tests.doubles.ollama import ScriptedReply, text_reply
from tests.support.agui import new_id, stream, types, user
from tests.support.clerk import (
    APP,
    admin_token,
    bearer,
    clerk_settings,
    machine_token,
    session_token,
)
from tests.support.database import isolated_database_url, migrated_pool
from tests.support.metrics import gauge_is
from tests.support.servers import serve
from tests.support.waiting import eventually

# Operations, the API's documents, and what the web app must know before signing in.
PUBLIC = {"/health", "/ready", "/metrics", "/openapi.json", "/docs", "/app/config"}


def run_body(thread_id: str | None = None, text: str = "hi") -> dict[str, Any]:
    return {
        "threadId": thread_id or new_id("thread"),
        "runId": new_id("run"),
        "messages": [user(text)],
        "tools": [],
        "context": [],
        "state": {},
        "forwardedProps": {},
    }


@contextlib.asynccontextmanager
async def server(ollama, **overrides: Any) -> AsyncIterator[tuple[str, str]]:
    """A production-mode server; yields (base URL, database URL)."""
    async with (
        isolated_database_url() as database,
        citadel(double_model(ollama), database_url=database, **clerk_settings(**overrides)) as url,
    ):
        yield url, database


@contextlib.asynccontextmanager
async def key_store(database: str) -> AsyncIterator[PostgresApiKeyStore]:
    async with migrated_pool(database) as pool:
        yield PostgresApiKeyStore(pool)


async def api_key(database: str, *scopes: str, name: str = "agent") -> tuple[ApiKey, str]:
    async with key_store(database) as keys:
        return await keys.create(name, scopes, Actor("test"))


def every_route() -> list[tuple[str, str]]:
    """(method, path) of every HTTP route of the app, path parameters filled in."""
    create_app(Settings(**clerk_settings()))  # the configuration the walk is made under
    found = []
    for route in (route for router in ROUTERS for route in router.routes):
        path = route.path.replace("{", "").replace("}", "")  # /threads/thread_id
        if isinstance(route, Route):
            found += [(method, path) for method in sorted(route.methods or ()) if method != "HEAD"]
        elif isinstance(route, WebSocketRoute):
            found.append(("WEBSOCKET", path))
    return found


# Deny by default -----------------------------------------------------------------------------


def test_the_route_table_is_what_this_test_walks():
    routes = every_route()
    assert len(routes) >= 18 and ("WEBSOCKET", "/agui/ws") in routes
    assert ("GET", "/admin/audit") in routes and ("POST", "/rag/ingest") in routes


async def test_no_route_but_the_public_ones_answers_without_credentials(ollama):
    # Three refusals per route exceed the default 60/min of failed attempts per address.
    refusals = f"{4 * len(every_route())}/min"
    async with (
        server(ollama, rate_auth_failures=refusals) as (url, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        for method, path in every_route():
            if method == "WEBSOCKET":
                ws_url = url.replace("http", "ws") + path
                with pytest.raises(InvalidStatus) as refused:
                    async with ws_connect(ws_url):
                        pass
                assert refused.value.response.status_code == 401, path
                continue
            for headers in ({}, bearer("not-a-token"), bearer(session_token(iss="https://evil"))):
                response = await client.request(method, path, headers=headers, json={})
                if path in PUBLIC:
                    assert response.status_code != 401, (method, path)
                    continue
                assert response.status_code == 401, (method, path, response.text)
                assert response.json() == {
                    "error": {"code": "unauthorized", "message": "a valid credential is required"}
                }
                challenge = response.headers["www-authenticate"]
                assert challenge.startswith('Bearer realm="citadel"')
                assert ('error="invalid_token"' in challenge) == bool(headers), (method, path)


async def test_the_authorization_header_must_be_one_bearer_token(ollama):
    token = session_token()
    async with server(ollama) as (url, _), httpx.AsyncClient(base_url=url) as client:
        lower = await client.get("/threads", headers={"Authorization": f"bearer {token}"})
        bare = await client.get("/threads", headers={"Authorization": token})
        basic = await client.get("/threads", headers={"Authorization": f"Basic {token}"})
        two = await client.get("/threads", headers=[("Authorization", f"Bearer {token}")] * 2)
        pair = await client.get("/threads", headers={"Authorization": f"Bearer {token} {token}"})
        client.cookies.update({"__session": token, "__client_uat": "1"})
        cookie = await client.get("/threads")
    assert lower.status_code == 200
    assert [r.status_code for r in (bare, basic, two, pair, cookie)] == [401] * 5


# Ownership -------------------------------------------------------------------------------------


async def test_someone_elses_thread_is_not_found_everywhere(ollama):
    ollama.enqueue(ScriptedReply(text_reply("Hello Alice.")))
    alice, bob = bearer(session_token("alice")), bearer(session_token("bob"))
    body = run_body()
    thread = body["threadId"]
    async with server(ollama) as (url, _), httpx.AsyncClient(base_url=url) as client:
        status, events = await stream(client, "/agui", body, alice)
        assert status == 200 and types(events)[-1] == "RUN_FINISHED"
        again = run_body(thread)
        seen_by_bob = [
            (await client.get(f"/threads/{thread}", headers=bob)).status_code,
            (
                await client.patch(f"/threads/{thread}", json={"title": "x"}, headers=bob)
            ).status_code,
            (await client.delete(f"/threads/{thread}", headers=bob)).status_code,
            (
                await client.post("/agui/connect", json={"threadId": thread}, headers=bob)
            ).status_code,
            (await stream(client, "/agui", again, bob))[0],
        ]
        bobs_list = (await client.get("/threads", headers=bob)).json()["threads"]
        alices = await client.get(f"/threads/{thread}", headers=alice)
    assert seen_by_bob == [404] * 5
    assert bobs_list == []
    assert alices.status_code == 200 and alices.json()["messages"][-1]["content"] == "Hello Alice."


# Machines --------------------------------------------------------------------------------------


def tampered(secret: str) -> str:
    """``secret`` with its last two characters changed (a random secret may end in any)."""
    return secret[:-2] + ("xx" if secret[-2:] != "xx" else "yy")


async def test_api_keys_act_within_their_scopes(ollama):
    ollama.enqueue(ScriptedReply(text_reply("Hello agent.")))
    async with server(ollama) as (url, database), httpx.AsyncClient(base_url=url) as client:
        runner, runner_secret = await api_key(database, "agents")
        _, reader_secret = await api_key(database, "kb:docs")
        _, writer_secret = await api_key(database, "kb:docs:write")
        status, events = await stream(client, "/agui", run_body(), bearer(runner_secret))
        runner_threads = (await client.get("/threads", headers=bearer(runner_secret))).json()
        reader = bearer(reader_secret)
        searched = await client.post("/rag/query", json={"query": "x"}, headers=reader)
        other_base = await client.post(
            "/rag/query", json={"query": "x", "knowledgeBase": "hr"}, headers=reader
        )
        no_agents = await client.get("/threads", headers=reader)
        reader_ingest = await client.post(
            "/rag/ingest", json={"documents": [{"name": "a.md", "text": "b"}]}, headers=reader
        )
        writer_ingest = await client.post(
            "/rag/ingest",
            json={"documents": [{"name": "a.md", "text": "b"}]},
            headers=bearer(writer_secret),
        )
        admin = await client.get("/admin/audit", headers=bearer(runner_secret))
        wrong = await client.get("/threads", headers=bearer(tampered(runner_secret)))
        async with key_store(database) as keys:
            assert await keys.revoke(runner.id, Actor("test"))
        revoked = await client.get("/threads", headers=bearer(runner_secret))
    assert status == 200 and types(events)[-1] == "RUN_FINISHED"
    assert [t["id"] for t in runner_threads["threads"]] == [events[0]["threadId"]]
    assert searched.status_code == 200
    assert other_base.status_code == 403 and "kb:hr" in other_base.json()["error"]["message"]
    assert no_agents.status_code == 403
    assert reader_ingest.status_code == 403 and writer_ingest.status_code == 202
    assert admin.status_code == 403
    assert wrong.status_code == 401 and revoked.status_code == 401


async def test_clerk_machines_need_our_machine_in_scope(ollama):
    ollama.enqueue(ScriptedReply(text_reply("Hello machine.")))
    async with server(ollama) as (url, _), httpx.AsyncClient(base_url=url) as client:
        status, events = await stream(client, "/agui", run_body(), bearer(machine_token()))
        other = await client.get("/threads", headers=bearer(machine_token(scopes="mch_other")))
        mine = (await client.get("/threads", headers=bearer(machine_token()))).json()
    assert status == 200 and types(events)[-1] == "RUN_FINISHED"
    assert other.status_code == 401
    assert [t["id"] for t in mine["threads"]] == [events[0]["threadId"]]


# Roles and audit -------------------------------------------------------------------------------


async def test_admin_routes_are_for_admins_and_both_are_audited(ollama):
    async with server(ollama) as (url, _), httpx.AsyncClient(base_url=url) as client:
        denied = await client.get("/admin/audit", headers=bearer(session_token("mallory")))
        ingest = await client.post(
            "/rag/ingest",
            json={"documents": [{"name": "a.md", "text": "b"}]},
            headers=bearer(session_token("mallory")),
        )
        admin = bearer(admin_token("root"))
        first = await client.get("/admin/audit", headers=admin)
        second = await client.get("/admin/audit", headers=admin)
        claimed = await client.get(
            "/admin/audit",
            headers=bearer(session_token("eve", o={"id": "org_1", "slg": "a", "rol": "member"})),
        )
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
    assert ingest.status_code == 403 and claimed.status_code == 403
    assert first.status_code == 200
    actions = [(e["actor"], e["action"]) for e in second.json()["entries"]]
    assert ("user_mallory", "admin.denied") in actions
    assert actions.count(("user_root", "admin.login")) == 1  # once per session, not per request
    [denial] = [e for e in second.json()["entries"] if e["action"] == "admin.denied"]
    assert denial["details"] == {"method": "GET", "path": "/admin/audit"}


# Limits ----------------------------------------------------------------------------------------


async def test_runs_are_rate_limited_per_caller(ollama):
    ollama.enqueue(*[ScriptedReply(text_reply("ok")) for _ in range(3)])
    async with (
        server(ollama, rate_runs="2/min") as (url, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        alice = bearer(session_token("alice"))
        answers = [(await stream(client, "/agui", run_body(), alice))[0] for _ in range(3)]
        limited = await client.post("/agui", json=run_body(), headers=alice)
        bob = await stream(client, "/agui", run_body(), bearer(session_token("bob")))
        reads = await client.get("/threads", headers=alice)
    assert answers == [200, 200, 429]
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 30
    assert limited.json()["error"]["code"] == "rate_limited"
    assert bob[0] == 200 and reads.status_code == 200


async def test_an_ip_sending_bad_tokens_is_refused_before_verification(ollama):
    async with (
        server(ollama, rate_auth_failures="3/min") as (url, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        bad = [
            (await client.get("/threads", headers=bearer("x.y.z"))).status_code for _ in range(4)
        ]
        good = await client.get("/threads", headers=bearer(session_token()))
    assert bad == [401, 401, 401, 401]
    assert good.status_code == 429 and int(good.headers["retry-after"]) >= 1


async def test_open_streams_are_capped_per_caller(ollama):
    ollama.enqueue(ScriptedReply(text_reply("slow"), hang=True), ScriptedReply(text_reply("ok")))
    alice = bearer(session_token("alice"))
    async with (
        server(ollama, max_streams_per_user=1) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        async with client.stream("POST", "/agui", json=run_body(), headers=alice) as first:
            assert first.status_code == 200
            await ollama.wait_for_requests()  # alice's run took the hanging reply, not bob's
            second = await client.post("/agui", json=run_body(), headers=alice)
            bobs = await stream(client, "/agui", run_body(), bearer(session_token("bob")))
        # The first stream's slot is freed as its response ends, just after the client left.
        await eventually(gauge_is(client, "citadel_streams_open", 0))
        ollama.enqueue(ScriptedReply(text_reply("again")))
        third = await stream(client, "/agui", run_body(), alice)
    assert second.status_code == 429 and second.json()["error"]["code"] == "too_many_streams"
    assert bobs[0] == 200 and third[0] == 200


async def test_a_stream_ends_at_its_time_limit_and_resumes_with_a_fresh_token(ollama):
    lines = text_reply("one two three four five six", chunks=6)
    ollama.enqueue(ScriptedReply(lines, delay=0.4))
    body = run_body()
    async with (
        server(ollama, stream_max_duration=0.5, keepalive_interval=0.1) as (url, _),
        httpx.AsyncClient(base_url=url, timeout=10) as client,
    ):
        status, first = await stream(client, "/agui", body, bearer(session_token()))
        last_id = f"{body['runId']}:{len(first)}"
        # The run goes on without a listener, to its end.
        await eventually(gauge_is(client, "citadel_runs_active", 0))
        resumed = await client.post(
            "/agui/connect",
            json={"threadId": body["threadId"]},
            headers={**bearer(session_token()), "Last-Event-ID": last_id},
        )
    assert status == 200 and "RUN_FINISHED" not in types(first)
    assert "RUN_FINISHED" in resumed.text


# CORS ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/agui", "POST"),
        ("/api/copilotkit/agent/default/run", "POST"),
        ("/api/copilotkit/info", "GET"),
    ],
)
async def test_cors_allows_exact_origins_without_credentials_mode(ollama, path, method):
    async with (
        server(ollama, cors_origins=[APP]) as (url, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        preflight = {
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization",
        }
        allowed = await client.options(path, headers={"Origin": APP, **preflight})
        foreign = await client.options(
            path, headers={"Origin": "https://evil.example", **preflight}
        )
        refused = await client.get("/threads", headers={"Origin": APP})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == APP
    assert "access-control-allow-credentials" not in allowed.headers
    assert "access-control-allow-origin" not in foreign.headers
    # A refusal still reaches the page's code, so it can refresh its token.
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == APP


# Same-site browsers: the session cookie ---------------------------------------------------------


async def test_the_session_cookie_follows_clerks_rules_when_enabled(ollama):
    token = session_token()
    issued = int(jwt.decode(token, options={"verify_signature": False})["iat"])
    post = {"json": {"threadId": "t-none"}}
    async with server(ollama, clerk_accept_cookie=True) as (url, _):

        async def status(cookies: dict[str, str], method: str = "GET", **kwargs: Any) -> int:
            async with httpx.AsyncClient(base_url=url, cookies=cookies) as client:
                path = "/threads" if method == "GET" else "/agui/connect"
                return (await client.request(method, path, **kwargs)).status_code

        signed_in = {"__session": token, "__client_uat": str(issued)}
        assert await status(signed_in) == 200
        assert await status({"__session": token}) == 401  # no __client_uat
        assert await status({**signed_in, "__client_uat": "0"}) == 401  # signed out
        assert await status({**signed_in, "__client_uat": str(issued + 5)}) == 401  # stale
        # Unsafe methods need an allowed Origin (the 404 is the unknown thread: let in).
        assert await status(signed_in, "POST", **post) == 401
        assert (
            await status(signed_in, "POST", headers={"Origin": "https://evil.test"}, **post) == 401
        )
        assert await status(signed_in, "POST", headers={"Origin": APP}, **post) == 404
        # A header, when present, wins: a bad one is not rescued by a good cookie.
        assert await status(signed_in, headers=bearer("bad")) == 401


async def test_websocket_runs_need_a_credential_too(ollama):
    ollama.enqueue(ScriptedReply(text_reply("Hello over the socket.")))
    async with server(ollama) as (url, _):
        ws_url = url.replace("http", "ws") + "/agui/ws"
        async with ws_connect(ws_url, additional_headers=bearer(session_token())) as socket:
            await socket.send(orjson.dumps(run_body()).decode())
            received = []
            while not received or received[-1]["type"] not in ("RUN_FINISHED", "RUN_ERROR"):
                received.append(orjson.loads(await socket.recv()))
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(ws_url, additional_headers=bearer(session_token(azp="x"))):
                pass
    assert received[-1]["type"] == "RUN_FINISHED"
    assert refused.value.response.status_code == 401


async def test_opaque_machine_tokens_are_checked_with_clerk_when_configured(ollama):
    ollama.enqueue(ScriptedReply(text_reply("Hello opaque machine.")))
    double = ClerkBackendDouble()
    double.tokens["mt_good"] = clerk_token(now=time.time())  # the server's clock is real
    async with (
        serve(double.app) as clerk_url,
        server(
            ollama, machine_auth_mode="opaque", clerk_secret_key=SECRET, clerk_api_url=clerk_url
        ) as (url, _),
        httpx.AsyncClient(base_url=url) as client,
    ):
        status, events = await stream(client, "/agui", run_body(), bearer("mt_good"))
        unknown = await client.get("/threads", headers=bearer("mt_unknown"))
        jwt_machine = await client.get("/threads", headers=bearer(machine_token()))
    assert status == 200 and types(events)[-1] == "RUN_FINISHED"
    assert unknown.status_code == 401
    assert jwt_machine.status_code == 401  # MACHINE_AUTH_MODE=opaque: M2M JWTs are off
