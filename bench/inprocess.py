"""Citadel's own cost per event, without HTTP: ``python -m bench.inprocess``.

Runs the real run API, runtime and event log with the scripted model in this process and
follows each run as the SSE face does (each batch framed), so the figure is what every
connection pays before uvicorn. Not part of ``python -m bench``: a diagnostic for the layers.
"""

from __future__ import annotations

import time

from agent_server.api.streams import sse_batch
from agent_server.cli import tune_garbage_collector
from agent_server.config import Settings
from agent_server.services import start_services
from bench.client import new_loop
from bench.scripted import ScriptedModel
from protocol.input import parse_run_input

DELTAS = 20_000
REPETITIONS = 5


async def cpu_per_event(script: str) -> float:
    """Best-of-N CPU microseconds per event for one answer of ``DELTAS`` deltas."""
    settings = Settings(llm="embedded", auth="off", store="memory", retrieval="off")
    services = await start_services(settings, ScriptedModel())
    best = float("inf")
    for repetition in range(REPETITIONS):
        body = {
            "threadId": f"{script}-{repetition}",
            "runId": f"{script}-{repetition}",
            "protocolVersion": "1.0",
            "messages": [{"id": "u", "role": "user", "content": f"deltas={DELTAS} {script}"}],
        }
        started = time.process_time()
        stream = await services.runs.start("local", parse_run_input(body))
        count = 0
        async for batch in stream:
            sse_batch(batch)
            count += len(batch.events)
        best = min(best, (time.process_time() - started) / count * 1e6)
    await services.aclose()
    return best


def main() -> None:
    tune_garbage_collector()
    loop = new_loop()
    try:
        for script in ("burst", "tick"):
            cost = loop.run_until_complete(cpu_per_event("" if script == "burst" else "tick"))
            print(f"{script}: {cost:.1f} us of CPU per event (best of {REPETITIONS})")
    finally:
        loop.close()


if __name__ == "__main__":
    main()
