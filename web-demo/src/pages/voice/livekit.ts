/**
 * Voice through a LiveKit room (docs/voice.md, "LiveKit rooms"): `POST /voice/token` gives a
 * room with the voice agent dispatched into it; the microphone is published, the agent's
 * audio track is played, and the transcripts come as `lk.transcription` text streams (sent
 * under the identity of whoever was transcribed). The agent's state is its participant
 * attribute `lk.agent.state`.
 */
import {
  type Participant,
  type RemoteTrack,
  Room,
  RoomEvent,
  Track,
  type TextStreamReader,
} from "livekit-client";
import { api } from "../../lib/api";
import type { AgentState, VoiceAction } from "./view";

interface VoiceGrant {
  serverUrl: string;
  participantToken: string;
  roomName: string;
  threadId: string;
}

const STATES: readonly string[] = ["listening", "thinking", "speaking"];

export class RoomVoice {
  private readonly players = new Set<HTMLMediaElement>();

  private constructor(
    private readonly room: Room,
    private readonly dispatch: (action: VoiceAction) => void,
  ) {}

  /** Joins a room in `threadId` with the microphone on. Call it from a click (audio). */
  static async join(threadId: string, dispatch: (action: VoiceAction) => void): Promise<RoomVoice> {
    const grant = await api<VoiceGrant>("/voice/token", {
      method: "POST",
      body: JSON.stringify({ threadId }),
    });
    const room = new Room();
    const voice = new RoomVoice(room, dispatch);
    room.on(RoomEvent.TrackSubscribed, (track) => voice.play(track));
    room.on(RoomEvent.TrackUnsubscribed, (track) => voice.silence(track));
    room.on(RoomEvent.ParticipantAttributesChanged, (_, participant) => voice.stateOf(participant));
    room.on(RoomEvent.Disconnected, () => voice.left());
    room.registerTextStreamHandler("lk.transcription", (reader, sender) =>
      void voice.transcript(reader, sender.identity).catch(() => undefined),
    );
    try {
      await room.connect(grant.serverUrl, grant.participantToken);
      await room.startAudio();
      await room.localParticipant.setMicrophoneEnabled(true);
    } catch (failure) {
      await room.disconnect();
      throw failure;
    }
    dispatch({ type: "started", threadId: grant.threadId });
    return voice;
  }

  /** A typed turn: the agent reads `lk.chat`. */
  say(text: string): void {
    void this.room.localParticipant.sendText(text, { topic: "lk.chat" });
  }

  end(): void {
    void this.room.disconnect();
  }

  private play(track: RemoteTrack): void {
    if (track.kind !== Track.Kind.Audio) return;
    const element = track.attach();
    element.hidden = true;
    document.body.appendChild(element);
    this.players.add(element);
  }

  private silence(track: RemoteTrack): void {
    for (const element of track.detach()) {
      element.remove();
      this.players.delete(element);
    }
  }

  private stateOf(participant: Participant): void {
    const state = participant.attributes["lk.agent.state"];
    if (state && STATES.includes(state)) this.dispatch({ type: "state", state: state as AgentState });
  }

  /** One transcription segment: the user's come whole (a stream per version), the agent's
   * word by word as it speaks (one stream, final when it ends). */
  private async transcript(reader: TextStreamReader, identity: string): Promise<void> {
    const role = identity === this.room.localParticipant.identity ? "user" : "assistant";
    const attributes = reader.info.attributes ?? {};
    const key = `segment-${attributes["lk.segment_id"] ?? reader.info.id}`;
    const final = attributes["lk.transcription_final"] === "true";
    let text = "";
    for await (const chunk of reader) {
      text += chunk;
      this.dispatch({ type: "line", line: { key, role, text, final: false } });
    }
    this.dispatch({ type: "line", line: { key, role, text, final: final || role === "assistant" } });
  }

  private left(): void {
    for (const element of this.players) element.remove();
    this.players.clear();
    this.room.unregisterTextStreamHandler("lk.transcription");
    this.dispatch({ type: "status", status: "ended" });
  }
}
