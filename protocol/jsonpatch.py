"""RFC 6902 JSON Patch: compute state deltas and apply them.

``diff`` produces the patch a STATE_DELTA carries; ``apply`` is what the clients do with it
(fast-json-patch with validation), used by the server mirror and the stream verifier.
"""

from __future__ import annotations

from typing import Any

import orjson

Patch = list[dict[str, Any]]


class PatchError(ValueError):
    pass


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def diff(old: Any, new: Any, path: str = "") -> Patch:
    """A patch turning ``old`` into ``new``; small for the common edits (keys, appends)."""
    if type(old) is not type(new):
        return [{"op": "replace", "path": path, "value": new}]
    if isinstance(old, dict):
        ops: Patch = []
        for key in old:
            if key not in new:
                ops.append({"op": "remove", "path": f"{path}/{escape(key)}"})
        for key, value in new.items():
            child = f"{path}/{escape(key)}"
            if key not in old:
                ops.append({"op": "add", "path": child, "value": value})
            else:
                ops.extend(diff(old[key], value, child))
        return ops
    if isinstance(old, list):
        ops = []
        common = min(len(old), len(new))
        for index in range(common):
            ops.extend(diff(old[index], new[index], f"{path}/{index}"))
        # Remove from the end so earlier indexes stay valid.
        for index in range(len(old) - 1, common - 1, -1):
            ops.append({"op": "remove", "path": f"{path}/{index}"})
        for index in range(common, len(new)):
            ops.append({"op": "add", "path": f"{path}/{index}", "value": new[index]})
        return ops
    if old != new:
        return [{"op": "replace", "path": path, "value": new}]
    return []


def apply(document: Any, patch: Patch) -> Any:
    """Apply ``patch`` to a copy of ``document``; the original is never modified."""
    result = orjson.loads(orjson.dumps(document))
    for operation in patch:
        result = _apply_one(result, operation)
    return result


def _split(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [unescape(token) for token in path[1:].split("/")]


def _resolve(document: Any, tokens: list[str]) -> Any:
    node = document
    for token in tokens:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"path segment {token!r} does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False)]
        else:
            raise PatchError(f"cannot descend into a scalar at {token!r}")
    return node


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r}")
    index = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if index > limit:
        raise PatchError(f"array index {index} out of range")
    return index


def _add(document: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _resolve(document, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise PatchError("cannot add to a scalar")
    return document


def _remove(document: Any, tokens: list[str]) -> tuple[Any, Any]:
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _resolve(document, tokens[:-1])
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path segment {last!r} does not exist")
        return document, parent.pop(last)
    if isinstance(parent, list):
        return document, parent.pop(_index(parent, last, allow_end=False))
    raise PatchError("cannot remove from a scalar")


def _apply_one(document: Any, operation: dict[str, Any]) -> Any:
    if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
        raise PatchError(f"malformed operation {operation!r}")
    op = operation["op"]
    tokens = _split(operation["path"])
    if op in ("add", "replace", "test") and "value" not in operation:
        raise PatchError(f"{op} needs a value")
    if op == "add":
        return _add(document, tokens, operation["value"])
    if op == "remove":
        return _remove(document, tokens)[0]
    if op == "replace":
        _resolve(document, tokens)  # must exist
        if not tokens:
            return operation["value"]
        document, _ = _remove(document, tokens)
        return _add(document, tokens, operation["value"])
    if op in ("move", "copy"):
        if "from" not in operation:
            raise PatchError(f"{op} needs from")
        source = _split(operation["from"])
        if op == "move":
            if tokens[: len(source)] == source and len(tokens) > len(source):
                raise PatchError("cannot move a value into itself")
            document, value = _remove(document, source)
        else:
            value = orjson.loads(orjson.dumps(_resolve(document, source)))
        return _add(document, tokens, value)
    if op == "test":
        if _resolve(document, tokens) != operation["value"]:
            raise PatchError(f"test failed at {operation['path']!r}")
        return document
    raise PatchError(f"unknown op {op!r}")
