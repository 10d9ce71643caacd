"""No secret reaches a log line: the redaction every formatter applies (examples, and a
property test over each shape of secret embedded in arbitrary text), then the proof over real
traffic, on stderr and in the ring buffer (``GET /admin/logs``) of ``citadel serve``."""

from __future__ import annotations

import contextvars
import logging
import string
import sys

import httpx
import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from agent_server.config import Settings
from agent_server.observability.log_buffer import LogFilter, capture_logs
from agent_server.observability.logs import (
    JsonFormatter,
    TextFormatter,
    bind_request,
    reconfigure_logging,
)
from agent_server.observability.redaction import REDACTED, Redactor, secrets_of
from bench.servers import free_port
from tests.auth.support import ISSUER, MACHINE_ID
from tests.doubles.ollama import DEFAULT_MODEL
from tests.server.test_access import api_key, run_body
from tests.server.test_cli import run_cli
from tests.support.agui import stream
from tests.support.clerk import APP, PUBLIC_PEM, admin_token, bearer, session_token
from tests.support.database import isolated_database_url
from tests.support.processes import citadel_process, clean_env
from tests.support.waiting import PATIENCE

# Examples ------------------------------------------------------------------------------------

KEY = "ctk_AbCdEf-12_x9_" + "k" * 43
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyX2FsaWNlIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (f"key {KEY} used", "key ctk_[redacted] used"),
        (f"token {JWT}.", "token eyJ[redacted]."),
        ("CLERK_SECRET_KEY=sk_live_abc123", "CLERK_SECRET_KEY=[redacted]"),
        (
            "with sk_test_abc123def and sk-proj-0123456789abcdef",
            "with sk_test_[redacted] and sk-[redacted]",
        ),
        ("opaque mt_0123456789abcdefABCD", "opaque mt_[redacted]"),
        ("oat_0123456789abcdefABCD,m2m_0123456789abcdefABCD", "oat_[redacted],m2m_[redacted]"),
        ("/agui/ws?x=Bearer%20mt_0123456789abcdefABCD", "/agui/ws?x=Bearer%20mt_[redacted]"),
        ("postgresql://citadel:s3cret@db:5432/app", "postgresql://citadel:[redacted]@db:5432/app"),
        ("redis://:pw@cache:6379/0", "redis://:[redacted]@cache:6379/0"),
        (
            'HTTP Request: POST http://u:p@llm/v1/chat "HTTP/1.1 200 OK"',
            'HTTP Request: POST http://u:[redacted]@llm/v1/chat "HTTP/1.1 200 OK"',
        ),
        (
            '1.2.3.4 - "GET /threads?token=abc&limit=5&api_key=xyz HTTP/1.1" 401',
            '1.2.3.4 - "GET /threads?token=[redacted]&limit=5&api_key=[redacted] HTTP/1.1" 401',
        ),
        ("host=db password=hunter2 user=me", "host=db password=[redacted] user=me"),
        ("connect(password='a b', port=5)", "connect(password=[redacted], port=5)"),
        (
            "{'Authorization': 'Bearer abc', \"apiKey\": \"x\"}",
            "{'Authorization': [redacted], \"apiKey\": [redacted]}",
        ),
        ("Authorization: Bearer abc\nnext", "Authorization: [redacted]\nnext"),
        ("Cookie: __session=abc; __client_uat=1", "Cookie: [redacted]"),
        ("sent Bearer 0123456789 along", "sent Bearer [redacted] along"),
    ],
)
def test_each_kind_of_secret_is_redacted_and_its_kind_still_shows(text, redacted):
    assert Redactor()(text) == redacted


@pytest.mark.parametrize(
    "text",
    [
        "max_tokens=512 input_tokens=3 tokens: 7",
        "float_value stmt_cache peak_memory_bytes task_live_total",
        "postgresql://root@127.0.0.1:5432/test?search_path=t_1",
        "http://127.0.0.1:8080/v1/models",
        "thread_1 run_2 key_AbCdEf123456 sess_alice user_alice",
        "unauthorized GET /threads from 127.0.0.1: api_key_unknown_or_revoked",
    ],
)
def test_what_is_no_secret_is_left_alone(text):
    assert Redactor()(text) == text


def test_configured_values_are_redacted_wherever_they_appear():
    redactor = Redactor(["plain-llm-key-42", "short"])
    assert redactor("echoed plain-llm-key-42!") == f"echoed {REDACTED}!"
    assert redactor("a short word") == "a short word"  # too short to hide everywhere


def test_a_reloaded_configurations_secrets_are_hidden_by_every_redacting_handler():
    old = Settings(embed_api_key=SecretStr("plain-old-value-1234"), demo_docs=None)
    new = Settings(embed_api_key=SecretStr("plain-new-value-5678"), demo_docs=None)
    logger = logging.getLogger("citadel.test.reload")
    with capture_logs(old) as buffer:
        reconfigure_logging(new)
        logger.warning("keys %s and %s", "plain-old-value-1234", "plain-new-value-5678")
        [line] = [line for line in buffer.recent(LogFilter(), 100) if line["logger"] == logger.name]
    assert line["message"] == f"keys {REDACTED} and {REDACTED}"


def test_the_configured_secrets_are_the_secret_settings_and_the_passwords_of_urls():
    found = secrets_of(
        Settings(
            llm_api_key=SecretStr("llm-api-key-1"),
            embed_api_key=SecretStr("embed-api-key-1"),
            rerank_api_key=SecretStr("rerank-api-key-1"),
            qdrant_api_key=SecretStr("qdrant-api-key-1"),
            clerk_secret_key=SecretStr("sk_test_clerk-secret"),
            database_url=SecretStr("postgresql://citadel:db-password-1@db/app"),
            redis_url=SecretStr("redis://:redis-password-1@cache"),
            llm_url="http://me:llm-password-1@llm/v1?api_key=llm-query-key-1&model=m",
            qdrant_url="http://qdrant:6333",
        )
    )
    assert {
        "llm-api-key-1",
        "embed-api-key-1",
        "rerank-api-key-1",
        "qdrant-api-key-1",
        "sk_test_clerk-secret",
        "db-password-1",
        "redis-password-1",
        "llm-password-1",
        "llm-query-key-1",
    } <= found
    assert not any("://" in value or value in ("citadel", "me", "m") for value in found)


# Formatters ----------------------------------------------------------------------------------


def formatted(formatter: logging.Formatter) -> str:
    """A record carrying secrets everywhere a record can (message, arguments, exception,
    extra fields by value and by name), formatted while a request with an API key for its
    id is bound."""
    try:
        raise ConnectionError("cannot reach postgresql://citadel:s3cretpw@db/app")
    except ConnectionError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "tests.redaction", logging.ERROR, __file__, 1, "calling %s with %s", ("u", JWT), exc_info
    )
    record.headers = {"Authorization": "Basic dXNlcjpwYXNz", "accept": "*/*"}
    record.password = "hunter2"
    record.nested = [{"token": "abc"}, "sk_live_abc123"]

    def inside() -> str:
        bind_request(KEY)
        return formatter.format(record)

    return contextvars.copy_context().run(inside)


def test_json_lines_redact_the_message_the_exception_the_ids_and_the_extra_fields():
    line = orjson.loads(formatted(JsonFormatter()))
    text = orjson.dumps(line).decode()
    for secret in (KEY, JWT, "s3cretpw", "dXNlcjpwYXNz", "hunter2", '"abc"', "sk_live_abc123"):
        assert secret not in text
    assert line["message"] == "calling u with eyJ[redacted]"
    assert line["requestId"] == "ctk_[redacted]"
    assert "postgresql://citadel:[redacted]@db/app" in line["exception"]
    assert line["headers"] == {"Authorization": REDACTED, "accept": "*/*"}
    assert line["password"] == REDACTED
    assert line["nested"] == [{"token": REDACTED}, "sk_live_[redacted]"]


def test_text_lines_are_redacted_too():
    text = formatted(TextFormatter())
    for secret in (KEY, JWT, "s3cretpw"):
        assert secret not in text
    assert "[req=ctk_[redacted]]: calling u with eyJ[redacted]" in text
    assert "postgresql://citadel:[redacted]@db/app" in text


def test_arguments_that_do_not_fit_their_message_are_not_printed_raw():
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "only %d", (KEY,), None)
    assert orjson.loads(JsonFormatter().format(record))["message"] == (
        "only %d (arguments do not fit: TypeError)"
    )
    assert TextFormatter().format(record).endswith(": only %d (arguments do not fit: TypeError)")


# Property: every generated secret of every shape disappears --------------------------------

TOKEN = string.ascii_letters + string.digits + "_-"
ALNUM = string.ascii_letters + string.digits


def chars(alphabet: str, least: int, most: int = 48) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=least, max_size=most)


# Each shape of token, and each context of a secret (the text to embed, the secret in it).
SHAPED = {
    "project API key": st.builds(
        lambda i, r: f"ctk_{i}_{r}", chars(TOKEN, 12, 12), chars(TOKEN, 43, 43)
    ),
    "JWT": st.builds(
        lambda h, p, s: f"eyJ{h}.{p}.{s}", chars(TOKEN, 8), chars(TOKEN, 8), chars(TOKEN, 8)
    ),
    "Clerk secret key": st.builds(
        lambda e, k: f"sk_{e}_{k}", st.sampled_from(["test", "live"]), chars(ALNUM, 12)
    ),
    "Clerk opaque token": st.builds(
        lambda p, k: p + k, st.sampled_from(["mt_", "m2m_", "ak_", "oat_"]), chars(ALNUM, 16)
    ),
    "OpenAI-style key": st.builds(lambda k: f"sk-{k}", chars(TOKEN, 16)),
}
PASSWORD = ALNUM + "-._~!$&'()*+,;=%:"
IN_CONTEXT = {
    "URL password": st.builds(
        lambda scheme, user, pw: (f"{scheme}://{user}:{pw}@db.internal:5432/app", pw),
        st.sampled_from(["postgresql", "redis", "https"]),
        chars(ALNUM, 0, 12),
        chars(PASSWORD, 12),
    ),
    "query parameter": st.builds(
        lambda name, value: (f"/v1/x?a=1&{name}={value}&b=2", value),
        st.sampled_from(["token", "api_key", "apikey", "access_token", "key", "sig", "password"]),
        chars(ALNUM + "-._~%+", 12),
    ),
    "header": st.builds(
        lambda header, value: (f"{header}: {value}", value),
        st.sampled_from(["Authorization", "authorization", "Cookie", "X-API-Key"]),
        st.builds(lambda v: f"Bearer {v}", chars(ALNUM + "._~+/=-", 12)) | chars(ALNUM + "=;", 12),
    ),
    "quoted field": st.builds(
        lambda name, quote, value: (f"{quote}{name}{quote}: {quote}{value}{quote}", value),
        st.sampled_from(["password", "client_secret", "apiKey", "token", "authorization"]),
        st.sampled_from(['"', "'"]),
        chars(ALNUM + " -_", 12),
    ),
}
AROUND = st.text(max_size=40)
DELIMITER = st.sampled_from(
    [" ", "\n", "\t", '"', "'", ",", ";", "(", ")", "<", ">", "=", ":", "/"]
)


def pieces(secret: str) -> set[str]:
    """The secret's 12-character pieces: none may survive, not only the whole."""
    size = min(12, len(secret))
    return {secret[start : start + size] for start in range(len(secret) - size + 1)}


def embedded(secret: str, text: str, before: str, after: str, left: str, right: str) -> str:
    """``text`` (holding ``secret``) between delimiters in arbitrary text; examples where
    the rest of the line spells a piece of the secret by chance are left out."""
    line = f"{before}{left}{text}{right}{after}"
    assume(line.count(secret) == 1)
    rest = line.replace(secret, "\n")
    assume(not any(piece in rest for piece in pieces(secret)))
    return line


@pytest.mark.parametrize("shape", SHAPED)
@settings(derandomize=True, max_examples=150, deadline=None)
@given(data=st.data(), before=AROUND, after=AROUND, left=DELIMITER, right=DELIMITER)
def test_every_token_of_a_known_shape_is_removed_from_any_text(
    shape, data, before, after, left, right
):
    secret = data.draw(SHAPED[shape])
    line = embedded(secret, secret, before, after, left, right)
    redacted = Redactor()(line)
    assert not any(piece in redacted for piece in pieces(secret))
    assert Redactor()(redacted) == redacted


@pytest.mark.parametrize("context", IN_CONTEXT)
@settings(derandomize=True, max_examples=150, deadline=None)
@given(
    data=st.data(),
    before=AROUND,
    after=AROUND,
    left=DELIMITER,
    right=st.sampled_from([" ", "\n", '"', "'", ",", ";", ")", "&", "#"]),
)
def test_every_secret_in_a_url_query_header_or_field_is_removed_from_any_text(
    context, data, before, after, left, right
):
    text, secret = data.draw(IN_CONTEXT[context])
    line = embedded(secret, text, before, after, left, right)
    redacted = Redactor()(line)
    assert not any(piece in redacted for piece in pieces(secret))
    assert Redactor()(redacted) == redacted


@settings(derandomize=True, max_examples=200, deadline=None)
@given(secret=st.text(min_size=8, max_size=40), before=AROUND, after=AROUND)
def test_every_configured_value_is_removed_from_any_text(secret, before, after):
    line = embedded(secret, secret, before, after, "", "")
    redacted = Redactor([secret])(line)
    assert secret not in redacted


# Proof over real traffic: stderr and the ring buffer of `citadel serve` --------------------

DB_PASSWORD = "db-pass-Zq81xwM4"
LLM_URL_PASSWORD = "llm-url-pass-Kq71vB"
EMBED_URL_PASSWORD = "embed-url-pass-Pq19nD"
RERANK_URL_PASSWORD = "rerank-url-pass-Wq44cJ"
REDIS_PASSWORD = "redis-pass-Hq23sL"
CONFIGURED = {  # secret settings without a shape of their own: hidden by their values
    "CITADEL_LLM_API_KEY": "llm-api-key-Tq55zzR8",
    "CITADEL_EMBED_API_KEY": "embed-api-key-Yq62aaE1",
    "CITADEL_RERANK_API_KEY": "rerank-api-key-Uq38bbN6",
    "QDRANT_API_KEY": "qdrant-api-key-Iq90ddG3",
    "CLERK_SECRET_KEY": "sk_test_Oq17eeV2clerkSecretKeyValue0123",
}
OPAQUE = [  # Clerk's opaque machine tokens and API keys: refused unless checked with Clerk
    "mt_7Gd2kP9xQ4vL8mN3bR6tY1wZ5cH0jF2s",
    "m2m_4Hs8dL2pW6qX9nB3vT7yK1zR5cM0gF8a",
    "oat_9Jk3mN7bV1xC5zQ8wE2rT6yU4iO0pL3s",
    "ak_2Wq6eR0tY4uI8oP3aS7dF1gH5jK9lZ4x",
]
UNKNOWN_KEY = "ctk_Unkn0wnKey-1_" + "uNkNoWn-SeCrEt_" * 2 + "abcdefghijklm"


def serve_env(database: str, model_port: int, closed_port: int, data_dir: str) -> dict[str, str]:
    """``citadel serve`` in production with Clerk tokens, JSON logs at DEBUG, and a secret in
    every setting that takes one: the chat model and the reranker at a closed port, the
    embedder on the test double, each URL with a password."""
    return clean_env(
        CITADEL_ENV="production",
        CITADEL_AUTH="clerk",
        CLERK_ISSUER=ISSUER,
        CLERK_JWT_KEY=PUBLIC_PEM,
        CLERK_AUTHORIZED_PARTIES=APP,
        CLERK_MACHINE_ID=MACHINE_ID,
        CITADEL_RATE_AUTH_FAILURES="1000/min",
        CITADEL_LOG_FORMAT="json",
        CITADEL_LOG_LEVEL="debug",
        CITADEL_LOG_BUFFER_LINES="100000",
        CITADEL_DATA_DIR=data_dir,
        CITADEL_DEMO_DOCS="",
        CITADEL_RETRIEVAL="off",
        DATABASE_URL=database.replace("://root@", f"://root:{DB_PASSWORD}@"),
        CITADEL_LLM="ollama",
        CITADEL_LLM_URL=f"http://llm:{LLM_URL_PASSWORD}@127.0.0.1:{closed_port}",
        CITADEL_LLM_MODEL=DEFAULT_MODEL,
        CITADEL_LLM_RETRIES="1",
        CITADEL_EMBEDDER="ollama",
        CITADEL_EMBED_URL=f"http://embedder:{EMBED_URL_PASSWORD}@127.0.0.1:{model_port}",
        CITADEL_EMBED_MODEL=DEFAULT_MODEL,
        CITADEL_RERANK_URL=f"http://rerank:{RERANK_URL_PASSWORD}@127.0.0.1:{closed_port}/v1",
        **CONFIGURED,
    )


async def websocket_status(url: str) -> int:
    """101 if the WebSocket handshake is accepted, else the status of its refusal."""
    try:
        async with ws_connect(url):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


async def test_no_secret_reaches_stderr_or_the_ring_buffer_while_the_lines_are_kept(
    ollama, tmp_path
):
    port, closed = int(ollama.url.rsplit(":", 1)[1]), free_port()
    async with isolated_database_url() as database:
        _, key = await api_key(database, "agents")
        admin = admin_token()
        forged = session_token(iss="https://evil.example")
        bad_tokens = [forged, *OPAQUE, UNKNOWN_KEY, CONFIGURED["CLERK_SECRET_KEY"]]
        stderr = bytearray()
        env = serve_env(database, port, closed, str(tmp_path))
        async with (
            citadel_process(env, stderr) as (_, url),
            httpx.AsyncClient(base_url=url, timeout=PATIENCE) as client,
        ):
            # Refused credentials, in the header (logged as refused) and in query strings
            refused = [
                (await client.get("/threads", headers=bearer(t))).status_code for t in bad_tokens
            ]
            for token in bad_tokens:
                refused.append((await client.get(f"/threads?token={token}")).status_code)
            # A session token where a browser's WebSocket carries it: accepted, never logged
            sockets = url.replace("http", "ws")
            socket = await websocket_status(f"{sockets}/agui/ws?token={admin}")
            refused_socket = await websocket_status(f"{sockets}/voice/ws?token={bad_tokens[0]}")
            # An API key at work, also where it should not be: in the query string
            listed = await client.get(f"/threads?api_key={key}", headers=bearer(key))
            # The embedder (httpx logs its URL), the chat model and the reranker (retried,
            # then refused: their URLs are in the errors)
            embedded = await client.post(
                "/v1/embeddings",
                json={"input": "hi", "model": DEFAULT_MODEL},
                headers=bearer(admin),
            )
            run_status, run_events = await stream(client, "/agui", run_body(), bearer(admin))
            reranked = await client.post(
                "/v1/rerank", json={"query": "q", "documents": ["d"]}, headers=bearer(admin)
            )
            # The configured values, and a database URL, where no pattern would find them
            values = "&".join(f"v{n}={value}" for n, value in enumerate(CONFIGURED.values()))
            await client.get(f"/health?{values}&next={env['DATABASE_URL']}")
            logs = await client.get("/admin/logs", params={"limit": "10000"}, headers=bearer(admin))
    assert refused == [401] * (2 * len(bad_tokens)) and (socket, refused_socket) == (101, 401)
    assert listed.status_code == 200 and embedded.status_code == 200
    assert run_status == 200 and run_events[-1]["code"] == "model_unavailable"
    assert reranked.status_code == 503 and logs.status_code == 200

    written = stderr.decode()
    kept = logs.text
    passwords = [DB_PASSWORD, LLM_URL_PASSWORD, EMBED_URL_PASSWORD, RERANK_URL_PASSWORD]
    secrets = [*passwords, *CONFIGURED.values(), *bad_tokens, admin, key]
    for secret in secrets:  # nor its last part: the random part of a key, a JWT's signature
        for text in (written, kept):
            assert secret not in text and secret[-16:] not in text
    expected = [
        "unauthorized GET /threads from 127.0.0.1: ",
        '"GET /threads?token=[redacted] HTTP/1.1" 401',
        '"WebSocket /agui/ws?token=[redacted]" [accepted]',
        '"WebSocket /voice/ws?token=[redacted]" 401',
        '"GET /threads?api_key=[redacted] HTTP/1.1" 200',
        f"HTTP Request: POST http://embedder:[redacted]@127.0.0.1:{port}/api/embed",
        # Backends name their servers without the password (agent_server/urls.py).
        f"ollama at http://llm@127.0.0.1:{closed}: cannot connect",
        f"reranker at http://rerank@127.0.0.1:{closed}/v1",
        "/health?v0=[redacted]&v1=[redacted]&v2=[redacted]&v3=[redacted]&v4=[redacted]&next=",
    ]
    lines = [orjson.loads(line) for line in written.splitlines()]
    buffered = logs.json()["lines"]
    for text in expected:
        assert any(text in line["message"] for line in lines), text
        assert any(text in line["message"] for line in buffered), text
    refusals = [line for line in buffered if line["message"].startswith(expected[0])]
    assert len(refusals) == 2 * len(bad_tokens)  # in the header, and none but in the query


async def test_a_start_that_fails_on_the_database_and_redis_logs_no_password(tmp_path):
    closed = free_port()
    env = clean_env(
        CITADEL_LOG_FORMAT="json",
        CITADEL_LOG_LEVEL="debug",
        CITADEL_DATA_DIR=str(tmp_path),
        CITADEL_DEMO_DOCS="",
        DATABASE_URL=f"postgresql://citadel:{DB_PASSWORD}@127.0.0.1:{closed}/citadel",
        REDIS_URL=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{closed}/0",
    )
    code, _, stderr = await run_cli("serve", env=env)
    assert code != 0
    assert DB_PASSWORD not in stderr and REDIS_PASSWORD not in stderr
    messages = [orjson.loads(line).get("message", "") for line in stderr.splitlines()]
    assert any(f"postgresql://citadel@127.0.0.1:{closed}/citadel" in m for m in messages), stderr
