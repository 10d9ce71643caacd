"""Drive the real @ag-ui/client (tests/node) from tests, without blocking the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
CLIENTS = ("1.0.0", "0.0.59")
HARNESS_TIMEOUT = 120  # seconds for one plan; runs inside have their own timeoutMs
STEP_TIMEOUT = 30  # seconds a steered script may take to reach its next step


async def _start(*args: str) -> asyncio.subprocess.Process:
    """``node *args`` in tests/node, every stream a pipe (the report is one line)."""
    return await asyncio.create_subprocess_exec(
        "node",
        *args,
        cwd=NODE_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1 << 26,
    )


async def _node(
    *args: str, stdin: bytes | None = None, patience: float = HARNESS_TIMEOUT
) -> dict[str, Any]:
    process = await _start(*args)
    async with asyncio.timeout(patience):
        stdout, stderr = await process.communicate(stdin)
    if process.returncode != 0:
        raise RuntimeError(f"node harness failed ({process.returncode}): {stderr.decode()}")
    return orjson.loads(stdout)


async def run_plan(plan: dict[str, Any], patience: float = HARNESS_TIMEOUT) -> dict[str, Any]:
    """Run a plan (see tests/node/README.md) with one HttpAgent; returns the report after at
    most ``patience`` seconds."""
    return await _node("run_agent.mjs", "-", stdin=orjson.dumps(plan), patience=patience)


async def replay(client: str, *recordings: Path) -> dict[str, Any]:
    """Feed recorded SSE bodies through the real client pipeline of ``client``."""
    args = ["replay.mjs", "--client", client]
    for recording in recordings:
        args += ["--file", str(recording)]
    return await _node(*args)


async def copilot_runtime(url: str, thread_id: str, text: str) -> dict[str, Any]:
    """One run through CopilotKit's own Node runtime (``CopilotRuntime`` + ``HttpAgent`` at
    ``url``/agui); the report of tests/node/copilot_runtime.mjs."""
    return await _node("copilot_runtime.mjs", url, thread_id, text)


async def docs_page(url: str) -> dict[str, Any]:
    """Open ``url`` in Debian's Chromium with everything off 127.0.0.1 refused; the report
    of tests/node/docs_page.mjs."""
    return await _node("docs_page.mjs", url)


class Steered:
    """A Node script the test steers: it reports JSON lines with a ``"step"`` on stdout and
    takes command lines on stdin (tests/node/resume_run.mjs)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._stderr = asyncio.create_task(process.stderr.read())  # type: ignore[union-attr]

    async def expect(self, step: str, patience: float = STEP_TIMEOUT) -> dict[str, Any]:
        """The next step, which must be ``step``; fails after ``patience`` seconds."""
        async with asyncio.timeout(patience):
            line = await self._process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            await self._process.wait()
            stderr = (await self._stderr).decode()
            raise RuntimeError(
                f"node exited ({self._process.returncode}) before step {step!r}: {stderr}"
            )
        report = orjson.loads(line)
        if report.get("step") != step:
            raise AssertionError(f"expected step {step!r}, got {report}")
        return report

    def send(self, command: str) -> None:
        self._process.stdin.write(command.encode() + b"\n")  # type: ignore[union-attr]

    async def report(self, patience: float = HARNESS_TIMEOUT) -> dict[str, Any]:
        """The script's final report (its ``"report"`` step), once it has exited."""
        report = (await self.expect("report", patience))["report"]
        async with asyncio.timeout(patience):
            await self._process.wait()
        return report


@contextlib.asynccontextmanager
async def steered(*args: str) -> AsyncIterator[Steered]:
    """``node *args`` in tests/node, steered; killed if still running when the block ends."""
    process = await _start(*args)
    session = Steered(process)
    try:
        yield session
    finally:
        if process.returncode is None:
            process.kill()
        async with asyncio.timeout(STEP_TIMEOUT):
            await process.wait()
            await session._stderr
