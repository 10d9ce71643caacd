"""URLs as they may be shown: in error messages a client or an operator sees, and in logs."""

from __future__ import annotations

import urllib.parse

_SECRET_PARAMETERS = frozenset({"password", "api_key", "apikey", "key", "token", "access_token"})


def redact_url(url: str) -> str:
    """``url`` without its password (in the user info or the query)."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}@{hosts}" if at else hosts
    query = [
        (key, value)
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if key.lower() not in _SECRET_PARAMETERS
    ]
    return urllib.parse.urlunsplit(
        parts._replace(netloc=netloc, query=urllib.parse.urlencode(query, safe="/"))
    )
