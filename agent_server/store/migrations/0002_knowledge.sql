-- Knowledge-base documents (what each vector collection holds, by document) and ingestion jobs.
-- Released migrations are never edited: add a new numbered file instead.

-- One row per document per collection (a collection is one knowledge base embedded by one
-- model): its content hash decides whether re-ingesting it changes anything, and its chunk
-- ids are what a changed or deleted document removes from the vector store.
CREATE TABLE kb_documents (
    collection     text NOT NULL,
    document_id    text NOT NULL,
    knowledge_base text NOT NULL,
    source         text NOT NULL,
    title          text NOT NULL DEFAULT '',
    content_hash   text NOT NULL,
    tags           text[] NOT NULL DEFAULT '{}',
    size_bytes     bigint NOT NULL,
    chunk_ids      text[] NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection, document_id)
);
-- A knowledge base's documents, newest first (listing, admin).
CREATE INDEX kb_documents_base_updated ON kb_documents (knowledge_base, updated_at DESC);

CREATE TABLE ingest_jobs (
    id              uuid PRIMARY KEY,
    knowledge_base  text NOT NULL,
    owner           text NOT NULL,
    status          text NOT NULL CHECK (status IN
                        ('queued', 'running', 'succeeded', 'partial', 'failed')),
    files_total     integer NOT NULL DEFAULT 0,
    files_done      integer NOT NULL DEFAULT 0,
    files_unchanged integer NOT NULL DEFAULT 0,
    chunks_embedded integer NOT NULL DEFAULT 0,
    errors          jsonb NOT NULL DEFAULT '[]',  -- [{"file", "code", "message"}]
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);
CREATE INDEX ingest_jobs_owner_created ON ingest_jobs (owner, created_at DESC);
