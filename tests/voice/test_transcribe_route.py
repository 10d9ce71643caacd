"""POST /api/copilotkit/transcribe, as CopilotKit's mic button calls it (multipart `audio`,
WebM/Opus from MediaRecorder), on a real server with the offline Whisper; and the same clip
through the single endpoint. Errors come in CopilotKit's own shape, which its client reads."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from agent_server.api import copilotkit
from agent_server.config import Settings
from tests.conftest import citadel, double_model
from tests.doubles.ollama import OllamaDouble
from tests.support.voice import spoken, words
from tests.voice.test_transcribe import PAUSE, encoded

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROUTE = "/api/copilotkit/transcribe"
SENTENCE = "Please open the garden handbook."


@pytest.fixture
async def client(ollama: OllamaDouble) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        citadel(double_model(ollama)) as url,
        httpx.AsyncClient(base_url=url, timeout=120) as client,
    ):
        yield client


@pytest.fixture(scope="module")
async def recording() -> bytes:
    return encoded(PAUSE + await spoken(SENTENCE) + PAUSE, "webm", "libopus", 48_000)


async def test_info_offers_the_mic_button_when_speech_to_text_is_installed(client):
    info = (await client.get("/api/copilotkit/info")).json()
    assert info["audioFileTranscriptionEnabled"] is True


async def test_a_webm_recording_is_transcribed(client, recording: bytes):
    files = {"audio": ("recording.webm", recording, "audio/webm;codecs=opus")}
    response = await client.post(ROUTE, files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {"garden", "handbook"} <= set(words(body["text"]))
    assert body["size"] == len(recording)
    assert body["type"] == "audio/webm;codecs=opus"


async def test_the_single_endpoint_transcribes_base64_audio(client, recording: bytes):
    envelope = {
        "method": "transcribe",
        "body": {"audio": base64.b64encode(recording).decode(), "mimeType": "audio/webm"},
    }
    response = await client.post("/api/copilotkit", json=envelope)
    assert response.status_code == 200, response.text
    assert {"garden", "handbook"} <= set(words(response.json()["text"]))


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code"),
    [
        (
            {"files": {"audio": ("recording.webm", b"not audio at all", "audio/webm")}},
            400,
            "invalid_audio_format",
        ),
        ({"files": {"other": ("recording.webm", b"x", "audio/webm")}}, 400, "invalid_request"),
        ({"json": {"audio": "x"}}, 400, "invalid_request"),
    ],
    ids=["not audio", "no audio field", "not multipart"],
)
async def test_a_bad_upload_is_refused_in_copilotkits_error_shape(
    client, request_kwargs, status, code
):
    response = await client.post(ROUTE, **request_kwargs)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == code and body["retryable"] is False and body["message"]


def test_speech_to_text_is_unavailable_without_the_voice_packages(
    monkeypatch: pytest.MonkeyPatch,
):
    assert copilotkit.speech_to_text_available(Settings())
    monkeypatch.setattr(copilotkit.importlib.util, "find_spec", lambda name: None)
    assert not copilotkit.speech_to_text_available(Settings())


async def test_without_speech_to_text_the_mic_is_not_offered_and_uploads_get_503(
    client, monkeypatch: pytest.MonkeyPatch, recording: bytes
):
    monkeypatch.setattr(copilotkit, "speech_to_text_available", lambda settings: False)
    info = (await client.get("/api/copilotkit/info")).json()
    assert info["audioFileTranscriptionEnabled"] is False
    files = {"audio": ("recording.webm", recording, "audio/webm")}
    response = await client.post(ROUTE, files=files)
    assert response.status_code == 503
    assert response.json() == {
        "error": "service_not_configured",
        "message": "speech-to-text is not installed on this server",
        "retryable": True,
    }
