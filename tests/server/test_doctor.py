"""``citadel doctor`` as a user runs it: a subprocess with an environment, whose output is a
line per backend with its latency, and a fix under each failed line.

Postgres (local and embedded), Redis and the embedded Qdrant engine and embedder are real. The
chat model and the embedder are Ollama's on OllamaDouble and the reranker is RerankDouble (TEST
DOUBLES: neither server runs here). No Qdrant server runs here either: ``QDRANT_URL`` is only
ever tested down. A backend that is "down" is a URL on a closed port of 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.doubles.ollama import DEFAULT_MODEL, OllamaDouble
from tests.doubles.rerank import rerank_double
from tests.support.database import isolated_database_url
from tests.support.redis import SHARED_DB, redis_url

EMBED_MODEL = "nomic-embed-text:latest"  # 768 dimensions, as OllamaDouble embeds
LINE = re.compile(r"^\[(ok |ERR)\] (.+?) in (\d+\.\d) ms: (.*)$")
EVERY_BACKEND = [
    "configuration",
    "data directory",
    "thread store (postgres)",
    "chat model (ollama)",
    "embedder (ollama)",
    "vector store (embedded)",
    "redis",
    "reranker",
]
# What a user set who is not this test (or a machine's own setup, kept: the model cache).
FOREIGN = ("CITADEL_", "DATABASE_URL", "REDIS_URL", "QDRANT_", "OLLAMA_")
KEPT = ("CITADEL_EMBED_MODEL_PATH",)


@dataclass(frozen=True)
class Line:
    ok: bool
    latency_ms: float
    detail: str
    fix: str | None


@dataclass(frozen=True)
class Report:
    code: int
    lines: dict[str, Line]  # by label, in the order printed
    out: str
    err: str


async def doctor(env: dict[str, str]) -> Report:
    """``citadel doctor`` under ``env`` and nothing else of the test's own configuration."""
    clean = {
        key: value
        for key, value in os.environ.items()
        if key in KEPT or not key.startswith(FOREIGN)
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agent_server.cli",
        "doctor",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**clean, **env},
    )
    async with asyncio.timeout(120):
        stdout, stderr = await process.communicate()
    out = stdout.decode()
    lines: dict[str, Line] = {}
    printed = out.splitlines()
    for number, text in enumerate(printed):
        match = LINE.match(text)
        if match is None:
            continue
        following = printed[number + 1] if number + 1 < len(printed) else ""
        fix = following.removeprefix("      fix: ") if following.startswith("      fix: ") else None
        mark, label, latency, detail = match.groups()
        lines[label] = Line(mark == "ok ", float(latency), detail, fix)
    assert process.returncode is not None
    return Report(process.returncode, lines, out, stderr.decode())


@pytest.fixture
async def every_backend(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """An environment configuring every backend doctor knows, each one up."""
    async with (
        OllamaDouble(models=[DEFAULT_MODEL, EMBED_MODEL]) as ollama,
        rerank_double() as (_, rerank_url),
        isolated_database_url() as database,
    ):
        yield {
            "CITADEL_DATA_DIR": str(tmp_path / "data"),
            "DATABASE_URL": database,
            "CITADEL_LLM": "ollama",
            "CITADEL_LLM_URL": ollama.url,
            "CITADEL_LLM_MODEL": DEFAULT_MODEL,
            "CITADEL_EMBEDDER": "ollama",
            "CITADEL_EMBED_URL": ollama.url,
            "CITADEL_EMBED_MODEL": EMBED_MODEL,
            "REDIS_URL": redis_url(SHARED_DB),
            "CITADEL_RERANK_URL": rerank_url,
        }


async def test_every_backend_up_is_exit_0_and_a_line_each_with_its_latency(every_backend):
    report = await doctor(every_backend)
    assert report.code == 0, report.out + report.err
    assert list(report.lines) == EVERY_BACKEND
    assert all(line.ok and line.fix is None for line in report.lines.values()), report.out
    assert all(line.latency_ms >= 0 for line in report.lines.values())
    details = {label: line.detail for label, line in report.lines.items()}
    assert details["thread store (postgres)"].endswith("0 migrations applied, 4 pending")
    assert details["chat model (ollama)"].startswith(f"ollama model {DEFAULT_MODEL} answers")
    assert details["embedder (ollama)"].startswith(f"ollama model {EMBED_MODEL} embeds")
    assert details["vector store (embedded)"].startswith("embedded Qdrant engine under ")
    assert details["redis"].startswith("Redis ") and f":6379/{SHARED_DB}" in details["redis"]
    assert details["reranker"].endswith("/v1/rerank ranks")


# Each backend down in turn: the setting that points it at a closed port, the line that must
# fail, and the setting its fix must name.
DOWN = {
    "database": ("DATABASE_URL", "thread store (postgres)", "DATABASE_URL"),
    "chat model": ("CITADEL_LLM_URL", "chat model (ollama)", "CITADEL_LLM_URL"),
    "embedder": ("CITADEL_EMBED_URL", "embedder (ollama)", "CITADEL_EMBED_URL"),
    "qdrant server": ("QDRANT_URL", "vector store (Qdrant server)", "QDRANT_URL"),
    "redis": ("REDIS_URL", "redis", "REDIS_URL"),
    "reranker": ("CITADEL_RERANK_URL", "reranker", "CITADEL_RERANK_URL"),
}
CLOSED = {
    "DATABASE_URL": "postgresql://citadel:s3cret@127.0.0.1:{port}/citadel",
    "CITADEL_LLM_URL": "http://127.0.0.1:{port}",
    "CITADEL_EMBED_URL": "http://127.0.0.1:{port}",
    "QDRANT_URL": "http://127.0.0.1:{port}",
    "REDIS_URL": "redis://127.0.0.1:{port}/0",
    "CITADEL_RERANK_URL": "http://127.0.0.1:{port}/v1",
}


@pytest.mark.parametrize("backend", list(DOWN))
async def test_a_backend_down_is_exit_1_its_line_failed_with_its_fix_and_the_rest_checked(
    every_backend, unused_tcp_port, backend
):
    setting, label, named = DOWN[backend]
    env = {**every_backend, setting: CLOSED[setting].format(port=unused_tcp_port)}
    report = await doctor(env)
    assert report.code == 1, report.out
    expected = [
        "vector store (Qdrant server)"
        if name == "vector store (embedded)" and setting == "QDRANT_URL"
        else name
        for name in EVERY_BACKEND
    ]
    assert list(report.lines) == expected  # every other backend still checked
    failed = {name: line for name, line in report.lines.items() if not line.ok}
    assert list(failed) == [label], report.out
    line = failed[label]
    assert f"127.0.0.1:{unused_tcp_port}" in line.detail, line.detail
    assert line.fix is not None and named in line.fix
    assert line.latency_ms < 5000  # a refused connection is not waited on
    assert "s3cret" not in report.out and "Traceback" not in report.err


async def test_a_backend_that_never_answers_fails_within_the_time_limit(every_backend):
    """A server that accepts the connection and says nothing: the check gives up at 5 s."""
    held: list[asyncio.StreamWriter] = []  # kept open, unanswered, until the test ends
    silent = await asyncio.start_server(lambda _, writer: held.append(writer), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        report = await doctor({**every_backend, "CITADEL_RERANK_URL": f"http://127.0.0.1:{port}"})
    finally:
        for writer in held:
            writer.close()
        silent.close()
    assert report.code == 1
    reranker = report.lines["reranker"]
    assert not reranker.ok and reranker.detail == "no answer within 5 s"
    assert 5000 <= reranker.latency_ms < 10000
    assert reranker.fix is not None and "CITADEL_RERANK_URL" in reranker.fix


async def test_embedded_defaults_are_checked_in_process(ollama, tmp_path):
    """No URLs but the chat model's: Postgres, the embedder and the vector engine are the
    embedded ones, in this data directory."""
    data = tmp_path / "data"
    env = {
        "CITADEL_DATA_DIR": str(data),
        "CITADEL_LLM": "ollama",
        "CITADEL_LLM_URL": ollama.url,
        "CITADEL_LLM_MODEL": DEFAULT_MODEL,
    }
    report = await doctor(env)
    assert report.code == 0, report.out + report.err
    assert list(report.lines) == [
        "configuration",
        "data directory",
        "thread store (postgres)",
        "chat model (ollama)",
        "embedder (embedded)",
        "vector store (embedded)",
    ]
    store = report.lines["thread store (postgres)"].detail
    assert store.startswith(f"embedded, under {data}") and "0 migrations applied" in store
    embedder = report.lines["embedder (embedded)"].detail
    assert embedder.startswith("embedded model all-minilm") and "384 dimensions" in embedder
    assert str(data.resolve() / "qdrant") in report.lines["vector store (embedded)"].detail


async def test_an_incomplete_configuration_is_reported_and_its_backends_not_checked(tmp_path):
    report = await doctor(
        {
            "CITADEL_DATA_DIR": str(tmp_path / "data"),
            "CITADEL_LLM": "openai",
            "CITADEL_EMBEDDER": "ollama",
            "CITADEL_RETRIEVAL": "off",
            "CITADEL_STORE": "memory",
        }
    )
    assert report.code == 1 and "Traceback" not in report.err, report.err
    configuration = report.lines["configuration"]
    assert (
        not configuration.ok and "CITADEL_LLM=openai needs CITADEL_LLM_URL" in configuration.detail
    )
    model = report.lines["chat model (openai)"]
    assert not model.ok and model.detail.startswith("not checked: CITADEL_LLM=openai needs")
    assert model.fix is not None and "CITADEL_LLM_URL" in model.fix
    embedder = report.lines["embedder (ollama)"]
    assert not embedder.ok and embedder.fix is not None and "CITADEL_EMBED_URL" in embedder.fix
    assert report.lines["thread store (memory)"].ok
    assert "vector store (embedded)" not in report.lines  # retrieval is off


async def test_an_unreadable_configuration_is_one_failed_line():
    report = await doctor({"CITADEL_PORT": "eighty"})
    assert report.code == 1 and list(report.lines) == ["configuration"]
    line = report.lines["configuration"]
    assert not line.ok and "CITADEL_PORT" in line.detail and line.fix
