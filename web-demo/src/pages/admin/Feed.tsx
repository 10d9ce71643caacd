/** The live feed of every run's events and notes, newest first, with a pause that holds new
 * entries and a banner when the server made the reader skip ahead. */
import type { RunRef } from "./types";
import { clock, isResync, isRun, itemTime, shortId, type FeedItem, type NoteItem } from "./types";
import { summarizeEvent, summarizeNote } from "./summary";
import type { useFeed } from "./useFeed";

type FeedView = ReturnType<typeof useFeed>;

export function Feed({ feed, onOpenRun }: { feed: FeedView; onOpenRun: (run: RunRef) => void }) {
  return (
    <>
      <div className="feed-bar">
        <span className={`feed-state feed-${feed.connection}`} data-testid="feed-status" data-state={feed.connection} data-query={feed.query}>
          {feed.connection === "live" ? `live (${feed.detail})` : feed.connection}
          {feed.connection !== "live" && feed.detail && `: ${feed.detail}`}
        </span>
        <button data-testid="feed-pause" aria-pressed={feed.paused} onClick={feed.paused ? feed.resume : feed.pause}>
          {feed.paused ? "Resume" : "Pause"}
        </button>
        {feed.paused && (
          <span className="held" data-testid="feed-held" data-count={feed.heldCount}>
            {feed.heldCount} new held
          </span>
        )}
        <button onClick={feed.clear}>Clear</button>
        <span className="shown">{feed.entries.length} shown</span>
      </div>
      {feed.connection === "stopped" && (
        <p className="alert" role="alert" data-testid="feed-error">
          The feed stopped: {feed.detail}
        </p>
      )}
      {feed.resync && (
        <div className="resync-banner" role="status" data-testid="resync-banner" data-reason={feed.resync.reason}>
          <strong>Resynced</strong> ({feed.resync.reason}): entries after <code>{feed.resync.skippedAfter}</code> up to{" "}
          <code>{feed.resync.id}</code> were skipped; the feed goes on from the newest.
          <button onClick={feed.dismissResync}>Dismiss</button>
        </div>
      )}
      <ol className="feed" data-testid="feed">
        {feed.entries.map((item) => (
          <Entry key={item.id} item={item} onOpenRun={onOpenRun} />
        ))}
        {feed.entries.length === 0 && <li className="empty">Waiting for events…</li>}
      </ol>
    </>
  );
}

function Entry({ item, onOpenRun }: { item: FeedItem; onOpenRun: (run: RunRef) => void }) {
  const time = clock(itemTime(item.id));
  if (isResync(item)) {
    return (
      <li className="entry entry-resync" data-testid="feed-resync" data-kind="resync">
        <time>{time}</time>
        <span className="kind">resync</span>
        <span>
          skipped after {item.skippedAfter} ({item.reason})
        </span>
      </li>
    );
  }
  if (isRun(item)) {
    const failed = item.event.type === "RUN_ERROR";
    return (
      <li
        className={`entry entry-run${failed ? " entry-error" : ""}`}
        data-testid="feed-entry"
        data-kind="run"
        data-type={item.event.type}
        data-run-id={item.runId}
        data-thread-id={item.threadId}
      >
        <time>{time}</time>
        <span className="type">{item.event.type}</span>
        <button
          className="link"
          title={`run ${item.runId} on thread ${item.threadId}`}
          onClick={() => onOpenRun({ threadId: item.threadId, runId: item.runId })}
        >
          {shortId(item.runId)}
        </button>
        <span className="who" title={`user ${item.userId}, worker ${item.worker}`}>
          {item.userId} #{item.seq}
        </span>
        <span className="summary">{summarizeEvent(item.event)}</span>
      </li>
    );
  }
  const note = item as NoteItem;
  return (
    <li className={`entry entry-note entry-${note.kind}`} data-testid="feed-entry" data-kind={note.kind} data-type={String(note.note.event ?? note.note.status ?? "")}>
      <time>{time}</time>
      <span className="type">{note.kind}</span>
      <span className="who">{note.userId}</span>
      <span className="summary">{summarizeNote(note)}</span>
    </li>
  );
}
