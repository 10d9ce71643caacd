"""SpeechDouble: a TEST DOUBLE of an OpenAI-compatible speech server.

No OpenAI-compatible speech server (OpenAI, speaches, Kokoro-FastAPI, LocalAI…) can be installed
on our machines, so tests of the remote speech path (``stt_url``, ``tts_url``) talk to this
small Starlette app on 127.0.0.1 instead. It serves the two endpoints livekit-plugins-openai
1.8.9 calls, in the shapes that plugin sends (read from its ``stt.py`` and ``tts.py``), and it
runs real speech models, so what it answers means something:

``POST /v1/audio/transcriptions``
    multipart/form-data: ``file`` (the plugin sends ``file.wav``, ``audio/wav``: one
    utterance as 16-bit mono WAV at the session's input rate), ``model``, and optionally
    ``language``, ``response_format`` (the plugin asks ``verbose_json`` for ``whisper-1``,
    ``json`` for other models), ``prompt``, ``temperature``. The WAV is read with the
    standard library and resampled to 16 kHz with PyAV (never LiveKit's resampler, whose
    output varies), then transcribed by the real Whisper tiny.en of
    :mod:`voice.speech.whisper`. Answers ``{"text": ...}`` (``json``), OpenAI's verbose shape
    (``verbose_json``: ``text``, ``language``, ``duration``, ``segments``) or plain text
    (``text``).
``POST /v1/audio/speech``
    JSON ``{model, voice, input, response_format, speed, stream_format}``. For ``pcm`` (what
    Citadel asks) it answers raw 16-bit little-endian mono PCM at 24 kHz (``audio/pcm``, in
    100 ms chunks), as OpenAI does, made with espeak-ng (``EspeakTTS(sample_rate=24000)`` of
    :mod:`voice.speech.espeak`). ``stream_format`` (``sse`` unless the model is ``tts-1`` or
    ``tts-1-hd``) is recorded and ignored, as most compatible servers ignore it (the plugin
    then reads the body by its ``Content-Type``). Other formats are a 400.

Every answered request is kept, in order, in :attr:`SpeechDouble.transcriptions` or
:attr:`SpeechDouble.speeches` as a :class:`Heard` or :class:`Spoken` (model, voice, input or
transcript, the ``Authorization`` header…), so tests can assert that the configured model,
voice and key reached the server. The server checks no key; :attr:`SpeechDouble.status` set
to an error status makes every request fail with it, in OpenAI's error shape (their paths
are kept in :attr:`SpeechDouble.failed`)::

    async with speech_double() as (speech, base_url):  # base_url ends in /v1
        settings = {"stt_url": base_url, "tts_url": base_url, "speech_api_key": "sk-test"}
        ...
        assert speech.transcriptions[0].authorization == "Bearer sk-test"

**No opt-in test runs against a real speech server.**
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.servers import serve

SPEECH_RATE = 24_000  # OpenAI's pcm: 24 kHz, 16-bit, mono
CHUNK_BYTES = SPEECH_RATE // 10 * 2  # speech is streamed in 100 ms chunks


@dataclass(frozen=True, slots=True)
class Heard:
    """One ``/v1/audio/transcriptions`` request, and what the double answered."""

    model: str
    language: str | None
    response_format: str
    filename: str
    content_type: str
    sample_rate: int
    seconds: float
    authorization: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Spoken:
    """One ``/v1/audio/speech`` request, and how much audio the double answered."""

    model: str
    voice: str
    input: str
    response_format: str
    stream_format: str | None
    speed: float | None
    authorization: str | None
    seconds: float


class SpeechDouble:
    """A TEST DOUBLE of an OpenAI-compatible speech server; see the module docstring."""

    def __init__(self, *, threads: int = 2) -> None:
        self.transcriptions: list[Heard] = []
        self.speeches: list[Spoken] = []
        self.status = 200
        self.failed: list[str] = []  # the paths of requests answered with ``status``
        self._threads = threads
        self._changed = asyncio.Condition()
        self.app = Starlette(
            routes=[
                Route("/v1/audio/transcriptions", self._transcribe, methods=["POST"]),
                Route("/v1/audio/speech", self._speak, methods=["POST"]),
            ]
        )

    async def _transcribe(self, request: Request) -> Response:
        if self.status != 200:
            return self._fail(request)
        form = await request.form()
        upload = form.get("file")
        model = form.get("model")
        if not isinstance(upload, UploadFile) or not isinstance(model, str):
            return _error(400, "file and model are required")
        try:
            rate, pcm = _read_wav(await upload.read())
        except (wave.Error, EOFError, ValueError) as bad:
            return _error(400, f"file: not 16-bit mono WAV ({bad})")
        text = await asyncio.to_thread(self._whisper, pcm, rate)
        response_format = str(form.get("response_format") or "json")
        language = form.get("language")
        await self._record(
            self.transcriptions,
            Heard(
                model=model,
                language=language if isinstance(language, str) else None,
                response_format=response_format,
                filename=upload.filename or "",
                content_type=upload.content_type or "",
                sample_rate=rate,
                seconds=len(pcm) / 2 / rate,
                authorization=request.headers.get("authorization"),
                text=text,
            ),
        )
        headers = _request_id()
        if response_format == "text":
            return PlainTextResponse(text, headers=headers)
        if response_format == "verbose_json":
            seconds = len(pcm) / 2 / rate
            verbose = {"task": "transcribe", "language": "english", "duration": seconds}
            return JSONResponse({**verbose, "text": text, "segments": []}, headers=headers)
        return JSONResponse({"text": text}, headers=headers)

    async def _speak(self, request: Request) -> Response:
        if self.status != 200:
            return self._fail(request)
        body = await request.json()
        text, response_format = body.get("input"), body.get("response_format", "mp3")
        if not isinstance(text, str) or not text.strip():
            return _error(400, "input: a non-empty string is required")
        if response_format != "pcm":
            return _error(400, f"response_format {response_format!r}: this double makes pcm")
        from voice.speech.espeak import EspeakTTS

        pcm = await EspeakTTS(sample_rate=SPEECH_RATE).speak(text)
        await self._record(
            self.speeches,
            Spoken(
                model=body.get("model", ""),
                voice=body.get("voice", ""),
                input=text,
                response_format=response_format,
                stream_format=body.get("stream_format"),
                speed=body.get("speed"),
                authorization=request.headers.get("authorization"),
                seconds=len(pcm) / 2 / SPEECH_RATE,
            ),
        )
        chunks = (pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm), CHUNK_BYTES))
        return StreamingResponse(_aiter(chunks), media_type="audio/pcm", headers=_request_id())

    def _whisper(self, pcm: bytes, rate: int) -> str:
        from voice.speech.pcm import resample
        from voice.speech.whisper import WHISPER_RATE, WhisperSTT

        # the model is loaded once per process (shared with an offline Citadel in the test)
        return WhisperSTT(threads=self._threads).transcribe(resample(pcm, rate, WHISPER_RATE))

    def _fail(self, request: Request) -> Response:
        self.failed.append(request.url.path)
        return _error(self.status, "scripted failure")

    async def _record(self, requests: list, request: Heard | Spoken) -> None:
        async with self._changed:
            requests.append(request)
            self._changed.notify_all()


def _read_wav(data: bytes) -> tuple[int, bytes]:
    """The rate and samples of a 16-bit mono WAV file."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError(f"{wav.getsampwidth() * 8}-bit, {wav.getnchannels()} channels")
        return wav.getframerate(), wav.readframes(wav.getnframes())


async def _aiter(chunks):
    for chunk in chunks:
        yield chunk


def _request_id() -> dict[str, str]:
    """OpenAI names every response; the plugin logs a warning when a server does not."""
    return {"x-request-id": f"req_{uuid.uuid4().hex}"}


def _error(status: int, message: str) -> JSONResponse:
    """OpenAI's error body."""
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    return JSONResponse({"error": error}, status_code=status, headers=_request_id())


@contextlib.asynccontextmanager
async def speech_double() -> AsyncIterator[tuple[SpeechDouble, str]]:
    """The double on a free port of 127.0.0.1, and its base URL (``…/v1``)."""
    double = SpeechDouble()
    async with serve(double.app) as url:
        yield double, f"{url}/v1"
