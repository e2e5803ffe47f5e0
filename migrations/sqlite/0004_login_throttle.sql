-- Login throttling: operational state, not derived from events (failed logins must not grow
-- the event log; replay leaves these tables alone). Idle rows mean nothing any more and are
-- deleted by `LoginThrottle::prune` (web/src/throttle.rs), using the indexes on the times.

-- Failures of one client (IP address) at one login email.
CREATE TABLE login_throttle_clients (
    email           TEXT   NOT NULL,  -- normalized; counted whether or not a user has it
    client          TEXT   NOT NULL,  -- IP address, or "unknown"
    failures        BIGINT NOT NULL,  -- failures of the current streak
    lockouts        BIGINT NOT NULL,  -- lockouts so far: the next lasts 2^lockouts times the first
    last_failure_at TEXT   NOT NULL,  -- RFC 3339 UTC with microseconds, like every time here
    locked_until    TEXT,             -- end of the latest lockout; NULL before the first
    PRIMARY KEY (email, client)
);
CREATE INDEX login_throttle_clients_by_last_failure ON login_throttle_clients (last_failure_at);

-- Failures at one login email from any client. Its lockout refuses only unknown clients.
CREATE TABLE login_throttle_accounts (
    email           TEXT   PRIMARY KEY,
    failures        BIGINT NOT NULL,
    lockouts        BIGINT NOT NULL,
    last_failure_at TEXT   NOT NULL,
    locked_until    TEXT
);
CREATE INDEX login_throttle_accounts_by_last_failure ON login_throttle_accounts (last_failure_at);

-- Clients that logged in at an email: the account lockout does not refuse them.
CREATE TABLE login_known_clients (
    email           TEXT NOT NULL,
    client          TEXT NOT NULL,
    last_success_at TEXT NOT NULL,
    PRIMARY KEY (email, client)
);
CREATE INDEX login_known_clients_by_last_success ON login_known_clients (last_success_at);
