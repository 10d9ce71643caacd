import pytest

from protocol import events
from protocol.framing import (
    SSEDecoder,
    encode,
    event_id,
    parse_event_id,
    parse_sse,
    sse_frame,
)


def test_frames_are_lf_only_with_an_id():
    frame = sse_frame(encode(events.text_message_content("m", "a\r\nb")), event_id("r", 7))
    assert b"\r" not in frame.replace(b"\\r", b"")
    assert frame.startswith(b"id: r:7\ndata: {") and frame.endswith(b"}\n\n")


def test_no_nulls_and_integer_timestamps():
    event = events.run_started("t", "r")
    assert b"null" not in encode(event)
    assert isinstance(event["timestamp"], int)


@pytest.mark.parametrize(("value", "expected"), [("r:3", ("r", 3)), ("a:b:12", ("a:b", 12))])
def test_event_ids_round_trip(value, expected):
    assert parse_event_id(value) == expected


@pytest.mark.parametrize("value", ["r", "r:", ":3", "r:x", "r:-1"])
def test_bad_event_ids(value):
    with pytest.raises(ValueError):
        parse_event_id(value)


def test_decoder_handles_frames_split_anywhere():
    body = b"".join(sse_frame(encode({"type": "X", "n": n}), f"r:{n}") for n in range(3))
    body += b": keep-alive\n\n"
    decoder = SSEDecoder()
    messages = [m for i in range(0, len(body), 5) for m in decoder.feed(body[i : i + 5])]
    assert [m.id for m in messages] == ["r:0", "r:1", "r:2"]
    assert parse_sse(body) == messages
