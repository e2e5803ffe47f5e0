//! The account's balance and its ledger (permission `usage`), the low-balance alert, and the
//! operator's balance adjustments. Every amount is integer minor units inside, decimal
//! strings outside.

use std::io;

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use switchyard_command::{
    domain::{AccountId, CurrencyCode, Money, Text, Validator},
    idempotency::{Answering, KeyClaim},
    ledger::{Entry, EntryKind, Ledger, LedgerCommand, Overdraft, ledger_stream},
    timestamp,
};
use switchyard_projections::{
    GENERAL_SECTION,
    queries::{self, BalanceRow, EntryRow, LedgerFilter},
};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    answer::Answer,
    auth::{Authorized, OperatorAdministrator, section},
    error::{ApiError, ApiResult},
    extract::{JsonBody, Query, RequestContext, query_time},
    idempotency::{self, DigestedJson, IdempotencyKey},
    money::{MoneyBody, MoneyView},
    paging::{Cursor, checked_limit, page},
    state::AppState,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_balance))
        .routes(routes!(set_alerts))
        .routes(routes!(list_ledger))
        .routes(routes!(adjust_balance))
}

/// The balance and what may still be spent.
#[derive(Debug, Serialize, ToSchema)]
struct BalanceView {
    balance: MoneyView,
    /// How far below zero the balance may go.
    debit_limit: MoneyView,
    /// `balance + debit_limit`: what renewals and usage may still take.
    available: MoneyView,
    /// ISO 4217: the currency the balance is kept in.
    currency: String,
    /// The administrators are emailed when `available` falls below it; `null`: no alert.
    low_balance_threshold: Option<MoneyView>,
}

impl BalanceView {
    fn of(row: &BalanceRow) -> ApiResult<Self> {
        let currency = CurrencyCode::parse(&row.currency).map_err(ApiError::internal)?;
        let money = |minor| Money::from_minor(minor, currency);
        let (balance, debit_limit) = (money(row.balance_minor), money(row.debit_limit_minor));
        let available = balance
            .checked_add(debit_limit)
            .map_err(ApiError::internal)?;
        Ok(Self {
            balance: MoneyView::of(balance),
            debit_limit: MoneyView::of(debit_limit),
            available: MoneyView::of(available),
            currency: currency.as_str().to_owned(),
            low_balance_threshold: row.threshold_minor.map(|minor| MoneyView::of(money(minor))),
        })
    }
}

/// The currency an account's balance is kept in: its ledger's, or for a ledger without
/// entries yet, the account's own (general information). 404 for no such account.
async fn balance_of(state: &AppState, account: AccountId) -> ApiResult<BalanceRow> {
    if let Some(row) = queries::balance(&state.db, account).await? {
        return Ok(row);
    }
    let general = queries::config_section(&state.db, account, GENERAL_SECTION)
        .await?
        .ok_or_else(|| ApiError::not_found("account"))?;
    let currency = general.data["currency"]
        .as_str()
        .ok_or_else(|| ApiError::internal("general information without a currency"))?;
    Ok(BalanceRow {
        currency: currency.to_owned(),
        balance_minor: 0,
        debit_limit_minor: 0,
        threshold_minor: None,
    })
}

/// Refuses an amount in another currency than the balance's, naming `field`.
fn in_currency_of(balance: &BalanceRow, money: Money, field: &str) -> ApiResult<Money> {
    match money.currency().as_str() == balance.currency {
        true => Ok(money),
        false => Err(ApiError::invalid_field(
            format!("{field}.currency"),
            format!("the balance is kept in {}", balance.currency),
        )),
    }
}

/// The account's balance, debit limit and what is available.
#[utoipa::path(get, path = "/v1/account/balance", responses(
    (status = 200, body = BalanceView), (status = 401), (status = 403),
))]
async fn get_balance(
    State(state): State<AppState>,
    caller: Authorized<section::Usage>,
) -> ApiResult<Json<BalanceView>> {
    let balance = balance_of(&state, caller.account_id).await?;
    Ok(Json(BalanceView::of(&balance)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AlertsBody {
    /// Email the account's administrators when `available` falls below it (once per fall);
    /// `null` turns the alert off.
    low_balance_threshold: Option<MoneyBody>,
}

/// Set (or turn off) the low-balance alert.
#[utoipa::path(put, path = "/v1/account/alerts", request_body = AlertsBody, responses(
    (status = 200, body = BalanceView), (status = 401), (status = 403), (status = 422),
))]
async fn set_alerts(
    State(state): State<AppState>,
    caller: Authorized<section::Usage>,
    context: RequestContext,
    JsonBody(body): JsonBody<AlertsBody>,
) -> ApiResult<Json<BalanceView>> {
    let balance = balance_of(&state, caller.account_id).await?;
    let mut v = Validator::default();
    let threshold = body
        .low_balance_threshold
        .map(|raw| raw.parse(&mut v, "low_balance_threshold"));
    let threshold = v
        .finish(|| threshold.map(|t| t.ok_or(())).transpose().ok())
        .map_err(ApiError::validation)?
        .map(|t| in_currency_of(&balance, t, "low_balance_threshold"))
        .transpose()?;
    if threshold.is_some_and(|t| t.is_negative()) {
        return Err(ApiError::invalid_field(
            "low_balance_threshold.amount",
            "must not be negative",
        ));
    }
    let command = LedgerCommand::SetLowBalanceThreshold(threshold);
    let stream = ledger_stream(caller.account_id);
    state
        .execute::<Ledger>(&stream, command, &context.metadata_for(&caller))
        .await?;
    let balance = balance_of(&state, caller.account_id).await?;
    Ok(Json(BalanceView::of(&balance)?))
}

/// What an entry refers to.
#[derive(Debug, Default, Serialize, ToSchema)]
struct Reference {
    #[serde(skip_serializing_if = "Option::is_none")]
    payment_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    package_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    period: Option<String>,
}

/// One credit or debit, with the balance after it.
#[derive(Debug, Serialize, ToSchema)]
struct EntryView {
    /// The entry's number in the account's ledger, from 1.
    id: String,
    at: DateTime<Utc>,
    #[schema(value_type = crate::openapi::values::LedgerEntryKind)]
    kind: String,
    /// Signed: credits positive, debits negative.
    amount: MoneyView,
    balance_after: MoneyView,
    description: String,
    reference: Reference,
}

impl EntryView {
    fn of_row(row: EntryRow) -> ApiResult<Self> {
        Ok(Self {
            id: row.entry.to_string(),
            at: timestamp::parse(&row.at).map_err(ApiError::internal)?,
            kind: row.kind,
            amount: MoneyView::of_minor(row.amount_minor, &row.currency)?,
            balance_after: MoneyView::of_minor(row.balance_after_minor, &row.currency)?,
            description: row.description,
            reference: Reference {
                payment_id: row.payment_id,
                package_id: row.package_id,
                period: row.period,
            },
        })
    }

    fn of_entry(entry: &Entry) -> Self {
        let reference = match &entry.kind {
            EntryKind::Payment { payment_id } | EntryKind::Refund { payment_id } => Reference {
                payment_id: Some(payment_id.clone()),
                ..Reference::default()
            },
            EntryKind::PackageCharge { package_id, period } => Reference {
                package_id: Some(package_id.clone()),
                period: Some(period.clone()),
                ..Reference::default()
            },
            EntryKind::UsageCharge { period } => Reference {
                period: Some(period.clone()),
                ..Reference::default()
            },
            EntryKind::Adjustment => Reference::default(),
        };
        Self {
            id: entry.entry.to_string(),
            at: entry.at,
            kind: entry.kind.as_str().to_owned(),
            amount: MoneyView::of(entry.amount),
            balance_after: MoneyView::of(entry.balance_after),
            description: entry.description.clone(),
            reference,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LedgerQuery {
    /// Only entries of this kind.
    #[param(value_type = Option<crate::openapi::values::LedgerEntryKind>)]
    kind: Option<String>,
    /// From this time (RFC 3339, inclusive).
    from: Option<String>,
    /// Before this time (RFC 3339, exclusive).
    to: Option<String>,
    /// `next_cursor` of the previous page (the id of its last entry).
    #[param(value_type = Option<String>, pattern = "^-?[0-9]{1,19}$")]
    cursor: Option<Cursor<i64>>,
    /// Entries per page, 1 to 500 (default 50). A CSV export has every entry.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct LedgerPage {
    items: Vec<EntryView>,
    next_cursor: Option<String>,
}

const ENTRY_KINDS: [&str; 5] = [
    "payment",
    "refund",
    "package_charge",
    "usage_charge",
    "adjustment",
];

/// Entries exported as CSV per query.
const CSV_CHUNK: i64 = 1000;

/// The account's ledger, newest first; `Accept: text/csv` exports every matching entry.
#[utoipa::path(get, path = "/v1/ledger", params(LedgerQuery), responses(
    (status = 200, body = LedgerPage, content_type = "application/json"),
    (status = 200, description = "Every matching entry as CSV", content_type = "text/csv"),
    (status = 401), (status = 403),
))]
async fn list_ledger(
    State(state): State<AppState>,
    caller: Authorized<section::Usage>,
    headers: HeaderMap,
    Query(query): Query<LedgerQuery>,
) -> ApiResult<Response> {
    let limit = checked_limit(query.limit)?;
    if let Some(kind) = &query.kind
        && !ENTRY_KINDS.contains(&kind.as_str())
    {
        return Err(ApiError::invalid_field(
            "kind",
            format!("must be one of {}", ENTRY_KINDS.join(", ")),
        ));
    }
    let filter = LedgerFilter {
        kind: query.kind,
        from: query_time("from", query.from)?,
        to: query_time("to", query.to)?,
        before: query.cursor.map(|Cursor(entry)| entry),
    };
    if wants_csv(&headers) {
        return csv_export(state, caller.account_id, filter).await;
    }
    let rows = queries::ledger_page(&state.db, caller.account_id, &filter, limit + 1).await?;
    let (rows, next_cursor) = page(rows, limit, |row| row.entry.to_string());
    let items = rows
        .into_iter()
        .map(EntryView::of_row)
        .collect::<ApiResult<_>>()?;
    Ok(Json(LedgerPage { items, next_cursor }).into_response())
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .any(|kind| kind.split(';').next().unwrap_or_default().trim() == "text/csv")
        })
}

/// The whole filtered ledger as CSV, written a chunk of entries at a time while it is read
/// (an export of years of entries is never held in memory). A failure part way ends the
/// body early, which the client sees as a broken transfer.
async fn csv_export(
    state: AppState,
    account: AccountId,
    filter: LedgerFilter,
) -> ApiResult<Response> {
    let first = queries::ledger_page(&state.db, account, &filter, CSV_CHUNK).await?;
    let titles = csv_rows(&[], true).map_err(ApiError::internal)?;
    let chunks = futures::stream::try_unfold(Some((first, filter)), move |next| {
        let state = state.clone();
        async move {
            let Some((rows, mut filter)) = next.filter(|(rows, _)| !rows.is_empty()) else {
                return Ok(None);
            };
            let text = csv_rows(&rows, false)?;
            let more = match rows.len() as i64 == CSV_CHUNK {
                true => {
                    filter.before = rows.last().map(|row| row.entry);
                    let rows = queries::ledger_page(&state.db, account, &filter, CSV_CHUNK)
                        .await
                        .map_err(io::Error::other)?;
                    Some((rows, filter))
                }
                false => None,
            };
            Ok(Some((text, more)))
        }
    });
    let body = futures::stream::once(async { Ok::<_, io::Error>(titles) }).chain(chunks);
    Ok((
        [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
        Body::from_stream(body),
    )
        .into_response())
}

/// CSV lines for `rows`, after the header line when `with_header`.
fn csv_rows(rows: &[EntryRow], with_header: bool) -> io::Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    if with_header {
        writer.write_record([
            "id",
            "at",
            "kind",
            "amount",
            "currency",
            "balance_after",
            "description",
            "payment_id",
            "package_id",
            "period",
        ])?;
    }
    for row in rows {
        let currency = CurrencyCode::parse(&row.currency).map_err(io::Error::other)?;
        let decimal = |minor| Money::from_minor(minor, currency).decimal_string();
        writer.write_record([
            row.entry.to_string().as_str(),
            &row.at,
            &row.kind,
            &decimal(row.amount_minor),
            &row.currency,
            &decimal(row.balance_after_minor),
            &row.description,
            row.payment_id.as_deref().unwrap_or_default(),
            row.package_id.as_deref().unwrap_or_default(),
            row.period.as_deref().unwrap_or_default(),
        ])?;
    }
    let bytes = writer.into_inner().map_err(|e| e.into_error())?;
    String::from_utf8(bytes).map_err(io::Error::other)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AdjustmentBody {
    /// The account whose balance changes.
    #[schema(format = Uuid)]
    account_id: String,
    /// Signed: positive credits the account, negative debits it.
    amount: MoneyBody,
    /// Why, as the account's ledger and audit log will show it.
    #[schema(min_length = 1, max_length = 200)]
    reason: String,
}

/// The operator credits or debits an account's balance, with a reason.
#[utoipa::path(post, path = "/v1/account/balance/adjustments", request_body = AdjustmentBody,
    params(IdempotencyKey), responses(
    (status = 201, body = EntryView), (status = 401),
    (status = 403, description = "Not an administrator of the operator account"),
    (status = 404, description = "No such account"), (status = 422),
))]
async fn adjust_balance(
    State(state): State<AppState>,
    caller: OperatorAdministrator,
    context: RequestContext,
    key: IdempotencyKey,
    DigestedJson { body, digest }: DigestedJson<AdjustmentBody>,
) -> ApiResult<Response> {
    let account = caller.account_id;
    let request = |claim| adjust(&state, &caller, &context, body, claim);
    idempotency::once(&state.idempotency, account, key, digest, request).await
}

async fn adjust(
    state: &AppState,
    caller: &OperatorAdministrator,
    context: &RequestContext,
    body: AdjustmentBody,
    claim: Option<KeyClaim>,
) -> ApiResult<Answer> {
    let mut v = Validator::default();
    let account = v.field(
        "account_id",
        AccountId::parse(&body.account_id)
            .ok_or_else(|| switchyard_command::domain::InvalidValue("is not an account id".into())),
    );
    let amount = body.amount.parse(&mut v, "amount");
    let reason = v.field("reason", Text::parse(&body.reason, 1, 200));
    let (account, amount, reason) = v
        .finish(|| Some((account?, amount?, reason?)))
        .map_err(ApiError::validation)?;
    let balance = balance_of(state, account).await?;
    let amount = in_currency_of(&balance, amount, "amount")?;
    if amount.minor_units() == 0 {
        return Err(ApiError::invalid_field("amount.amount", "must not be zero"));
    }
    let command = LedgerCommand::Record {
        at: Utc::now(),
        kind: EntryKind::Adjustment,
        amount,
        description: reason.as_str().to_owned(),
        overdraft: Overdraft::Unbounded,
    };
    let render = |ledger: &switchyard_command::handler::Loaded<Ledger>| {
        let entry = ledger.state.last_entry.as_ref().map(EntryView::of_entry);
        Answer::json(StatusCode::CREATED, None, &entry).stored()
    };
    let answering = claim.as_ref().map(|claim| Answering::new(claim, &render));
    let metadata = context.metadata_on_behalf(caller, account);
    let executed = state
        .execute_answering::<Ledger>(&ledger_stream(account), command, &metadata, answering)
        .await?;
    let entry = executed
        .state
        .last_entry
        .as_ref()
        .ok_or_else(|| ApiError::internal("an adjustment recorded no entry"))?;
    Ok(Answer::json(
        StatusCode::CREATED,
        None,
        &EntryView::of_entry(entry),
    ))
}
