-- One key check value per secrets key id: a constant sealed with that key. A process whose
-- keyring cannot open the value of a key id it holds has another key under that id, and
-- refuses to start rather than seal secrets the other processes cannot open.
CREATE TABLE secrets_key_checks (
    key_id TEXT PRIMARY KEY,
    sealed TEXT NOT NULL
);
