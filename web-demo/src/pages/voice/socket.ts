/**
 * Voice over `GET /voice/ws` (docs/voice.md): the microphone goes up as 16 kHz PCM frames,
 * the agent's speech comes down as PCM and is played, every text frame becomes a view
 * action. Barge-in needs nothing here: the server hears the user over the agent and says
 * `audio.end` with `interrupted`, and the queued playback is dropped.
 */
import { socketUrl } from "../../lib/api";
import { openMicrophone, type Microphone } from "./microphone";
import { PcmPlayer } from "./player";
import type { AgentState, VoiceAction } from "./view";

export const SAMPLE_RATE = 16000;

type ServerFrame =
  | { type: "session.started"; threadId: string; sessionId: string }
  | { type: "state"; state: AgentState }
  | { type: "transcript"; role: "user" | "assistant"; text: string; final: boolean }
  | { type: "audio.start"; sampleRate: number }
  | { type: "audio.end"; interrupted: boolean }
  | {
      type: "metrics";
      endOfSpeechToAudio: number | null;
      stt: number | null;
      runtimeFirstToken: number | null;
      ttsFirstByte: number | null;
      interrupted: boolean;
    }
  | { type: "error"; code: string; message: string }
  | { type: "agui"; event: unknown };

export class SocketVoice {
  private started = false;
  private refused = false; // an error frame came that the server closes the socket after

  private constructor(
    private readonly socket: WebSocket,
    private readonly context: AudioContext,
    private readonly microphone: Microphone,
    private readonly player: PcmPlayer,
    private readonly dispatch: (action: VoiceAction) => void,
  ) {}

  /** Asks for the microphone, then opens a session in `threadId`. Call it from a click: the
   * AudioContext is made there, so the browser lets it play. */
  static async open(threadId: string, dispatch: (action: VoiceAction) => void): Promise<SocketVoice> {
    const context = new AudioContext();
    let microphone: Microphone | null = null;
    try {
      await context.resume();
      // The microphone first: a refusal opens no session. Its frames wait for the socket.
      let forward = (_: ArrayBuffer) => {};
      microphone = await openMicrophone(context, (pcm) => forward(pcm));
      const socket = new WebSocket(await socketUrl("/voice/ws"));
      socket.binaryType = "arraybuffer";
      const player = new PcmPlayer(context, () => dispatch({ type: "played" }));
      const voice = new SocketVoice(socket, context, microphone, player, dispatch);
      forward = (pcm) => voice.send(pcm);
      socket.onopen = () =>
        socket.send(JSON.stringify({ type: "session.start", threadId, sampleRate: SAMPLE_RATE }));
      socket.onmessage = (event: MessageEvent<string | ArrayBuffer>) => voice.receive(event.data);
      socket.onclose = (event) => voice.closed(event.code, event.reason);
      return voice;
    } catch (failure) {
      microphone?.close();
      void context.close();
      throw failure;
    }
  }

  /** A typed turn, answered in speech. */
  say(text: string): void {
    if (this.started) this.socket.send(JSON.stringify({ type: "text", text }));
  }

  /** Ends the session; the server closes the socket. */
  end(): void {
    this.microphone.close();
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify({ type: "session.end" }));
    else this.socket.close();
  }

  private send(pcm: ArrayBuffer): void {
    // Audio only after session.start has been answered; silence too: it ends the turns.
    if (this.started && this.socket.readyState === WebSocket.OPEN) this.socket.send(pcm);
  }

  private receive(data: string | ArrayBuffer): void {
    if (typeof data !== "string") {
      this.player.play(data);
      return;
    }
    const frame = JSON.parse(data) as ServerFrame;
    switch (frame.type) {
      case "session.started":
        this.started = true;
        this.dispatch({ type: "started", threadId: frame.threadId });
        break;
      case "state":
        this.dispatch({ type: "state", state: frame.state });
        break;
      case "transcript":
        this.dispatch({ type: "said", role: frame.role, text: frame.text, final: frame.final });
        break;
      case "audio.start":
        this.player.start(frame.sampleRate);
        break;
      case "audio.end":
        if (frame.interrupted) this.player.stop();
        break;
      case "metrics": {
        const { type: _, ...metrics } = frame;
        this.dispatch({ type: "metrics", metrics });
        break;
      }
      case "error":
        // A remote speech server's failure loses one turn; any other error ends the session.
        this.refused ||= frame.code !== "stt_unavailable" && frame.code !== "tts_unavailable";
        this.dispatch({ type: "error", message: `${frame.code}: ${frame.message}` });
        break;
    }
  }

  private closed(code: number, reason: string): void {
    this.started = false;
    this.microphone.close();
    this.player.stop();
    void this.context.close();
    // 1000 is session.end answered; a refusal was shown with its error frame.
    if (code !== 1000 && !this.refused) {
      this.dispatch({ type: "error", message: `The voice connection closed (${code}${reason ? `: ${reason}` : ""}).` });
    }
    this.dispatch({ type: "status", status: "ended" });
  }
}
