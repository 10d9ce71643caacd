/** Reading GET /admin/events for as long as the page is open: it reconnects after the last
 * item it saw when the stream ends (the server ends each after a while) or breaks, so
 * nothing between is missed. */
import { ApiError, describeError, events } from "../../lib/api";
import { sleep } from "../../lib/sleep";
import { type ConnectedItem, type FeedItem } from "./types";

export type FeedState = "connecting" | "live" | "reconnecting" | "stopped";

export interface FeedHandlers {
  onState: (state: FeedState, detail: string | null) => void;
  onItem: (item: FeedItem) => void;
}

const MAX_BACKOFF_MS = 15_000;

/** Reads the feed with `params` (filters, and `after` or `since` to replay) until `signal`
 * aborts. */
export async function readFeed(params: URLSearchParams, signal: AbortSignal, handlers: FeedHandlers) {
  let after = params.get("after");
  let failures = 0;
  while (!signal.aborted) {
    const query = new URLSearchParams(params);
    if (after) {
      query.delete("since");
      query.set("after", after);
    }
    try {
      for await (const frame of events(`/admin/events?${query}`, signal)) {
        const item = frame.data as FeedItem | ConnectedItem;
        failures = 0;
        if (item.kind === "connected") {
          // Its id is where the server starts; the next reconnect goes on after the last
          // item seen (a resumed connection's own start may be before a partly seen entry).
          handlers.onState("live", (item as ConnectedItem).worker);
          continue;
        }
        after = item.id;
        handlers.onItem(item as FeedItem);
      }
      if (signal.aborted) return;
      handlers.onState("reconnecting", null);
      await sleep(250, signal);
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && [400, 403, 404, 422].includes(error.status)) {
        handlers.onState("stopped", describeError(error));
        return;
      }
      failures += 1;
      handlers.onState("reconnecting", describeError(error));
      await sleep(Math.min(500 * 2 ** failures, MAX_BACKOFF_MS), signal);
    }
  }
}
