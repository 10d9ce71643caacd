import pytest

from protocol import events
from protocol.versions import WireVersion, downgrade, wire_version


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        (None, WireVersion.LEGACY),
        ("0.0.59", WireVersion.LEGACY),
        ("1.0", WireVersion.V1),
        ("1.3", WireVersion.V1),
        ("2.0", WireVersion.V1),
    ],
)
def test_wire_version(declared, expected):
    assert wire_version(declared) is expected


def test_unchanged_events_are_the_same_object():
    event = events.text_message_content("m", "hi")
    assert downgrade(event) is event
    interrupt = events.run_finished(
        "t", "r", outcome=events.interrupt_outcome([events.interrupt("i", "tool_call")])
    )
    assert downgrade(interrupt) is interrupt


def test_the_legacy_run_start_declares_no_protocol_version():
    event = events.run_started("t", "r")
    assert "protocolVersion" not in downgrade(event)
    assert event["protocolVersion"] == "1.0"  # the stored event is untouched


def test_cancelled_becomes_a_plain_finish():
    event = events.run_finished("t", "r", outcome=events.cancelled_outcome())
    assert "outcome" not in downgrade(event)
    assert event["outcome"] == {"type": "cancelled"}  # the stored event is untouched


def test_pending_tool_calls_are_dropped_from_success():
    event = events.run_finished("t", "r", outcome=events.success_outcome(["c1"]))
    assert downgrade(event)["outcome"] == {"type": "success"}


def test_array_tool_results_become_strings():
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert downgrade(events.tool_call_result("m", "c", parts))["content"] == "ab"
    image = [{"type": "image", "source": {"type": "url", "value": "u"}}]
    assert '"image"' in downgrade(events.tool_call_result("m", "c", image))["content"]


def test_unknown_event_types_are_dropped():
    assert downgrade({"type": "SOMETHING_NEW", "x": 1}) is None
