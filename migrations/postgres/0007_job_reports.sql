-- Jobs, as their accounts see them. apalis keeps the queue (its own tables: `Jobs` on
-- SQLite, `apalis.jobs` on PostgreSQL); these tables keep what a user reads at
-- GET /v1/jobs and what must survive retries. Operational state, not derived from events:
-- replay leaves them alone (re-running a side effect is never a rebuild).

-- One row per job, written by the dispatcher in the transaction that queues the job, then
-- by the worker when an attempt starts (running, attempts + 1) and when it ends (queued
-- again for a retry, succeeded or failed). `stages` is the last attempt's JSON array of
-- {stage, ok, detail}.
CREATE TABLE job_reports (
    job_id       TEXT   PRIMARY KEY,   -- the apalis job id (a ULID)
    account_id   TEXT   NOT NULL,
    kind         TEXT   NOT NULL,
    status       TEXT   NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    created_at   TEXT   NOT NULL,
    started_at   TEXT,                 -- when the first attempt started
    finished_at  TEXT,
    retry_at     TEXT,                 -- when a failed attempt will be retried
    stages       TEXT   NOT NULL DEFAULT '[]',
    error        TEXT
);
CREATE INDEX job_reports_by_account ON job_reports (account_id, job_id);

-- Side effects that completed, by a key derived from what they do (not from the attempt):
-- a job that runs again after its effect was recorded does not repeat it.
CREATE TABLE job_effects (
    effect_key   TEXT   PRIMARY KEY,
    job_id       TEXT   NOT NULL,
    completed_at TEXT   NOT NULL
);
