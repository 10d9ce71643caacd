/** A page's data from the API: fetched when it mounts, and again when the path or `version`
 * changes, on `reload()`, and every 2 s while `pollWhile` holds for it (a run still running).
 * An answer to an older request is dropped, so a slow answer never overwrites a newer one,
 * and data fetched for another path is never shown for this one. */
import { useCallback, useEffect, useState } from "react";
import { api, describeError } from "./api";

const POLL_MS = 2000;

export interface Loaded<T> {
  data: T | null; // null until the first answer for this path
  failure: string | null; // the last request's error, for the page to show
  reload: () => void;
  update: (change: (data: T) => T) => void; // e.g. a next page appended
  fail: (error: unknown) => void; // a failure of the page's own request on the same data
}

export function useApi<T>(
  path: string,
  version: unknown = 0,
  pollWhile?: (data: T) => boolean,
): Loaded<T> {
  const [loaded, setLoaded] = useState<{ path: string; data: T } | null>(null);
  const [failure, setFailure] = useState<string | null>(null);
  const [reloads, setReloads] = useState(0);

  useEffect(() => {
    let current = true;
    api<T>(path).then(
      (data) => {
        if (!current) return;
        setLoaded({ path, data });
        setFailure(null);
      },
      (error: unknown) => current && setFailure(describeError(error)),
    );
    return () => {
      current = false;
    };
  }, [path, version, reloads]);

  const reload = useCallback(() => setReloads((count) => count + 1), []);
  const data = loaded?.path === path ? loaded.data : null;
  const polling = data !== null && pollWhile !== undefined && pollWhile(data);
  useEffect(() => {
    if (!polling) return;
    const timer = window.setTimeout(reload, POLL_MS);
    return () => window.clearTimeout(timer);
  }, [polling, loaded, reload]);

  const update = useCallback(
    (change: (data: T) => T) => setLoaded((known) => known && { ...known, data: change(known.data) }),
    [],
  );
  const fail = useCallback((error: unknown) => setFailure(describeError(error)), []);
  return { data, failure, reload, update, fail };
}
