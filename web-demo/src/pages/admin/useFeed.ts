/** The live feed's state for the page: the entries shown (newest first), those held while
 * paused, the last resync marker and the connection's state. */
import { useEffect, useReducer, useRef } from "react";
import { readFeed, type FeedState } from "./feed";
import { isResync, type FeedItem, type ResyncItem } from "./types";

export const MAX_SHOWN = 500;

interface State {
  entries: FeedItem[]; // newest first
  held: FeedItem[]; // oldest first, at most MAX_SHOWN kept
  heldCount: number;
  paused: boolean;
  resync: ResyncItem | null;
  connection: FeedState;
  detail: string | null;
  query: string; // of the connection the state is about
}

type Action =
  | { type: "item"; item: FeedItem }
  | { type: "pause" }
  | { type: "resume" }
  | { type: "clear" }
  | { type: "restart"; query: string }
  | { type: "dismissResync" }
  | { type: "connection"; state: FeedState; detail: string | null };

const initial: State = {
  entries: [],
  held: [],
  heldCount: 0,
  paused: false,
  resync: null,
  connection: "connecting",
  detail: null,
  query: "",
};

function reduce(state: State, action: Action): State {
  switch (action.type) {
    case "item": {
      const resync = isResync(action.item) ? action.item : state.resync;
      if (state.paused) {
        const held = [...state.held, action.item].slice(-MAX_SHOWN);
        return { ...state, held, heldCount: state.heldCount + 1, resync };
      }
      return { ...state, entries: [action.item, ...state.entries].slice(0, MAX_SHOWN), resync };
    }
    case "pause":
      return { ...state, paused: true };
    case "resume":
      return {
        ...state,
        paused: false,
        entries: [...[...state.held].reverse(), ...state.entries].slice(0, MAX_SHOWN),
        held: [],
        heldCount: 0,
      };
    case "clear":
      return { ...state, entries: [], held: [], heldCount: 0, resync: null };
    case "restart":
      return { ...initial, paused: state.paused, query: action.query };
    case "dismissResync":
      return { ...state, resync: null };
    case "connection":
      return { ...state, connection: action.state, detail: action.detail };
  }
}

/** Reads the feed with `query` (restarting when it changes); `onItem` hears every item,
 * paused or not. */
export function useFeed(query: string, onItem?: (item: FeedItem) => void) {
  const [state, dispatch] = useReducer(reduce, initial);
  const listener = useRef(onItem);
  listener.current = onItem;

  useEffect(() => {
    const controller = new AbortController();
    dispatch({ type: "restart", query });
    void readFeed(new URLSearchParams(query), controller.signal, {
      onState: (connection, detail) => dispatch({ type: "connection", state: connection, detail }),
      onItem: (item) => {
        dispatch({ type: "item", item });
        listener.current?.(item);
      },
    });
    return () => controller.abort();
  }, [query]);

  return {
    ...state,
    pause: () => dispatch({ type: "pause" }),
    resume: () => dispatch({ type: "resume" }),
    clear: () => dispatch({ type: "clear" }),
    dismissResync: () => dispatch({ type: "dismissResync" }),
  };
}
