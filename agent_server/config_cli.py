"""``citadel config show``: the configuration a server started here would run with, as YAML
that ``CITADEL_CONFIG`` accepts, every secret masked so that the output can be pasted into an
issue or a chat.

Masked: every secret setting (API keys, Clerk keys, database and Redis URLs), except that a
URL keeps everything but its password, so that it still says where it points; and passwords
and keys inside any URL (``https://user:pw@host/v1?api_key=…``).
"""

from __future__ import annotations

import os
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from agent_server.config import Settings, variable

MASK = "***"
# Query parameters that carry credentials in the URLs of the servers Citadel talks to.
SECRET_PARAMETERS = frozenset(
    {"password", "api_key", "apikey", "api-key", "key", "token", "access_token", "secret"}
)


def show_config(settings: Settings) -> int:
    source = os.environ.get("CITADEL_CONFIG")
    origin = f"CITADEL_CONFIG={source}" if source else "no CITADEL_CONFIG file"
    print(f"# The effective configuration: the environment, over {origin}, over the defaults.")
    sys.stdout.write(yaml.safe_dump(masked(settings), sort_keys=False, allow_unicode=True))
    return 0


def masked(settings: Settings) -> dict[str, Any]:
    """Every setting by its variable name, in declaration order, secrets masked."""
    return {variable(name): _shown(getattr(settings, name)) for name in Settings.model_fields}


def masked_url(url: str) -> str:
    """``url`` with its password and any credential in its query replaced by ``***``."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hosts = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{MASK}@{hosts}"
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(key.lower() in SECRET_PARAMETERS for key, _ in query):
        shown = [(key, MASK if key.lower() in SECRET_PARAMETERS else value) for key, value in query]
        parts = parts._replace(query=urllib.parse.urlencode(shown, safe="/*"))
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _shown(value: Any) -> Any:
    if isinstance(value, SecretStr):
        text = value.get_secret_value()
        return masked_url(text) if _is_url(text) else MASK
    if isinstance(value, str) and _is_url(value):
        return masked_url(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _is_url(text: str) -> bool:
    parts = urllib.parse.urlsplit(text)
    return bool(parts.scheme and parts.netloc)
