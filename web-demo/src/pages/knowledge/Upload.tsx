/** Upload files (multipart POST /rag/ingest) and follow each ingestion job (GET
 * /rag/jobs/{id}) until it finishes. */
import { useEffect, useRef, useState, type FormEvent } from "react";
import { api, describeError } from "../../lib/api";
import { sleep } from "../../lib/sleep";
import { FINISHED, type IngestJob } from "./types";

const POLL_MS = 500;

export function Upload({ onIngested }: { onIngested: () => void }) {
  const [files, setFiles] = useState<File[]>([]);
  const [tags, setTags] = useState("");
  const [jobs, setJobs] = useState<IngestJob[]>([]);
  const [failure, setFailure] = useState<string | null>(null);
  const [sending, setSending] = useState(false);
  const input = useRef<HTMLInputElement>(null);
  const stop = useRef(new AbortController());

  useEffect(() => {
    const controller = new AbortController();
    stop.current = controller;
    return () => controller.abort();
  }, []);

  function update(job: IngestJob) {
    setJobs((known) => known.map((item) => (item.id === job.id ? job : item)));
  }

  async function follow(job: IngestJob) {
    const signal = stop.current.signal;
    while (!FINISHED.has(job.status) && !signal.aborted) {
      await sleep(POLL_MS, signal);
      job = (await api<{ job: IngestJob }>(`/rag/jobs/${encodeURIComponent(job.id)}`, { signal })).job;
      update(job);
    }
    onIngested();
  }

  async function submit(event: FormEvent) {
    event.preventDefault();
    if (!files.length) return;
    const form = new FormData();
    for (const file of files) form.append("file", file, file.name);
    if (tags.trim()) form.set("tags", tags);
    setFailure(null);
    setSending(true);
    try {
      const { job } = await api<{ job: IngestJob }>("/rag/ingest", { method: "POST", body: form });
      setJobs((known) => [job, ...known]);
      setFiles([]);
      if (input.current) input.current.value = "";
      setSending(false);
      await follow(job);
    } catch (error) {
      if (!stop.current.signal.aborted) setFailure(describeError(error));
    } finally {
      setSending(false);
    }
  }

  return (
    <section className="panel" data-testid="upload">
      <h2>Add documents</h2>
      <form className="upload-form" onSubmit={(event) => void submit(event)}>
        <input
          ref={input}
          type="file"
          multiple
          aria-label="Files to ingest"
          data-testid="upload-files"
          onChange={(event) => setFiles(Array.from(event.target.files ?? []))}
        />
        <input
          type="text"
          placeholder="tags, comma-separated"
          aria-label="Tags"
          data-testid="upload-tags"
          value={tags}
          onChange={(event) => setTags(event.target.value)}
        />
        <button type="submit" disabled={!files.length || sending} data-testid="upload-submit">
          {sending ? "Uploading…" : "Upload"}
        </button>
      </form>
      {failure && (
        <p className="alert" role="alert" data-testid="upload-error">
          {failure}
        </p>
      )}
      {jobs.length > 0 && (
        <ul className="jobs">
          {jobs.map((job) => (
            <JobProgress key={job.id} job={job} />
          ))}
        </ul>
      )}
    </section>
  );
}

function JobProgress({ job }: { job: IngestJob }) {
  const finished = FINISHED.has(job.status);
  return (
    <li className={`job job-${job.status}`} data-testid="ingest-job" data-job-id={job.id} data-status={job.status}>
      <progress max={job.filesTotal || 1} value={finished ? job.filesTotal || 1 : job.filesDone} />
      <span className="job-status" data-testid="ingest-job-status">
        {job.status}
      </span>
      <span>
        {job.filesDone}/{job.filesTotal} files, {job.chunksEmbedded} chunks embedded
        {job.filesUnchanged > 0 && `, ${job.filesUnchanged} unchanged`}
      </span>
      {job.errors.length > 0 && (
        <ul className="job-errors" role="alert" data-testid="ingest-job-errors">
          {job.errors.map((error, index) => (
            <li key={index}>
              <strong>{error.file}</strong>: {error.message} ({error.code})
            </li>
          ))}
        </ul>
      )}
    </li>
  );
}
