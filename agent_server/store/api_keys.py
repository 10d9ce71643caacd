"""Project API keys: machine credentials an operator creates with ``citadel keys``.

A key's secret is ``ctk_<id>_<random>``: the id in it makes the lookup one primary-key read,
and only a hash of the whole secret is kept, so the secret is shown once, at creation. A
key's id is also the ``user_id`` of the :class:`~agent_server.auth.principals.Principal` it
authenticates, and its scopes (:mod:`agent_server.scopes`) are all it may do.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from agent_server.scopes import parse_scopes
from agent_server.store.base import Actor

SECRET_PREFIX = "ctk_"
LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often per key
MAX_NAME_LENGTH = 200

# ctk_, the 12 characters of the id, _, 32 random bytes (43 characters of base64url).
_SECRET = re.compile(r"ctk_([A-Za-z0-9_-]{12})_[A-Za-z0-9_-]{43}")


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str  # "key_" + 12 url-safe characters; also the Principal.user_id of the key
    name: str
    scopes: tuple[str, ...]
    created_by: str
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


def new_key_id() -> str:
    return "key_" + secrets.token_urlsafe(9)


def new_secret(key_id: str) -> str:
    return f"{SECRET_PREFIX}{key_id.removeprefix('key_')}_{secrets.token_urlsafe(32)}"


def parse_secret(secret: str) -> str | None:
    """The key id ``secret`` names, or None when it is not one of our secrets (no I/O)."""
    match = _SECRET.fullmatch(secret)
    return None if match is None else f"key_{match[1]}"


def hash_secret(secret: str) -> bytes:
    # The secret holds 256 random bits: no guessing can reverse a plain sha256 of it, so a
    # slow password KDF (bcrypt, argon2) would only slow every request down.
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, secret_hash: bytes) -> bool:
    return hmac.compare_digest(hash_secret(secret), secret_hash)


def check_name(name: str) -> str:
    """``name`` without surrounding blanks; ValueError when empty, too long or holding
    control characters (it is printed as is by ``citadel keys list``)."""
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME_LENGTH or not name.isprintable():
        raise ValueError(
            f"a key's name must have 1 to {MAX_NAME_LENGTH} characters, none of them control"
            " characters"
        )
    return name


def audit_details(key: ApiKey) -> dict[str, Any]:
    """What the audit log says of a key: never its secret nor the secret's hash."""
    return {"key_id": key.id, "name": key.name, "scopes": list(key.scopes)}


class ApiKeyStore(Protocol):
    async def create(self, name: str, scopes: Sequence[str], actor: Actor) -> tuple[ApiKey, str]:
        """The new key and its secret, which is returned this once and never stored.
        ValueError when the name or a scope is invalid (and nothing is written)."""
        ...

    async def revoke(self, key_id: str, actor: Actor) -> bool:
        """False when no key that is not revoked yet has this id."""
        ...

    async def verify(self, secret: str) -> ApiKey | None:
        """The key whose secret this is; None when unknown, revoked or wrong."""
        ...

    async def list(self) -> builtins.list[ApiKey]:
        """Every key, revoked ones too, newest first."""
        ...


class MemoryApiKeyStore:
    """Keys in this process (CITADEL_STORE=memory): gone on restart, not audited."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._keys: dict[str, tuple[ApiKey, bytes]] = {}  # id -> (key, hash of its secret)

    async def create(self, name: str, scopes: Sequence[str], actor: Actor) -> tuple[ApiKey, str]:
        key = ApiKey(
            new_key_id(), check_name(name), parse_scopes(scopes), actor.user_id, self._clock()
        )
        secret = new_secret(key.id)
        self._keys[key.id] = (key, hash_secret(secret))
        return key, secret

    async def revoke(self, key_id: str, actor: Actor) -> bool:
        key, secret_hash = self._keys.get(key_id, (None, b""))
        if key is None or key.revoked_at is not None:
            return False
        self._keys[key_id] = (dataclasses.replace(key, revoked_at=self._clock()), secret_hash)
        return True

    async def verify(self, secret: str) -> ApiKey | None:
        key_id = parse_secret(secret)
        if key_id is None or key_id not in self._keys:
            return None
        key, secret_hash = self._keys[key_id]
        if not secret_matches(secret, secret_hash) or key.revoked_at is not None:
            return None
        now = self._clock()
        if key.last_used_at is None or now - key.last_used_at >= LAST_USED_EVERY:
            key = dataclasses.replace(key, last_used_at=now)
            self._keys[key_id] = (key, secret_hash)
        return key

    async def list(self) -> builtins.list[ApiKey]:
        keys = [key for key, _ in self._keys.values()]
        return sorted(keys, key=lambda key: (key.created_at, key.id), reverse=True)
