//! Users of every account, for login and (later) the user list.

use futures::{FutureExt, future::BoxFuture};
use sqlx::AnyConnection;
use switchyard_command::{
    event_log::{EventCodec, RecordedEvent, decode},
    user::UserEvent,
};

use crate::{Projection, ProjectionError};

pub struct UsersProjection;

impl Projection for UsersProjection {
    fn name(&self) -> &'static str {
        "users"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["users"]
    }

    fn apply<'c>(
        &'c self,
        conn: &'c mut AnyConnection,
        event: &'c RecordedEvent,
    ) -> BoxFuture<'c, Result<(), ProjectionError>> {
        async move {
            if event.stream_type != UserEvent::STREAM_TYPE {
                return Ok(());
            }
            let user_id = event.stream_id.trim_start_matches("user-");
            match decode::<UserEvent>(event).map_err(ProjectionError::decode(event))? {
                UserEvent::UserRegistered(registration) => {
                    sqlx::query(
                        "INSERT INTO users (id, account_id, email, name, role, password_hash, version, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(user_id)
                    .bind(registration.account_id.to_string())
                    .bind(registration.email.normalized())
                    .bind(registration.name.as_str())
                    .bind(registration.role.as_str())
                    .bind(registration.password_hash)
                    .bind(event.version)
                    .bind(event.recorded_at.to_rfc3339())
                    .execute(&mut *conn)
                    .await?;
                }
            }
            Ok(())
        }
        .boxed()
    }
}
