"""Voice from a browser with no LiveKit server: the session's audio and transcripts over one
WebSocket (the contract is in docs/voice.md and :mod:`voice.wire`).

The browser plays what it is sent as it arrives; the server keeps the clock of that playback
(audio starts playing when its first frame is sent, and lasts as long as it is), so that a
barge-in knows how much was heard. ``audio.end`` with ``interrupted: true`` tells the
browser to drop what it has queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Protocol

from livekit import rtc
from livekit.agents import io

from protocol.errors import Refusal
from voice.session import TurnMetrics, VoiceListener, VoiceSession
from voice.wire import AudioGate, End, Start, Typed, error_frame, frame, parse_text

FRAME_SECONDS = 0.02  # the input is cut into 20 ms frames, as LiveKit's own inputs are
DRAIN_SECONDS = 5.0  # how long a closing socket waits for its last frames to go out


class Socket(Protocol):
    async def receive(self) -> str | bytes | None:
        """The next frame; None when the client has gone."""

    async def send_text(self, text: str) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class Outbox:
    """Frames for the client, in order, from synchronous callbacks and tasks alike."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str | bytes] = asyncio.Queue()

    def put(self, item: str | bytes) -> None:
        self._queue.put_nowait(item)

    async def pump(self, socket: Socket) -> None:
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, bytes):
                    await socket.send_bytes(item)
                else:
                    await socket.send_text(item)
            finally:
                self._queue.task_done()

    async def drained(self) -> None:
        """Wait (a while) for what is queued to reach the client: an error frame, the
        last events."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_SECONDS):
                await self._queue.join()


class PcmInput(io.AudioInput):
    """The client's PCM, cut into 20 ms frames. It never ends by itself: a finished input
    would make the session wait for a last transcript; the session is closed instead."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__(label="browser-microphone")
        self._rate = sample_rate
        self._frame_bytes = int(sample_rate * FRAME_SECONDS) * 2
        self._frames: asyncio.Queue[rtc.AudioFrame] = asyncio.Queue()
        self._rest = b""

    def push(self, pcm: bytes) -> None:
        data, size = self._rest + pcm, self._frame_bytes
        whole = len(data) - len(data) % size
        for start in range(0, whole, size):
            samples = size // 2
            self._frames.put_nowait(
                rtc.AudioFrame(data[start : start + size], self._rate, 1, samples)
            )
        self._rest = data[whole:]

    async def __anext__(self) -> rtc.AudioFrame:
        return await self._frames.get()


class PcmOutput(io.AudioOutput):
    """The agent's speech to the client, each segment between ``audio.start`` and
    ``audio.end``; played in real time from its first frame, by the server's reckoning."""

    def __init__(self, outbox: Outbox, sample_rate: int) -> None:
        super().__init__(
            label="browser-speaker",
            capabilities=io.AudioOutputCapabilities(pause=False),
            sample_rate=sample_rate,
        )
        self._outbox = outbox
        self._started_at = 0.0
        self._pushed = 0.0  # seconds of audio in this segment
        self._playout: asyncio.Task[None] | None = None

    async def capture_frame(self, frame_: rtc.AudioFrame) -> None:
        await super().capture_frame(frame_)
        if not self._pushed:
            self._started_at = time.monotonic()
            self._outbox.put(frame("audio.start", sampleRate=frame_.sample_rate))
            self.on_playback_started(created_at=time.time())
        self._pushed += frame_.duration
        self._outbox.put(bytes(frame_.data))

    def flush(self) -> None:
        super().flush()
        if self._pushed and self._playout is None:
            self._playout = asyncio.ensure_future(self._play_out())

    def clear_buffer(self) -> None:
        if self._pushed:
            heard = min(time.monotonic() - self._started_at, self._pushed)
            self._finish(heard, interrupted=True)

    async def _play_out(self) -> None:
        await asyncio.sleep(max(0.0, self._started_at + self._pushed - time.monotonic()))
        self._playout = None
        self._finish(self._pushed, interrupted=False)

    def _finish(self, heard: float, interrupted: bool) -> None:
        if self._playout is not None and self._playout is not asyncio.current_task():
            self._playout.cancel()
        self._playout = None
        self._pushed = 0.0
        self._outbox.put(frame("audio.end", interrupted=interrupted))
        self.on_playback_finished(playback_position=heard, interrupted=interrupted)


class TranscriptOutput(io.TextOutput):
    """The agent's words so far, as they are spoken (synchronized with the audio upstream);
    the final one comes from the session."""

    def __init__(self, outbox: Outbox) -> None:
        super().__init__(label="browser-transcript", next_in_chain=None)
        self._outbox = outbox
        self._text = ""

    async def capture_text(self, text: str) -> None:
        self._text += text
        self._outbox.put(frame("transcript", role="assistant", text=self._text, final=False))

    def flush(self) -> None:
        self._text = ""  # the final transcript is the session's: what the thread keeps


class BrowserListener(VoiceListener):
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def agui(self, event: bytes) -> None:
        self.outbox.put(b'{"type":"agui","event":'.decode() + event.decode() + "}")

    def state(self, state: str) -> None:
        self.outbox.put(frame("state", state=state))

    def transcript(self, role: str, text: str, final: bool) -> None:
        self.outbox.put(frame("transcript", role=role, text=text, final=final))

    def turn(self, metrics: TurnMetrics) -> None:
        self.outbox.put(frame("metrics", **metrics.as_json()))

    def error(self, code: str, message: str) -> None:
        self.outbox.put(frame("error", code=code, message=message))  # the socket stays open


async def read_start(socket: Socket) -> Start:
    """The first frame, which must be ``session.start``."""
    first = await socket.receive()
    if first is None:
        raise ConnectionError("the client left before session.start")
    if isinstance(first, bytes):
        raise Refusal("invalid_input", "the first frame must be session.start (JSON text)")
    start = parse_text(first)
    if not isinstance(start, Start):
        raise Refusal("invalid_input", "the first frame must be session.start")
    return start


async def converse(
    socket: Socket,
    session: VoiceSession,
    outbox: Outbox,
    close_code: Callable[[str], int],
) -> None:
    """Run ``session`` on ``socket`` until the client ends it, leaves or breaks the contract
    (an ``error`` frame, then a close code of 4000 + the error's HTTP status)."""
    microphone = PcmInput(session.sample_rate)
    speaker = PcmOutput(outbox, session.sample_rate)
    await session.start(
        audio_input=microphone, audio_output=speaker, text_output=TranscriptOutput(outbox)
    )
    gate = AudioGate(session.sample_rate)
    sender = asyncio.create_task(outbox.pump(socket))
    try:
        while True:
            received = await _next(socket, sender)
            if received is None:
                return  # the client left: nobody to tell
            if isinstance(received, bytes):
                gate.check(received, time.monotonic())
                microphone.push(received)
                continue
            parsed = parse_text(received)
            if isinstance(parsed, End):
                break
            if isinstance(parsed, Start):
                raise Refusal("invalid_input", "the session has started already")
            assert isinstance(parsed, Typed)
            session.say_typed(parsed.text)
        await outbox.drained()
        await socket.close(1000, "session.end")
    except Refusal as refused:
        outbox.put(error_frame(refused))
        await outbox.drained()
        await socket.close(close_code(refused.code), refused.code)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


async def _next(socket: Socket, sender: asyncio.Task[None]) -> str | bytes | None:
    """The next client frame; None if the client left (or can no longer be written to)."""
    receiving = asyncio.ensure_future(socket.receive())
    await asyncio.wait({receiving, sender}, return_when=asyncio.FIRST_COMPLETED)
    if not receiving.done():
        receiving.cancel()
        return None
    return receiving.result()
