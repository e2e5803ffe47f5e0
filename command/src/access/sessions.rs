//! Login sessions. A session token is 256 random bits, given to the client once; the
//! database keeps only its SHA-256. A session ends at [`SESSION_LIFETIME`] after login, or
//! after [`SESSION_IDLE_TIMEOUT`] unused, or when an event of its user's stream ends it (a
//! password or two-factor change, disabling or deleting the user): each session is issued
//! at a version of that stream, and such an event ends those issued before it. The lookup
//! that checks all this, with the user's permissions, is
//! `switchyard_projections::queries::session_user`.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    Database,
    db::PerBackend,
    domain::{AccountId, UserId},
    timestamp,
};

/// A session ends this long after login, whatever happens (OWASP ASVS 7.3: 12 hours) …
pub const SESSION_LIFETIME: Duration = Duration::hours(12);
/// … or after this long unused (ASVS 7.3: 30 minutes).
pub const SESSION_IDLE_TIMEOUT: Duration = Duration::minutes(30);
/// How stale `last_used_at` may get before a request moves it: one write a minute, not one
/// per request.
const LAST_USED_RESOLUTION: Duration = Duration::minutes(1);

/// The statements that write times, per backend.
struct Statements {
    open: String,
    used: String,
}

static SQL: PerBackend<Statements> = PerBackend::new(|backend| {
    let time = |n| timestamp::param(backend, n);
    Statements {
        open: format!(
            "INSERT INTO sessions (id, token_hash, user_id, account_id, user_version, \
             created_at, expires_at, last_used_at) VALUES ($1, $2, $3, $4, $5, {}, {}, {})",
            time(6),
            time(7),
            time(6)
        ),
        used: format!(
            "UPDATE sessions SET last_used_at = {} WHERE id = $2",
            time(1)
        ),
    }
});

/// A session just opened: the token exists only here and with the client.
pub struct NewSession {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// What the database keeps of a token.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The `sessions` table.
#[derive(Clone, Debug)]
pub struct Sessions {
    db: Database,
}

impl Sessions {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Opens a session for a user who just logged in, issued at `user_version`: the version
    /// of their stream that recorded the login. Events that end sessions end those issued
    /// at an earlier version.
    pub async fn open(
        &self,
        user_id: UserId,
        account_id: AccountId,
        user_version: i64,
    ) -> Result<NewSession, sqlx::Error> {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let now = Utc::now();
        let expires_at = now + SESSION_LIFETIME;
        sqlx::query(SQL.get(self.db.backend).open.as_str())
            .bind(Uuid::now_v7().to_string())
            .bind(hash_token(&token))
            .bind(user_id.to_string())
            .bind(account_id.to_string())
            .bind(user_version)
            .bind(timestamp::format(now))
            .bind(timestamp::format(expires_at))
            .execute(&self.db.pool)
            .await?;
        Ok(NewSession { token, expires_at })
    }

    /// Records that the session `id`, last used at `last_used_at` (as stored), was used
    /// `now`: a write only once that is older than a minute, for the idle timeout.
    pub async fn used(
        &self,
        id: &str,
        last_used_at: &str,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        if last_used_at >= timestamp::format(now - LAST_USED_RESOLUTION).as_str() {
            return Ok(());
        }
        sqlx::query(SQL.get(self.db.backend).used.as_str())
            .bind(timestamp::format(now))
            .bind(id)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }

    /// Ends the session whose token hashes to `token_hash` (logout).
    pub async fn end(&self, token_hash: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.db.pool)
            .await?;
        Ok(())
    }
}
