"""No secret reaches a log line: the redaction every formatter applies (examples, and a
property test over each shape of secret embedded in arbitrary text), then the proof over real
traffic, on stderr and in the ring buffer (``GET /admin/logs``) of ``citadel serve``."""

from __future__ import annotations

import contextvars
import logging
import string
import sys

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from agent_server.config import Settings
from agent_server.observability.logs import JsonFormatter, TextFormatter, bind_request
from agent_server.observability.redaction import REDACTED, Redactor, secrets_of

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
