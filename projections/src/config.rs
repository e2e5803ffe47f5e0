//! Account configuration: one JSON document per account and section, with the stream version
//! that last set it (the section's ETag).

use futures::{FutureExt, future::BoxFuture};
use serde::Serialize;
use sqlx::AnyConnection;
use switchyard_command::{
    account::AccountEvent,
    event_log::{EventCodec, RecordedEvent, decode},
};

use crate::{Projection, ProjectionError};

pub struct ConfigProjection;

pub const COMPANY: &str = "company";
pub const GENERAL: &str = "general";

impl Projection for ConfigProjection {
    fn name(&self) -> &'static str {
        "account_config"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["account_config"]
    }

    fn apply<'c>(
        &'c self,
        conn: &'c mut AnyConnection,
        event: &'c RecordedEvent,
    ) -> BoxFuture<'c, Result<(), ProjectionError>> {
        async move {
            if event.stream_type != AccountEvent::STREAM_TYPE {
                return Ok(());
            }
            let account = event.metadata.account_id.to_string();
            match decode::<AccountEvent>(event).map_err(ProjectionError::decode(event))? {
                AccountEvent::AccountOpened { company, general } => {
                    upsert(conn, &account, COMPANY, event.version, &company).await?;
                    upsert(conn, &account, GENERAL, event.version, &general).await?;
                }
                AccountEvent::CompanyInformationChanged(company) => {
                    upsert(conn, &account, COMPANY, event.version, &company).await?;
                }
                AccountEvent::GeneralInformationChanged(general) => {
                    upsert(conn, &account, GENERAL, event.version, &general).await?;
                }
            }
            Ok(())
        }
        .boxed()
    }
}

async fn upsert(
    conn: &mut AnyConnection,
    account: &str,
    section: &str,
    version: i64,
    value: &impl Serialize,
) -> Result<(), sqlx::Error> {
    let data = serde_json::to_string(value).expect("configuration serializes");
    sqlx::query(
        "INSERT INTO account_config (account_id, section, version, data) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (account_id, section) DO UPDATE SET version = excluded.version, data = excluded.data",
    )
    .bind(account)
    .bind(section)
    .bind(version)
    .bind(data)
    .execute(conn)
    .await?;
    Ok(())
}
