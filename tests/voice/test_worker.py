"""``citadel voice``: what it refuses before starting, and livekit-agents' real AgentServer
running the worker's job entry point. No LiveKit server can run here, so the worker runs
unregistered and a job is simulated (livekit-agents' own fake job: a mock room and no
metadata). The store is the real Postgres; the chat model is the Ollama backend on
OllamaDouble (a TEST DOUBLE: no Ollama server runs here), never asked anything."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import psutil
from livekit.agents import AgentServer

from agent_server.cli import main
from agent_server.config import Settings
from tests.conftest import double_model
from tests.support.waiting import PATIENCE, eventually
from tests.voice.services import services_on_their_loop
from voice.speech.stack import SpeechConfig, speech_stack
from voice.worker import VoiceWorker, agent_server

LIVEKIT = Settings(
    livekit_url="ws://127.0.0.1:7880",
    livekit_api_key="devkey",
    livekit_api_secret="a-secret-of-at-least-32-characters-long",
    voice_agent_name="citadel-test",
)


def test_the_worker_refuses_to_start_without_livekit_and_names_what_is_missing(monkeypatch, capsys):
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "CITADEL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIVEKIT_URL", "ws://127.0.0.1:7880")
    assert main(["voice"]) == 2
    error = capsys.readouterr().err
    assert "LIVEKIT_API_KEY" in error and "LIVEKIT_API_SECRET" in error
    assert "LIVEKIT_URL" not in error


class Refusals(logging.Handler):
    """The worker's refusals, logged on a job's thread, as an event of the test's loop."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.loop = asyncio.get_running_loop()
        self.logged = asyncio.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "refused" in record.getMessage():
            self.messages.append(record.getMessage())
            self.loop.call_soon_threadsafe(self.logged.set)


@contextlib.asynccontextmanager
async def unregistered_worker(ollama) -> AsyncIterator[tuple[AgentServer, VoiceWorker]]:
    """The worker's AgentServer, started without a LiveKit server."""
    model = lambda: double_model(ollama)  # noqa: E731 - made on the services' loop
    async with services_on_their_loop(model, retrieval="off") as (services, home):
        stack = speech_stack(SpeechConfig.from_settings(services.settings))
        worker = VoiceWorker(services, home, stack)
        server = agent_server(LIVEKIT, worker)
        started = asyncio.Event()
        server.on("worker_started", started.set)
        running = asyncio.create_task(server.run(unregistered=True))
        try:
            async with asyncio.timeout(PATIENCE):
                await started.wait()
            yield server, worker
        finally:
            await server.aclose()
            await running


async def test_the_health_server_listens_on_loopback_only_and_names_the_agent(ollama):
    async with unregistered_worker(ollama) as (server, _):
        port = server.worker_info.http_port
        listening = [
            connection.laddr
            for connection in psutil.Process().net_connections(kind="tcp")
            if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
        ]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            health = await client.get("/")
            info = (await client.get("/worker")).json()
    assert [address.ip for address in listening] == ["127.0.0.1"]
    assert health.status_code == 200
    # An agent name: explicit dispatch, the agent joins only the rooms that ask for it.
    assert info["agent_name"] == "citadel-test"


async def test_a_job_without_dispatch_metadata_ends_without_starting_a_session(ollama):
    refusals = Refusals()
    voice_logger = logging.getLogger("citadel.voice")
    voice_logger.addHandler(refusals)
    try:
        async with unregistered_worker(ollama) as (server, worker):
            await server.simulate_job("room-without-metadata", fake_job=True)
            async with asyncio.timeout(PATIENCE):
                await refusals.logged.wait()

            async def ended() -> bool:
                return not server.active_jobs

            await eventually(ended)
            home, bus = worker.home, worker.services.bus
            entries = await home.call(bus.read_feed("0-0", 100, 0))
    finally:
        voice_logger.removeHandler(refusals)
    assert "(invalid_input)" in refusals.messages[0]
    assert [entry for entry in entries if entry.kind == "voice"] == []  # no session.started
