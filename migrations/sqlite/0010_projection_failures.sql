-- Why a projection is not moving, for `switchyard projections` in any process: the last
-- error, since when it has been failing (RFC 3339 UTC), and the log position of the event
-- it is stuck on when a batch of that event alone fails. Cleared when a batch commits.
ALTER TABLE projection_checkpoints ADD COLUMN last_error TEXT;
ALTER TABLE projection_checkpoints ADD COLUMN failing_since TEXT;
ALTER TABLE projection_checkpoints ADD COLUMN stuck_at BIGINT;
