/**
 * The chat page: CopilotKit's own <CopilotChat> on the thread named in the URL, talking to
 * the server's CopilotKit runtime surface (/api/copilotkit) with no Node tier. A reload
 * reconnects to the thread (CopilotKit calls /connect for an explicit thread id).
 */
import {
  CopilotChat,
  CopilotKitCoreRuntimeConnectionStatus,
  CopilotKitProvider,
  useAgent,
  useCopilotKit,
  useFrontendTool,
  useInterrupt,
  useRenderTool,
} from "@copilotkit/react-core/v2";
import "@copilotkit/react-core/v2/styles.css";
// CopilotKit imports KaTeX's stylesheet when its first assistant message mounts, so a page's
// first answer waited for a new stylesheet and a style recalculation before it showed
// (bench/RESULTS.md, "Web app"). Loaded with the page instead.
import "katex/dist/katex.min.css";
import { memo, useCallback, useEffect, useRef, useState, type ReactNode } from "react";
import { Link, useLocation, useParams } from "react-router-dom";
import { z } from "zod";
import { latestHeaders } from "../auth/token";
import { api, ApiError } from "../lib/api";
import { ThreadList } from "./ThreadList";

export const RUNTIME_URL = "/api/copilotkit";

interface Hit {
  source: string;
  title: string;
  snippet: string;
  score: number;
}

/** What CopilotKit's `onError` reports. */
interface CopilotError {
  error: Error;
  code: string;
  context: Record<string, unknown>;
}

/** What the page's banner shows of it. */
interface ChatError {
  code: string;
  message: string;
}

export function ChatPage() {
  const { threadId = "" } = useParams();
  const fresh = Boolean((useLocation().state as { fresh?: boolean } | null)?.fresh);
  const [known, setKnown] = useState<"yes" | "no" | "checking">(fresh ? "yes" : "checking");
  const [error, setError] = useState<ChatError | null>(null);
  const [listVersion, setListVersion] = useState(0);

  useEffect(() => {
    setError(null);
    if (fresh) {
      setKnown("yes");
      return;
    }
    setKnown("checking");
    api(`/threads/${encodeURIComponent(threadId)}`).then(
      () => setKnown("yes"),
      (failure: unknown) =>
        setKnown(failure instanceof ApiError && failure.status === 404 ? "no" : "yes"),
    );
  }, [threadId, fresh]);

  const runEnded = useCallback(() => setListVersion((version) => version + 1), []);
  const onError = useCallback(
    (event: CopilotError) =>
      setError({ code: String(event.context?.runtimeErrorCode ?? event.code), message: event.error.message }),
    [],
  );

  return (
    <div className="chat-layout">
      <ThreadList current={threadId} version={listVersion} />
      <section className="chat-main" data-testid="chat-page">
        {error && (
          <div className="error-banner" role="alert" data-testid="chat-error">
            <strong>{error.code}</strong> {error.message}
            <button onClick={() => setError(null)}>Dismiss</button>
          </div>
        )}
        {known === "checking" && <p>Loading…</p>}
        {known === "no" && (
          <div className="not-found" data-testid="thread-not-found">
            <h2>Thread not found</h2>
            <p>
              No thread <code>{threadId}</code> of yours exists. <Link to="/chat">Start a new chat</Link>
            </p>
          </div>
        )}
        {known === "yes" && (
          <ThreadChat key={threadId} threadId={threadId} onError={onError} onRunEnded={runEnded} />
        )}
      </section>
    </div>
  );
}

/** CopilotKit on one thread. Memoized: the page's own updates (the thread list's refresh when
 * a run ends, an error banner) must not re-render the chat while it shows an answer. */
const ThreadChat = memo(function ThreadChat({
  threadId,
  onError,
  onRunEnded,
}: {
  threadId: string;
  onError: (event: CopilotError) => void;
  onRunEnded: () => void;
}) {
  return (
    <CopilotKitProvider
      runtimeUrl={RUNTIME_URL}
      headers={latestHeaders}
      showDevConsole={false}
      onError={onError}
    >
      <ChatTools />
      <WhenConnected>
        <RunWatcher onEnded={onRunEnded} />
        <StateSources />
        <CopilotChat threadId={threadId} className="chat" />
      </WhenConnected>
    </CopilotKitProvider>
  );
});

/** Mounts the chat once the runtime has answered /info: the agent it registers replaces the
 * provisional one, and a chat mounted before would lose a run started meanwhile. */
function WhenConnected({ children }: { children: ReactNode }) {
  const { copilotkit } = useCopilotKit();
  const [status, setStatus] = useState(copilotkit.runtimeConnectionStatus);
  useEffect(() => {
    setStatus(copilotkit.runtimeConnectionStatus);
    const subscription = copilotkit.subscribe({
      onRuntimeConnectionStatusChanged: ({ status: next }) => setStatus(next),
    });
    return () => subscription.unsubscribe();
  }, [copilotkit]);
  if (status === CopilotKitCoreRuntimeConnectionStatus.Connected) return <>{children}</>;
  if (status === CopilotKitCoreRuntimeConnectionStatus.Error) {
    return (
      <p role="alert" data-testid="runtime-error">
        The agent runtime cannot be reached.
      </p>
    );
  }
  return <p>Connecting…</p>;
}

/** Tells the page when a run has ended (the thread list then shows the new title). */
function RunWatcher({ onEnded }: { onEnded: () => void }) {
  const { agent } = useAgent();
  const running = agent.isRunning;
  const wasRunning = useRef(false);
  useEffect(() => {
    if (wasRunning.current && !running) onEnded();
    wasRunning.current = running;
  }, [running, onEnded]);
  return null;
}

/** The thread's shared state keeps the last search's sources (the server sets `sources`):
 * listed above the chat, so they stay in view as the conversation scrolls. */
function StateSources() {
  const { agent } = useAgent();
  const sources = (agent.state as { sources?: { source: string; title: string }[] } | undefined)
    ?.sources;
  if (!Array.isArray(sources) || sources.length === 0) return null;
  return (
    <div className="state-sources" data-testid="state-sources">
      Sources:{" "}
      {sources.map((item, index) => (
        <span key={`${item.source}-${index}`} className="state-source">
          <span className="citation">[{index + 1}]</span> {item.title || item.source}{" "}
          <code>{item.source}</code>
        </span>
      ))}
    </div>
  );
}

/** Knowledge-base hits as sources, the approval of additions, and a tool that runs here. */
function ChatTools() {
  useRenderTool(
    {
      name: "search_knowledge_base",
      parameters: z.object({ query: z.string() }),
      render: ({ parameters, result, status }) => (
        <Sources query={parameters?.query} result={result} done={status === "complete"} />
      ),
    },
    [],
  );

  useFrontendTool(
    {
      name: "show_notice",
      description:
        "Show a short notice to the user in a banner in their browser. Use it when the user asks to be shown, reminded or alerted of something.",
      parameters: z.object({ text: z.string().describe("The notice, one sentence") }),
      handler: async ({ text }) => {
        const shown = document.getElementById("notice");
        if (shown) {
          shown.textContent = text;
          shown.hidden = false;
        }
        return `The notice "${text}" is shown to the user.`;
      },
    },
    [],
  );

  useInterrupt({
    enabled: (event) => {
      const value = (event as { value?: { metadata?: { toolName?: string } } }).value;
      return value?.metadata?.toolName === "add_to_knowledge_base";
    },
    render: ({ interrupt, resolve, cancel }) => {
      const metadata = (interrupt?.metadata ?? {}) as { arguments?: { text?: string; title?: string } };
      return (
        <div className="approval" data-testid="approval">
          <p>{interrupt?.message ?? "Allow this?"}</p>
          <blockquote>{metadata.arguments?.title ?? metadata.arguments?.text}</blockquote>
          <button data-testid="approve" onClick={() => resolve({ approved: true })}>
            Approve
          </button>
          <button data-testid="decline" onClick={() => cancel()}>
            Decline
          </button>
        </div>
      );
    },
  });
  return (
    <div id="notice" className="notice" data-testid="notice" role="status" hidden />
  );
}

function Sources({ query, result, done }: { query?: string; result?: unknown; done: boolean }) {
  const hits = parseHits(result);
  return (
    <div className="sources" data-testid="sources">
      <div className="sources-title">
        {done ? "Searched the knowledge base" : "Searching the knowledge base"}
        {query ? <> for “{query}”</> : null}
      </div>
      {hits.length > 0 && (
        <ol>
          {hits.map((hit, index) => (
            <li key={`${hit.source}-${index}`} data-testid="source">
              <span className="citation">[{index + 1}]</span> <strong>{hit.title || hit.source}</strong>{" "}
              <code>{hit.source}</code>
              <p>{hit.snippet}</p>
            </li>
          ))}
        </ol>
      )}
      {done && hits.length === 0 && <p>No passages found.</p>}
    </div>
  );
}

function parseHits(result: unknown): Hit[] {
  try {
    const parsed = typeof result === "string" ? JSON.parse(result) : result;
    const hits = (parsed as { hits?: Hit[] } | undefined)?.hits;
    return Array.isArray(hits) ? hits : [];
  } catch {
    return [];
  }
}
