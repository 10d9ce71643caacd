"""LiveKit access tokens for the web client: one room, a short life, the user's identity, and
the voice agent dispatched into the room with the thread it speaks in."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

import orjson
from livekit import api


@dataclass(frozen=True, slots=True)
class RoomGrant:
    room: str
    token: str


def room_name(owner: str, thread_id: str) -> str:
    """One room per user and thread, named without revealing either."""
    digest = hashlib.sha256(f"{owner}\x00{thread_id}".encode()).hexdigest()[:24]
    return f"citadel-{digest}"


def dispatch_metadata(owner: str, thread_id: str) -> str:
    """What the worker's job reads (``ctx.job.metadata``): whose thread to speak in. Only the
    server mints it, inside a token signed with the API secret."""
    return orjson.dumps({"threadId": thread_id, "userId": owner}).decode()


def mint_room_token(
    *,
    api_key: str,
    api_secret: str,
    owner: str,
    thread_id: str,
    agent_name: str,
    ttl: float,
) -> RoomGrant:
    room = room_name(owner, thread_id)
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=True,
        can_subscribe=True,
        can_publish_data=True,
    )
    dispatch = api.RoomAgentDispatch(
        agent_name=agent_name, metadata=dispatch_metadata(owner, thread_id)
    )
    token = (
        api.AccessToken(api_key, api_secret)
        .with_identity(owner)
        .with_ttl(timedelta(seconds=ttl))
        .with_grants(grants)
        .with_room_config(api.RoomConfiguration(agents=[dispatch]))
        .to_jwt()
    )
    return RoomGrant(room, token)
