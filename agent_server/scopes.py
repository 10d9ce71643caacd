"""What a machine credential may do, named by its scopes.

- ``agents``: start and follow agent runs;
- ``kb:<name>``: search the knowledge base ``<name>``;
- ``kb:<name>:write``: also add and delete its documents.

There is no admin scope: the admin routes are for people, whose role Clerk vouches for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

AGENTS = "agents"
_KB = re.compile(r"kb:[A-Za-z0-9_-]{1,64}(:write)?")


def parse_scopes(items: Iterable[str]) -> tuple[str, ...]:
    """``items`` checked against the grammar, duplicates dropped, in the order given.

    Raises ValueError naming the first bad scope, or when there is none: a credential that
    may do nothing is a mistake, not a feature.
    """
    found: dict[str, None] = {}
    for item in items:
        if item != AGENTS and _KB.fullmatch(item) is None:
            raise ValueError(
                f"invalid scope {item!r}: expected 'agents', 'kb:<name>' or 'kb:<name>:write'"
                " with <name> of 1 to 64 letters, digits, '_' or '-'"
            )
        found[item] = None
    if not found:
        raise ValueError("at least one scope is needed")
    return tuple(found)


def allows(scopes: frozenset[str], need: str) -> bool:
    """Whether ``scopes`` grant ``need`` (a scope); writing to a knowledge base implies
    reading it, nothing else implies anything."""
    if need in scopes:
        return True
    return need.startswith("kb:") and not need.endswith(":write") and f"{need}:write" in scopes
