"""The scope grammar of machine credentials, and what each scope grants."""

from __future__ import annotations

import pytest

from agent_server.scopes import allows, parse_scopes


def test_valid_scopes_are_kept_in_order_without_duplicates():
    given = ["kb:docs", "agents", "kb:team-notes_2:write", "agents", "kb:" + "x" * 64]
    assert parse_scopes(given) == ("kb:docs", "agents", "kb:team-notes_2:write", "kb:" + "x" * 64)


@pytest.mark.parametrize(
    "scope",
    [
        "admin",
        "Agents",
        "agents ",
        "kb:",
        "kb:" + "x" * 65,
        "kb:docs:read",
        "kb:docs:write:write",
        "kb:a.b",
        "kb:a/b",
        "kb:*",
        "kb:docs:WRITE",
        "",
    ],
)
def test_invalid_scopes_are_refused_by_name(scope):
    with pytest.raises(ValueError, match="invalid scope") as refused:
        parse_scopes(["agents", scope])
    assert repr(scope) in str(refused.value)


def test_no_scope_is_refused():
    with pytest.raises(ValueError, match="at least one scope"):
        parse_scopes([])


def test_write_implies_read_and_nothing_else_implies_anything():
    scopes = frozenset(parse_scopes(["kb:docs:write", "kb:wiki"]))
    assert allows(scopes, "kb:docs") and allows(scopes, "kb:docs:write")
    assert allows(scopes, "kb:wiki")
    assert not allows(scopes, "kb:wiki:write")
    assert not allows(scopes, "agents")
    assert not allows(scopes, "kb:other")
    assert not allows(scopes, "kb:doc")  # no prefix matching
    agents = frozenset({"agents"})
    assert allows(agents, "agents") and not allows(agents, "kb:docs")
    assert not allows(frozenset(), "agents")
