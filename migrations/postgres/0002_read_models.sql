-- Read models: every table here is rebuilt from the event log by `switchyard replay`.

CREATE TABLE projection_checkpoints (
    projection TEXT   PRIMARY KEY,
    position   BIGINT NOT NULL
);

-- One JSON document per account and configuration section ("company", "general").
CREATE TABLE account_config (
    account_id TEXT   NOT NULL,
    section    TEXT   NOT NULL,
    version    BIGINT NOT NULL,  -- stream version of the event that last changed the section: the ETag
    data       TEXT   NOT NULL,
    PRIMARY KEY (account_id, section)
);

CREATE TABLE users (
    id            TEXT   PRIMARY KEY,
    account_id    TEXT   NOT NULL,
    email         TEXT   NOT NULL,  -- lower-cased
    name          TEXT   NOT NULL,
    role          TEXT   NOT NULL,
    password_hash TEXT   NOT NULL,
    version       BIGINT NOT NULL,
    created_at    TEXT   NOT NULL
);
CREATE INDEX users_by_email ON users (email);
CREATE INDEX users_by_account ON users (account_id, id);

CREATE TABLE audit_log (
    position    BIGINT PRIMARY KEY,
    account_id  TEXT   NOT NULL,
    recorded_at TEXT   NOT NULL,
    actor_id    TEXT   NOT NULL,
    client_ip   TEXT,
    user_agent  TEXT,
    request_id  TEXT,
    event_type  TEXT   NOT NULL,
    stream_id   TEXT   NOT NULL,
    summary     TEXT   NOT NULL,
    changes     TEXT   NOT NULL  -- JSON {field: {from, to}}, secrets as "***"
);
CREATE INDEX audit_by_account ON audit_log (account_id, position);

-- The audit projection's memory of each section's last values, to diff the next change.
CREATE TABLE audit_sections (
    stream_id TEXT NOT NULL,
    section   TEXT NOT NULL,
    data      TEXT NOT NULL,
    PRIMARY KEY (stream_id, section)
);
