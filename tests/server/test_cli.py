"""The ``citadel`` command: chat with a running server, ingest, verify a recording (doctor:
test_doctor.py)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import orjson
import yaml

from protocol import events
from protocol.framing import encode, sse_frame
from tests.conftest import citadel, double_model
from tests.doubles.ollama import ScriptedReply, text_reply, tool_call_reply
from tests.support.agui import new_id
from tests.support.database import isolated_database_url, table_rows

CITADEL = [sys.executable, "-m", "agent_server.cli"]


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *CITADEL,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    async with asyncio.timeout(60):
        stdout, stderr = await process.communicate()
    return process.returncode, stdout.decode(), stderr.decode()


async def test_chat_streams_the_answer_and_shows_tool_calls(ollama):
    ollama.enqueue(
        ScriptedReply(tool_call_reply([("calculate", {"expression": "17 * 23"})])),
        ScriptedReply(text_reply("17 times 23 is 391.")),
    )
    async with citadel(double_model(ollama)) as url:
        code, out, err = await run_cli("chat", "What is 17 * 23?", "--url", url)
    assert code == 0, err
    assert out == "17 times 23 is 391.\n"
    assert "[calling calculate]" in err and '"result":391' in err


async def test_chat_reports_errors_and_a_missing_server(ollama, unused_tcp_port):
    ollama.enqueue(ScriptedReply([{"error": "model exploded"}]))
    async with citadel(double_model(ollama)) as url:
        code, _, err = await run_cli("chat", "hi", "--url", url)
    assert code == 1 and "model_error" in err and "model exploded" in err
    code, _, err = await run_cli("chat", "hi", "--url", f"http://127.0.0.1:{unused_tcp_port}")
    assert code == 1 and "no Citadel server" in err and "make run" in err


async def test_verify_judges_recordings(ollama, tmp_path: Path):
    async with citadel(double_model(ollama)) as url, httpx.AsyncClient() as client:
        body = {
            "threadId": new_id("t"),
            "runId": new_id("r"),
            "protocolVersion": "1.0",
            "messages": [{"id": new_id("m"), "role": "user", "content": "hi"}],
        }
        recorded = (await client.post(f"{url}/agui", json=body)).content
    good = tmp_path / "good.sse"
    good.write_bytes(recorded)
    code, out, _ = await run_cli("verify", str(good))
    assert code == 0 and "0 problem(s)" in out

    cancelled = [
        events.run_started("t", "r"),
        events.run_finished("t", "r", outcome=events.cancelled_outcome()),
    ]
    legacy = tmp_path / "cancelled.jsonl"
    legacy.write_bytes(b"\n".join(orjson.dumps(e) for e in cancelled))
    assert (await run_cli("verify", str(legacy)))[0] == 0
    code, out, _ = await run_cli("verify", "--legacy", str(legacy))
    assert code == 1 and "cancelled outcome is fatal on 0.0.59" in out

    broken = tmp_path / "broken.sse"
    broken.write_bytes(b"".join(sse_frame(encode(e)) for e in cancelled[:1]))
    code, out, _ = await run_cli("verify", str(broken))
    assert code == 1 and "ends without RUN_FINISHED" in out


async def test_ingest_adds_skips_reports_and_prunes(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.md").write_text("# Alpha\n\nThe alpha release shipped in May.")
    (folder / "b.md").write_text("# Beta\n\nThe beta test runs all summer.")
    async with isolated_database_url() as database:
        env = {"DATABASE_URL": database, "CITADEL_DATA_DIR": str(tmp_path / "data")}
        code, _, first = await run_cli("ingest", str(folder), "--kb", "notes", env=env)
        _, _, again = await run_cli("ingest", str(folder), "--kb", "notes", env=env)
        (folder / "b.md").unlink()
        (folder / "c.pdf").write_bytes(b"not a pdf")
        failed, _, pruned = await run_cli(
            "ingest", str(folder), "--kb", "notes", "--prune", env=env
        )
        rows = await table_rows(database)
    assert code == 0, first
    assert "2 files" in first and "2 added" in first and "0 failed" in first
    assert "2 unchanged" in again and "0 chunks embedded" in again
    assert failed == 1
    assert f"{folder / 'c.pdf'}: corrupt:" in pruned and "1 removed" in pruned
    assert [row[3] for row in rows["kb_documents"]] == [str(folder / "a.md")]


async def test_ingest_refuses_missing_paths(tmp_path):
    code, _, err = await run_cli("ingest", str(tmp_path / "nowhere"))
    assert code == 1 and "no such file or folder" in err


async def test_config_show_prints_the_effective_configuration_with_secrets_masked(tmp_path):
    config = tmp_path / "citadel.yaml"
    config.write_text(
        "CITADEL_RATE_RUNS: 5/min\n"
        "port: 9000\n"
        "DATABASE_URL: postgresql://citadel:db-s3cret@db.internal:5432/citadel\n"
        "CITADEL_LLM_URL: https://proxy:proxy-s3cret@llm.internal/v1?api_key=query-s3cret&x=1\n"
    )
    env = {
        "CITADEL_CONFIG": str(config),
        "CITADEL_PORT": "9100",  # the environment wins over the file
        "CITADEL_LLM_API_KEY": "sk-key-s3cret",
        "REDIS_URL": "redis://:redis-s3cret@cache.internal:6379/2",
    }
    code, out, err = await run_cli("config", "show", env=env)
    assert code == 0, err
    assert "s3cret" not in out
    shown = yaml.safe_load(out)
    assert shown["CITADEL_RATE_RUNS"] == "5/min" and shown["CITADEL_PORT"] == 9100
    assert shown["DATABASE_URL"] == "postgresql://citadel:***@db.internal:5432/citadel"
    assert shown["REDIS_URL"] == "redis://:***@cache.internal:6379/2"
    assert shown["CITADEL_LLM_URL"] == "https://proxy:***@llm.internal/v1?api_key=***&x=1"
    assert shown["CITADEL_LLM_API_KEY"] == "***"
    assert shown["CITADEL_EMBED_API_KEY"] is None  # unset secrets stay visibly unset
    assert out.startswith(
        f"# The effective configuration: the environment, over CITADEL_CONFIG={config}"
    )


async def test_config_show_names_every_problem_of_the_file(tmp_path):
    config = tmp_path / "citadel.yaml"
    config.write_text("CITADEL_RATE_RUN: 5/min\nport: lots\n")
    code, out, err = await run_cli("config", "show", env={"CITADEL_CONFIG": str(config)})
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "configuration error: CITADEL_PORT: Input should be a valid integer, unable to parse "
        "string as an integer",
        "configuration error: CITADEL_RATE_RUN: unknown setting (did you mean CITADEL_RATE_RUNS?)",
    ]
