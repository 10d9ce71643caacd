/** Voice sessions from the feed's "voice" notes (voice/report.py): each session's start,
 * turns with their latencies, and end. Its own reader of the feed (kinds=voice), replaying
 * the last hours, so the feed's filters and pause do not hide them. */
import { useEffect, useState } from "react";
import { readFeed, type FeedState } from "./feed";
import { clock, itemTime, shortId, type NoteItem } from "./types";

const REPLAY_MS = 6 * 3600_000;

interface Session {
  sessionId: string;
  userId: string;
  threadId: string;
  transport: string;
  started: Date | null;
  turns: number;
  interrupted: number;
  lastTurnSeconds: number | null;
  totalTurnSeconds: number;
  measuredTurns: number;
  ended: string | null; // the reason
}

export function VoiceSessions() {
  const [sessions, setSessions] = useState<Map<string, Session>>(new Map());
  const [state, setState] = useState<FeedState>("connecting");

  useEffect(() => {
    const controller = new AbortController();
    const params = new URLSearchParams({ kinds: "voice", since: String(Date.now() - REPLAY_MS) });
    void readFeed(params, controller.signal, {
      onState: (next) => setState(next),
      onItem: (item) => {
        if (item.kind !== "voice") return;
        setSessions((known) => record(known, item as NoteItem));
      },
    });
    return () => controller.abort();
  }, []);

  const listed = [...sessions.values()].reverse();
  return (
    <div data-testid="voice-sessions" data-state={state}>
      {listed.length === 0 && <p className="muted">No voice sessions in the last hours.</p>}
      {listed.length > 0 && (
        <table className="voice">
          <thead>
            <tr>
              <th>Started</th>
              <th>Session</th>
              <th>User</th>
              <th>Via</th>
              <th>Turns</th>
              <th>Speech → audio (last / mean)</th>
              <th>State</th>
            </tr>
          </thead>
          <tbody>
            {listed.map((session) => (
              <tr
                key={session.sessionId}
                data-testid="voice-session"
                data-session-id={session.sessionId}
                data-thread-id={session.threadId}
                data-turns={session.turns}
                data-ended={session.ended !== null}
              >
                <td>{clock(session.started)}</td>
                <td title={`thread ${session.threadId}`}>{shortId(session.sessionId)}</td>
                <td>{session.userId}</td>
                <td>{session.transport}</td>
                <td>
                  {session.turns}
                  {session.interrupted > 0 && ` (${session.interrupted} interrupted)`}
                </td>
                <td>
                  {seconds(session.lastTurnSeconds)} / {seconds(session.measuredTurns ? session.totalTurnSeconds / session.measuredTurns : null)}
                </td>
                <td>{session.ended === null ? <span className="status status-running">live</span> : `ended (${session.ended})`}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}

function record(known: Map<string, Session>, item: NoteItem): Map<string, Session> {
  const note = item.note;
  const id = String(note.sessionId ?? "");
  if (!id) return known;
  const next = new Map(known);
  const session: Session = next.get(id) ?? {
    sessionId: id,
    userId: item.userId,
    threadId: String(note.threadId ?? ""),
    transport: String(note.transport ?? ""),
    started: itemTime(item.id),
    turns: 0,
    interrupted: 0,
    lastTurnSeconds: null,
    totalTurnSeconds: 0,
    measuredTurns: 0,
    ended: null,
  };
  const updated = { ...session };
  if (note.event === "session.started") updated.started = itemTime(item.id);
  if (note.event === "turn") {
    updated.turns += 1;
    if (note.interrupted === true) updated.interrupted += 1;
    if (typeof note.endOfSpeechToAudio === "number") {
      updated.lastTurnSeconds = note.endOfSpeechToAudio;
      updated.totalTurnSeconds += note.endOfSpeechToAudio;
      updated.measuredTurns += 1;
    }
  }
  if (note.event === "session.ended") updated.ended = String(note.reason ?? "");
  next.set(id, updated);
  return next;
}

function seconds(value: number | null): string {
  return value === null ? "–" : `${value.toFixed(2)} s`;
}
