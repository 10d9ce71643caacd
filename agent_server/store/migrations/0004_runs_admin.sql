-- Run history for administrators (GET /admin/runs): every owner's runs, newest first, filtered
-- by status, owner, thread, error code or start time. Ordering and the time filters use
-- runs_started, the owner filter runs_owner_started, the thread filter the primary key.
-- Released migrations are never edited: add a new numbered file instead.

-- A run named by its id alone (GET /admin/runs/{run_id}): run ids are unique per thread only.
CREATE INDEX runs_run_id ON runs (run_id);
-- The runs in one state (failed, running), newest first, without reading all the others.
CREATE INDEX runs_status_started ON runs (status, started_at DESC);
-- The runs that failed with one error code; most runs have none.
CREATE INDEX runs_error_started ON runs (error_code, started_at DESC) WHERE error_code IS NOT NULL;
