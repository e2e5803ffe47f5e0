-- Sessions end by versions of their user's stream, not by clocks. A session is issued at the
-- version of the `LoggedIn` event that recorded its login; the users read model keeps the
-- version of the user's last event that ended sessions (a password or two-factor change,
-- disabling or deleting the user) and the one session that event kept (the user's own, when
-- they made the change). A session issued before that version is over.

-- Sessions from before this migration have no version: they end, and their users log in again.
DELETE FROM sessions;
ALTER TABLE sessions ADD COLUMN user_version BIGINT NOT NULL DEFAULT 0;

ALTER TABLE users ADD COLUMN sessions_ended_at_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN session_kept TEXT;
