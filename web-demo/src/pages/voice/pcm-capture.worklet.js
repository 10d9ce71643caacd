/**
 * The microphone as /voice/ws wants it: the AudioContext's input (44.1 or 48 kHz float, any
 * channels) as 16 kHz mono 16-bit PCM, posted to the page in 20 ms frames (transferred, not
 * copied). A windowed-sinc low-pass below 8 kHz, then linear interpolation at 16 kHz: plain
 * averaging of 2 or 3 samples (44.1 kHz) jitters enough to change what Whisper hears.
 *
 * Plain JavaScript: an AudioWorklet module is loaded by URL, outside Vite's TypeScript build.
 */
const TARGET_RATE = 16000;
const FRAME_SAMPLES = TARGET_RATE / 50; // 20 ms
const TAPS = 31;
const CUTOFF = 7000; // Hz, under the 8 kHz that 16 kHz can hold

/** A Blackman-windowed sinc low-pass at `rate`, normalized to unit gain. */
function lowPass(rate) {
  const fc = CUTOFF / rate;
  const taps = new Float32Array(TAPS);
  let sum = 0;
  for (let i = 0; i < TAPS; i++) {
    const k = i - (TAPS - 1) / 2;
    const sinc = k === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * k) / (Math.PI * k);
    const w = i / (TAPS - 1);
    taps[i] = sinc * (0.42 - 0.5 * Math.cos(2 * Math.PI * w) + 0.08 * Math.cos(4 * Math.PI * w));
    sum += taps[i];
  }
  return taps.map((tap) => tap / sum);
}

class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.taps = lowPass(sampleRate);
    this.history = new Float32Array(TAPS); // the last inputs, a ring
    this.at = 0; // where the next input goes in the ring
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.next = 0; // the next output's position, in input samples after the previous one
    this.previous = 0; // the previous filtered input
    this.frame = new Int16Array(FRAME_SAMPLES);
    this.filled = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const length = channels[0].length;
    for (let i = 0; i < length; i++) {
      let value = 0;
      for (const channel of channels) value += channel[i];
      this.history[this.at] = value / channels.length;
      this.at = (this.at + 1) % TAPS;
      let filtered = 0;
      for (let k = 0; k < TAPS; k++) filtered += this.taps[k] * this.history[(this.at + k) % TAPS];
      // Outputs between the previous filtered input (at 0) and this one (at 1).
      while (this.next <= 1) {
        this.emit(this.previous + (filtered - this.previous) * this.next);
        this.next += this.step;
      }
      this.next -= 1;
      this.previous = filtered;
    }
    return true;
  }

  emit(sample) {
    const clipped = Math.max(-1, Math.min(1, sample));
    this.frame[this.filled++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    if (this.filled === FRAME_SAMPLES) {
      this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
      this.frame = new Int16Array(FRAME_SAMPLES);
      this.filled = 0;
    }
  }
}

registerProcessor("pcm-capture", PcmCapture);
