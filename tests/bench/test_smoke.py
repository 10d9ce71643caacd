"""Every benchmark in bench/ runs in its smoke mode (``python -m bench.X --smoke``: tiny sizes,
one repetition, no timing goal evaluated) and completes: exit 0, no failed run, no invalid
stream, no missing figure. A benchmark that breaks (a server setting that refuses its load, a
route that changed, a peer that is gone) fails here, in ``make test``, instead of printing PASS
over figures of nothing.

Each runs as a subprocess, as ``make bench`` runs it, bounded by a timeout. The throughput
smoke includes every peer: pydantic-ai (the ``bench`` extra, which ``make test`` installs),
sse-starlette and the baseline commit's checkout (bench/baseline.py, a git worktree). The
embedder smoke needs the export's build venv with sentence-transformers (``make`` builds it);
the web smoke the built web app, its node_modules and Debian's Chromium (``make test``'s).

Not here: ``bench.answer_quality --smoke`` (a real ``citadel serve`` ingesting docs/, 20-40 s
on two busy cores, over this module's two minutes). Its server, asking and scoring run in
tests/e2e/test_answer_quality.py on the real model, its goal lines in test_verdicts.py.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.database import isolated_database_url
from tests.support.redis import SHARED_DB, SPINE_DB, redis_url

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 240  # seconds for one smoke run; each takes 5-30 s on two cores


def smoke(module: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``python -m module --smoke``; its stdout, once sure it completed."""
    command = [sys.executable, "-m", module, "--smoke", *args]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    output = done.stdout
    why = f"{' '.join(command[1:])} exited {done.returncode}:\n{output}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, why
    # A smoke run evaluates no goal, so any FAIL is a broken benchmark; n/a and nan are
    # figures that are missing.
    for sign in (r"BROKEN", r"INVALID", r"\bFAIL\b", r"\bn/a\b", r"\bnan\b"):
        assert not re.search(sign, output), f"{sign!r} in the output of {module}:\n{output}"
    return output


def test_throughput():
    pytest.importorskip("pydantic_ai", reason="the bench extra (make test installs it)")
    output = smoke("bench.agui_throughput")
    assert "Every server's warm-up stream is valid AG-UI 1.0" in output
    for server in ("citadel", "citadel_baseline", "citadel_sse_starlette", "pydantic_ai", "bare"):
        for scenario in ("burst", "tick"):
            assert f"| {server} | {scenario} |" in output


def test_concurrency():
    output = smoke("bench.concurrency")
    assert "| runs open at once (peak) / failed | 20 / 0 | 20 / 0 |" in output
    assert "| deltas received / sent | 600 / 600 | 600 / 600 |" in output
    assert "| citadel |" in output and "| bare |" in output  # idle memory, both servers


async def test_persistence():
    # The machine's Postgres in a schema of its own: an embedded server per part is slow.
    async with isolated_database_url() as database:
        env = {"BENCH_DATABASE_URL": database}
        output = await asyncio.to_thread(smoke, "bench.persistence", env=env)
    assert ", 0 lost |" in output
    assert "| citadel_postgres | 50 |" in output  # every message of the hydrated thread


def test_chat_completions():
    output = smoke("bench.chat_completions")
    assert "Both warm-up streams are whole OpenAI streams ending with [DONE]." in output


def test_voice():
    pytest.importorskip("livekit.agents", reason="the voice extra (make installs it)")
    output = smoke("bench.voice")
    for route in ("bare livekit-agents AgentSession", "Citadel /voice/ws"):
        assert f"| {route} |" in output and f"| {route} | n/a" not in output
    assert "| 2 | " in output  # two sessions at once, every figure measured


def test_web():
    output = smoke("bench.web")  # the built app (make test builds it) in Debian's Chromium
    for path in ("Chromium, the chat page", "httpx, POST /api/copilotkit/agent/default/run"):
        assert re.search(rf"\| {re.escape(path)}[^\n]*\| 2 \|\n", output), path  # both runs
    for build in ("the app (web-demo/dist)", "bare `<CopilotChat>` page"):
        assert re.search(rf"\| {re.escape(build)}[^|]*\| [1-9]", output), build  # JS loaded
    assert re.search(r"The app over the bare page: \d\.\d{3}x", output)


@pytest.mark.slow
def test_embedders():
    output = smoke("bench.embedders")
    assert "| 32 |" in output  # a batch row with every column, sentence-transformers too


def test_vectors():
    output = smoke("bench.vectors")
    assert "500 points, 384-d" in output and "hybrid p95 ms" in output


@pytest.mark.slow
def test_knowledge():
    output = smoke("bench.knowledge", "--redis-url", redis_url(SHARED_DB))  # keys unique
    assert "| Redis hits (MGET per call) |" in output


@pytest.mark.slow
def test_retrieval_quality():
    output = smoke("bench.retrieval_quality")
    assert "| dense |" in output and "| hybrid |" in output


def test_auth():
    output = smoke("bench.auth")
    assert "| clerk-backend-api verify_token |" in output
    assert "| guard on |" in output and "| guard off |" in output


def test_stalled_admin():
    output = smoke("bench.stalled_admin", "--redis-db", str(SPINE_DB))
    for setup in ("no admin", "an admin reading the feed", "an admin who reads nothing"):
        assert f"| {setup} |" in output


def test_workers():
    output = smoke("bench.workers", "--redis-db", str(SPINE_DB))  # emptied, as the spine tests do
    for setup in ("1 worker, in-process bus", "1 worker, Redis", "2 workers, Redis"):
        assert f"| {setup} | 320 |" in output  # 20 runs x 16 events, every one
