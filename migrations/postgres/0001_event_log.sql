-- The event log: the only source of truth. One table for every stream.
-- Writers hold a transaction-level advisory lock while they insert and commit, so positions
-- become visible in order and a reader that follows global_position never skips one.
CREATE TABLE events (
    global_position BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id       TEXT        NOT NULL,
    stream_type     TEXT        NOT NULL,
    version         BIGINT      NOT NULL,  -- per stream, from 1
    event_id        UUID        NOT NULL UNIQUE,
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL,
    data            JSONB       NOT NULL,
    metadata        JSONB       NOT NULL,  -- account, actor, correlation, causation, request, ip, user agent
    recorded_at     TIMESTAMPTZ NOT NULL,
    UNIQUE (stream_id, version)
);
