/** The server's REST API, same origin, with the caller's token on every request. */
import { authHeaders, freshToken } from "../auth/token";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** JSON from `path`; a refusal (`{"error": {"code", "message"}}`) throws {@link ApiError}. */
export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const headers = new Headers(init.headers);
  for (const [name, value] of Object.entries(await authHeaders())) headers.set(name, value);
  if (init.body && typeof init.body === "string" && !headers.has("Content-Type")) {
    headers.set("Content-Type", "application/json");
  }
  const response = await fetch(path, { ...init, headers });
  if (!response.ok) throw await refusal(response);
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

/** An error as one line for the page: the server's message and its stable code. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) return `${error.message} (${error.code})`;
  return error instanceof Error ? error.message : String(error);
}

export async function refusal(response: Response): Promise<ApiError> {
  let code = `http_${response.status}`;
  let message = response.statusText;
  try {
    const body = await response.json();
    const error = body.error;
    if (typeof error === "object" && error) {
      code = error.code ?? code;
      message = error.message ?? message;
    } else if (typeof error === "string") {
      code = error;
      message = body.message ?? message;
    }
  } catch {
    // not JSON: the status says it
  }
  return new ApiError(response.status, code, message);
}

/** Server-sent events of `path`: each `data:` line parsed as JSON, until `signal` aborts. */
export async function* events(
  path: string,
  signal: AbortSignal,
  init: RequestInit = {},
): AsyncGenerator<{ id: string | null; data: unknown }> {
  const headers = new Headers(init.headers);
  for (const [name, value] of Object.entries(await authHeaders())) headers.set(name, value);
  headers.set("Accept", "text/event-stream");
  const response = await fetch(path, { ...init, headers, signal });
  if (!response.ok || !response.body) throw await refusal(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let id: string | null = null;
      const data: string[] = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("id:")) id = line.slice(3).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) yield { id, data: JSON.parse(data.join("\n")) };
    }
  }
}

/** A WebSocket URL of `path` on this origin, with the token as the `token` query parameter
 * (browsers cannot set headers on WebSockets; the server redacts it from its logs). */
export async function socketUrl(path: string): Promise<string> {
  const url = new URL(path, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const token = await freshToken();
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

/** What the server tells the app about itself (GET /app/config, public). */
export interface AppConfig {
  auth: "off" | "clerk";
  clerkPublishableKey: string | null;
  livekit: boolean;
  version: string;
}

export async function appConfig(): Promise<AppConfig> {
  const response = await fetch("/app/config");
  if (!response.ok) throw await refusal(response);
  return (await response.json()) as AppConfig;
}
