"""Project API keys: the secret format, and the Postgres and in-memory stores alike."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from agent_server.store.api_keys import (
    ApiKeyStore,
    MemoryApiKeyStore,
    hash_secret,
    new_secret,
    parse_secret,
)
from agent_server.store.base import Actor
from agent_server.store.postgres_api_keys import PostgresApiKeyStore
from tests.support.database import isolated_database_url, migrated_pool

ACTOR = Actor("user_admin", "127.0.0.1")


@dataclass
class Keys:
    store: ApiKeyStore
    pool: asyncpg.Pool | None  # the database behind a Postgres store, to look at its rows


@pytest.fixture(params=["memory", "postgres"])
async def keys(request: pytest.FixtureRequest) -> AsyncIterator[Keys]:
    if request.param == "memory":
        yield Keys(MemoryApiKeyStore(), None)
        return
    async with isolated_database_url() as url, migrated_pool(url) as pool:
        yield Keys(PostgresApiKeyStore(pool), pool)


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    async with isolated_database_url() as url, migrated_pool(url) as pool:
        yield pool


def test_secrets_name_their_key_and_nothing_else_parses():
    secret = new_secret("key_AbC-12_xYz09")
    assert secret.startswith("ctk_AbC-12_xYz09_") and len(secret) == 60
    assert parse_secret(secret) == "key_AbC-12_xYz09"
    assert new_secret("key_AbC-12_xYz09") != secret
    for wrong in (
        "",
        secret[:-1],
        secret + "A",
        "ctx_" + secret[4:],
        secret[:16] + "." + secret[17:],  # the separator
        secret[:20] + "+" + secret[21:],  # not base64url
        secret.replace("ctk_", "CTK_"),
        "Bearer " + secret,
    ):
        assert parse_secret(wrong) is None, wrong
    assert hash_secret(secret) == hashlib.sha256(secret.encode()).digest()


async def test_keys_are_created_verified_listed_and_revoked(keys: Keys):
    store = keys.store
    key, secret = await store.create("  CI deploys ", ["agents", "kb:docs", "agents"], ACTOR)
    assert key.id.startswith("key_") and len(key.id) == 16
    assert parse_secret(secret) == key.id
    assert (key.name, key.scopes, key.created_by) == (
        "CI deploys",
        ("agents", "kb:docs"),
        ACTOR.user_id,
    )
    assert key.revoked_at is None and key.last_used_at is None

    verified = await store.verify(secret)
    assert verified is not None and verified.id == key.id and verified.scopes == key.scopes
    assert verified.last_used_at is not None

    other, other_secret = await store.create("reader", ["kb:docs"], ACTOR)
    listed = await store.list()
    assert [item.id for item in listed] == [other.id, key.id]  # newest first
    assert listed[1].last_used_at == verified.last_used_at

    assert await store.revoke(key.id, ACTOR)
    assert await store.verify(secret) is None
    assert not await store.revoke(key.id, ACTOR)  # already revoked
    assert not await store.revoke("key_nosuchkey00", ACTOR)
    revoked = {item.id: item.revoked_at for item in await store.list()}
    assert revoked[key.id] is not None and revoked[other.id] is None
    assert (await store.verify(other_secret)) is not None  # revoking one spares the others


async def test_wrong_secrets_are_refused(keys: Keys):
    key, secret = await keys.store.create("ci", ["agents"], ACTOR)
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert parse_secret(flipped) == key.id  # the right id...
    assert await keys.store.verify(flipped) is None  # ...with the wrong secret
    assert await keys.store.verify(new_secret(key.id)) is None
    assert await keys.store.verify(new_secret("key_nosuchkey00")) is None
    assert await keys.store.verify("not a key") is None
    assert await keys.store.verify(secret) is not None


@pytest.mark.parametrize(
    ("name", "scopes", "message"),
    [
        ("ci", ["agents", "admin"], "invalid scope 'admin'"),
        ("ci", ["kb:my docs"], "invalid scope"),
        ("ci", [], "at least one scope"),
        ("  ", ["agents"], "name"),
        ("x" * 201, ["agents"], "name"),
        ("ci\x1b[2J", ["agents"], "control characters"),
    ],
)
async def test_invalid_keys_are_refused_and_nothing_is_written(keys: Keys, name, scopes, message):
    with pytest.raises(ValueError, match=message):
        await keys.store.create(name, scopes, ACTOR)
    assert await keys.store.list() == []
    if keys.pool is not None:
        assert await keys.pool.fetchval("SELECT count(*) FROM audit_log") == 0


async def test_the_secret_is_never_stored(pool: asyncpg.Pool):
    store = PostgresApiKeyStore(pool)
    key, secret = await store.create("ci", ["agents", "kb:docs:write"], ACTOR)
    await store.verify(secret)
    await store.revoke(key.id, ACTOR)
    # ctk_<12 characters of the id>_<43 random characters>; either part may contain "_".
    random_part = secret[-43:]
    assert secret == f"ctk_{key.id.removeprefix('key_')}_{random_part}"
    digest = hash_secret(secret)
    for table in ("api_keys", "audit_log"):
        for row in await pool.fetch(f"SELECT * FROM {table}"):
            for column, value in row.items():
                text = value.hex() if isinstance(value, bytes) else str(value)
                assert secret not in text and random_part not in text, (table, column)
                if table == "audit_log":
                    assert digest.hex() not in text and str(digest) not in text, column
    stored = await pool.fetchval("SELECT secret_hash FROM api_keys WHERE id = $1", key.id)
    assert stored == digest


async def test_creating_and_revoking_are_audited(pool: asyncpg.Pool):
    store = PostgresApiKeyStore(pool)
    key, secret = await store.create("ci", ["agents", "kb:docs"], ACTOR)
    await store.verify(secret)  # using a key is not audited (every request would be)
    await store.revoke(key.id, Actor("user_other", "10.0.0.1"))
    await store.revoke(key.id, ACTOR)  # nothing revoked, nothing audited
    rows = await pool.fetch(
        "SELECT actor, action, thread_id, details, remote_addr FROM audit_log ORDER BY id"
    )
    details = {"key_id": key.id, "name": "ci", "scopes": ["agents", "kb:docs"]}
    assert [tuple(row) for row in rows] == [
        ("user_admin", "api_key.create", None, details, "127.0.0.1"),
        ("user_other", "api_key.revoke", None, details, "10.0.0.1"),
    ]


async def test_last_used_is_written_at_most_once_a_minute_in_postgres(pool: asyncpg.Pool):
    store = PostgresApiKeyStore(pool)
    key, secret = await store.create("ci", ["agents"], ACTOR)

    async def last_used() -> datetime | None:
        return await pool.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", key.id)

    assert await last_used() is None
    first = await store.verify(secret)
    assert first is not None and first.last_used_at is not None
    assert first.last_used_at == await last_used()
    again = await store.verify(secret)
    assert again is not None and again.last_used_at == first.last_used_at == await last_used()

    await pool.execute(
        "UPDATE api_keys SET last_used_at = last_used_at - interval '61 seconds' WHERE id = $1",
        key.id,
    )
    rewound = await last_used()
    later = await store.verify(secret)
    assert later is not None and later.last_used_at == await last_used()
    assert rewound is not None and later.last_used_at > rewound


async def test_last_used_is_written_at_most_once_a_minute_in_memory():
    now = datetime(2025, 1, 1, tzinfo=UTC)
    store = MemoryApiKeyStore(clock=lambda: now)
    _, secret = await store.create("ci", ["agents"], ACTOR)
    first = await store.verify(secret)
    assert first is not None and first.last_used_at == now
    now += timedelta(seconds=59)
    again = await store.verify(secret)
    assert again is not None and again.last_used_at == first.last_used_at
    now += timedelta(seconds=1)
    later = await store.verify(secret)
    assert later is not None and later.last_used_at == now
    [listed] = await store.list()
    assert listed.last_used_at == now
