use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::{AccountId, UserId};

/// What a write expects of its stream before it appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last version must be exactly this.
    Exact(i64),
    /// The stream's last event must be `event_id`, at `version`: for an append decided on
    /// the state another append leaves while that one is still in flight. If that one
    /// fails, this one must too, even when other events have brought the stream to the
    /// same version meanwhile.
    After { version: i64, event_id: Uuid },
}

impl ExpectedVersion {
    pub fn as_version(self) -> i64 {
        match self {
            Self::NoStream => 0,
            Self::Exact(version) | Self::After { version, .. } => version,
        }
    }

    /// Whether a stream whose last event is `last_event_id`, at `version`, meets this.
    pub fn holds(self, version: i64, last_event_id: Option<Uuid>) -> bool {
        match self {
            Self::NoStream => version == 0,
            Self::Exact(expected) => version == expected,
            Self::After {
                version: expected,
                event_id,
            } => version == expected && last_event_id == Some(event_id),
        }
    }
}

/// An event ready to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub data: Value,
}

/// Events for one stream, appended only if the stream is at `expected`.
#[derive(Debug, Clone)]
pub struct StreamWrite {
    pub stream_id: String,
    pub stream_type: String,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum Actor {
    User(UserId),
    /// The service itself: the CLI, a worker, a scheduled job.
    System,
}

impl Actor {
    pub fn label(&self) -> String {
        match self {
            Self::User(id) => id.to_string(),
            Self::System => "system".into(),
        }
    }
}

/// Context stored with every event of an append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    pub account_id: AccountId,
    pub actor: Actor,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub request_id: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    /// The public id of the login session the request came with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

impl Metadata {
    /// Metadata for work started by the service itself (CLI, jobs), with a fresh correlation.
    pub fn system(account_id: AccountId) -> Self {
        Self {
            account_id,
            actor: Actor::System,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            request_id: None,
            client_ip: None,
            user_agent: None,
            session_id: None,
        }
    }
}

/// An event as stored, upcast to its current schema version.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub global_position: i64,
    pub stream_id: String,
    pub stream_type: String,
    pub version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub data: Value,
    pub metadata: Metadata,
    pub recorded_at: DateTime<Utc>,
}

/// Where an append landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Position of the last event written (or found, for a retried append).
    pub last_position: i64,
    /// The version of each written stream after the append, in the order of the writes.
    pub stream_versions: Vec<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("stream {stream_id} is at version {actual}, expected {expected}")]
    Conflict {
        stream_id: String,
        expected: i64,
        actual: i64,
    },
    #[error("an append must write at least one event")]
    Empty,
    #[error("event log database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The batch this append was committed with failed for all of them (a lock or
    /// statement timeout, a lost connection): nothing of it was stored.
    #[error("event log database error: {0}")]
    BatchFailed(std::sync::Arc<sqlx::Error>),
    #[error("event log writer has stopped")]
    Closed,
    /// The append carried out a request whose idempotency key a retry has taken over (the
    /// request was presumed abandoned): nothing was written; the retry runs instead.
    #[error("the request's idempotency key was taken over by a retry")]
    KeyTakenOver,
}
