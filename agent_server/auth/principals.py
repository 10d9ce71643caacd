"""Who is asking. Identity comes only from verified credentials, never from request bodies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller.

    ``user_id`` owns threads and is what the audit log names: a Clerk user (``user_…``), a
    Clerk machine (``mch_…``) or a project API key (``key_…``).
    """

    user_id: str
    kind: Literal["user", "machine"] = "user"
    session_id: str | None = None  # Clerk session (``sess_…``) of a person
    org_id: str | None = None
    org_role: str | None = None  # normalised: always with the ``org:`` prefix
    permissions: frozenset[str] = field(default_factory=frozenset)  # ``org:feature:permission``
    admin: bool = False  # may use the admin routes (role, claim and step-up already checked)
    # Machine credentials are limited to these (``agents``, ``kb:<name>``, ``kb:<name>:write``,
    # see :mod:`agent_server.scopes`); None: a person, limited by ownership and role only.
    scopes: frozenset[str] | None = None
    actor: str | None = None  # who acts under this identity (Clerk impersonation ``act.sub``)
    expires_at: float | None = None  # the credential's expiry (epoch s)
    issued_at: float | None = None  # the credential's ``iat`` (epoch s): Clerk's cookie rule


# With CITADEL_AUTH=off every request is this one local user (refused in production).
LOCAL_USER = Principal("local", admin=True)
