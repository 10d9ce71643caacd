-- Project API keys (`citadel keys`): machine credentials limited to their scopes.
-- Released migrations are never edited: add a new numbered file instead.

-- The secret itself is never stored: it is shown once, when the key is created, and only its
-- sha256 is kept to check it against.
CREATE TABLE api_keys (
    id           text PRIMARY KEY,  -- key_…, also the user_id the key acts as
    name         text NOT NULL,
    secret_hash  bytea NOT NULL CHECK (octet_length(secret_hash) = 32),
    scopes       text[] NOT NULL,   -- agents, kb:<name>, kb:<name>:write
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz        -- written at most once a minute per key
);
