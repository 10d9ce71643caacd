"""Secrets out of log lines: every handler's formatter passes each line through a :class:`Redactor`.

Why it looks the way it does:

- **At the formatter, not at the call sites.** Call sites are careful, but libraries are not:
  httpx logs request URLs (credentials included), uvicorn logs paths with their query
  strings, exceptions quote DSNs. Redacting what the formatter produces covers them all, on
  stderr and in the ring buffer alike.
- **Shapes, contexts, and the configured values.** Tokens with a known shape (our API keys,
  Clerk's keys and tokens, JWTs) are found anywhere; other secrets by their context (a URL's
  password, ``token=…`` in a query string, a ``"password": …`` field, an ``Authorization``
  header, ``Bearer …``); and the exact values of the configured secrets (:func:`secrets_of`)
  wherever they appear, whatever their shape.
- **A prefix is kept** (``ctk_[redacted]``, ``postgresql://citadel:[redacted]@db``), so a line
  still says what was there. Redacting twice changes nothing.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

if TYPE_CHECKING:
    from agent_server.config import Settings

REDACTED = "[redacted]"
MIN_KNOWN_LENGTH = 8  # shorter configured values are left to the patterns (see secrets_of)

_BODY = r"[A-Za-z0-9_-]"
# Where a token with a common-looking prefix may start: not inside a word (task_live_total),
# but after a percent-escape (Bearer%20mt_…).
_START = r"(?:(?<![A-Za-z0-9_])|(?<=%[0-9A-Fa-f]{2}))"
# Tokens with a shape of their own. One alternation, scanned left to right: a token is taken
# whole from its first character, whatever other prefixes its body happens to spell.
_SHAPES = re.compile(
    "|".join(
        [
            rf"(?P<jwt>eyJ){_BODY}+\.{_BODY}+(?:\.{_BODY}+)*",  # Clerk sessions, M2M JWTs
            rf"(?P<ctk>ctk_){_BODY}+",  # project API keys
            rf"{_START}(?P<clerk>sk_(?:test|live)_){_BODY}+",  # Clerk secret keys
            # Clerk's opaque tokens, OpenAI-style keys: short prefixes, so a length too
            rf"{_START}(?P<opaque>(?:mt|m2m|ak|oat)_|sk-){_BODY}{{16,}}",
        ]
    )
)
_URL_PASSWORD = re.compile(r"(?P<keep>://[^\s/@:?#]*:)[^\s/@?#]+@")
# Field and parameter names that hold secrets: anything ending in one of the long words, or
# exactly one of the short ones.
_NAME = (
    rf"(?:{_BODY}*(?:password|passwd|passphrase|secret|secret[_-]?key|private[_-]?key"
    r"|api[_-]?key|apikey|access[_-]?key|token|credentials?|authorization|cookie|session)"
    r"|pwd|key|sig|signature|auth|jwt)"
)
_ASSIGNED = re.compile(
    rf"(?i)(?P<keep>(?<![A-Za-z0-9_-]){_NAME}\s*=\s*)"
    r"(?:\"[^\"]*\"|'[^']*'|[^\s&#;,\"'<>()\[\]{}]+)"
)
_QUOTED_FIELD = re.compile(
    rf"(?i)(?P<keep>(?P<quote>[\"']){_NAME}(?P=quote)\s*:\s*)"
    r"(?:\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\s,\[\]{}]+)"
)
_HEADER = re.compile(
    r"(?i)(?P<keep>(?<![A-Za-z0-9_-])(?:proxy-authorization|authorization|set-cookie|cookie"
    r"|x-api-key)\s*:\s*)[^\r\n\"']+"
)
_BEARER = re.compile(r"(?i)(?P<keep>(?<![A-Za-z0-9])bearer\s+)[A-Za-z0-9._~+/=-]{8,}")
_SECRET_FIELD = re.compile(rf"(?i){_NAME}")
# What a text must hold for the patterns above to match in it (lower-cased for the names):
# most lines hold none of it, and running every pattern costs tens of microseconds a line.
_NAME_ROOTS = (
    "pass",
    "secret",
    "key",
    "token",
    "credential",
    "auth",
    "cookie",
    "session",
    "pwd",
    "sig",
    "jwt",
)
_SHAPE_PREFIXES = ("eyJ", "ctk_", "sk_", "sk-", "mt_", "m2m_", "ak_", "oat_")


class Redactor:
    """Hides secrets in text (:meth:`__call__`) and in log data (:meth:`data`); ``known`` are
    exact values to hide wherever they appear."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        self._values: list[str] = []
        self._known = re.compile("")
        self.learn(known)

    def learn(self, known: Iterable[str]) -> None:
        """Hide these values too (a reloaded configuration's); the old ones stay hidden."""
        values = sorted(
            {*self._values, *(value for value in known if len(value) >= MIN_KNOWN_LENGTH)},
            key=len,
            reverse=True,
        )
        pattern = re.compile("|".join(map(re.escape, values)))
        self._known, self._values = pattern, values  # a concurrent call sees one or the other

    def __call__(self, text: str) -> str:
        # Exact values first: a pattern could otherwise take part of one and leave the rest.
        # Contexts before shapes: a context takes a shaped token whole (``token=eyJ…``).
        if any(value in text for value in self._values):
            text = self._known.sub(REDACTED, text)
        if "://" in text:
            text = _URL_PASSWORD.sub(rf"\g<keep>{REDACTED}@", text)
        lowered = text.lower()
        if any(root in lowered for root in _NAME_ROOTS):
            for context in (_ASSIGNED, _QUOTED_FIELD, _HEADER):
                text = context.sub(rf"\g<keep>{REDACTED}", text)
        if "bearer" in lowered:
            text = _BEARER.sub(rf"\g<keep>{REDACTED}", text)
        if any(prefix in text for prefix in _SHAPE_PREFIXES):
            text = _SHAPES.sub(_shape, text)
        return text

    def data(self, value: Any) -> Any:
        """Plain JSON data with every string redacted, and the whole value of every field
        whose name says it is secret (``password``, ``apiKey``, ``authorization``...)."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {
                key: REDACTED if isinstance(key, str) and _names_secret(key) else self.data(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.data(item) for item in value]
        return value


@functools.lru_cache(maxsize=4096)  # field names repeat: "message", "requestId", ...
def _names_secret(name: str) -> bool:
    return _SECRET_FIELD.fullmatch(name) is not None


def _shape(match: re.Match[str]) -> str:
    prefix = next(group for group in match.groupdict().values() if group is not None)
    return prefix + REDACTED


def secrets_of(settings: Settings) -> set[str]:
    """The configured secrets: every ``SecretStr`` setting's value, and the password and
    secret query parameters of every URL setting (a URL itself is no secret). Values shorter
    than :data:`MIN_KNOWN_LENGTH` are left out, so that a toy password does not erase every
    word it spells; in a URL or a ``password=`` the patterns still hide it."""
    found: set[str] = set()
    for _, value in settings:
        secret = isinstance(value, SecretStr)
        text = value.get_secret_value() if secret else value
        if not isinstance(text, str):
            continue
        if "://" in text:
            found |= _url_secrets(text)
        elif secret:
            found.add(text)
    return found | {urllib.parse.quote(value, safe="") for value in found}


def _url_secrets(url: str) -> set[str]:
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL after all (a bad port, brackets)
        return set()
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    found = {value for name, value in query if _names_secret(name)}
    return found | ({urllib.parse.unquote(password)} if password else set())
