"""Schemathesis against ``/openapi.json`` of a live ``citadel serve`` process: the real embedded
model, Postgres and embedded Qdrant engine, twice: with authentication off (every route as the
local administrator) and with Clerk authentication and a real project API key.

Every operation gets a bounded number of generated requests, schema-conforming and not
(derandomized: the same requests on every run). Besides what the schema allows, the hooks
below put what JSON allows and Postgres refuses into bodies and query strings: NUL
characters, lone surrogates, integers beyond 64 bits. Every answer must be below 500, every
4xx our JSON error with a code the API maps to that status, and every status one the
document declares for the operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import status_code_conformance

from agent_server.api.copilotkit import TRANSCRIPTION_STATUS
from agent_server.api.errors import STATUS
from bench.servers import free_port
from tests.support.clerk import clerk_settings
from tests.support.database import LOCAL_DATABASE, with_query
from tests.support.processes import clean_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EXAMPLES = 25  # per operation and configuration
TRANSCRIBE = "/api/copilotkit/transcribe"
NUL, SURROGATE = "nul \x00 here", "lone \ud800 surrogate"
HUGE = 2**64 + 1


# The server --------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_schema() -> Iterator[str]:
    """A new schema in the local Postgres (the server's URL selects it), dropped after."""
    import asyncpg

    name = f"t_fuzz_{os.getpid()}_{time.monotonic_ns()}"

    async def execute(statement: str) -> None:
        connection = await asyncpg.connect(LOCAL_DATABASE)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(execute(f"CREATE SCHEMA {name}"))
    try:
        yield with_query(LOCAL_DATABASE, search_path=name)
    finally:
        asyncio.run(execute(f"DROP SCHEMA {name} CASCADE"))


@contextlib.contextmanager
def server(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "agent_server.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"citadel serve did not start (exit {process.returncode})")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(30)


def server_env(database: str, data_dir: str, **extra: str) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=database,
        CITADEL_DATA_DIR=data_dir,
        CITADEL_DEMO_DOCS="",
        CITADEL_LLM_MAX_TOKENS="8",  # runs end fast: the answers are not what is tested
        CITADEL_STREAM_MAX_DURATION="1",  # the admin feed never ends by itself
        CITADEL_KEEPALIVE_INTERVAL="0.25",
        CITADEL_RATE_RUNS="100000/s",
        CITADEL_RATE_REQUESTS="100000/s",
        CITADEL_RATE_INGEST="100000/s",
        CITADEL_RATE_VOICE="100000/s",
        # Tokens are minted without a LiveKit server: /voice/token answers in full.
        LIVEKIT_URL="ws://127.0.0.1:7880",
        LIVEKIT_API_KEY="fuzz-key",
        LIVEKIT_API_SECRET="fuzz-secret-fuzz-secret-fuzz-secret",
        CITADEL_LOG_LEVEL="warning",
        **extra,
    )


def create_api_key(env: dict[str, str]) -> str:
    scopes = ["--scope", "agents", "--scope", "kb:docs:write"]
    created = subprocess.run(
        [sys.executable, "-m", "agent_server.cli", "keys", "create", "fuzz", *scopes],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return created.stdout.strip()


@dataclass
class Target:
    schema: schemathesis.BaseSchema
    headers: dict[str, str]


def loaded(url: str, headers: dict[str, str]) -> Target:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    schema.hook(flatmap_body)
    schema.hook(flatmap_query)
    return Target(schema, headers)


@pytest.fixture(scope="module")
def open_server() -> Iterator[Target]:
    with (
        fresh_schema() as database,
        tempfile.TemporaryDirectory() as data_dir,
        server(server_env(database, data_dir, CITADEL_AUTH="off")) as url,
    ):
        yield loaded(url, {})


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[Target]:
    clerk = clerk_settings()
    with fresh_schema() as database, tempfile.TemporaryDirectory() as data_dir:
        env = server_env(
            database,
            data_dir,
            CITADEL_ENV="production",
            CITADEL_AUTH="clerk",
            CLERK_ISSUER=clerk["clerk_issuer"],
            CLERK_JWT_KEY=clerk["clerk_jwt_key"],
            CLERK_AUTHORIZED_PARTIES=",".join(clerk["clerk_authorized_parties"]),
        )
        secret = create_api_key(env)
        with server(env) as url:
            yield loaded(url, {"Authorization": f"Bearer {secret}"})


# What JSON allows and Postgres refuses ------------------------------------------------------


def poisoned(value: Any, poison: str | int) -> Any:
    """``value`` with every string (or, for an int poison, every integer) replaced."""
    if isinstance(value, dict):
        return {key: poisoned(item, poison) for key, item in value.items()}
    if isinstance(value, list):
        return [poisoned(item, poison) for item in value]
    if isinstance(poison, str) and isinstance(value, str):
        return value + poison
    if isinstance(poison, int) and isinstance(value, int) and not isinstance(value, bool):
        return poison
    return value


def variants(value: Any, *poisons: str | int) -> st.SearchStrategy[Any]:
    return st.sampled_from([value, *(poisoned(value, poison) for poison in poisons)])


def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    """JSON carries a lone surrogate as an escape; a multipart form cannot carry one."""
    assert context.operation is not None
    forms = any("multipart" in body.media_type for body in context.operation.body)
    return variants(body, NUL, HUGE) if forms else variants(body, NUL, SURROGATE, HUGE)


def flatmap_query(
    context: schemathesis.HookContext, query: dict[str, Any] | None
) -> st.SearchStrategy[Any]:
    """A URL carries UTF-8: no lone surrogate."""
    return variants(query, NUL, HUGE) if query else st.just(query)


# Checks --------------------------------------------------------------------------------------


def no_server_error(response: Any) -> None:
    """Below 500, but for 501 ``not_implemented``: a feature this server has not been given
    (the rerank endpoint), declared as such, is an answer, not a failure."""
    if response.status_code == 501:
        assert response.json()["error"]["code"] == "not_implemented"
        return
    assert response.status_code < 500, (response.status_code, response.text[:300])


def refusal_is_a_json_error_with_a_declared_code(response: Any, path: str) -> None:
    """Every 4xx (and the 501) is ``{"error": {"code", "message"}}`` whose code maps to
    that status; but for the answers of the CopilotKit mic button's route that its client
    reads itself: ``{"error": code, "message", "retryable"}``."""
    status = response.status_code
    if not (400 <= status < 500 or status == 501):
        return
    [content_type] = response.headers.get("content-type", [""])
    assert content_type.startswith("application/json"), (
        status,
        response.text[:200],
    )
    error = response.json()["error"]
    if path == TRANSCRIBE and isinstance(error, str):
        assert TRANSCRIPTION_STATUS[error] == status, (status, response.json())
        assert isinstance(response.json()["message"], str)
        return
    assert isinstance(error["message"], str) and error["message"], error
    assert STATUS.get(error["code"]) == status, (status, error)


SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # a failure is reported as found, unshrunk
    suppress_health_check=list(HealthCheck),
)


def fuzz(target: Target) -> list[str]:
    """Every operation, with requests that conform to the schema and requests that do not;
    what went wrong with each operation that failed."""
    failures = []
    operations = [result.ok() for result in target.schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @SETTINGS
            @given(case=operation.as_strategy(mode))
            def exercise(case: schemathesis.Case) -> None:
                response = case.call(headers=target.headers, timeout=60)
                no_server_error(response)
                refusal_is_a_json_error_with_a_declared_code(response, case.operation.path)
                case.validate_response(response, checks=[status_code_conformance])

            try:
                exercise()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to get wrong: no parameters
            except (AssertionError, BaseExceptionGroup) as error:
                failures.append(f"{operation.label} ({mode.value}): {error!r}"[:3000])
    return failures


def test_every_operation_with_auth_off_answers_without_server_errors(open_server: Target):
    failures = fuzz(open_server)
    assert not failures, "\n\n".join(failures)


def test_every_operation_with_an_api_key_answers_without_server_errors(keyed_server: Target):
    failures = fuzz(keyed_server)
    assert not failures, "\n\n".join(failures)
