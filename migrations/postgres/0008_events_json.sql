-- The log keeps each event's data and metadata as the text it was appended with. Nothing
-- queries inside them: every reader takes whole documents, and JSONB rebuilt each one as
-- text on every read (over half of the server's time in a full read of the log) after
-- parsing it on every append. JSON still rejects invalid documents.
ALTER TABLE events
    ALTER COLUMN data TYPE JSON USING data::json,
    ALTER COLUMN metadata TYPE JSON USING metadata::json;
