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
    event_log::{EventCodec, RecordedEvent, decode},
    gateways::GatewaysEvent,
    handler::{Aggregate, Loaded, load_at},
    ledger::LedgerEvent,
    roster::{Roster, roster_stream},
    user::{Member, User, UserEvent},
};
use switchyard_projections::{Projection, ProjectionError, queries::job_id};
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
                for (id, to, job) in notify_administrators(conn, backend, event).await? {
                    let key = format!("{}:{}:{to}", job.kind(), event.event_id);
                    store::enqueue(conn, backend, id, &key, &job, now).await?;
                }
            }
            Ok(())
        }
        .boxed()
    }
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
    if stream_type == GatewaysEvent::STREAM_TYPE {
        let job = match decode::<GatewaysEvent>(event).map_err(ProjectionError::decode(event))? {
            GatewaysEvent::GatewayVerificationRequested {
                gateway_id,
                verification_id,
            } => Some((
                job_id(verification_id),
                Job::GatewayVerify {
                    account_id,
                    gateway_id,
                },
            )),
            GatewaysEvent::GatewayAdded { .. }
            | GatewaysEvent::GatewayChanged { .. }
            | GatewaysEvent::GatewayRemoved { .. } => None,
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

/// The jobs an account-wide event asks for, one per enabled administrator of the account as
/// it stood then, each with its recipient: the low-balance alert.
async fn notify_administrators(
    conn: &mut AnyConnection,
    backend: Backend,
    event: &RecordedEvent,
) -> Result<Vec<(Ulid, String, Job)>, ProjectionError> {
    if event.stream_type != LedgerEvent::STREAM_TYPE {
        return Ok(Vec::new());
    }
    let LedgerEvent::BalanceFellBelowThreshold {
        available,
        threshold,
    } = decode::<LedgerEvent>(event).map_err(ProjectionError::decode(event))?
    else {
        return Ok(Vec::new());
    };
    let account_id = event.metadata.account_id;
    let roster = as_of::<Roster>(conn, backend, &roster_stream(account_id), event).await?;
    let mut jobs = Vec::new();
    for administrator in roster.state.administrators() {
        let user = as_of::<User>(conn, backend, &administrator.stream_id(), event).await?;
        let Some(member) = user.state.member else {
            continue;
        };
        let to = member.email.as_str().to_owned();
        // One job per recipient of the event, with an id that a second dispatch gives again.
        let id = job_id(Uuid::new_v5(&event.event_id, to.as_bytes()));
        let job = Job::LowBalanceAlert {
            account_id,
            to: to.clone(),
            name: member.profile.name.as_str().to_owned(),
            available,
            threshold,
        };
        jobs.push((id, to, job));
    }
    Ok(jobs)
}

/// A stream's state as it stood just before `event`: from a snapshot and the events after
/// it, so a long stream is not folded from its start for every event.
async fn as_of<A: Aggregate>(
    conn: &mut AnyConnection,
    backend: Backend,
    stream_id: &str,
    event: &RecordedEvent,
) -> Result<Loaded<A>, ProjectionError> {
    Ok(load_at(conn, backend, stream_id, event.global_position - 1).await?)
}
