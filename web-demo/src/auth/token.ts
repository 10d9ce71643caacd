/**
 * Where the app's bearer token comes from. One module, so that every request (fetch, SSE,
 * WebSocket, CopilotKit) asks the same place: Clerk's session when the server runs with
 * CITADEL_AUTH=clerk, a host page's own source (`window.citadelTokenSource`, e.g. an app
 * embedding this one, or a test signing tokens against its own JWKS), or nothing when
 * authentication is off. Clerk session tokens live 60 s, so a token is fetched for each
 * request (Clerk caches and renews it), never stored.
 */
export type TokenSource = () => Promise<string | null>;

declare global {
  interface Window {
    citadelTokenSource?: TokenSource;
  }
}

const RENEW_MS = 20_000; // well inside a Clerk token's 60 s

let source: TokenSource | null = null;
let latest: string | null = null;

/** The host page's token source, when it brings one. */
export function hostTokenSource(): TokenSource | null {
  return window.citadelTokenSource ?? null;
}

export function setTokenSource(next: TokenSource | null): void {
  source = next;
  latest = null;
}

/** A token valid now, or null without authentication. */
export async function freshToken(): Promise<string | null> {
  latest = source ? await source() : null;
  return latest;
}

export async function authHeaders(): Promise<Record<string, string>> {
  const token = await freshToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** For callers that ask synchronously (CopilotKit's `headers`): the newest token, kept
 * fresh by {@link keepFresh}. */
export function latestHeaders(): Record<string, string> {
  return latest ? { Authorization: `Bearer ${latest}` } : {};
}

/** Renews the token in the background until the returned function is called. */
export function keepFresh(): () => void {
  const timer = window.setInterval(() => void freshToken().catch(() => undefined), RENEW_MS);
  return () => window.clearInterval(timer);
}
