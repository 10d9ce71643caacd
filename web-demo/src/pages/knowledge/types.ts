/** The knowledge base's REST shapes (agent_server/api/rag.py), as the server spells them. */

export type JobStatus = "queued" | "running" | "succeeded" | "partial" | "failed";

export interface IngestJob {
  id: string;
  knowledgeBase: string;
  status: JobStatus;
  filesTotal: number;
  filesDone: number;
  filesUnchanged: number;
  chunksEmbedded: number;
  errors: { file: string; code: string; message: string }[];
  createdAt: string | null;
  finishedAt: string | null;
}

export interface KnowledgeDocument {
  id: string;
  source: string;
  title: string;
  chunks: number;
  tags: string[];
  sizeBytes: number | null;
  updatedAt: string | null;
}

/** One search hit (``hit_json``: its document id is the one snake_case field). */
export interface Hit {
  source: string;
  title: string;
  snippet: string;
  score: number;
  document_id: string;
  headings?: string[];
  page?: number;
}

export const FINISHED: ReadonlySet<JobStatus> = new Set(["succeeded", "partial", "failed"]);

/** What a failure says to the user. */
