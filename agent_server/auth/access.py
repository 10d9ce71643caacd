"""Everything the access layer needs at request time, built once from the settings."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx

from agent_server.auth.authenticator import Authenticator
from agent_server.auth.clerk import ClerkConfig, ClerkVerifier
from agent_server.auth.limits import (
    MemoryRateLimiter,
    Rate,
    RateClass,
    RateLimiter,
    RedisRateLimiter,
    StreamSlots,
)
from agent_server.auth.opaque import OpaqueMachineVerifier
from agent_server.auth.principals import Principal
from agent_server.config import Settings, frontend_api, parse_rate
from agent_server.store.api_keys import ApiKeyStore
from agent_server.store.base import Actor, StorageUnavailable, ThreadStore

if TYPE_CHECKING:
    import redis.asyncio as redis

logger = logging.getLogger("citadel.auth")

ADMIN_LOGIN_EVERY = 3600.0  # an admin session's use is audited once per this many seconds


@dataclass(frozen=True, slots=True)
class Rates:
    runs: Rate
    ingest: Rate
    requests: Rate
    auth_failures: Rate
    voice: Rate

    @classmethod
    def from_settings(cls, settings: Settings) -> Rates:
        def rate(text: str) -> Rate:
            return Rate(*parse_rate(text))

        return cls(
            rate(settings.rate_runs),
            rate(settings.rate_ingest),
            rate(settings.rate_requests),
            rate(settings.rate_auth_failures),
            rate(settings.rate_voice),
        )

    def of(self, kind: RateClass) -> Rate:
        return {
            RateClass.RUNS: self.runs,
            RateClass.INGEST: self.ingest,
            RateClass.REQUESTS: self.requests,
            RateClass.VOICE: self.voice,
        }[kind]


@dataclass(slots=True)
class Access:
    """``authenticator`` None: authentication is off (every request is the local user)."""

    authenticator: Authenticator | None
    limiter: RateLimiter
    rates: Rates
    streams: StreamSlots
    store: ThreadStore
    _admin_seen: dict[str, float] = field(default_factory=dict)  # session -> last audited

    async def audit_admin_login(self, principal: Principal, ip: str) -> None:
        """An admin's session, audited when first seen (and hourly while it lasts)."""
        session = principal.session_id or principal.user_id
        now = time.monotonic()
        if now - self._admin_seen.get(session, -ADMIN_LOGIN_EVERY) < ADMIN_LOGIN_EVERY:
            return
        self._admin_seen[session] = now
        if len(self._admin_seen) > 10_000:
            self._admin_seen = {
                k: v for k, v in self._admin_seen.items() if now - v < ADMIN_LOGIN_EVERY
            }
        await self._audit(
            Actor(principal.user_id, ip),
            "admin.login",
            {"session": principal.session_id, "org": principal.org_id, "actor": principal.actor},
        )

    async def audit_denied(self, principal: Principal, method: str, path: str, ip: str) -> None:
        await self._audit(
            Actor(principal.user_id, ip), "admin.denied", {"method": method, "path": path}
        )

    async def _audit(self, actor: Actor, action: str, details: dict[str, object]) -> None:
        try:
            await self.store.audit(actor, action, details)
        except StorageUnavailable as error:  # the answer does not wait for the audit log
            logger.warning("audit %s for %s not written: %s", action, actor.user_id, error)


async def open_access(
    settings: Settings,
    store: ThreadStore,
    api_keys: ApiKeyStore,
    redis_client: redis.Redis | None,
    resources: contextlib.AsyncExitStack,
) -> Access:
    """The access layer the settings ask for; with ``CITADEL_AUTH=clerk`` the JWKS (if any) is
    fetched once now, so the first request does not wait for it."""
    memory = MemoryRateLimiter()
    limiter: RateLimiter = memory
    if redis_client is not None:
        limiter = RedisRateLimiter(
            redis_client, fallback=memory, fail_open=settings.rate_limit_fail_open
        )
    access = Access(
        None, limiter, Rates.from_settings(settings), StreamSlots(settings.max_streams_per_user),
        store,
    )  # fmt: skip
    if settings.auth == "off":
        return access
    http = httpx.AsyncClient(timeout=settings.clerk_jwks_timeout_s, follow_redirects=False)
    resources.push_async_callback(http.aclose)
    verifier = ClerkVerifier(clerk_config(settings), http=http)
    resources.push_async_callback(verifier.aclose)
    await verifier.warm_up()
    opaque = None
    if settings.machine_auth_mode == "opaque":
        secret = settings.clerk_machine_secret_key or settings.clerk_secret_key
        assert secret is not None  # Settings.problems() requires one
        opaque = OpaqueMachineVerifier(
            settings.clerk_api_url, secret.get_secret_value(), settings.clerk_machine_id, http
        )
    access.authenticator = Authenticator(
        sessions=verifier,
        api_keys=api_keys,
        opaque=opaque,
        machine_jwts=settings.machine_auth_mode == "jwt",
        accept_cookie=settings.clerk_accept_cookie,
        publishable_key=settings.clerk_publishable_key,
        allowed_origins=cookie_origins(settings),
    )
    return access


def cookie_origins(settings: Settings) -> list[str]:
    """The origins a request carrying the session cookie may come from."""
    return [*settings.clerk_authorized_parties, *settings.cors_origins]


def clerk_config(settings: Settings) -> ClerkConfig:
    """Issuer and JWKS from the settings, or derived from the publishable key."""
    issuer, jwks_url = settings.clerk_issuer, settings.clerk_jwks_url
    if settings.clerk_publishable_key:
        host = frontend_api(settings.clerk_publishable_key)
        issuer = issuer or f"https://{host}"
        if not settings.clerk_jwt_key:
            jwks_url = jwks_url or f"https://{host}/.well-known/jwks.json"
    assert issuer is not None  # Settings.problems() requires one
    return ClerkConfig(
        issuer=issuer,
        authorized_parties=tuple(settings.clerk_authorized_parties),
        jwt_key=settings.clerk_jwt_key.get_secret_value() if settings.clerk_jwt_key else None,
        jwks_url=None if settings.clerk_jwt_key else jwks_url,
        clock_skew_s=settings.clerk_clock_skew_s,
        max_token_lifetime_s=settings.clerk_max_token_lifetime_s,
        max_token_bytes=settings.clerk_max_token_bytes,
        jwks_cache_ttl_s=settings.clerk_jwks_cache_ttl_s,
        jwks_refresh_cooldown_s=settings.clerk_jwks_refresh_cooldown_s,
        jwks_timeout_s=settings.clerk_jwks_timeout_s,
        reject_pending_sessions=settings.clerk_reject_pending_sessions,
        admin_org_role=settings.clerk_admin_org_role,
        admin_claim_path=settings.clerk_admin_claim_path,
        admin_claim_value=settings.clerk_admin_claim_value,
        admin_max_factor_age_min=settings.clerk_admin_max_fva_min,
        machine_id=settings.clerk_machine_id if settings.machine_auth_mode == "jwt" else None,
    )
