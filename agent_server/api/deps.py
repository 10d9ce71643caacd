"""What handlers take besides their parameters: the app's services, the JSON of a body
read by hand (AG-UI's RunAgentInput, which must stay tolerant of unknown fields), who acts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection, Request

from agent_server.auth.principals import Principal
from agent_server.reload.control import Reloads
from agent_server.services import Services
from agent_server.store.base import Actor
from protocol.input import InputError, parse_json


async def get_services(connection: HTTPConnection) -> Services:
    # async: FastAPI runs a plain function dependency in a worker thread, per request
    return connection.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_reloads(connection: HTTPConnection) -> Reloads:
    return connection.app.state.reloads


ReloadsDep = Annotated[Reloads, Depends(get_reloads)]


def actor(connection: HTTPConnection, principal: Principal) -> Actor:
    """Who is asking, and from where, for the audit log."""
    client = connection.client
    return Actor(principal.user_id, client.host if client else None)


async def read_json(request: Request) -> Any:
    """The decoded JSON body (its size was bounded by the route's policy)."""
    content_type = request.headers.get("content-type", "application/json")
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise InputError("unsupported_media_type", "send the body as application/json")
    return parse_json(await request.body())
