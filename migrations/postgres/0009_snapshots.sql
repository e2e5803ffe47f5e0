-- Snapshots of long streams' states, so loading one reads a snapshot and the events after
-- it, not the whole stream. Derived from the log and disposable: a snapshot whose
-- state_version is not the aggregate's current one is ignored, and replaced by the next.
-- A few per stream are kept, so a reader that needs a stream as it stood a little earlier
-- (the job dispatcher) finds one too.
CREATE TABLE snapshots (
    stream_id      TEXT    NOT NULL,
    stream_version BIGINT  NOT NULL,  -- the state after this version of the stream
    position       BIGINT  NOT NULL,  -- the log position of that version's event
    state_version  INTEGER NOT NULL,  -- the aggregate's state layout it was written with
    data           TEXT    NOT NULL,  -- JSON
    PRIMARY KEY (stream_id, stream_version)
);
