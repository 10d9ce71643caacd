/** Every user's runs (GET /admin/runs), newest first: status, errors, duration, tokens.
 * Reloaded when the feed says a run started or ended, and while any shown run is running. */
import { useState } from "react";
import { api } from "../../lib/api";
import { useApi } from "../../lib/useApi";
import { shortId, type Run, type RunRef } from "./types";

const STATUSES = ["", "running", "succeeded", "failed", "interrupted", "cancelled"];

interface RunsPage {
  runs: Run[];
  nextBefore?: string;
}

export function Runs({
  version,
  selected,
  onSelect,
}: {
  version: number;
  selected: RunRef | null;
  onSelect: (run: RunRef) => void;
}) {
  const [status, setStatus] = useState("");
  const { data: page, failure, reload, update, fail } = useApi<RunsPage>(
    `/admin/runs?${query(status)}`,
    version,
    (shown) => shown.runs.some((run) => run.status === "running"),
  );
  const runs = page?.runs ?? null;

  async function more() {
    if (!page?.nextBefore) return;
    try {
      const older = await api<RunsPage>(`/admin/runs?${query(status, page.nextBefore)}`);
      update((known) => ({ runs: [...known.runs, ...older.runs], nextBefore: older.nextBefore }));
    } catch (error) {
      fail(error);
    }
  }

  return (
    <>
      <div className="panel-tools">
        <label>
          status
          <select aria-label="Run status" data-testid="runs-status-filter" value={status} onChange={(event) => setStatus(event.target.value)}>
            {STATUSES.map((name) => (
              <option key={name} value={name}>
                {name || "all"}
              </option>
            ))}
          </select>
        </label>
        <button onClick={reload}>Refresh</button>
      </div>
      {failure && (
        <p className="alert" role="alert" data-testid="runs-error">
          {failure}
        </p>
      )}
      {runs?.length === 0 && <p data-testid="runs-empty">No runs.</p>}
      {runs && runs.length > 0 && (
        <table className="runs" data-testid="runs">
          <thead>
            <tr>
              <th>Started</th>
              <th>Status</th>
              <th>Run</th>
              <th>User</th>
              <th>Duration</th>
              <th>Tokens in/out</th>
              <th>Error</th>
            </tr>
          </thead>
          <tbody>
            {runs.map((run) => {
              const isSelected = selected?.runId === run.runId && selected.threadId === run.threadId;
              return (
                <tr
                  key={`${run.threadId}/${run.runId}`}
                  className={isSelected ? "selected" : undefined}
                  data-testid="run-row"
                  data-run-id={run.runId}
                  data-thread-id={run.threadId}
                  data-status={run.status}
                  tabIndex={0}
                  aria-selected={isSelected}
                  onClick={() => onSelect({ threadId: run.threadId, runId: run.runId })}
                  onKeyDown={(event) => event.key === "Enter" && onSelect({ threadId: run.threadId, runId: run.runId })}
                >
                  <td>{new Date(run.startedAt).toLocaleTimeString([], { hour12: false })}</td>
                  <td>
                    <span className={`status status-${run.status}`} data-testid="run-status">
                      {run.status}
                    </span>
                  </td>
                  <td title={`run ${run.runId} on thread ${run.threadId}`}>{shortId(run.runId)}</td>
                  <td>{run.userId}</td>
                  <td data-testid="run-duration">{duration(run.durationMs)}</td>
                  <td data-testid="run-tokens">{tokens(run)}</td>
                  <td className="error-cell" data-testid="run-error">
                    {run.errorCode && (
                      <span title={run.errorMessage ?? ""}>
                        <strong>{run.errorCode}</strong> {run.errorMessage}
                      </span>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {page?.nextBefore && <button onClick={() => void more()}>Older runs</button>}
    </>
  );
}

function query(status: string, before?: string): URLSearchParams {
  const params = new URLSearchParams({ limit: "50" });
  if (status) params.set("status", status);
  if (before) params.set("before", before);
  return params;
}

export function duration(ms: number | null): string {
  if (ms === null) return "";
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function tokens(run: Run): string {
  if (run.inputTokens === null && run.outputTokens === null) return "";
  return `${run.inputTokens ?? "–"} / ${run.outputTokens ?? "–"}`;
}
