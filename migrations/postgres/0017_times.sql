-- Every time is a timestamptz, compared as a time (see command/src/timestamp.rs); until now
-- only events.recorded_at was, and the others were RFC 3339 text compared as text. Existing
-- values convert as they are: every writer wrote RFC 3339 UTC, with seconds, milliseconds
-- or microseconds. Indexes on these columns are rebuilt by the type change.
ALTER TABLE users
    ALTER COLUMN created_at    TYPE timestamptz USING created_at::timestamptz,
    ALTER COLUMN last_login_at TYPE timestamptz USING last_login_at::timestamptz,
    ALTER COLUMN deleted_at    TYPE timestamptz USING deleted_at::timestamptz,
    ALTER COLUMN disabled_at   TYPE timestamptz USING disabled_at::timestamptz;
ALTER TABLE groups
    ALTER COLUMN created_at TYPE timestamptz USING created_at::timestamptz;
ALTER TABLE audit_log
    ALTER COLUMN recorded_at TYPE timestamptz USING recorded_at::timestamptz;
ALTER TABLE ledger_entries
    ALTER COLUMN at TYPE timestamptz USING at::timestamptz;
ALTER TABLE projection_checkpoints
    ALTER COLUMN failing_since TYPE timestamptz USING failing_since::timestamptz;
ALTER TABLE sessions
    ALTER COLUMN created_at   TYPE timestamptz USING created_at::timestamptz,
    ALTER COLUMN expires_at   TYPE timestamptz USING expires_at::timestamptz,
    ALTER COLUMN last_used_at TYPE timestamptz USING last_used_at::timestamptz;
ALTER TABLE login_throttle_clients
    ALTER COLUMN last_failure_at TYPE timestamptz USING last_failure_at::timestamptz,
    ALTER COLUMN locked_until    TYPE timestamptz USING locked_until::timestamptz;
ALTER TABLE login_throttle_accounts
    ALTER COLUMN last_failure_at TYPE timestamptz USING last_failure_at::timestamptz,
    ALTER COLUMN locked_until    TYPE timestamptz USING locked_until::timestamptz;
ALTER TABLE login_known_clients
    ALTER COLUMN last_success_at TYPE timestamptz USING last_success_at::timestamptz;
ALTER TABLE idempotency_keys
    ALTER COLUMN created_at TYPE timestamptz USING created_at::timestamptz;
ALTER TABLE job_reports
    ALTER COLUMN created_at  TYPE timestamptz USING created_at::timestamptz,
    ALTER COLUMN started_at  TYPE timestamptz USING started_at::timestamptz,
    ALTER COLUMN finished_at TYPE timestamptz USING finished_at::timestamptz,
    ALTER COLUMN retry_at    TYPE timestamptz USING retry_at::timestamptz;
ALTER TABLE job_effects
    ALTER COLUMN completed_at TYPE timestamptz USING completed_at::timestamptz;
