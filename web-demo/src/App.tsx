/**
 * The app's shell: reads the server's configuration, signs in when the server asks for it,
 * then shows the pages. Only the chat page is in the first bundle; the others load when
 * opened.
 */
import { lazy, Suspense, useEffect, useState, type ReactNode } from "react";
import { Navigate, NavLink, Route, Routes } from "react-router-dom";
import { freshToken, hostTokenSource, keepFresh, setTokenSource } from "./auth/token";
import { appConfig, type AppConfig } from "./lib/api";
import { newThreadId } from "./lib/threads";
import { ChatPage } from "./pages/Chat";

const ClerkGate = lazy(() => import("./auth/ClerkGate"));
const VoicePage = lazy(() => import("./pages/Voice"));
const KnowledgePage = lazy(() => import("./pages/Knowledge"));
const AdminPage = lazy(() => import("./pages/Admin"));

export function App() {
  const [config, setConfig] = useState<AppConfig | null>(null);
  const [failure, setFailure] = useState<string | null>(null);
  useEffect(() => {
    appConfig().then(setConfig, (error: Error) => setFailure(error.message));
  }, []);
  if (failure) return <p role="alert">The server cannot be reached: {failure}</p>;
  if (!config) return <p>Loading…</p>;
  const host = hostTokenSource();
  if (config.auth === "clerk" && !host) {
    return (
      <Suspense fallback={<p>Loading…</p>}>
        <ClerkGate publishableKey={config.clerkPublishableKey ?? ""}>
          <Shell config={config} />
        </ClerkGate>
      </Suspense>
    );
  }
  return (
    <WithTokenSource source={config.auth === "clerk" ? host : null}>
      <Shell config={config} />
    </WithTokenSource>
  );
}

function WithTokenSource({
  source,
  children,
}: {
  source: ReturnType<typeof hostTokenSource>;
  children: ReactNode;
}) {
  const [ready, setReady] = useState(false);
  useEffect(() => {
    setTokenSource(source);
    void freshToken().finally(() => setReady(true));
    return source ? keepFresh() : undefined;
  }, [source]);
  return ready ? <>{children}</> : null;
}

function Shell({ config }: { config: AppConfig }) {
  return (
    <div className="shell">
      <nav className="nav">
        <span className="brand">Citadel</span>
        <NavLink to="/chat">Chat</NavLink>
        <NavLink to="/voice">Voice</NavLink>
        <NavLink to="/knowledge">Knowledge</NavLink>
        <NavLink to="/admin">Admin</NavLink>
      </nav>
      <main className="page">
        <Suspense fallback={<p>Loading…</p>}>
          <Routes>
            <Route path="/" element={<Navigate to="/chat" replace />} />
            <Route path="/chat" element={<NewThread page="chat" />} />
            <Route path="/chat/:threadId" element={<ChatPage />} />
            <Route path="/voice" element={<NewThread page="voice" />} />
            <Route path="/voice/:threadId" element={<VoicePage config={config} />} />
            <Route path="/knowledge" element={<KnowledgePage />} />
            <Route path="/admin" element={<AdminPage />} />
            <Route path="*" element={<p>No such page.</p>} />
          </Routes>
        </Suspense>
      </main>
    </div>
  );
}

/** A new thread's page: its id is made when this mounts (each "New chat" gets its own). */
function NewThread({ page }: { page: "chat" | "voice" }) {
  return <Navigate to={`/${page}/${newThreadId()}`} state={{ fresh: true }} replace />;
}
