/**
 * Plays the agent's speech: 16-bit mono PCM chunks, scheduled back to back in arrival order
 * on the AudioContext's clock. The server sends speech faster than real time, so chunks
 * queue up ahead; a barge-in drops the queue at once.
 */
const LEAD_SECONDS = 0.03; // a first chunk starts this far ahead, so that it is never cut

export class PcmPlayer {
  private rate = 16000;
  private next = 0; // when the queued audio ends, on the context's clock
  private readonly queued = new Set<AudioBufferSourceNode>();

  /** `onPlayed` is told of each chunk played to its end (not of dropped ones). */
  constructor(
    private readonly context: AudioContext,
    private readonly onPlayed: () => void,
  ) {}

  /** The agent starts speaking, at `sampleRate`. */
  start(sampleRate: number): void {
    this.rate = sampleRate;
  }

  /** Queues one chunk of PCM after the ones before it. */
  play(pcm: ArrayBuffer): void {
    const samples = new Int16Array(pcm, 0, pcm.byteLength >> 1);
    if (samples.length === 0) return;
    const buffer = this.context.createBuffer(1, samples.length, this.rate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 32768;
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    const at = Math.max(this.next, this.context.currentTime + LEAD_SECONDS);
    source.start(at);
    this.next = at + buffer.duration;
    this.queued.add(source);
    source.onended = () => {
      if (this.queued.delete(source)) this.onPlayed();
    };
  }

  /** Drops everything queued or playing (the agent was interrupted). */
  stop(): void {
    const dropped = [...this.queued];
    this.queued.clear();
    for (const source of dropped) source.stop();
    this.next = 0;
  }
}
