-- The event log: the only source of truth. One table for every stream.
CREATE TABLE events (
    global_position INTEGER PRIMARY KEY,  -- rowid: one writer at a time, so it grows in commit order
    stream_id       TEXT    NOT NULL,
    stream_type     TEXT    NOT NULL,
    version         INTEGER NOT NULL,     -- per stream, from 1
    event_id        TEXT    NOT NULL UNIQUE,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL,
    data            TEXT    NOT NULL,     -- JSON
    metadata        TEXT    NOT NULL,     -- JSON: account, actor, correlation, causation, request, ip, user agent
    recorded_at     TEXT    NOT NULL,     -- RFC 3339 UTC
    UNIQUE (stream_id, version)
);
