/** One run's stored events in order (GET /admin/runs/{id}?thread=…), with its outcome. */
import { api } from "../../lib/api";
import { useApi } from "../../lib/useApi";
import { duration } from "./Runs";
import { summarizeEvent } from "./summary";
import { type RunRef, type RunWithEvents } from "./types";

export function RunTimeline({ run, version }: { run: RunRef; version: number }) {
  const path = `/admin/runs/${encodeURIComponent(run.runId)}?thread=${encodeURIComponent(run.threadId)}`;
  const { data: detail, failure, update, fail } = useApi<RunWithEvents>(
    path,
    version,
    (shown) => shown.status === "running",
  );

  async function more() {
    if (!detail?.nextAfterSeq) return;
    try {
      const page = await api<RunWithEvents>(`${path}&afterSeq=${detail.nextAfterSeq}`);
      update((known) => ({ ...page, events: [...known.events, ...page.events] }));
    } catch (error) {
      fail(error);
    }
  }

  return (
    <div className="timeline" data-testid="run-timeline" data-run-id={run.runId}>
      <div className="timeline-head">
        <code title={`thread ${run.threadId}`}>{run.runId}</code>
        {detail && (
          <>
            <span className={`status status-${detail.status}`} data-testid="timeline-status">
              {detail.status}
            </span>
            <span>{duration(detail.durationMs)}</span>
            <span>worker {detail.workerId ?? "?"}</span>
          </>
        )}
      </div>
      {failure && (
        <p className="alert" role="alert" data-testid="timeline-error">
          {failure}
        </p>
      )}
      {detail?.errorCode && (
        <p className="alert" data-testid="timeline-run-error">
          <strong>{detail.errorCode}</strong> {detail.errorMessage}
        </p>
      )}
      {!detail && !failure && <p>Loading…</p>}
      {detail && (
        <ol className="events">
          {detail.events.map(({ seq, event }) => (
            <li key={seq} data-testid="timeline-event" data-type={event.type} className={event.type === "RUN_ERROR" ? "entry-error" : undefined}>
              <span className="seq">#{seq}</span>
              <span className="type">{event.type}</span>
              <span className="summary">{summarizeEvent(event)}</span>
            </li>
          ))}
        </ol>
      )}
      {detail?.nextAfterSeq && <button onClick={() => void more()}>More events</button>}
    </div>
  );
}
