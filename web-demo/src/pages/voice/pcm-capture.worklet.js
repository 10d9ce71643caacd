/**
 * The microphone as /voice/ws wants it: the AudioContext's input (44.1 or 48 kHz float, any
 * channels) as 16 kHz mono 16-bit PCM, posted to the page in 20 ms frames (transferred, not
 * copied). Each output sample is the mean of the input samples it covers: a box filter, cheap
 * on the audio thread, that keeps speech clear and cuts most of what would alias above 8 kHz.
 *
 * Plain JavaScript: an AudioWorklet module is loaded by URL, outside Vite's TypeScript build.
 */
const TARGET_RATE = 16000;
const FRAME_SAMPLES = TARGET_RATE / 50; // 20 ms

class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.position = 0; // input samples taken toward the next output sample
    this.sum = 0;
    this.count = 0;
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
      this.sum += value / channels.length;
      this.count += 1;
      this.position += 1;
      if (this.position >= this.step) {
        const mean = this.sum / this.count;
        while (this.position >= this.step) {
          this.position -= this.step;
          this.emit(mean);
        }
        this.sum = 0;
        this.count = 0;
      }
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
