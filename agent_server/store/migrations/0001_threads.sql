-- Threads, their messages, runs and run events, the audit log, and the workers that own runs.
-- Released migrations are never edited: add a new numbered file instead.

CREATE TABLE workers (
    id           uuid PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE threads (
    id                 text PRIMARY KEY,
    owner              text NOT NULL,
    title              text NOT NULL DEFAULT '',
    state              jsonb,
    pending_interrupts jsonb NOT NULL DEFAULT '[]',
    message_count      integer NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
-- A user's threads, newest first, with keyset pagination on (updated_at, id).
CREATE INDEX threads_owner_updated ON threads (owner, updated_at DESC, id DESC);

CREATE TABLE messages (
    thread_id  text NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    position   integer NOT NULL,
    message_id text NOT NULL,
    role       text NOT NULL,
    body       jsonb NOT NULL,  -- the AG-UI message, as the client sees it
    PRIMARY KEY (thread_id, position),
    UNIQUE (thread_id, message_id)
);

CREATE TABLE runs (
    thread_id        text NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    run_id           text NOT NULL,
    owner            text NOT NULL,
    status           text NOT NULL CHECK (status IN
                         ('running', 'succeeded', 'interrupted', 'cancelled', 'failed')),
    outcome          text,          -- success | interrupt | cancelled, for finished runs
    error_code       text,
    error_message    text,
    input_tokens     integer,
    output_tokens    integer,
    usage            jsonb,
    protocol_version text,
    worker_id        uuid REFERENCES workers (id) ON DELETE SET NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    first_event_at   timestamptz,
    finished_at      timestamptz,
    last_seq         integer NOT NULL DEFAULT 0,
    PRIMARY KEY (thread_id, run_id)
);
CREATE INDEX runs_started ON runs (started_at DESC);
CREATE INDEX runs_owner_started ON runs (owner, started_at DESC);
CREATE INDEX runs_running ON runs (worker_id) WHERE status = 'running';

-- Events in batches: one row holds consecutive events seq_from..seq_to as JSON lines, so a
-- fast stream costs a few rows per second, not one per token.
CREATE TABLE run_events (
    thread_id  text NOT NULL,
    run_id     text NOT NULL,
    seq_from   integer NOT NULL,
    seq_to     integer NOT NULL,
    events     bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (thread_id, run_id, seq_from),
    FOREIGN KEY (thread_id, run_id) REFERENCES runs (thread_id, run_id) ON DELETE CASCADE
);
CREATE INDEX run_events_created ON run_events (created_at);

CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    thread_id   text,
    details     jsonb NOT NULL DEFAULT '{}',
    remote_addr text
);
CREATE INDEX audit_log_at ON audit_log (at DESC);
CREATE INDEX audit_log_thread ON audit_log (thread_id, at DESC) WHERE thread_id IS NOT NULL;
CREATE INDEX audit_log_actor ON audit_log (actor, at DESC);
