"""From a request's credentials to a verified :class:`Principal`, or :class:`Unauthorized`.

Which verifier runs is decided by the credential's shape, and each one checks everything
again, so a token cannot pick a laxer path:

- ``ctk_…``: a project API key (Postgres, hashed);
- ``mt_…``/``m2m_…``: an opaque Clerk machine token (Clerk's Backend API, when
  ``MACHINE_AUTH_MODE=opaque``); other Clerk prefixes (``ak_``, ``oat_``) are refused;
- a JWT whose header says M2M or whose subject is a machine (``mch_…``): an M2M JWT;
- any other JWT: a Clerk session token.

Where the credential may come from follows clerk.md §8.1: an ``Authorization`` header must
be exactly one ``Bearer`` token, and then no cookie is looked at; a WebSocket may instead
carry it in one ``token`` query parameter (browsers cannot set its headers); the
``__session`` cookie only with ``CLERK_ACCEPT_COOKIE``, only for session tokens, with the
``__client_uat`` rules and, on unsafe methods, an allowed ``Origin``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from starlette.requests import HTTPConnection

from agent_server.auth.clerk import OPAQUE_PREFIXES as CLERK_PREFIXES
from agent_server.auth.clerk import ClerkVerifier, InvalidToken, names_a_machine
from agent_server.auth.opaque import OPAQUE_PREFIXES, MachineTokenRefused, OpaqueMachineVerifier
from agent_server.auth.principals import Principal
from agent_server.store.api_keys import ApiKeyStore, parse_secret

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Unauthorized(Exception):
    """No valid credential. ``reason`` is for the log only: clients learn nothing of it."""

    def __init__(self, reason: str, *, presented: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.presented = presented  # a credential was given (and was wrong)


class Authenticator:
    def __init__(
        self,
        *,
        sessions: ClerkVerifier | None,
        api_keys: ApiKeyStore | None,
        opaque: OpaqueMachineVerifier | None = None,
        machine_jwts: bool = True,
        accept_cookie: bool = False,
        publishable_key: str | None = None,
        allowed_origins: Sequence[str] = (),
    ) -> None:
        self._sessions = sessions
        self._api_keys = api_keys
        self._opaque = opaque
        self._machine_jwts = machine_jwts
        self._accept_cookie = accept_cookie
        suffix = cookie_suffix(publishable_key) if publishable_key else None
        self._session_cookie = f"__session_{suffix}" if suffix else "__session"
        self._uat_cookie = f"__client_uat_{suffix}" if suffix else "__client_uat"
        # Where cookie-borne requests may come from; a configuration reload may change it.
        self.allowed_origins = frozenset(allowed_origins)

    async def authenticate(self, connection: HTTPConnection) -> Principal:
        header = connection.headers.getlist("authorization")
        if header:
            return await self._bearer(_bearer_token(header))
        if connection.scope["type"] == "websocket" and "token" in connection.query_params:
            # Browsers cannot set headers on a WebSocket; logs redact ``token=`` values.
            tokens = connection.query_params.getlist("token")
            if len(tokens) != 1 or not tokens[0]:
                raise Unauthorized("several_tokens")
            return await self._bearer(tokens[0])
        if self._accept_cookie and self._session_cookie in connection.cookies:
            return await self._cookie(connection)
        raise Unauthorized("no_credentials", presented=False)

    async def _bearer(self, token: str) -> Principal:
        if token.startswith("ctk_"):
            return await self._api_key(token)
        if token.startswith(OPAQUE_PREFIXES):
            if self._opaque is None:
                raise Unauthorized("opaque_machine_tokens_off")
            try:
                return await self._opaque.verify(token)
            except MachineTokenRefused as refused:
                raise Unauthorized(f"machine:{refused.reason}") from None
        if token.startswith(CLERK_PREFIXES):  # Clerk's API keys, OAuth tokens
            raise Unauthorized("token_type_not_accepted")
        if self._sessions is None:
            raise Unauthorized("clerk_off")
        try:
            if names_a_machine(token):
                if not self._machine_jwts:
                    raise Unauthorized("machine_jwts_off")
                return await self._sessions.verify_machine(token)
            return await self._sessions.verify_session(token)
        except InvalidToken as invalid:
            raise Unauthorized(invalid.reason) from None

    async def _api_key(self, secret: str) -> Principal:
        if self._api_keys is None or parse_secret(secret) is None:
            raise Unauthorized("api_key_malformed")
        key = await self._api_keys.verify(secret)
        if key is None:
            raise Unauthorized("api_key_unknown_or_revoked")
        return Principal(key.id, kind="machine", scopes=frozenset(key.scopes))

    async def _cookie(self, connection: HTTPConnection) -> Principal:
        """Same-origin browser sessions (clerk.md §1.5, §7)."""
        if (
            connection.scope["type"] == "websocket"
            or connection.scope["method"] not in SAFE_METHODS
        ):
            origin = connection.headers.get("origin")
            if origin is None or origin not in self.allowed_origins:
                raise Unauthorized("cookie_origin_not_allowed")
        if self._sessions is None:
            raise Unauthorized("clerk_off")
        try:
            client_uat = int(connection.cookies.get(self._uat_cookie, "0"))
        except ValueError:
            client_uat = 0
        if client_uat <= 0:
            raise Unauthorized("cookie_signed_out")
        token = connection.cookies[self._session_cookie]
        try:
            principal = await self._sessions.verify_session(token)
        except InvalidToken as invalid:
            raise Unauthorized(invalid.reason) from None
        if principal.issued_at is None or principal.issued_at < client_uat:
            raise Unauthorized("cookie_older_than_client")
        return principal


def cookie_suffix(publishable_key: str) -> str:
    """Clerk's cookie-name suffix: 8 characters of URL-safe base64 SHA-1 of the key."""
    digest = hashlib.sha1(publishable_key.encode(), usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).decode()[:8]


def _bearer_token(values: list[str]) -> str:
    """The one token of one ``Authorization: Bearer <token>`` header."""
    if len(values) != 1:
        raise Unauthorized("several_authorization_headers")
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer":
        raise Unauthorized("not_bearer")
    if not token or " " in token or "," in token:
        raise Unauthorized("malformed_bearer")
    return token
