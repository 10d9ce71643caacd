"""Clerk credentials for HTTP tests and benchmarks: the tokens of tests/auth/support.py, issued
now (the server checks them against the real clock), and the settings that verify them."""

from __future__ import annotations

import time
from typing import Any

from tests.auth.support import (
    APP_ORIGIN,
    ISSUER,
    MACHINE_ID,
    make_machine_token,
    make_token,
    rsa_key,
)

APP = APP_ORIGIN
PUBLIC_PEM = rsa_key().public_pem


def clerk_settings(**overrides: Any) -> dict[str, Any]:
    """Production settings verifying these tokens with the PEM (no network)."""
    return {
        "env": "production",
        "auth": "clerk",
        "clerk_issuer": ISSUER,
        "clerk_jwt_key": PUBLIC_PEM,
        "clerk_authorized_parties": [APP],
        "clerk_machine_id": MACHINE_ID,
        **overrides,
    }


def session_token(user: str = "alice", **claims: Any) -> str:
    """A valid session token of ``user_<user>`` (session ``sess_<user>``) issued now;
    ``claims`` override the base token's (``DROP`` removes one)."""
    claims = {"sub": f"user_{user}", "sid": f"sess_{user}", "jti": f"jti_{user}", **claims}
    return make_token(now=time.time(), **claims)


def admin_token(user: str = "root", **claims: Any) -> str:
    """A session whose active organisation role is admin (the v2 ``o`` claim)."""
    return session_token(user, o={"id": "org_1", "slg": "acme", "rol": "admin"}, **claims)


def machine_token(machine: str = "mch_agent", **claims: Any) -> str:
    """A Clerk M2M JWT from ``machine`` naming this server's machine in its scopes."""
    return make_machine_token(now=time.time(), sub=machine, **claims)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
