"""Run multi-run AG-UI scenarios against a live server, three ways, with one result shape.

A scenario is a list of run specs in the Node harness's plan format (tests/node/README.md).
:func:`run_with_validator` plays it in Python, posting each run through ``ag-ui-validate``'s
live endpoint check and keeping the conversation the way a client does (our Transcript is the
client's fold); :func:`run_with_client` plays the same plan through the real
``@ag-ui/client`` in Node. Both return ``[{"events", "messages", "state", "error"}]``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import orjson
from ag_ui_validate.transport import TransportOptions, validate_endpoint
from ag_ui_validate.types import ValidatorOptions

from protocol.framing import parse_sse_stream
from protocol.transcript import Transcript
from protocol.verifier import verify_events
from protocol.versions import WireVersion
from tests.support import node
from tests.support.waiting import PATIENCE


def new_id(prefix: str = "id") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def user(text: str) -> dict[str, Any]:
    return {"id": new_id("user"), "role": "user", "content": text}


def run_input(thread_id: str, run_id: str, text: str = "Hi") -> dict[str, Any]:
    """A 1.0 client's RunAgentInput with one user message."""
    return {
        "threadId": thread_id,
        "runId": run_id,
        "protocolVersion": "1.0",
        "messages": [user(text)],
    }


async def run_with_client(
    base_url: str,
    client: str,
    runs: list[dict[str, Any]],
    state: Any,
    thread_id: str,
    *,
    run_timeout: float = 60.0,
) -> list[dict[str, Any]]:
    """``run_timeout``: seconds one run may take before the harness calls it hung."""
    plan = {
        "url": f"{base_url}/agui",
        "client": client,
        "threadId": thread_id,
        "state": state if state is not None else {},
        "runs": [{"runId": new_id("run"), **run} for run in runs],
        "timeoutMs": int(run_timeout * 1000),
    }
    report = await node.run_plan(plan, patience=run_timeout * len(runs) + 30)
    # A warning the client logs after the harness has recorded the last run (a late
    # callback) is the report's, not a run's: it counts as the last run's, so that whether a
    # check sees it does not depend on when it came.
    late = [w["message"] for w in report["warnings"]]
    results = []
    for run in report["runs"]:
        results.append(
            {
                "events": run["events"],
                "messages": run["messages"],
                "state": run["state"],
                "error": run["error"],
                "runErrors": run["runErrors"],
                "warnings": [w["message"] for w in run["warnings"]],
                "pendingInterrupts": run["pendingInterrupts"],
            }
        )
    if results:
        results[-1]["warnings"] += late
    return results


async def run_with_validator(
    base_url: str,
    runs: list[dict[str, Any]],
    state: Any,
    thread_id: str,
    *,
    run_timeout: float = 60.0,
) -> list[dict[str, Any]]:
    """Each run validated live by ag-ui-validate (errors fail the test) and by our verifier;
    ``run_timeout`` as for :func:`run_with_client`."""
    transcript = Transcript([], state if state is not None else {})
    pending: list[dict[str, Any]] = []
    previous_run_id = None
    results = []
    for spec in runs:
        for message in spec.get("appendMessages", []):
            transcript.append(message)
        if "answerToolCalls" in spec:
            _answer_tool_calls(transcript, spec["answerToolCalls"])
        run_id = previous_run_id if spec.get("reuseRunId") else new_id("run")
        body = {
            "threadId": thread_id,
            "runId": run_id,
            "protocolVersion": "1.0",
            "messages": transcript.messages,
            "state": transcript.state,
            "tools": spec.get("tools", []),
            "context": spec.get("context", []),
            "forwardedProps": spec.get("forwardedProps", {}),
        }
        if "resumeAll" in spec:
            body["resume"] = [{"interruptId": i["id"], **spec["resumeAll"]} for i in pending]
        captured: list[dict[str, Any]] = []
        result = await validate_endpoint(
            f"{base_url}/agui",
            TransportOptions(
                input=body,
                validator=ValidatorOptions(features=["shared-state"]),
                on_event=lambda raw, _, sink=captured: sink.append(orjson.loads(raw)),
                timeout_ms=int(run_timeout * 1000),
            ),
        )
        errors = [d for d in result.report.diagnostics if d.severity == "error"]
        assert not errors, [f"{d.rule}: {d.message}" for d in errors]
        assert result.status == 200 and result.content_type.startswith("text/event-stream")
        findings = verify_events(captured, WireVersion.V1)
        assert not findings, [str(f) for f in findings]
        for event in captured:
            transcript.apply(event)
        pending = _pending_interrupts(captured)
        previous_run_id = run_id
        results.append(
            {
                "events": captured,
                "messages": [dict(m) for m in transcript.messages],
                "state": transcript.state,
                "error": None,
                "runErrors": [e for e in captured if e["type"] == "RUN_ERROR"],
                "warnings": [f"{d.rule}: {d.message}" for d in result.report.diagnostics],
                "pendingInterrupts": pending,
            }
        )
    return results


def _answer_tool_calls(transcript: Transcript, content: str) -> None:
    answered = {m["toolCallId"] for m in transcript.messages if m["role"] == "tool"}
    for message in list(transcript.messages):
        for call in message.get("toolCalls") or ():
            if call["id"] not in answered:
                transcript.append(
                    {
                        "id": f"answer-{call['id']}",
                        "role": "tool",
                        "toolCallId": call["id"],
                        "content": content,
                    }
                )


def _pending_interrupts(captured: list[dict[str, Any]]) -> list[dict[str, Any]]:
    finished = [e for e in captured if e["type"] == "RUN_FINISHED"]
    if finished and finished[-1].get("outcome", {}).get("type") == "interrupt":
        return finished[-1]["outcome"]["interrupts"]
    return []


async def stream(
    client: httpx.AsyncClient, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, list[dict[str, Any]]]:
    """POST and read the whole SSE response: (status, events)."""
    async with client.stream("POST", url, json=body, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, [response.json()]
        return 200, [event async for event in parse_sse_stream(response.aiter_bytes())]


async def wait_for_text(
    client: httpx.AsyncClient, base_url: str, thread_id: str, text: str
) -> None:
    """Follow the thread's live run (``/agui/connect``) until the answer it has streamed so far
    is ``text``: the server has made events of the model's output up to there (and sent them
    to every client of the run). Fails if the run ends first, or after PATIENCE seconds."""
    body = {"threadId": thread_id, "protocolVersion": "1.0"}
    streamed = ""
    async with (
        asyncio.timeout(PATIENCE),
        client.stream("POST", f"{base_url}/agui/connect", json=body) as response,
    ):
        if response.status_code != 200:
            raise AssertionError(f"{response.status_code}: {(await response.aread()).decode()}")
        async for event in parse_sse_stream(response.aiter_bytes()):
            if event["type"] == "TEXT_MESSAGE_CONTENT":
                streamed += event["delta"]
                if streamed == text:
                    return
    raise AssertionError(f"the run ended having streamed {streamed!r}, not {text!r}")


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]
