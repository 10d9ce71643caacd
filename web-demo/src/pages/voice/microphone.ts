/**
 * The microphone as 16 kHz mono 16-bit PCM in 20 ms frames, made by an AudioWorklet on the
 * audio thread (pcm-capture.worklet.js), so a busy page never drops or delays audio.
 */
/// <reference types="vite/client" />
// The worklet is its own hashed asset, never inlined as a data: URL (which a page's
// Content-Security-Policy may refuse to load as a module).
import WORKLET_URL from "./pcm-capture.worklet.js?url&no-inline";

export interface Microphone {
  /** Stops capturing and releases the device. */
  close(): void;
}

/** Captures the microphone in `context`; each 20 ms frame goes to `onFrame`. Throws when the
 * user or the browser refuses the microphone. */
export async function openMicrophone(
  context: AudioContext,
  onFrame: (pcm: ArrayBuffer) => void,
): Promise<Microphone> {
  const stream = await navigator.mediaDevices.getUserMedia({
    // Echo cancellation keeps the agent's own voice, played back, from interrupting it. No
    // gain control: Whisper needs no level, and a boosted voice clips (words were misheard).
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: false },
  });
  try {
    await context.audioWorklet.addModule(WORKLET_URL);
    const source = context.createMediaStreamSource(stream);
    const capture = new AudioWorkletNode(context, "pcm-capture");
    capture.port.onmessage = (event: MessageEvent<ArrayBuffer>) => onFrame(event.data);
    source.connect(capture);
    // Connected to the output (it writes only silence) so that the graph keeps pulling it.
    capture.connect(context.destination);
    return {
      close() {
        capture.port.onmessage = null;
        source.disconnect();
        capture.disconnect();
        for (const track of stream.getTracks()) track.stop();
      },
    };
  } catch (failure) {
    for (const track of stream.getTracks()) track.stop();
    throw failure;
  }
}
