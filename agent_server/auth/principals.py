"""Who is asking. Identity comes only from verified credentials, never from request bodies."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    kind: str = "user"  # "user" (a person) or "machine" (an agent with its own credentials)


# With CITADEL_AUTH=off every request is this one local user (refused in production).
LOCAL_USER = Principal("local")


def principal_of(connection: HTTPConnection) -> Principal:
    return connection.app.state.services.authenticate(connection)
