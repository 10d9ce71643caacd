/**
 * What the voice page shows, as one reducer: the transcript, the agent's state, the turns'
 * metrics, errors and how many chunks of the agent's audio were played. Both ways in (the
 * /voice/ws socket and a LiveKit room) report through the same actions.
 */

export type Role = "user" | "assistant";
export type AgentState = "listening" | "thinking" | "speaking";

export interface Line {
  key: string;
  role: Role;
  text: string;
  final: boolean;
}

/** One answered turn's latencies, in seconds (the socket's `metrics` frame). */
export interface TurnMetrics {
  endOfSpeechToAudio: number | null;
  stt: number | null;
  runtimeFirstToken: number | null;
  ttsFirstByte: number | null;
  interrupted: boolean;
}

export type Status = "idle" | "connecting" | "live" | "ended";

export interface VoiceView {
  status: Status;
  threadId: string | null;
  state: AgentState | null;
  lines: Line[];
  metrics: TurnMetrics[];
  errors: string[];
  played: number;
}

export const EMPTY_VIEW: VoiceView = {
  status: "idle",
  threadId: null,
  state: null,
  lines: [],
  metrics: [],
  errors: [],
  played: 0,
};

export type VoiceAction =
  | { type: "status"; status: Status }
  | { type: "started"; threadId: string }
  | { type: "state"; state: AgentState }
  | { type: "said"; role: Role; text: string; final: boolean }
  | { type: "line"; line: Line }
  | { type: "metrics"; metrics: TurnMetrics }
  | { type: "error"; message: string }
  | { type: "played" };

let keys = 0;

export function voiceReducer(view: VoiceView, action: VoiceAction): VoiceView {
  switch (action.type) {
    case "status":
      // A new session keeps the transcript so far; its errors were about the last one.
      if (action.status === "connecting") return { ...view, status: "connecting", state: null, errors: [] };
      return { ...view, status: action.status, state: action.status === "live" ? view.state : null };
    case "started":
      return { ...view, status: "live", threadId: action.threadId };
    case "state":
      return { ...view, state: action.state };
    case "said":
      return { ...view, lines: said(view.lines, action.role, action.text, action.final) };
    case "line":
      return { ...view, lines: upsert(view.lines, action.line) };
    case "metrics":
      return { ...view, metrics: [...view.metrics, action.metrics] };
    case "error":
      return { ...view, errors: [...view.errors, action.message] };
    case "played":
      return { ...view, played: view.played + 1 };
  }
}

/** The socket's transcripts: the user's come final; the agent's words so far replace its
 * unfinished line until the final one (what the thread keeps) closes it. */
function said(lines: Line[], role: Role, text: string, final: boolean): Line[] {
  if (role === "assistant") {
    let open = lines.length - 1;
    while (open >= 0 && (lines[open].role !== "assistant" || lines[open].final)) open--;
    if (open >= 0) return lines.map((line, i) => (i === open ? { ...line, text, final } : line));
  }
  return [...lines, { key: `line-${++keys}`, role, text, final }];
}

/** A room's transcripts: a segment's line is replaced by each newer version of it. */
function upsert(lines: Line[], line: Line): Line[] {
  const at = lines.findIndex((existing) => existing.key === line.key);
  return at < 0 ? [...lines, line] : lines.map((existing, i) => (i === at ? line : existing));
}
