//! Users of every account, for login and (later) the user list.

use futures::{FutureExt, future::BoxFuture};
use sqlx::AnyConnection;
use switchyard_command::{
    event_log::{EventCodec, RecordedEvent, decode},
    user::UserEvent,
};

use crate::{
    Projection, ProjectionError,
    bulk::{Param, insert_rows},
};

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
        events: &'c [RecordedEvent],
    ) -> BoxFuture<'c, Result<(), ProjectionError>> {
        async move {
            let mut registered: Vec<Vec<Param>> = Vec::new();
            for event in events.iter().filter(|e| e.stream_type == UserEvent::STREAM_TYPE) {
                let user_id = event.stream_id.trim_start_matches("user-");
                match decode::<UserEvent>(event).map_err(ProjectionError::decode(event))? {
                    UserEvent::UserRegistered(registration) => registered.push(vec![
                        user_id.into(),
                        registration.account_id.to_string().into(),
                        registration.email.normalized().into(),
                        registration.name.as_str().into(),
                        registration.role.as_str().into(),
                        registration.password_hash.into(),
                        event.version.into(),
                        event.recorded_at.to_rfc3339().into(),
                    ]),
                }
            }
            insert_rows(
                conn,
                "INSERT INTO users (id, account_id, email, name, role, password_hash, version, created_at)",
                "ON CONFLICT (id) DO NOTHING",
                8,
                registered,
            )
            .await?;
            Ok(())
        }
        .boxed()
    }
}
