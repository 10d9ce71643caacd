/** The knowledge base's documents (GET /rag/documents), each deletable
 * (DELETE /rag/documents/{id}). */
import { useState } from "react";
import { api } from "../../lib/api";
import { useApi } from "../../lib/useApi";
import { type KnowledgeDocument } from "./types";

export function Documents({ version, onChanged }: { version: number; onChanged: () => void }) {
  const { data, failure, reload, fail } = useApi<{ documents: KnowledgeDocument[] }>("/rag/documents", version);
  const documents = data?.documents ?? null;
  const [deleting, setDeleting] = useState<string | null>(null);

  async function remove(document: KnowledgeDocument) {
    setDeleting(document.id);
    try {
      await api(`/rag/documents/${encodeURIComponent(document.id)}`, { method: "DELETE" });
      onChanged();
    } catch (error) {
      fail(error);
    } finally {
      setDeleting(null);
    }
  }

  return (
    <section className="panel" data-testid="documents">
      <header className="panel-header">
        <h2>Documents {documents && <span className="count">({documents.length})</span>}</h2>
        <button onClick={reload}>Refresh</button>
      </header>
      {failure && (
        <p className="alert" role="alert" data-testid="documents-error">
          {failure}
        </p>
      )}
      {documents === null && !failure && <p>Loading…</p>}
      {documents?.length === 0 && <p data-testid="documents-empty">No documents yet.</p>}
      {documents && documents.length > 0 && (
        <table className="documents">
          <thead>
            <tr>
              <th>Source</th>
              <th>Title</th>
              <th>Chunks</th>
              <th>Tags</th>
              <th>Size</th>
              <th>Updated</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {documents.map((document) => (
              <tr key={document.id} data-testid="document" data-document-id={document.id}>
                <td data-testid="document-source">{document.source}</td>
                <td>{document.title}</td>
                <td>{document.chunks}</td>
                <td>{document.tags.join(", ")}</td>
                <td>{size(document.sizeBytes)}</td>
                <td>{document.updatedAt ? new Date(document.updatedAt).toLocaleString() : ""}</td>
                <td>
                  <button
                    data-testid="document-delete"
                    aria-label={`Delete ${document.source}`}
                    disabled={deleting === document.id}
                    onClick={() => void remove(document)}
                  >
                    {deleting === document.id ? "Deleting…" : "Delete"}
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function size(bytes: number | null): string {
  if (bytes === null) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}
