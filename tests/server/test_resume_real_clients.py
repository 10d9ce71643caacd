"""A live disconnect and ``Last-Event-ID`` resume, through each real ``@ag-ui/client``, each
speaking its own protocol version.

The connection is a real TCP connection through a proxy the test cuts mid-answer; the model
(the Ollama test double) pauses where the test says, so what the client has, what the run
makes while the client is away, and what it makes after the resume are each decided by the
test, not by timing. The resume itself is tests/node/resume_run.mjs: neither client resumes
on its own, so it sits under the client, in the ``fetch`` its HttpAgent is given, and the
client's own parser, verifier and message assembly run over the whole spliced stream.
"""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest

from protocol.framing import parse_sse
from tests.conftest import citadel, double_model
from tests.doubles.ollama import ScriptedReply, text_reply
from tests.support import node
from tests.support.agui import new_id, user, wait_for_text
from tests.support.proxy import TcpProxy

ANSWER = " ".join(f"word{i:02d}" for i in range(30))
PIECES = 30  # content lines of the model's reply
CUT_AT = 10  # the client has lines [0, CUT_AT) when the connection is cut
RESUME_AT = 20  # lines [CUT_AT, RESUME_AT) are made while it is away, the rest after it resumed


def _text(frames: list[dict]) -> str:
    events = [orjson.loads(frame["data"]) for frame in frames]
    return "".join(e["delta"] for e in events if e["type"] == "TEXT_MESSAGE_CONTENT")


def _seq(event_id: str) -> int:
    return int(event_id.rsplit(":", 1)[1])


@pytest.mark.node
@pytest.mark.parametrize(
    ("client", "declared"),
    [("1.0.0", "1.0"), ("0.0.59", None)],
    ids=["client-1.0.0-protocol-1.0", "client-0.0.59-no-protocol-version"],
)
async def test_a_real_client_cut_mid_answer_resumes_after_its_last_event_id_in_its_own_version(
    ollama, tmp_path, client, declared
):
    lines = text_reply(ANSWER, chunks=PIECES)
    pieces = [line["message"]["content"] for line in lines[:PIECES]]
    away, resumed = asyncio.Event(), asyncio.Event()
    ollama.enqueue(ScriptedReply(lines, holds={CUT_AT: away, RESUME_AT: resumed}))
    thread_id, run_id = new_id("thread"), new_id("run")
    async with (
        citadel(double_model(ollama), disconnect_grace=60) as url,
        TcpProxy("127.0.0.1", httpx.URL(url).port) as proxy,
        httpx.AsyncClient(timeout=30) as http,
    ):
        proxied = f"http://127.0.0.1:{proxy.port}"
        plan = {
            "url": f"{proxied}/agui",
            "connectUrl": f"{proxied}/agui/connect",
            "client": client,
            "threadId": thread_id,
            "timeoutMs": 60_000,
            "readyWhenText": "".join(pieces[:CUT_AT]),
            "runs": [{"runId": run_id, "appendMessages": [user("Count to thirty.")]}],
        }
        (tmp_path / "plan.json").write_bytes(orjson.dumps(plan))
        async with node.steered("resume_run.mjs", str(tmp_path / "plan.json")) as harness:
            ready = await harness.expect("ready")  # the client has the first CUT_AT pieces
            proxy.cut()  # both sockets of the connection are dropped
            proxy.restore()  # new connections are let through again
            cut = await harness.expect("cut")
            away.set()  # the run goes on without the client...
            await wait_for_text(http, url, thread_id, "".join(pieces[:RESUME_AT]))
            harness.send("resume")
            answered = await harness.expect("resumed")
            resumed.set()  # ...and goes on live once the client is back
            report = await harness.report()
        # Everything the server has of the run, for this client's version.
        version = {"protocolVersion": declared} if declared else {}
        whole = await http.post(
            f"{url}/agui/connect",
            json={"threadId": thread_id, **version},
            headers={"Last-Event-ID": f"{run_id}:0"},
        )

    [run] = report["runs"]
    before, after = report["wire"]
    # The cut came after the first CUT_AT pieces, and the resume asked for what followed the
    # last event the client had, in the version the client speaks.
    assert ready["text"] == "".join(pieces[:CUT_AT])
    assert before["end"] == "cut" and after["end"] == "complete"
    assert cut["lastEventId"] == ready["lastEventId"] == before["frames"][-1]["id"]
    assert answered["status"] == 200
    assert answered["contentType"].startswith("text/event-stream")
    assert after["request"]["headers"]["Last-Event-ID"] == cut["lastEventId"]
    assert after["request"]["body"] == {"threadId": thread_id, **version}
    # No gap, no duplicate: the resumed stream starts right after the last id received, and
    # the two pieces are exactly the run as the server has it for this version.
    received = before["frames"] + after["frames"]
    assert _seq(after["frames"][0]["id"]) == _seq(cut["lastEventId"]) + 1
    assert [(f["id"], f["data"]) for f in received] == [
        (m.id, m.data) for m in parse_sse(whole.content)
    ]
    assert [_seq(f["id"]) for f in received] == list(range(1, len(received) + 1))
    # What the client missed while away came first, then what was made after it came back.
    assert _text(before["frames"]) == "".join(pieces[:CUT_AT])
    assert _text(after["frames"]) == "".join(pieces[CUT_AT:])
    # The client's verifier took the spliced stream as one run, and assembled the whole answer.
    assert run["ok"], run["error"]
    assert run["runErrors"] == [] and run["warnings"] == []
    assert run["events"][0]["type"] == "RUN_STARTED"
    assert run["events"][-1]["type"] == "RUN_FINISHED"
    assert [(m["role"], m["content"]) for m in run["messages"]] == [
        ("user", "Count to thirty."),
        ("assistant", ANSWER),
    ]
    # Each client spoke, and was answered in, its own version: 1.0.0 declares "1.0" and gets
    # a stream declaring it; 0.0.59 declares nothing and gets a stream declaring nothing.
    assert before["request"]["body"].get("protocolVersion") == declared
    run_started = orjson.loads(before["frames"][0]["data"])
    assert run_started["type"] == "RUN_STARTED"
    assert run_started.get("protocolVersion") == declared
