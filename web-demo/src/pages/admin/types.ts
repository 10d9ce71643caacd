/** The admin routes' shapes (agent_server/api/admin.py, admin_events.py, health.py, and the
 * notes of knowledge/ingest.py and voice/report.py), as the server spells them. */

export interface AguiEvent {
  type: string;
  [field: string]: unknown;
}

/** The first item of every connection: where the reader starts. */
export interface ConnectedItem {
  id: string;
  kind: "connected";
  worker: string;
}

export interface RunItem {
  id: string;
  kind: "run";
  worker: string;
  threadId: string;
  runId: string;
  userId: string;
  seq: number;
  event: AguiEvent;
}

/** The reader skipped ahead: what it missed is after `skippedAfter`, up to `id`. */
export interface ResyncItem {
  id: string;
  kind: "resync";
  reason: string;
  skippedAfter: string;
}

/** A note of no run: an ingestion job's progress ("ingest"), a voice session ("voice"). */
export interface NoteItem {
  id: string;
  kind: string;
  worker: string;
  userId: string;
  note: Record<string, unknown>;
}

export type FeedItem = RunItem | ResyncItem | NoteItem;

export interface Run {
  threadId: string;
  runId: string;
  userId: string;
  status: "running" | "succeeded" | "interrupted" | "cancelled" | "failed";
  outcome: string | null;
  errorCode: string | null;
  errorMessage: string | null;
  inputTokens: number | null;
  outputTokens: number | null;
  usage: Record<string, unknown>[] | null;
  protocolVersion: string | null;
  workerId: string | null;
  startedAt: string;
  firstEventAt: string | null;
  finishedAt: string | null;
  durationMs: number | null;
  lastSeq: number;
}

export interface RunWithEvents extends Run {
  events: { seq: number; event: AguiEvent }[];
  nextAfterSeq?: number;
}

export interface RunRef {
  threadId: string;
  runId: string;
}

export function isRun(item: FeedItem): item is RunItem {
  return item.kind === "run";
}

export function isResync(item: FeedItem): item is ResyncItem {
  return item.kind === "resync";
}

/** When a feed item was appended: its id starts with the epoch milliseconds. */
export function itemTime(id: string): Date | null {
  const ms = Number(id.split("-")[0]);
  return Number.isFinite(ms) && ms > 0 ? new Date(ms) : null;
}

export function clock(date: Date | null): string {
  if (!date) return "";
  const time = date.toLocaleTimeString([], { hour12: false });
  return `${time}.${String(date.getMilliseconds()).padStart(3, "0")}`;
}

export function shortId(id: string): string {
  return id.length > 12 ? `${id.slice(0, 8)}…` : id;
}
