/** The admin monitor: the live feed of every run's events (GET /admin/events), the runs
 * (GET /admin/runs) with a run's timeline, voice sessions, and the dependencies' health. */
import { useCallback, useMemo, useState, type ReactNode } from "react";
import { useSearchParams } from "react-router-dom";
import { Feed } from "./admin/Feed";
import { FeedFilters, FILTER_NAMES, type Filters } from "./admin/FeedFilters";
import { Health } from "./admin/Health";
import { Runs } from "./admin/Runs";
import { RunTimeline } from "./admin/RunTimeline";
import { isRun, type FeedItem, type RunRef } from "./admin/types";
import { useFeed } from "./admin/useFeed";
import { VoiceSessions } from "./admin/VoiceSessions";
import "./Admin.css";

const LIFECYCLE = new Set(["RUN_STARTED", "RUN_FINISHED", "RUN_ERROR"]);
// The feed's query parameters the page's URL may carry: the filters, and `after` (an item
// id) to resume from.
const FEED_PARAMS = [...FILTER_NAMES, "after"];

export default function AdminPage() {
  const [search, setSearch] = useSearchParams();
  const [selected, setSelected] = useState<RunRef | null>(null);
  const [runsVersion, setRunsVersion] = useState(0);

  const feedQuery = useMemo(() => {
    const params = new URLSearchParams();
    for (const name of FEED_PARAMS) {
      const value = search.get(name);
      if (value) params.set(name, value);
    }
    return params.toString();
  }, [search]);
  const filters = Object.fromEntries(FILTER_NAMES.map((name) => [name, search.get(name) ?? ""])) as Filters;

  const onItem = useCallback((item: FeedItem) => {
    if (isRun(item) && LIFECYCLE.has(item.event.type)) setRunsVersion((count) => count + 1);
  }, []);
  const feed = useFeed(feedQuery, onItem);

  function apply(next: Filters) {
    const params = new URLSearchParams();
    for (const name of FILTER_NAMES) if (next[name]) params.set(name, next[name]);
    setSearch(params);
  }

  return (
    <div className="admin" data-testid="admin-page">
      <div className="admin-feed">
        <Panel title="Live feed" testId="feed-panel">
          <FeedFilters key={feedQuery} applied={filters} onApply={apply} />
          <Feed feed={feed} onOpenRun={setSelected} />
        </Panel>
      </div>
      <div className="admin-side">
        <Panel title="Health" testId="health-panel">
          <Health />
        </Panel>
        <Panel title="Runs" testId="runs-panel">
          <Runs version={runsVersion} selected={selected} onSelect={setSelected} />
        </Panel>
        {selected && (
          <Panel title="Run timeline" testId="timeline-panel" onClose={() => setSelected(null)}>
            <RunTimeline run={selected} version={runsVersion} />
          </Panel>
        )}
        <Panel title="Voice sessions" testId="voice-panel">
          <VoiceSessions />
        </Panel>
      </div>
    </div>
  );
}

function Panel({
  title,
  testId,
  onClose,
  children,
}: {
  title: string;
  testId: string;
  onClose?: () => void;
  children: ReactNode;
}) {
  return (
    <section className="admin-panel" data-testid={testId}>
      <header>
        <h2>{title}</h2>
        {onClose && (
          <button className="close" aria-label={`Close ${title.toLowerCase()}`} onClick={onClose}>
            ×
          </button>
        )}
      </header>
      {children}
    </section>
  );
}
