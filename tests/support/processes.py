"""``citadel serve`` in a child process on loopback, for tests across processes."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from bench.servers import free_port
from tests.doubles.ollama import DEFAULT_MODEL


def clean_env(**values: str) -> dict[str, str]:
    """This environment without CITADEL_* settings (they would leak into the server), plus
    ``values``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CITADEL_")}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    return env | values


@asynccontextmanager
async def citadel_process(
    env: dict[str, str], stderr: bytearray | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """A worker, serving once ``/health`` answers; terminated (or already dead) after. With
    ``stderr``, all it writes there is added to it, by the time the block has ended."""
    port = free_port()
    pipe = None if stderr is None else asyncio.subprocess.PIPE
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent_server.cli", "serve", "--port", str(port), env=env, stderr=pipe
    )
    collected = None if stderr is None else asyncio.create_task(_collect(process, stderr))
    url = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(60), httpx.AsyncClient() as client:
            while True:
                try:
                    if (await client.get(f"{url}/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        yield process, url
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)
        if collected is not None:
            await asyncio.wait_for(collected, 30)


async def _collect(process: asyncio.subprocess.Process, into: bytearray) -> None:
    """Read the pipe as it fills (a full pipe would stall the process) until it closes."""
    assert process.stderr is not None
    while chunk := await process.stderr.read(65536):
        into += chunk


@asynccontextmanager
async def two_workers(
    data_dir: Path, model_url: str, database: str, redis_url: str, **settings: str
) -> AsyncIterator[tuple[str, str]]:
    """Workers A and B on one database and one Redis, the Ollama backend at ``model_url``;
    yields their base URLs."""
    common = {
        "DATABASE_URL": database,
        "REDIS_URL": redis_url,
        "CITADEL_LLM": "ollama",
        "CITADEL_LLM_URL": model_url,
        "CITADEL_LLM_MODEL": DEFAULT_MODEL,
        "CITADEL_RETRIEVAL": "off",
        **settings,
    }
    env_a = clean_env(**common, CITADEL_DATA_DIR=str(data_dir / "a"))
    env_b = clean_env(**common, CITADEL_DATA_DIR=str(data_dir / "b"))
    async with citadel_process(env_a) as (_, a), citadel_process(env_b) as (_, b):
        yield a, b
