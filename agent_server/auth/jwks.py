"""Clerk's public signing keys from a JWKS URL, cached (clerk.md §6, §8.2).

Why it looks the way it does:

- **One fetch serves everyone.** Keys are kept for ``ttl_s``; callers that miss at the same
  time share one request (an :class:`asyncio.Lock`, re-checked once held).
- **Forged kids cost Clerk nothing.** A ``kid`` not in the set may trigger a refetch only if no
  fetch was made in the last ``cooldown_s`` seconds, for all kids together: a flood of made-up
  kids costs at most one request per cooldown (PyJWT's ``PyJWKClient`` has the same rule; the
  official SDK fetches once per unknown kid).
- **An outage does not sign everyone out.** A failed refresh keeps the keys we have (stale is
  still Clerk's key), and is retried after a short back-off, never on every request. Before the
  first success there is nothing to trust: :class:`KeysUnavailable` (fail closed).
- **Only RSA signing keys for RS256.** ``PyJWK`` would turn a ``kty: oct`` entry into an HS256
  secret, so ``oct``/``EC``/``OKP``, ``use: enc``, other ``alg`` values, private keys and keys
  under 2048 bits are skipped. A set with no usable key counts as a failed fetch.
- **Bounded fetches.** No redirects, one deadline for the whole request, a size cap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable

import httpx
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt import PyJWK
from jwt.exceptions import PyJWTError

logger = logging.getLogger(__name__)

FAILURE_RETRY_S = 5.0  # after a failed fetch, no new attempt before this (capped by cooldown)
MAX_JWKS_BYTES = 256 * 1024
MIN_RSA_BITS = 2048
KID = re.compile(r"[A-Za-z0-9_.-]{1,128}")  # Clerk's kids are instance ids (``ins_…``)
_FETCH_ERRORS = (
    httpx.HTTPError,
    httpx.InvalidURL,
    OSError,
    TimeoutError,
    ValueError,
    RecursionError,
)


class KeysUnavailable(Exception):
    """No key set was ever loaded: nothing can be verified."""


class JwksCache:
    """``kid`` → :class:`PyJWK` from ``url``; see the module docstring for the rules."""

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        ttl_s: float = 300.0,
        cooldown_s: float = 30.0,
        timeout_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._http = http
        self._ttl = ttl_s
        self._cooldown = cooldown_s
        self._timeout = timeout_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._keys: dict[str, PyJWK] = {}
        self._loaded = False
        self._fresh_until = -math.inf
        self._last_attempt = -math.inf
        self._retry_at = -math.inf  # back-off after a failure
        self._attempts = 0  # HTTP requests made
        self._completed = 0  # fetches finished (either way): tells waiters someone fetched

    @property
    def fetches(self) -> int:
        return self._attempts

    async def get(self, kid: str) -> PyJWK | None:
        """The key named ``kid``, or None when the set (refreshed if allowed) has no such key.

        Raises :class:`KeysUnavailable` when no set was ever loaded.
        """
        seen = self._completed
        now = self._clock()
        if not self._loaded:
            await self._refresh(seen)
            if not self._loaded:
                raise KeysUnavailable(self._url)
            return self._keys.get(kid)
        key = self._keys.get(kid)
        if key is not None:
            # Stale: the first caller refreshes, the others keep using the keys they have.
            if now >= self._fresh_until and now >= self._retry_at and not self._lock.locked():
                await self._refresh(seen)  # a failure keeps the keys we have
                return self._keys.get(kid)
            return key
        if now - self._last_attempt < self._cooldown:
            return None
        await self._refresh(seen)
        return self._keys.get(kid)

    async def refresh(self) -> bool:
        """Fetch now (warm-up); whether the keys are loaded afterwards. Never raises."""
        await self._refresh(self._completed, force=True)
        return self._loaded

    async def _refresh(self, seen: int, *, force: bool = False) -> None:
        async with self._lock:
            if self._completed != seen:
                return  # another caller fetched while this one waited
            if not force and self._clock() < self._retry_at:
                return  # a fetch failed moments ago
            await self._fetch()

    async def _fetch(self) -> None:
        self._attempts += 1
        self._last_attempt = self._clock()
        await self._load()
        self._completed += 1  # not when cancelled: then a waiter fetches instead

    async def _load(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http.get(
                    self._url,
                    headers={"Accept": "application/json"},
                    follow_redirects=False,
                    timeout=self._timeout,
                )
            keys = parse_jwks(response)
        except _FETCH_ERRORS as error:
            self._retry_at = self._clock() + min(self._cooldown, FAILURE_RETRY_S)
            state = "serving the cached keys" if self._loaded else "no keys loaded"
            logger.warning(
                "JWKS %s not refreshed (%s): %s", self._url, state, str(error) or type(error)
            )
            return
        self._keys = keys
        self._loaded = True
        self._fresh_until = self._clock() + self._ttl
        self._retry_at = -math.inf
        logger.info("JWKS %s loaded: %d key(s)", self._url, len(keys))


def parse_jwks(response: httpx.Response) -> dict[str, PyJWK]:
    """The usable keys of a JWKS answer; ValueError if it is not one or has none."""
    if response.status_code != 200:
        raise ValueError(f"HTTP {response.status_code}")
    if len(response.content) > MAX_JWKS_BYTES:
        raise ValueError("JWKS too large")
    document = json.loads(response.content)
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWKS document")
    keys: dict[str, PyJWK] = {}
    for entry in entries:
        key = usable_key(entry)
        if key is not None:
            keys.setdefault(entry["kid"], key)
    if not keys:
        raise ValueError("no RSA signing key in the JWKS")
    return keys


def usable_key(entry: object) -> PyJWK | None:
    """``entry`` as an RS256 verification key, or None if it is anything else."""
    if not isinstance(entry, dict):
        return None
    kid = entry.get("kid")
    key_ops = entry.get("key_ops")
    if (
        entry.get("kty") != "RSA"
        or entry.get("use", "sig") != "sig"
        or entry.get("alg", "RS256") != "RS256"
        or (key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops))
        or "d" in entry  # a private key has no business in a JWKS
        or not isinstance(kid, str)
        or KID.fullmatch(kid) is None
    ):
        return None
    try:
        key = PyJWK({**entry, "alg": "RS256"}, algorithm="RS256")
    except (PyJWTError, ValueError, TypeError):
        return None
    if not isinstance(key.key, RSAPublicKey) or key.key.key_size < MIN_RSA_BITS:
        return None
    return key
