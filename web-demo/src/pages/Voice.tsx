/**
 * The voice page: talk to the agent in the thread named in the URL. By default the browser
 * streams its microphone over `/voice/ws` (no LiveKit needed); when the server has LiveKit,
 * a toggle joins a LiveKit room instead. Either way the turns are the thread's, so the chat
 * page shows them too.
 */
import { type FormEvent, useEffect, useReducer, useRef, useState } from "react";
import { Link, useParams } from "react-router-dom";
import type { AppConfig } from "../lib/api";
import type { RoomVoice } from "./voice/livekit";
import { SocketVoice } from "./voice/socket";
import { EMPTY_VIEW, type TurnMetrics, voiceReducer } from "./voice/view";
import "./voice/voice.css";

type Mode = "socket" | "livekit";

export default function VoicePage({ config }: { config: AppConfig }) {
  const { threadId = "" } = useParams();
  const [view, dispatch] = useReducer(voiceReducer, EMPTY_VIEW);
  const [mode, setMode] = useState<Mode>("socket");
  const [typed, setTyped] = useState("");
  const voice = useRef<SocketVoice | RoomVoice | null>(null);
  const shown = useRef(threadId); // the thread on screen, to drop a session opened too late

  // Leaving the page (or its thread) ends the session.
  useEffect(() => {
    shown.current = threadId;
    return () => {
      shown.current = "";
      voice.current?.end();
      voice.current = null;
    };
  }, [threadId]);

  const talk = async () => {
    dispatch({ type: "status", status: "connecting" });
    try {
      const opened =
        mode === "livekit"
          ? await (await import("./voice/livekit")).RoomVoice.join(threadId, dispatch) // livekit-client loads only here
          : await SocketVoice.open(threadId, dispatch);
      if (shown.current === threadId) voice.current = opened;
      else opened.end();
    } catch (failure) {
      dispatch({ type: "error", message: failure instanceof Error ? failure.message : String(failure) });
      dispatch({ type: "status", status: "ended" });
    }
  };

  const stop = () => {
    voice.current?.end();
    voice.current = null;
  };

  const send = (event: FormEvent) => {
    event.preventDefault();
    const text = typed.trim();
    if (!text || !voice.current) return;
    voice.current.say(text);
    setTyped("");
  };

  const busy = view.status === "connecting" || view.status === "live";
  return (
    <section className="voice" data-testid="voice-page">
      <header className="voice-header">
        <h1>Voice</h1>
        <Link to={`/chat/${encodeURIComponent(threadId)}`}>Open this thread in chat</Link>
      </header>
      <div className="voice-controls">
        {busy ? (
          <button className="voice-talk live" onClick={stop} data-testid="voice-stop">
            Stop
          </button>
        ) : (
          <button className="voice-talk" onClick={() => void talk()} data-testid="voice-talk">
            Talk
          </button>
        )}
        {config.livekit && (
          <label className="voice-mode">
            <input
              type="checkbox"
              checked={mode === "livekit"}
              disabled={busy}
              onChange={(event) => setMode(event.target.checked ? "livekit" : "socket")}
            />
            Through LiveKit
          </label>
        )}
        <span className="voice-status" data-testid="voice-status">
          {view.status === "live" ? (view.state ?? "connected") : view.status}
        </span>
        <span className="voice-played" title="chunks of the agent's speech played">
          played <span data-testid="voice-played">{view.played}</span>
        </span>
      </div>
      {view.errors.map((message, i) => (
        <div key={i} className="error-banner" role="alert" data-testid="voice-error">
          {message}
        </div>
      ))}
      <ol className="voice-transcript" data-testid="voice-transcript" aria-live="polite">
        {view.lines.map((line) => (
          <li key={line.key} className={`voice-line ${line.role}${line.final ? "" : " interim"}`} data-role={line.role} data-final={line.final}>
            <span className="voice-who">{line.role === "user" ? "You" : "Agent"}</span> {line.text}
          </li>
        ))}
      </ol>
      {view.status === "live" && (
        <form className="voice-type" onSubmit={send}>
          <input value={typed} onChange={(event) => setTyped(event.target.value)} placeholder="Or type a turn…" aria-label="Type a turn" />
          <button type="submit">Send</button>
        </form>
      )}
      {view.metrics.length > 0 && <Metrics turns={view.metrics} />}
    </section>
  );
}

function seconds(value: number | null): string {
  return value === null ? "–" : `${value.toFixed(2)} s`;
}

function Metrics({ turns }: { turns: TurnMetrics[] }) {
  return (
    <table className="voice-metrics" data-testid="voice-metrics">
      <caption>Each turn, from the end of your speech</caption>
      <thead>
        <tr>
          <th>turn</th>
          <th>to first audio</th>
          <th>transcribed</th>
          <th>first token</th>
          <th>speech first byte</th>
          <th>interrupted</th>
        </tr>
      </thead>
      <tbody>
        {turns.map((turn, i) => (
          <tr key={i}>
            <td>{i + 1}</td>
            <td>{seconds(turn.endOfSpeechToAudio)}</td>
            <td>{seconds(turn.stt)}</td>
            <td>{seconds(turn.runtimeFirstToken)}</td>
            <td>{seconds(turn.ttsFirstByte)}</td>
            <td>{turn.interrupted ? "yes" : "no"}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
