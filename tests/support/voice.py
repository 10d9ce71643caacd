"""A client of ``GET /voice/ws`` that behaves like a browser: a microphone that streams 20 ms
PCM frames in real time (silence between utterances, as a real one does), and a reader that
keeps every server frame. Speech is made in the test run with espeak-ng at 16 kHz (no
LiveKit resampler: livekit.md §5), and compared by keywords and word error rate."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import websockets

RATE = 16_000
FRAME_BYTES = RATE // 50 * 2  # 20 ms


async def spoken(text: str) -> bytes:
    """``text`` spoken by espeak-ng as 16 kHz PCM (made once per text)."""
    from voice.speech.espeak import EspeakTTS

    if text not in _SPOKEN:
        _SPOKEN[text] = await EspeakTTS(sample_rate=RATE).speak(text)
    return _SPOKEN[text]


_SPOKEN: dict[str, bytes] = {}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, heard: str) -> float:
    """Word-level edit distance over the reference's length."""
    ref, hyp = words(reference), words(heard)
    row = list(range(len(hyp) + 1))
    for i, expected in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, got in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (expected != got))
    return row[-1] / max(1, len(ref))


@dataclass
class VoiceClient:
    socket: Any  # websockets' ClientConnection
    frames: list[dict[str, Any]] = field(default_factory=list)  # text frames, in order
    audio: list[bytes] = field(default_factory=list)  # binary frames, in order
    closed: tuple[int, str] | None = None
    _queued: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    _news: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def say(self, pcm: bytes) -> None:
        """Speak ``pcm`` into the microphone after what is queued (then silence again)."""
        await self._queued.put(pcm)

    async def send(self, **message: Any) -> None:
        await self.socket.send(orjson.dumps(message).decode())

    async def until(self, done: Callable[[VoiceClient], bool], within: float = 60) -> None:
        async with asyncio.timeout(within), self._news:
            await self._news.wait_for(lambda: done(self) or self.closed is not None)
        if not done(self):
            raise AssertionError(f"the socket closed first: {self.closed}; {self.frames[-5:]}")

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [frame for frame in self.frames if frame["type"] == kind]

    def agui(self) -> list[dict[str, Any]]:
        return [frame["event"] for frame in self.of("agui")]

    def heard(self) -> list[str]:
        """The user's final transcripts."""
        return [f["text"] for f in self.of("transcript") if f["role"] == "user" and f["final"]]

    def answers(self) -> list[str]:
        """The agent's final (spoken) transcripts."""
        return [f["text"] for f in self.of("transcript") if f["role"] == "assistant" and f["final"]]

    async def _microphone(self) -> None:
        """20 ms frames on the wall clock: queued speech, else silence."""
        silence = bytes(FRAME_BYTES)
        pending = b""
        start, sent = time.monotonic(), 0
        while True:
            if not pending and not self._queued.empty():
                pending = self._queued.get_nowait()
            chunk, pending = (
                (pending[:FRAME_BYTES], pending[FRAME_BYTES:]) if pending else (silence, b"")
            )
            chunk = chunk.ljust(FRAME_BYTES, b"\0")
            await self.socket.send(chunk)
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * 0.02 - time.monotonic()))

    async def _read(self) -> None:
        try:
            async for message in self.socket:
                async with self._news:
                    if isinstance(message, bytes):
                        self.audio.append(message)
                    else:
                        self.frames.append(orjson.loads(message))
                    self._news.notify_all()
        except websockets.ConnectionClosed:
            pass
        async with self._news:
            self.closed = (self.socket.close_code, self.socket.close_reason)
            self._news.notify_all()


@contextlib.asynccontextmanager
async def voice_session(
    base_url: str,
    *,
    thread_id: str | None = None,
    microphone: bool = True,
    query: dict[str, str] | None = None,
    start: dict[str, Any] | None = None,
) -> AsyncIterator[VoiceClient]:
    """A started session (``session.started`` received) unless ``start`` replaces the first
    frame; the microphone streams from then on. ``query``: e.g. a browser's ``token``."""
    url = base_url.replace("http://", "ws://") + "/voice/ws"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    async with websockets.connect(url, max_size=None) as socket:
        client = VoiceClient(socket)
        reader = asyncio.create_task(client._read())
        first = start or {"type": "session.start", "sampleRate": RATE}
        if thread_id is not None:
            first["threadId"] = thread_id
        await client.send(**first)
        tasks = [reader]
        try:
            if start is None:
                await client.until(lambda c: bool(c.of("session.started")), 30)
                if microphone:
                    tasks.append(asyncio.create_task(client._microphone()))
            yield client
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                    await task


def answered(turns: int) -> Callable[[VoiceClient], bool]:
    """Done when ``turns`` answers have ended, their final transcripts in (the two frames
    come in either order)."""
    return lambda client: len(client.of("audio.end")) == len(client.answers()) == turns
