-- Idempotency-Key on creating POSTs: operational state, not derived from events (replay
-- leaves it alone). A row without a status is a request still running (or abandoned by a
-- crash: taken over after a minute). Rows older than a day are pruned.
CREATE TABLE idempotency_keys (
    account_id     TEXT   NOT NULL,
    key            TEXT   NOT NULL,
    request_digest TEXT   NOT NULL,  -- SHA-256 of the method, path and body
    status         BIGINT,           -- the first answer's status, once it is known
    etag           TEXT,
    body           TEXT,
    created_at     TEXT   NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
