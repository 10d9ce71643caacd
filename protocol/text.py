"""Text every store can keep: no NUL character and no lone surrogate.

JSON allows both (``"\\u0000"``, ``"\\ud800"``); Postgres refuses the first in ``text`` and
``jsonb`` and cannot encode the second at all. So text that a client sends is refused when
it has either (:func:`unstorable` says where), and text a model produces is scrubbed
(:func:`scrub`): a model's stray control byte should not lose the answer.
"""

from __future__ import annotations

import re
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"
PROBLEM = "text may not contain NUL (U+0000) or lone surrogates (U+D800-U+DFFF)"


def unstorable(value: Any, path: str = "") -> str | None:
    """The JSON path of the first string (or key) in ``value`` that a store cannot keep;
    None if there is none."""
    if isinstance(value, str):
        return path if _UNSTORABLE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _UNSTORABLE.search(key):
                return where
            found = unstorable(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = unstorable(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def scrub(text: str) -> str:
    """``text`` with every unstorable character replaced by U+FFFD."""
    if text.isascii():  # most model output; a flag of the string, no scan
        return text.replace("\x00", REPLACEMENT) if "\x00" in text else text
    return _UNSTORABLE.sub(REPLACEMENT, text) if _UNSTORABLE.search(text) else text
