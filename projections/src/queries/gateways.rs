//! Reads of the gateways read model, scoped by account.

use sqlx::Row;
use switchyard_command::{
    Database,
    domain::{AccountId, GatewayId},
    gateways::PublicGateway,
};

/// A gateway as stored, with the version that last changed it.
#[derive(Debug, Clone)]
pub struct GatewayRow {
    pub id: GatewayId,
    pub version: i64,
    pub gateway: PublicGateway,
}

fn gateway_row(row: &sqlx::any::AnyRow) -> Result<GatewayRow, sqlx::Error> {
    let decode = |e: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::Decode(e);
    let id: String = row.try_get(0)?;
    Ok(GatewayRow {
        id: GatewayId::parse(&id).ok_or_else(|| decode(format!("gateway id {id:?}").into()))?,
        version: row.try_get(1)?,
        gateway: serde_json::from_str(&row.try_get::<String, _>(2)?)
            .map_err(|e| decode(Box::new(e)))?,
    })
}

/// The account's gateways after `after` (a page cursor), oldest first.
pub async fn gateways_page(
    db: &Database,
    account: AccountId,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<GatewayRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT gateway_id, version, data FROM gateways \
         WHERE account_id = $1 AND gateway_id > COALESCE($2, '') \
         ORDER BY gateway_id LIMIT $3",
    )
    .bind(account.to_string())
    .bind(after)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(gateway_row).collect()
}

/// One gateway of the account; another account's is not found.
pub async fn gateway(
    db: &Database,
    account: AccountId,
    id: GatewayId,
) -> Result<Option<GatewayRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT gateway_id, version, data FROM gateways WHERE account_id = $1 AND gateway_id = $2",
    )
    .bind(account.to_string())
    .bind(id.to_string())
    .fetch_optional(&db.pool)
    .await?;
    row.as_ref().map(gateway_row).transpose()
}
