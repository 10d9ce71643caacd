/** One line saying what a feed item or a stored event is about. */
import type { AguiEvent, NoteItem } from "./types";

const LIMIT = 120;

function clip(value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value ?? "");
  return text.length > LIMIT ? `${text.slice(0, LIMIT)}…` : text;
}

export function summarizeEvent(event: AguiEvent): string {
  switch (event.type) {
    case "TEXT_MESSAGE_START":
      return String(event.role ?? "");
    case "TEXT_MESSAGE_CONTENT":
    case "TOOL_CALL_ARGS":
    case "REASONING_MESSAGE_CONTENT":
      return clip(JSON.stringify(event.delta ?? ""));
    case "TEXT_MESSAGE_CHUNK":
    case "TOOL_CALL_CHUNK":
      return clip(event.delta ?? event.toolCallName ?? "");
    case "TOOL_CALL_START":
      return String(event.toolCallName ?? "");
    case "TOOL_CALL_RESULT":
      return clip(event.content);
    case "RUN_ERROR":
      return `${event.code ?? "error"}: ${clip(event.message)}`;
    case "STEP_STARTED":
    case "STEP_FINISHED":
      return String(event.stepName ?? "");
    case "STATE_DELTA":
      return `${Array.isArray(event.delta) ? event.delta.length : 0} change(s)`;
    case "MESSAGES_SNAPSHOT":
      return `${Array.isArray(event.messages) ? event.messages.length : 0} message(s)`;
    case "CUSTOM":
      return `${event.name ?? ""} ${clip(event.value)}`;
    case "RUN_FINISHED": {
      const outcome = event.outcome as { type?: string; interrupts?: unknown[] } | undefined;
      if (!outcome?.type) return "";
      return outcome.interrupts ? `${outcome.type} (${outcome.interrupts.length})` : outcome.type;
    }
    default:
      return "";
  }
}

export function summarizeNote(item: NoteItem): string {
  const note = item.note;
  if (item.kind === "ingest") {
    return `job ${note.status}: ${note.filesDone}/${note.filesTotal} files, ${note.chunksEmbedded} chunks (${note.knowledgeBase})`;
  }
  if (item.kind === "voice") {
    const turn = typeof note.endOfSpeechToAudio === "number" ? ` ${note.endOfSpeechToAudio.toFixed(2)} s` : "";
    const reason = note.reason ? ` (${note.reason})` : "";
    return `${note.event} ${note.transport ?? ""}${turn}${reason}`;
  }
  return clip(note);
}
