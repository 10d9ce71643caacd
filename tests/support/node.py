"""Drive the real @ag-ui/client (tests/node) from tests, without blocking the event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
CLIENTS = ("1.0.0", "0.0.59")
HARNESS_TIMEOUT = 120  # seconds for one plan; runs inside have their own timeoutMs


async def _node(
    *args: str, stdin: bytes | None = None, patience: float = HARNESS_TIMEOUT
) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        "node",
        *args,
        cwd=NODE_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
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


async def docs_page(url: str) -> dict[str, Any]:
    """Open ``url`` in Debian's Chromium with everything off 127.0.0.1 refused; the report
    of tests/node/docs_page.mjs."""
    return await _node("docs_page.mjs", url)
