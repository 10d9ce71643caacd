/** The feed's filters, as GET /admin/events takes them: event types, kinds, thread, run,
 * user, and a point in time to replay from. Applied together, kept in the page's URL. */
import { useState, type FormEvent } from "react";

export const FILTER_NAMES = ["types", "kinds", "thread", "run", "user", "since"] as const;
export type Filters = Record<(typeof FILTER_NAMES)[number], string>;

const KINDS = ["run", "ingest", "voice"];
const EVENT_TYPES = [
  "RUN_STARTED",
  "RUN_FINISHED",
  "RUN_ERROR",
  "TEXT_MESSAGE_START",
  "TEXT_MESSAGE_CONTENT",
  "TEXT_MESSAGE_END",
  "TOOL_CALL_START",
  "TOOL_CALL_ARGS",
  "TOOL_CALL_END",
  "TOOL_CALL_RESULT",
  "STEP_STARTED",
  "STEP_FINISHED",
  "STATE_SNAPSHOT",
  "STATE_DELTA",
  "MESSAGES_SNAPSHOT",
  "CUSTOM",
];

export function FeedFilters({ applied, onApply }: { applied: Filters; onApply: (filters: Filters) => void }) {
  const [draft, setDraft] = useState<Filters>(applied);
  const kinds = new Set(draft.kinds.split(",").filter(Boolean));

  function set(name: keyof Filters, value: string) {
    setDraft((current) => ({ ...current, [name]: value }));
  }

  function toggleKind(kind: string) {
    const next = new Set(kinds);
    if (next.has(kind)) next.delete(kind);
    else next.add(kind);
    set("kinds", KINDS.filter((name) => next.has(name)).join(","));
  }

  function submit(event: FormEvent) {
    event.preventDefault();
    onApply(draft);
  }

  function reset() {
    const empty = Object.fromEntries(FILTER_NAMES.map((name) => [name, ""])) as Filters;
    setDraft(empty);
    onApply(empty);
  }

  return (
    <form className="feed-filters" data-testid="feed-filters" onSubmit={submit}>
      <input
        list="event-types"
        placeholder="event types, comma-separated"
        aria-label="Event types"
        data-testid="filter-types"
        value={draft.types}
        onChange={(event) => set("types", event.target.value.replace(/\s+/g, ""))}
      />
      <datalist id="event-types">
        {EVENT_TYPES.map((type) => (
          <option key={type} value={type} />
        ))}
      </datalist>
      <input placeholder="thread" aria-label="Thread" data-testid="filter-thread" value={draft.thread} onChange={(event) => set("thread", event.target.value.trim())} />
      <input placeholder="run" aria-label="Run" data-testid="filter-run" value={draft.run} onChange={(event) => set("run", event.target.value.trim())} />
      <input placeholder="user" aria-label="User" data-testid="filter-user" value={draft.user} onChange={(event) => set("user", event.target.value.trim())} />
      <fieldset className="kinds">
        <legend>kinds</legend>
        {KINDS.map((kind) => (
          <label key={kind}>
            <input type="checkbox" checked={kinds.has(kind)} onChange={() => toggleKind(kind)} data-testid={`filter-kind-${kind}`} />
            {kind}
          </label>
        ))}
      </fieldset>
      <label className="since">
        replay from
        <input
          type="datetime-local"
          step="1"
          aria-label="Replay from"
          data-testid="filter-since"
          value={draft.since ? toLocalInput(draft.since) : ""}
          onChange={(event) => set("since", event.target.value ? String(new Date(event.target.value).getTime()) : "")}
        />
      </label>
      <button type="submit" data-testid="filter-apply">
        Apply
      </button>
      <button type="button" onClick={reset}>
        Reset
      </button>
    </form>
  );
}

/** Epoch ms (the `since` parameter) as a datetime-local input's value. */
function toLocalInput(ms: string): string {
  const date = new Date(Number(ms));
  if (Number.isNaN(date.getTime())) return "";
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60_000);
  return local.toISOString().slice(0, 19);
}
