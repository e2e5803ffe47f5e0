//! The gateways read model: one row per gateway with the gateway as readers see it
//! ([`PublicGateway`]: no secret, only whether each is set). Gateways change rarely, so each
//! event is written as it comes: an upsert, or a delete for a removed gateway.

use futures::{FutureExt, future::BoxFuture};
use sqlx::AnyConnection;
use switchyard_command::{
    event_log::{EventCodec, RecordedEvent, decode},
    gateways::{GatewaySettings, GatewaysEvent, PublicGateway},
};

use crate::{Projection, ProjectionError};

pub struct GatewaysProjection;

impl Projection for GatewaysProjection {
    fn name(&self) -> &'static str {
        "gateways"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["gateways"]
    }

    fn apply<'c>(
        &'c self,
        conn: &'c mut AnyConnection,
        events: &'c [RecordedEvent],
    ) -> BoxFuture<'c, Result<(), ProjectionError>> {
        async move {
            for event in events
                .iter()
                .filter(|e| e.stream_type == GatewaysEvent::STREAM_TYPE)
            {
                match decode::<GatewaysEvent>(event).map_err(ProjectionError::decode(event))? {
                    GatewaysEvent::GatewayAdded {
                        gateway_id,
                        settings,
                    }
                    | GatewaysEvent::GatewayChanged {
                        gateway_id,
                        settings,
                    } => upsert(conn, event, &gateway_id.to_string(), &settings).await?,
                    GatewaysEvent::GatewayRemoved { gateway_id, .. } => {
                        sqlx::query("DELETE FROM gateways WHERE gateway_id = $1")
                            .bind(gateway_id.to_string())
                            .execute(&mut *conn)
                            .await?;
                    }
                    GatewaysEvent::GatewayVerificationRequested { .. } => {}
                }
            }
            Ok(())
        }
        .boxed()
    }
}

async fn upsert(
    conn: &mut AnyConnection,
    event: &RecordedEvent,
    gateway_id: &str,
    settings: &GatewaySettings,
) -> Result<(), sqlx::Error> {
    let data = serde_json::to_string(&PublicGateway::from(settings)).expect("gateways serialize");
    sqlx::query(
        "INSERT INTO gateways (gateway_id, account_id, provider, mode, version, data) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (gateway_id) DO UPDATE SET version = excluded.version, data = excluded.data",
    )
    .bind(gateway_id)
    .bind(event.metadata.account_id.to_string())
    .bind(settings.credentials.provider().as_str())
    .bind(settings.mode.as_str())
    .bind(event.version)
    .bind(data)
    .execute(conn)
    .await?;
    Ok(())
}
