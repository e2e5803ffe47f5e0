-- Identity: profiles, two-factor state and group membership in the users read model, the
-- groups read model, and a public id for sessions (events name the session that made a
-- change, to keep it when the user's other sessions end).

ALTER TABLE users ADD COLUMN phone TEXT;
ALTER TABLE users ADD COLUMN mobile TEXT;
-- 0 or 1: the Any driver cannot read SQLite booleans.
ALTER TABLE users ADD COLUMN totp_enabled BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN last_login_at TEXT;
-- Deleted users stay, so the audit log can still name who did what.
ALTER TABLE users ADD COLUMN deleted_at TEXT;
-- A disabled user cannot log in; their sessions ended when they were disabled.
ALTER TABLE users ADD COLUMN disabled_at TEXT;

CREATE TABLE groups (
    id          TEXT   PRIMARY KEY,
    account_id  TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    permissions TEXT   NOT NULL,  -- JSON {resource: "allow" | "deny"}; absent = unset
    version     BIGINT NOT NULL,  -- stream version of the last change: the ETag
    created_at  TEXT   NOT NULL
);
CREATE INDEX groups_by_account ON groups (account_id, id);

CREATE TABLE user_groups (
    user_id    TEXT NOT NULL,
    group_id   TEXT NOT NULL,
    PRIMARY KEY (user_id, group_id)
);
CREATE INDEX user_groups_by_group ON user_groups (group_id);

-- Sessions from before this migration have no id: they end, and their users log in again.
DELETE FROM sessions;
ALTER TABLE sessions ADD COLUMN id TEXT;
CREATE UNIQUE INDEX sessions_by_id ON sessions (id);
-- For the idle timeout: moved forward at most once a minute while the session is used.
ALTER TABLE sessions ADD COLUMN last_used_at TEXT;
