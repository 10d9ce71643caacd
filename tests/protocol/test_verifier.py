import pytest

from protocol import events
from protocol.lifecycle import Lifecycle, LifecycleError
from protocol.verifier import events_from_recording, verify_events
from protocol.versions import WireVersion


def good_stream():
    return [
        events.run_started("t", "r"),
        events.step_started("model"),
        events.text_message_start("m1"),
        events.text_message_content("m1", "hi"),
        events.tool_call_start("c1", "f", parent_message_id="m1"),
        events.tool_call_args("c1", '{"a":'),
        events.tool_call_args("c1", "1}"),
        events.text_message_end("m1"),
        events.tool_call_end("c1"),
        events.tool_call_result("m2", "c1", "ok"),
        events.state_snapshot({"x": 1}),
        events.state_delta([{"op": "replace", "path": "/x", "value": 2}]),
        events.step_finished("model"),
        events.run_finished("t", "r", outcome=events.success_outcome(["c1"])),
    ]


def rules(stream, version=WireVersion.V1):
    return [(f.rule, f.message) for f in verify_events(stream, version)]


def test_a_good_stream_has_no_findings():
    assert rules(good_stream()) == []


def test_sequential_runs_in_one_stream_are_legal():
    second = [events.run_started("t", "r2"), events.run_finished("t", "r2")]
    assert rules([*good_stream()[:-1], events.run_finished("t", "r"), *second]) == []


def mutate(index, replacement):
    stream = good_stream()
    stream[index : index + 1] = replacement
    return stream


@pytest.mark.parametrize(
    ("stream", "rule", "fragment"),
    [
        (good_stream()[1:], "order", "first event must be RUN_STARTED"),
        (good_stream()[:-1], "order", "ends without RUN_FINISHED"),
        ([], "order", "empty"),
        (mutate(7, []), "order", "still open: text message m1"),
        (mutate(2, []), "order", "TEXT_MESSAGE_CONTENT for 'm1', which is not open"),
        (mutate(1, [events.step_started("model"), events.step_started("model")]), "order", ""),
        (mutate(1, [events.run_started("t", "r")]), "order", "inside an active run"),
        (mutate(6, [events.tool_call_args("c1", "1")]), "tools", "not valid JSON"),
        (
            mutate(3, [{**events.text_message_content("m1", "x"), "timestamp": 1.5}]),
            "schema",
            "integer",
        ),
        (mutate(2, [{**events.text_message_start("m1"), "role": None}]), "schema", "null"),
        (mutate(3, [{"type": "TEXT_MESSAGE_CONTENT", "messageId": "m1"}]), "schema", "'delta'"),
        (
            mutate(11, [events.state_delta([{"op": "remove", "path": "/nope"}])]),
            "state",
            "does not apply",
        ),
        ([*good_stream(), events.text_message_start("z")], "order", "after RUN_FINISHED"),
        (
            [*good_stream()[:1], events.run_error("boom", "internal"), events.step_started("s")],
            "order",
            "after RUN_ERROR",
        ),
    ],
)
def test_violations_are_found(stream, rule, fragment):
    found = rules(stream)
    assert any(r == rule and fragment in message for r, message in found), found


def test_id_reuse_within_a_run_is_flagged_as_the_validator_does():
    stream = mutate(
        8,
        [
            events.tool_call_end("c1"),
            events.text_message_start("m1"),
            events.text_message_end("m1"),
        ],
    )
    assert ("ids", "id 'm1' reused within the run") in rules(stream)


def test_legacy_gating():
    stream = good_stream()
    assert any(rule == "gating" for rule, _ in rules(stream, WireVersion.LEGACY))
    cancelled = [
        events.run_started("t", "r"),
        events.run_finished("t", "r", outcome=events.cancelled_outcome()),
    ]
    assert rules(cancelled, WireVersion.V1) == []
    assert [r for r, _ in rules(cancelled, WireVersion.LEGACY)] == ["gating"]


def test_unknown_types_are_dropped_by_v1_and_fatal_for_legacy():
    stream = [events.run_started("t", "r"), {"type": "BRAND_NEW"}, events.run_finished("t", "r")]
    assert rules(stream) == []
    assert rules(stream, WireVersion.LEGACY)[0][0] == "gating"


def test_recordings_in_both_formats_and_crlf_refused():
    sse = b"".join(b"data: " + __import__("orjson").dumps(e) + b"\n\n" for e in good_stream())
    jsonl = b"\n".join(__import__("orjson").dumps(e) for e in good_stream())
    assert len(events_from_recording(sse)) == len(events_from_recording(jsonl)) == 14
    with pytest.raises(ValueError, match="CRLF"):
        events_from_recording(sse.replace(b"\n", b"\r\n"))


def test_closing_events_close_everything_innermost_first():
    lifecycle = Lifecycle()
    for event in good_stream()[:6]:
        lifecycle.observe(event)
    closing = lifecycle.closing_events()
    assert [e["type"] for e in closing] == ["TEXT_MESSAGE_END", "TOOL_CALL_END", "STEP_FINISHED"]
    for event in closing:
        lifecycle.observe(event)
    lifecycle.observe(events.run_finished("t", "r"))
    with pytest.raises(LifecycleError):
        lifecycle.observe(events.text_message_start("x"))
