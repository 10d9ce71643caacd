"""Text to speech with espeak-ng (a Debian package; a subprocess per sentence).

espeak-ng speaks at 22,050 Hz; each sentence is resampled to the session's rate here, with
PyAV, so no LiveKit resampler runs on the way out.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess

from livekit.agents import tts, utils
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions

from voice.speech.pcm import resample

ESPEAK_RATE = 22_050
WAV_HEADER = 44  # espeak-ng writes a canonical RIFF header, then the samples
SPEAK_TIMEOUT = 30.0  # seconds for one sentence


def espeak_binary() -> str:
    found = shutil.which("espeak-ng")
    if found is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng; `make` does)")
    return found


class EspeakTTS(tts.TTS):
    def __init__(self, *, sample_rate: int = 16_000, voice: str = "en-us", speed: int = 175):
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=sample_rate,
            num_channels=1,
        )
        self._binary = espeak_binary()
        self._voice = voice
        self._speed = speed

    @property
    def model(self) -> str:
        return "espeak-ng"

    @property
    def provider(self) -> str:
        return "espeak-ng"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _Sentence(tts=self, input_text=text, conn_options=conn_options)

    async def speak(self, text: str) -> bytes:
        """``text`` as PCM at this TTS's rate.

        espeak-ng is started from a worker thread by ``subprocess`` (vfork: no fork handlers
        run), not by the event loop: uvloop forks, which blocks the loop for the fork of a
        large process and runs OpenBLAS's fork handler, which deadlocks a BLAS call under way
        in another thread (another session's Whisper feature extraction)."""
        command = [self._binary, "-v", self._voice, "-s", str(self._speed), "--stdout"]
        done = await asyncio.to_thread(
            subprocess.run,
            [*command, "--", text],  # the text is never an option
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=SPEAK_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"espeak-ng exited with {done.returncode}")
        return resample(done.stdout[WAV_HEADER:], ESPEAK_RATE, self.sample_rate)


class _Sentence(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        engine: EspeakTTS = self._tts  # type: ignore[assignment]
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=engine.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
        )
        output_emitter.push(await engine.speak(self._input_text))
        output_emitter.flush()
