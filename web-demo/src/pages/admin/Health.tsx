/** Every dependency's health (GET /health/detailed): status, latency, the last error and
 * how to fix a failing one. */
import { useApi } from "../../lib/useApi";

interface Check {
  status: "ok" | "error";
  latencyMs: number;
  code?: string;
  error?: string;
  fix?: string;
  provider?: string;
  lastError?: { error: string; at: string } | null;
}

interface Detailed {
  status: "ok" | "degraded";
  checks: Record<string, Check>;
}

export function Health() {
  const { data: health, failure, reload } = useApi<Detailed>("/health/detailed");

  return (
    <div data-testid="health">
      <div className="panel-tools">
        {health && (
          <span className={`status status-${health.status}`} data-testid="health-status">
            {health.status}
          </span>
        )}
        <button onClick={reload}>Check again</button>
      </div>
      {failure && (
        <p className="alert" role="alert" data-testid="health-error">
          {failure}
        </p>
      )}
      {health && (
        <ul className="checks">
          {Object.entries(health.checks).map(([name, check]) => (
            <li key={name} className={`check check-${check.status}`} data-testid="health-check" data-name={name} data-status={check.status}>
              <span className="check-name">{name}</span>
              <span className="check-status">{check.status}</span>
              <span className="latency">{check.latencyMs.toFixed(1)} ms</span>
              {check.provider && <span className="provider">{check.provider}</span>}
              {check.error && (
                <span className="check-error">
                  {check.code}: {check.error}
                  {check.fix && <em> — {check.fix}</em>}
                </span>
              )}
              {check.status === "ok" && check.lastError && (
                <span className="last-error" title={check.lastError.at}>
                  last error: {check.lastError.error}
                </span>
              )}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}
