-- Who holds a running key: a random token per request that claimed it (or took it over once
-- abandoned). The append that carries out the request stores its answer only if it still
-- holds the key, in the same transaction as its events; a request whose key was taken over
-- appends nothing.
ALTER TABLE idempotency_keys ADD COLUMN claim TEXT;
