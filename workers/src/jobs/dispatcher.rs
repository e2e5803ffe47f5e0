//! Events → jobs, exactly once. The dispatcher is a projection: the projection runner hands
//! it each batch of events inside the transaction that moves its checkpoint, and it queues
//! the batch's jobs in that same transaction. A crash before the commit loses both, and the
//! batch is dispatched again; a job is keyed `"{kind}:{event_id}"`, so applying an event twice
//! queues one job.
//!
//! It is not a read model: replay never runs it (re-sending yesterday's emails is not a
//! rebuild), and a new dispatcher starts at the head of the log, not at its beginning.

use chrono::Utc;
use futures::{FutureExt, future::BoxFuture};
use sqlx::AnyConnection;
use switchyard_command::{
    Backend,
    account::Account,
    channels::ChannelsEvent,
    event_log::{EventCodec, RecordedEvent, decode, read_stream_until},
    handler::{Aggregate, Loaded, fold},
    user::{Member, User, UserEvent},
};
use switchyard_projections::{Projection, ProjectionError};
use ulid::Ulid;
use uuid::Uuid;

use super::{
    job::{Job, NoticeContext, SecurityChange},
    store,
};

/// The stream type and event type of the bench's no-op requests.
pub const BENCH_STREAM_TYPE: &str = "bench";
pub const NOOP_REQUESTED: &str = "NoopRequested";

pub struct Dispatcher;

impl Projection for Dispatcher {
    fn name(&self) -> &'static str {
        "job_dispatcher"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    fn starts_at_head(&self) -> bool {
        true
    }

    fn apply<'c>(
        &'c self,
        conn: &'c mut AnyConnection,
        events: &'c [RecordedEvent],
    ) -> BoxFuture<'c, Result<(), ProjectionError>> {
        async move {
            let backend = Backend::of(conn);
            let now = Utc::now();
            for event in events {
                if let Some((id, job)) = route(conn, backend, event).await? {
                    let key = format!("{}:{}", job.kind(), event.event_id);
                    store::enqueue(conn, backend, id, &key, &job, now).await?;
                }
            }
            Ok(())
        }
        .boxed()
    }
}

/// The job id for a job asked for by a command that named it (a test's id), or by an event.
/// Both are UUIDv7, whose first 48 bits are a millisecond timestamp, as a ULID's are.
pub fn job_id(uuid: Uuid) -> Ulid {
    Ulid::from(uuid.as_u128())
}

/// The job an event asks for, if any.
async fn route(
    conn: &mut AnyConnection,
    backend: Backend,
    event: &RecordedEvent,
) -> Result<Option<(Ulid, Job)>, ProjectionError> {
    let account_id = event.metadata.account_id;
    let stream_type = event.stream_type.as_str();
    if stream_type == BENCH_STREAM_TYPE && event.event_type == NOOP_REQUESTED {
        return Ok(Some((job_id(event.event_id), Job::Noop { account_id })));
    }
    if stream_type == ChannelsEvent::STREAM_TYPE {
        let job = match decode::<ChannelsEvent>(event).map_err(ProjectionError::decode(event))? {
            ChannelsEvent::SmtpTestRequested { test_id, to } => Some((
                job_id(test_id),
                Job::SmtpTest {
                    account_id,
                    to: to.as_str().to_owned(),
                },
            )),
            ChannelsEvent::SmsTestRequested { test_id, to } => Some((
                job_id(test_id),
                Job::SmsTest {
                    account_id,
                    to: to.as_str().to_owned(),
                },
            )),
            ChannelsEvent::SmtpSettingsChanged(_) | ChannelsEvent::SmsSettingsChanged(_) => None,
        };
        return Ok(job);
    }
    if stream_type != UserEvent::STREAM_TYPE {
        return Ok(None);
    }
    let change = match decode::<UserEvent>(event).map_err(ProjectionError::decode(event))? {
        UserEvent::LoggedIn { .. } => None,
        UserEvent::PasswordChanged { .. } => Some(SecurityChange::PasswordChanged),
        UserEvent::EmailChanged { email } => Some(SecurityChange::EmailChanged {
            new_email: email.as_str().to_owned(),
        }),
        UserEvent::TotpEnabled { .. } => Some(SecurityChange::TotpEnabled),
        UserEvent::TotpDisabled {
            reset_by_administrator,
        } => Some(if reset_by_administrator {
            SecurityChange::TotpReset
        } else {
            SecurityChange::TotpDisabled
        }),
        _ => return Ok(None),
    };
    let general = as_of::<Account>(conn, backend, &account_id.stream_id(), event)
        .await?
        .state
        .sections
        .map(|(_, general)| general.value);
    let Some(general) = general else {
        return Ok(None);
    };
    if change.is_none() && !general.login_alerts {
        return Ok(None);
    }
    // The user as they were just before the event: an email change is told to the old address.
    let before = as_of::<User>(conn, backend, &event.stream_id, event).await?;
    let Some(Member { email, profile, .. }) = before.state.member else {
        return Ok(None);
    };
    let context = NoticeContext {
        name: profile.name.as_str().to_owned(),
        at: event.recorded_at,
        date_format: general.date_format,
        ip: event.metadata.client_ip.clone(),
        user_agent: event.metadata.user_agent.clone(),
    };
    let to = email.as_str().to_owned();
    let job = match change {
        None => Job::LoginAlert {
            account_id,
            to,
            context,
        },
        Some(change) => Job::SecurityNotice {
            account_id,
            to,
            change,
            context,
        },
    };
    Ok(Some((job_id(event.event_id), job)))
}

/// A stream's state as it stood just before `event`.
async fn as_of<A: Aggregate>(
    conn: &mut AnyConnection,
    backend: Backend,
    stream_id: &str,
    event: &RecordedEvent,
) -> Result<Loaded<A>, ProjectionError> {
    let events =
        read_stream_until(&mut *conn, backend, stream_id, event.global_position - 1).await?;
    fold::<A>(&events).map_err(ProjectionError::decode(event))
}
