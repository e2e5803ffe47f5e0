-- Login sessions: operational state, not derived from events (replay leaves them alone).
CREATE TABLE sessions (
    token_hash   TEXT PRIMARY KEY,  -- SHA-256 of the bearer token; the token itself is never stored
    user_id      TEXT NOT NULL,
    account_id   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);
