-- Every time is RFC 3339 UTC text with microseconds at a fixed width,
-- `2025-03-01T12:00:00.000000Z` (see command/src/timestamp.rs), so that text compares as
-- time. Two writers used other widths: the job tables milliseconds (`…00.123Z`), the
-- projection failures whole seconds (`…00Z`). Every other time was written this way already.
UPDATE job_reports SET created_at = substr(created_at, 1, 23) || '000Z'
    WHERE length(created_at) = 24;
UPDATE job_reports SET started_at = substr(started_at, 1, 23) || '000Z'
    WHERE length(started_at) = 24;
UPDATE job_reports SET finished_at = substr(finished_at, 1, 23) || '000Z'
    WHERE length(finished_at) = 24;
UPDATE job_reports SET retry_at = substr(retry_at, 1, 23) || '000Z'
    WHERE length(retry_at) = 24;
UPDATE job_effects SET completed_at = substr(completed_at, 1, 23) || '000Z'
    WHERE length(completed_at) = 24;
UPDATE projection_checkpoints SET failing_since = substr(failing_since, 1, 19) || '.000000Z'
    WHERE length(failing_since) = 20;
