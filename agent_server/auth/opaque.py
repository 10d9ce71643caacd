"""Opaque Clerk machine tokens (``mt_…``), verified by Clerk's Backend API.

Why it looks the way it does:

- **Only when asked for** (``MACHINE_AUTH_MODE=opaque``): every unknown token costs a request
  to Clerk, so M2M JWTs, verified offline, are the default.
- **Short caches both ways.** A verified token is trusted for :data:`POSITIVE_TTL` seconds (and
  never past its expiry), so an agent's burst costs one call; a refused one is refused from
  memory for :data:`NEGATIVE_TTL` seconds, so replaying it does not reach Clerk either. Keys
  are hashes: the cache never holds a token.
- **Fail closed.** Clerk down, slow or answering nonsense means the token is refused (401),
  never accepted; the reason goes to the log.
- **Our machine must be in scope.** With an instance secret key Clerk verifies any machine's
  token, so the token's scopes must name ``CLERK_MACHINE_ID``, as for M2M JWTs.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import httpx

from agent_server.auth.principals import Principal

logger = logging.getLogger(__name__)

POSITIVE_TTL = 30.0
NEGATIVE_TTL = 10.0
MAX_ENTRIES = 10_000
OPAQUE_PREFIXES = ("mt_", "m2m_")


class MachineTokenRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OpaqueMachineVerifier:
    def __init__(
        self,
        api_url: str,
        secret_key: str,
        machine_id: str | None,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = api_url.rstrip("/") + "/v1/m2m_tokens/verify"
        self._secret = secret_key
        self._machine_id = machine_id
        self._http = http
        self._clock = clock
        self._wall_clock = wall_clock
        # token hash -> (valid until (monotonic), principal or None when refused)
        self._cache: OrderedDict[bytes, tuple[float, Principal | None]] = OrderedDict()
        self.calls = 0  # requests made to Clerk

    async def verify(self, token: str) -> Principal:
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            if cached[1] is None:
                raise MachineTokenRefused("refused_recently")
            return cached[1]
        try:
            principal = await self._ask_clerk(token)
        except MachineTokenRefused as refused:
            if refused.reason != "clerk_unavailable":  # an outage is not the token's fault
                self._remember(key, now + NEGATIVE_TTL, None)
            raise
        remaining = (principal.expires_at or float("inf")) - self._wall_clock()
        self._remember(key, now + min(POSITIVE_TTL, remaining), principal)
        return principal

    async def _ask_clerk(self, token: str) -> Principal:
        self.calls += 1
        try:
            response = await self._http.post(
                self._url,
                json={"token": token},
                headers={"Authorization": f"Bearer {self._secret}"},
            )
        except httpx.HTTPError as error:
            logger.warning("Clerk machine-token check failed: %s", type(error).__name__)
            raise MachineTokenRefused("clerk_unavailable") from None
        if response.status_code >= 500 or response.status_code == 429:
            logger.warning("Clerk machine-token check answered %d", response.status_code)
            raise MachineTokenRefused("clerk_unavailable")
        if response.status_code != 200:
            raise MachineTokenRefused(f"clerk_refused_{response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise MachineTokenRefused("clerk_unavailable") from None
        return self._principal(data)

    def _principal(self, data: object) -> Principal:
        if not isinstance(data, dict):
            raise MachineTokenRefused("clerk_unavailable")
        subject, scopes = data.get("subject"), data.get("scopes") or []
        if data.get("revoked") or data.get("expired"):
            raise MachineTokenRefused("revoked_or_expired")
        if not isinstance(subject, str) or not subject.startswith("mch_"):
            raise MachineTokenRefused("not_a_machine")
        if self._machine_id is not None and self._machine_id not in scopes:
            raise MachineTokenRefused("machine_not_in_scope")
        expiration = data.get("expiration")
        expires_at = expiration / 1000 if isinstance(expiration, int | float) else None
        if expires_at is not None and expires_at <= self._wall_clock():
            raise MachineTokenRefused("revoked_or_expired")
        return Principal(
            subject, kind="machine", scopes=frozenset({"agents"}), expires_at=expires_at
        )

    def _remember(self, key: bytes, until: float, principal: Principal | None) -> None:
        self._cache[key] = (until, principal)
        self._cache.move_to_end(key)
        while len(self._cache) > MAX_ENTRIES:
            self._cache.popitem(last=False)
