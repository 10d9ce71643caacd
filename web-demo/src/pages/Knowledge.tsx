/** The knowledge page: upload files and follow their ingestion, the documents (delete
 * them), and a search box over the knowledge base. */
import { useCallback, useState } from "react";
import { Documents } from "./knowledge/Documents";
import { Search } from "./knowledge/Search";
import { Upload } from "./knowledge/Upload";
import "./Knowledge.css";

export default function KnowledgePage() {
  const [version, setVersion] = useState(0);
  const changed = useCallback(() => setVersion((count) => count + 1), []);
  return (
    <div className="knowledge" data-testid="knowledge-page">
      <h1>Knowledge base</h1>
      <div className="knowledge-grid">
        <div className="knowledge-column">
          <Upload onIngested={changed} />
          <Documents version={version} onChanged={changed} />
        </div>
        <Search />
      </div>
    </div>
  );
}
