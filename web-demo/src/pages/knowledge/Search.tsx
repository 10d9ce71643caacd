/** Search the knowledge base (POST /rag/query) and show the hits. */
import { useState, type FormEvent } from "react";
import { api, describeError } from "../../lib/api";
import { type Hit } from "./types";

export function Search() {
  const [query, setQuery] = useState("");
  const [topK, setTopK] = useState(5);
  const [hits, setHits] = useState<Hit[] | null>(null);
  const [failure, setFailure] = useState<string | null>(null);
  const [searching, setSearching] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    if (!query.trim()) return;
    setSearching(true);
    setFailure(null);
    try {
      const answer = await api<{ hits: Hit[] }>("/rag/query", {
        method: "POST",
        body: JSON.stringify({ query, topK }),
      });
      setHits(answer.hits);
    } catch (error) {
      setHits(null);
      setFailure(describeError(error));
    } finally {
      setSearching(false);
    }
  }

  return (
    <section className="panel" data-testid="search">
      <h2>Search</h2>
      <form className="search-form" onSubmit={(event) => void submit(event)}>
        <input
          type="search"
          placeholder="Ask the knowledge base…"
          aria-label="Query"
          data-testid="query-input"
          value={query}
          onChange={(event) => setQuery(event.target.value)}
        />
        <label>
          top
          <select aria-label="Number of hits" value={topK} onChange={(event) => setTopK(Number(event.target.value))}>
            {[3, 5, 10, 20].map((count) => (
              <option key={count}>{count}</option>
            ))}
          </select>
        </label>
        <button type="submit" disabled={!query.trim() || searching} data-testid="query-submit">
          {searching ? "Searching…" : "Search"}
        </button>
      </form>
      {failure && (
        <p className="alert" role="alert" data-testid="query-error">
          {failure}
        </p>
      )}
      {hits?.length === 0 && <p data-testid="no-hits">Nothing found.</p>}
      {hits && hits.length > 0 && (
        <ol className="hits" data-testid="hits">
          {hits.map((hit, index) => (
            <li key={`${hit.document_id}-${index}`} data-testid="hit">
              <div className="hit-head">
                <span className="hit-source" data-testid="hit-source">
                  {hit.source}
                </span>
                {hit.title && (
                  <span className="hit-title" data-testid="hit-title">
                    {hit.title}
                  </span>
                )}
                {hit.page !== undefined && <span>p. {hit.page}</span>}
                <span className="hit-score" data-testid="hit-score" title="similarity score">
                  {hit.score.toFixed(3)}
                </span>
              </div>
              {hit.headings && hit.headings.length > 0 && (
                <div className="hit-headings">{hit.headings.join(" › ")}</div>
              )}
              <p className="hit-snippet" data-testid="hit-snippet">
                {hit.snippet}
              </p>
            </li>
          ))}
        </ol>
      )}
    </section>
  );
}
