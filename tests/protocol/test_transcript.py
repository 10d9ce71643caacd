from protocol import events
from protocol.transcript import Transcript


def test_events_fold_into_the_messages_the_client_builds():
    transcript = Transcript([{"id": "u1", "role": "user", "content": "hi"}])
    for event in [
        events.reasoning_message_start("r1"),
        events.reasoning_message_content("r1", "hmm"),
        events.text_message_start("m1"),
        events.text_message_content("m1", "Let me "),
        events.text_message_content("m1", "check."),
        events.tool_call_start("c1", "calc", parent_message_id="m1"),
        events.tool_call_args("c1", '{"x":1}'),
        events.tool_call_start("c2", "other"),
        events.tool_call_start("c3", "third", parent_message_id="c2"),
        events.tool_call_result("t1", "c1", "2"),
        events.state_snapshot({"a": 1}),
        events.state_delta([{"op": "add", "path": "/b", "value": 2}]),
    ]:
        transcript.apply(event)
    roles = [(m["id"], m["role"]) for m in transcript.messages]
    assert roles == [
        ("u1", "user"),
        ("r1", "reasoning"),
        ("m1", "assistant"),
        ("c2", "assistant"),
        ("t1", "tool"),
    ]
    assistant = transcript.get("m1")
    assert assistant["content"] == "Let me check."
    assert assistant["toolCalls"][0]["function"] == {"name": "calc", "arguments": '{"x":1}'}
    assert [c["id"] for c in transcript.get("c2")["toolCalls"]] == ["c2", "c3"]
    assert transcript.state == {"a": 1, "b": 2}


def test_a_parent_that_is_not_an_assistant_falls_back_to_the_call_id():
    transcript = Transcript([{"id": "u1", "role": "user", "content": "hi"}])
    transcript.apply(events.tool_call_start("c1", "f", parent_message_id="u1"))
    assert transcript.messages[-1]["id"] == "c1"


def test_messages_snapshot_updates_in_place_and_appends():
    transcript = Transcript([{"id": "a", "role": "user", "content": "old"}])
    transcript.apply(
        events.messages_snapshot(
            [
                {"id": "a", "role": "user", "content": "new"},
                {"id": "b", "role": "user", "content": "x"},
            ]
        )
    )
    assert [m["content"] for m in transcript.messages] == ["new", "x"]
