/** The user's threads (GET /threads): open, rename, delete. */
import { Link, useNavigate } from "react-router-dom";
import { api } from "../lib/api";
import { useApi } from "../lib/useApi";

interface ThreadItem {
  id: string;
  title: string;
  messageCount: number;
  updatedAt: string;
}

export function ThreadList({ current, version }: { current: string; version: number }) {
  const { data, failure, reload } = useApi<{ threads: ThreadItem[] }>("/threads?limit=50", `${current}/${version}`);
  const navigate = useNavigate();

  async function rename(thread: ThreadItem) {
    const title = window.prompt("Rename the thread", thread.title);
    if (title === null) return;
    await api(`/threads/${thread.id}`, { method: "PATCH", body: JSON.stringify({ title }) });
    reload();
  }

  async function remove(thread: ThreadItem) {
    await api(`/threads/${thread.id}`, { method: "DELETE" });
    if (thread.id === current) navigate("/chat");
    reload();
  }

  return (
    <aside className="threads" data-testid="threads">
      <Link className="new-chat" to="/chat">
        + New chat
      </Link>
      {failure && <p role="alert">{failure}</p>}
      <ul>
        {(data?.threads ?? []).map((thread) => (
          <li key={thread.id} className={thread.id === current ? "current" : undefined} data-testid="thread">
            <Link to={`/chat/${thread.id}`}>{thread.title || "Untitled"}</Link>
            <button title="Rename" aria-label={`Rename ${thread.title}`} onClick={() => void rename(thread)}>
              rename
            </button>
            <button title="Delete" aria-label={`Delete ${thread.title}`} onClick={() => void remove(thread)}>
              delete
            </button>
          </li>
        ))}
      </ul>
    </aside>
  );
}
