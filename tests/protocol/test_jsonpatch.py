import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import jsonpatch
from protocol.jsonpatch import PatchError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values, json_values)
def test_diff_then_apply_reproduces_the_target(old, new):
    assert jsonpatch.apply(old, jsonpatch.diff(old, new)) == new


def test_diff_of_an_append_is_one_add():
    old = {"steps": [{"d": "a"}]}
    new = {"steps": [{"d": "a"}, {"d": "b"}]}
    assert jsonpatch.diff(old, new) == [{"op": "add", "path": "/steps/1", "value": {"d": "b"}}]


def test_keys_with_slash_and_tilde_are_escaped():
    patch = jsonpatch.diff({}, {"a/b": 1, "c~d": 2})
    assert {op["path"] for op in patch} == {"/a~1b", "/c~0d"}
    assert jsonpatch.apply({}, patch) == {"a/b": 1, "c~d": 2}


def test_apply_does_not_modify_the_original():
    original = {"a": [1, 2]}
    jsonpatch.apply(original, [{"op": "add", "path": "/a/-", "value": 3}])
    assert original == {"a": [1, 2]}


@pytest.mark.parametrize(
    ("document", "operation", "expected"),
    [
        ({"a": 1}, {"op": "move", "from": "/a", "path": "/b"}, {"b": 1}),
        ({"a": [1]}, {"op": "copy", "from": "/a", "path": "/b"}, {"a": [1], "b": [1]}),
        ({"a": 1}, {"op": "test", "path": "/a", "value": 1}, {"a": 1}),
        ([1, 2, 3], {"op": "remove", "path": "/1"}, [1, 3]),
        ({"a": 1}, {"op": "replace", "path": "", "value": [0]}, [0]),
    ],
)
def test_all_six_operations(document, operation, expected):
    assert jsonpatch.apply(document, [operation]) == expected


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "remove", "path": "/missing"},
        {"op": "replace", "path": "/missing", "value": 1},
        {"op": "test", "path": "/a", "value": 2},
        {"op": "add", "path": "/a/b/c", "value": 1},
        {"op": "add", "path": "/list/5", "value": 1},
        {"op": "add", "path": "/list/01", "value": 1},
        {"op": "move", "from": "/list", "path": "/list/0"},
        {"op": "frobnicate", "path": "/a"},
        {"op": "add", "path": "no-slash", "value": 1},
        {"path": "/a"},
    ],
)
def test_invalid_operations_raise(operation):
    with pytest.raises(PatchError):
        jsonpatch.apply({"a": 1, "list": [0]}, [operation])
