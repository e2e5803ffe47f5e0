//! The API section: the account's own Stripe and PayPal gateways. Secrets (Stripe's secret
//! key and webhook secret, PayPal's client secret) are write-only: sealed with the keyring on
//! the way in, answered as `secret_key_last4` and `*_set`. "Verify" asks the provider, in a
//! job, whether it takes the credentials.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use switchyard_command::{
    domain::{
        AccountId, EmailAddress, FieldError, GatewayId, InvalidValue, Money, Percent, Text,
        Validator,
    },
    gateways::{
        Credentials, GatewaySettings, Gateways, GatewaysCommand, GatewaysError, Mode, Provider,
        PublicGateway, StripeKey, check_stripe_key, gateways_stream,
    },
    handler::Loaded,
    idempotency::{Answering, KeyClaim},
    secrets::EncryptedSecret,
};
use switchyard_projections::queries::{self, job_id};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    answer::Answer,
    auth::{Authorized, section},
    domain_errors::DomainError,
    error::{ApiError, ApiResult},
    etag::{tagged, with_etag},
    extract::{IfMatch, JsonBody, Query, RequestContext},
    idempotency::{self, DigestedJson, DigestedOptionalJson, IdempotencyKey},
    money::{MoneyBody, MoneyView},
    paging::{PageQuery, page},
    routes::channels::{JobAccepted, secret_field},
    state::AppState,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_gateways, create_gateway))
        .routes(routes!(get_gateway, patch_gateway, delete_gateway))
        .routes(routes!(verify_gateway))
}

type Caller = Authorized<section::Api>;

impl DomainError for GatewaysError {
    fn into_api_error(self) -> ApiError {
        match self {
            GatewaysError::NotFound => ApiError::not_found("gateway"),
            GatewaysError::Duplicate(..) => ApiError::conflict(self.to_string()),
            GatewaysError::SlotChanged => ApiError::unprocessable(self.to_string()),
            GatewaysError::Changed { .. } => {
                ApiError::precondition_failed(format!("If-Match is stale: {self}"))
            }
        }
    }
}

/// A gateway as shown. Fields of the other provider are `null`.
#[derive(Debug, Serialize, ToSchema)]
struct GatewayView {
    id: String,
    #[schema(value_type = crate::openapi::values::GatewayProvider)]
    provider: &'static str,
    #[schema(value_type = crate::openapi::values::GatewayMode)]
    mode: &'static str,
    /// Stripe.
    publishable_key: Option<String>,
    /// Stripe: the last four characters of the saved secret key.
    secret_key_last4: Option<String>,
    /// Stripe.
    webhook_secret_set: Option<bool>,
    /// PayPal.
    client_id: Option<String>,
    /// PayPal.
    client_secret_set: Option<bool>,
    /// PayPal: the PayPal account's email.
    email: Option<String>,
    /// PayPal: the webhook its notifications are verified against.
    webhook_id: Option<String>,
    /// ISO 4217.
    currencies: Vec<String>,
    surcharge: Option<MoneyView>,
    /// A percentage of each payment, e.g. `"2.5"`.
    surcharge_percent: Option<String>,
    /// Where the provider sends its webhooks: give it to Stripe or PayPal. Absolute when the
    /// operator set `SWITCHYARD_PUBLIC_URL`, else the path alone.
    webhook_url: String,
}

impl GatewayView {
    fn of(state: &AppState, id: GatewayId, gateway: PublicGateway) -> Self {
        let path = format!("/v1/webhooks/{}/{id}", gateway.provider.as_str());
        let webhook_url = match &state.public_url {
            Some(base) => format!("{}{path}", base.as_str().trim_end_matches('/')),
            None => path,
        };
        Self {
            id: id.to_string(),
            provider: gateway.provider.as_str(),
            mode: gateway.mode.as_str(),
            publishable_key: gateway.publishable_key,
            secret_key_last4: gateway.secret_key_last4,
            webhook_secret_set: gateway.webhook_secret_set,
            client_id: gateway.client_id,
            client_secret_set: gateway.client_secret_set,
            email: gateway.email,
            webhook_id: gateway.webhook_id,
            currencies: gateway
                .currencies
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
            surcharge: gateway.surcharge.map(MoneyView::of),
            surcharge_percent: gateway.surcharge_percent.map(String::from),
            webhook_url,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct GatewayPage {
    items: Vec<GatewayView>,
    next_cursor: Option<String>,
}

/// Present (`Some`), even as `null` (`Some(None)`), or left out (`None`): what a PATCH keeps.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A gateway as sent. On `POST` the provider's credentials, `mode` and `currencies` are
/// required; on `PATCH` what is left out stays, and `null` clears an optional field.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct GatewayBody {
    /// Fixed once created.
    #[schema(value_type = Option<crate::openapi::values::GatewayProvider>)]
    provider: Option<String>,
    /// Fixed once created: a live gateway is another gateway.
    #[schema(value_type = Option<crate::openapi::values::GatewayMode>)]
    mode: Option<String>,
    /// Stripe: `pk_test_…` or `pk_live_…`, as the mode.
    publishable_key: Option<String>,
    /// Stripe, write-only: `sk_…` or a restricted `rk_…` key of the mode.
    #[serde(default, deserialize_with = "secret_field")]
    #[schema(value_type = Option<String>)]
    secret_key: Option<Option<SecretString>>,
    /// Stripe, write-only: the webhook signing secret (`whsec_…`); `null` or `""` removes it.
    #[serde(default, deserialize_with = "secret_field")]
    #[schema(value_type = Option<String>)]
    webhook_secret: Option<Option<SecretString>>,
    /// PayPal.
    client_id: Option<String>,
    /// PayPal, write-only.
    #[serde(default, deserialize_with = "secret_field")]
    #[schema(value_type = Option<String>)]
    client_secret: Option<Option<SecretString>>,
    /// PayPal: the PayPal account's email.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = Email)]
    email: Option<Option<String>>,
    /// PayPal: the webhook id PayPal's notifications are verified against.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    webhook_id: Option<Option<String>>,
    /// ISO 4217 codes, at least one.
    currencies: Option<Vec<String>>,
    /// A fixed amount added to each payment, in one of `currencies`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<MoneyBody>)]
    surcharge: Option<Option<MoneyBody>>,
    /// A percentage of each payment added to it: 0 to 100, at most 4 decimals, e.g. `"2.5"`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, example = "2.5")]
    surcharge_percent: Option<Option<String>>,
}

fn required<T>(v: &mut Validator, field: &str) -> Option<T> {
    v.field(field, Err(InvalidValue("is required".into())))
}

/// A field of a fixed part (provider, mode): as given, which must be the current one, or
/// the current one.
fn fixed<T: PartialEq + Copy>(
    v: &mut Validator,
    field: &str,
    given: Option<&str>,
    current: Option<T>,
    parse: impl FnOnce(&str) -> Result<T, InvalidValue>,
) -> Option<T> {
    match (given, current) {
        (Some(raw), current) => v.field(
            field,
            parse(raw).and_then(|value| match current {
                Some(current) if current != value => Err(InvalidValue(
                    "stays as created: add another gateway instead".into(),
                )),
                _ => Ok(value),
            }),
        ),
        (None, Some(current)) => Some(current),
        (None, None) => required(v, field),
    }
}

/// An optional field: as given (`null` clears it), or as it is.
fn optional_field<T: Clone>(
    v: &mut Validator,
    field: &str,
    given: Option<Option<String>>,
    current: Option<&Option<T>>,
    parse: impl FnOnce(&str) -> Result<T, InvalidValue>,
) -> Option<Option<T>> {
    match given {
        Some(None) => Some(None),
        Some(Some(raw)) => v.field(field, parse(&raw)).map(Some),
        None => Some(current.cloned().flatten()),
    }
}

/// Refuses the other provider's fields the request sent (`true`).
fn refuse_others(v: &mut Validator, provider: Provider, others: &[(&str, bool)]) {
    for (field, sent) in others {
        if *sent {
            let message = format!("is not a field of {} gateways", provider.name());
            v.field::<()>(field, Err(InvalidValue(message)));
        }
    }
}

/// Seals a secret for the account, after `check` accepts its plain form.
fn seal(
    state: &AppState,
    account: AccountId,
    secret: &SecretString,
    check: impl FnOnce(&str) -> Result<(), InvalidValue>,
) -> Result<EncryptedSecret, InvalidValue> {
    let plain = secret.expose_secret();
    if plain.chars().count() > 500 {
        return Err(InvalidValue("must be at most 500 characters".into()));
    }
    check(plain)?;
    Ok(state.secrets.encrypt(account, plain))
}

/// A required secret: a new one, or the stored one kept.
fn required_secret<T: Clone>(
    v: &mut Validator,
    field: &str,
    given: Option<Option<SecretString>>,
    current: Option<T>,
    seal: impl FnOnce(&SecretString) -> Result<T, InvalidValue>,
) -> Option<T> {
    match (given, current) {
        (Some(Some(secret)), _) => v.field(field, seal(&secret)),
        (None, Some(current)) => Some(current),
        (Some(None), _) | (None, None) => required(v, field),
    }
}

impl GatewayBody {
    /// The settings this body asks for, over `current` (a PATCH leaves out what stays).
    fn parse(
        self,
        state: &AppState,
        account: AccountId,
        current: Option<&GatewaySettings>,
    ) -> Result<GatewaySettings, Vec<FieldError>> {
        let mut v = Validator::default();
        let provider = fixed(
            &mut v,
            "provider",
            self.provider.as_deref(),
            current.map(|c| c.credentials.provider()),
            |raw| match raw {
                "stripe" => Ok(Provider::Stripe),
                "paypal" => Ok(Provider::Paypal),
                _ => Err(InvalidValue("must be `stripe` or `paypal`".into())),
            },
        );
        let mode = fixed(
            &mut v,
            "mode",
            self.mode.as_deref(),
            current.map(|c| c.mode),
            Mode::parse,
        );
        let currencies = match (self.currencies, current) {
            (Some(raw), _) => parse_currencies(&mut v, &raw),
            (None, Some(current)) => Some(current.currencies.clone()),
            (None, None) => required(&mut v, "currencies"),
        };
        let surcharge = match self.surcharge {
            Some(None) => Some(None),
            Some(Some(body)) => body.parse(&mut v, "surcharge").and_then(|money| {
                let listed = currencies
                    .as_ref()
                    .is_none_or(|list| list.contains(&money.currency()));
                let checked = match (money.is_negative(), listed) {
                    (true, _) => Err(InvalidValue("cannot be negative".into())),
                    (false, false) => Err(InvalidValue(
                        "must be in one of the gateway's currencies".into(),
                    )),
                    (false, true) => Ok(Some(money)),
                };
                v.field("surcharge", checked)
            }),
            None => Some(current.and_then(|c| c.surcharge)),
        };
        let surcharge_percent = optional_field(
            &mut v,
            "surcharge_percent",
            self.surcharge_percent,
            current.map(|c| &c.surcharge_percent),
            Percent::parse,
        );
        let credentials = match (provider, mode) {
            (Some(Provider::Stripe), Some(mode)) => {
                refuse_others(
                    &mut v,
                    Provider::Stripe,
                    &[
                        ("client_id", self.client_id.is_some()),
                        ("client_secret", self.client_secret.is_some()),
                        ("email", self.email.is_some()),
                        ("webhook_id", self.webhook_id.is_some()),
                    ],
                );
                let current = match current.map(|c| &c.credentials) {
                    Some(Credentials::Stripe {
                        publishable_key,
                        secret_key,
                        secret_key_last4,
                        webhook_secret,
                    }) => Some((
                        publishable_key,
                        (secret_key, secret_key_last4),
                        webhook_secret,
                    )),
                    _ => None,
                };
                let publishable_key = match (self.publishable_key, current) {
                    (Some(raw), _) => v.field(
                        "publishable_key",
                        check_stripe_key(StripeKey::Publishable, mode, &raw).map(|()| raw),
                    ),
                    (None, Some((kept, _, _))) => Some(kept.clone()),
                    (None, None) => required(&mut v, "publishable_key"),
                };
                let secret_key = required_secret(
                    &mut v,
                    "secret_key",
                    self.secret_key,
                    current.map(|(_, (sealed, last4), _)| (sealed.clone(), last4.clone())),
                    |secret| {
                        let check = |plain: &str| check_stripe_key(StripeKey::Secret, mode, plain);
                        let sealed = seal(state, account, secret, check)?;
                        let plain = secret.expose_secret();
                        let last4 = plain[plain.len().saturating_sub(4)..].to_owned();
                        Ok((sealed, last4))
                    },
                );
                let webhook_secret = match self.webhook_secret {
                    Some(None) => Some(None),
                    Some(Some(secret)) => v
                        .field(
                            "webhook_secret",
                            seal(state, account, &secret, |plain| {
                                match plain.starts_with("whsec_") {
                                    true => Ok(()),
                                    false => Err(InvalidValue(
                                        "is not a Stripe webhook secret: it starts with `whsec_`"
                                            .into(),
                                    )),
                                }
                            }),
                        )
                        .map(Some),
                    None => Some(current.and_then(|(_, _, kept)| kept.clone())),
                };
                (|| {
                    let (secret_key, secret_key_last4) = secret_key?;
                    Some(Credentials::Stripe {
                        publishable_key: publishable_key?,
                        secret_key,
                        secret_key_last4,
                        webhook_secret: webhook_secret?,
                    })
                })()
            }
            (Some(Provider::Paypal), Some(_)) => {
                refuse_others(
                    &mut v,
                    Provider::Paypal,
                    &[
                        ("publishable_key", self.publishable_key.is_some()),
                        ("secret_key", self.secret_key.is_some()),
                        ("webhook_secret", self.webhook_secret.is_some()),
                    ],
                );
                let current = match current.map(|c| &c.credentials) {
                    Some(Credentials::Paypal {
                        client_id,
                        client_secret,
                        email,
                        webhook_id,
                    }) => Some((client_id, client_secret, email, webhook_id)),
                    _ => None,
                };
                let client_id = match (self.client_id, current) {
                    (Some(raw), _) => v.field("client_id", Text::parse(&raw, 1, 200)),
                    (None, Some((kept, _, _, _))) => Some(kept.clone()),
                    (None, None) => required(&mut v, "client_id"),
                };
                let client_secret = required_secret(
                    &mut v,
                    "client_secret",
                    self.client_secret,
                    current.map(|(_, kept, _, _)| kept.clone()),
                    |secret| seal(state, account, secret, |_| Ok(())),
                );
                let email = optional_field(
                    &mut v,
                    "email",
                    self.email,
                    current.map(|(_, _, kept, _)| kept),
                    EmailAddress::parse,
                );
                let webhook_id = optional_field(
                    &mut v,
                    "webhook_id",
                    self.webhook_id,
                    current.map(|(_, _, _, kept)| kept),
                    |raw| Text::parse(raw, 1, 200),
                );
                (|| {
                    Some(Credentials::Paypal {
                        client_id: client_id?,
                        client_secret: client_secret?,
                        email: email?,
                        webhook_id: webhook_id?,
                    })
                })()
            }
            // The provider or the mode is invalid, and said so: the keys cannot be checked.
            _ => None,
        };
        v.finish(|| {
            Some(GatewaySettings {
                credentials: credentials?,
                mode: mode?,
                currencies: currencies?,
                surcharge: surcharge?,
                surcharge_percent: surcharge_percent?,
            })
        })
    }
}

/// At least one currency money can be held in, each once (the first kept).
fn parse_currencies(
    v: &mut Validator,
    raw: &[String],
) -> Option<Vec<switchyard_command::domain::CurrencyCode>> {
    if raw.is_empty() {
        return v.field("currencies", Err(InvalidValue("name at least one".into())));
    }
    let mut currencies = Vec::new();
    let mut valid = true;
    for (index, code) in raw.iter().enumerate() {
        match v.field(&format!("currencies[{index}]"), Money::parse_currency(code)) {
            Some(currency) if !currencies.contains(&currency) => currencies.push(currency),
            Some(_) => {}
            None => valid = false,
        }
    }
    valid.then_some(currencies)
}

fn gateway_id(raw: &str) -> ApiResult<GatewayId> {
    GatewayId::parse(raw).ok_or_else(|| ApiError::not_found("gateway"))
}

/// The gateway as it is on the account's stream; another account's is not found.
async fn current(state: &AppState, caller: &Caller, id: GatewayId) -> ApiResult<GatewaySettings> {
    let gateways: Loaded<Gateways> = state.load(&gateways_stream(caller.account_id)).await?;
    gateways
        .state
        .gateways
        .get(&id)
        .map(|gateway| gateway.value.clone())
        .ok_or_else(|| ApiError::not_found("gateway"))
}

/// The gateway as answered after a command, from the state the command left.
fn answer(
    state: &AppState,
    status: StatusCode,
    id: GatewayId,
    gateways: &Gateways,
) -> ApiResult<Answer> {
    let gateway = gateways
        .gateways
        .get(&id)
        .ok_or_else(|| ApiError::not_found("gateway"))?;
    let view = GatewayView::of(state, id, PublicGateway::from(&gateway.value));
    Ok(tagged(status, gateway.version, &view))
}

async fn run(
    state: &AppState,
    caller: &Caller,
    context: &RequestContext,
    command: GatewaysCommand,
    answering: Option<Answering<'_, Loaded<Gateways>>>,
) -> ApiResult<Gateways> {
    let stream = gateways_stream(caller.account_id);
    let metadata = context.metadata_for(caller);
    let executed = state
        .execute_answering::<Gateways>(&stream, command, &metadata, answering)
        .await?;
    Ok(executed.state)
}

/// The account's payment gateways, oldest first.
#[utoipa::path(get, path = "/v1/gateways", params(PageQuery<GatewayId>), responses(
    (status = 200, body = GatewayPage),
))]
async fn list_gateways(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<PageQuery<GatewayId>>,
) -> ApiResult<Json<GatewayPage>> {
    let limit = query.limit()?;
    let after = query.cursor.map(|cursor| cursor.key());
    let rows =
        queries::gateways_page(&state.db, caller.account_id, after.as_deref(), limit + 1).await?;
    let (rows, next_cursor) = page(rows, limit, |row| row.id.to_string());
    Ok(Json(GatewayPage {
        items: rows
            .into_iter()
            .map(|row| GatewayView::of(&state, row.id, row.gateway))
            .collect(),
        next_cursor,
    }))
}

/// Add a gateway: one per provider and mode.
#[utoipa::path(post, path = "/v1/gateways", request_body = GatewayBody, params(IdempotencyKey), responses(
    (status = 201, body = GatewayView, headers(("ETag" = String)), links(
        ("GetGateway" = (operation_id = "get_gateway", parameters(("id" = "$response.body#/id")))),
        ("VerifyGateway" = (operation_id = "verify_gateway", parameters(("id" = "$response.body#/id")))),
    )),
    (status = 409, description = "The account already has a gateway of this provider and mode"),
    (status = 422, description = "Invalid fields, each named: a key of the other mode, an unknown currency, …"),
))]
async fn create_gateway(
    State(state): State<AppState>,
    caller: Caller,
    context: RequestContext,
    key: IdempotencyKey,
    DigestedJson { body, digest }: DigestedJson<GatewayBody>,
) -> ApiResult<Response> {
    let account = caller.account_id;
    let request = async |claim: Option<KeyClaim>| {
        let settings = body
            .parse(&state, account, None)
            .map_err(ApiError::validation)?;
        let gateway_id = GatewayId::new();
        let command = GatewaysCommand::Add {
            gateway_id,
            settings,
        };
        let render = |gateways: &Loaded<Gateways>| {
            let created = answer(&state, StatusCode::CREATED, gateway_id, &gateways.state);
            created.expect("a gateway just added is there").stored()
        };
        let answering = claim.as_ref().map(|claim| Answering::new(claim, &render));
        let gateways = run(&state, &caller, &context, command, answering).await?;
        answer(&state, StatusCode::CREATED, gateway_id, &gateways)
    };
    idempotency::once(&state.idempotency, account, key, digest, request).await
}

/// One gateway.
#[utoipa::path(get, path = "/v1/gateways/{id}", responses(
    (status = 200, body = GatewayView, headers(("ETag" = String))), (status = 404),
))]
async fn get_gateway(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let row = queries::gateway(&state.db, caller.account_id, gateway_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("gateway"))?;
    let view = GatewayView::of(&state, row.id, row.gateway);
    Ok(with_etag(StatusCode::OK, row.version, view))
}

/// Change a gateway; what is left out stays, and its provider and mode stay as created.
#[utoipa::path(patch, path = "/v1/gateways/{id}", request_body = GatewayBody, params(IfMatch), responses(
    (status = 200, body = GatewayView, headers(("ETag" = String))),
    (status = 404), (status = 412), (status = 422, description = "Invalid fields, each named"),
))]
async fn patch_gateway(
    State(state): State<AppState>,
    caller: Caller,
    context: RequestContext,
    IfMatch(seen): IfMatch,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<GatewayBody>,
) -> ApiResult<Response> {
    let id = gateway_id(&id)?;
    let current = current(&state, &caller, id).await?;
    let settings = body
        .parse(&state, caller.account_id, Some(&current))
        .map_err(ApiError::validation)?;
    let command = GatewaysCommand::Change {
        gateway_id: id,
        settings,
        seen,
    };
    let gateways = run(&state, &caller, &context, command, None).await?;
    Ok(answer(&state, StatusCode::OK, id, &gateways)?.into_response())
}

/// Delete a gateway.
#[utoipa::path(delete, path = "/v1/gateways/{id}", params(IfMatch), responses(
    (status = 204), (status = 404), (status = 412),
))]
async fn delete_gateway(
    State(state): State<AppState>,
    caller: Caller,
    context: RequestContext,
    IfMatch(seen): IfMatch,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let command = GatewaysCommand::Remove {
        gateway_id: gateway_id(&id)?,
        seen,
    };
    run(&state, &caller, &context, command, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/gateways/{id}/verify` takes no fields.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct VerifyBody {}

/// Verify: ask the provider whether it takes the saved credentials, and whether their mode is
/// the gateway's. Follow it at `GET /v1/jobs/{job_id}`: a stage for each question, with the
/// provider's answer. `If-Match` verifies the gateway only as the caller saw it.
#[utoipa::path(post, path = "/v1/gateways/{id}/verify", request_body = VerifyBody, params(IfMatch, IdempotencyKey), responses(
    (status = 202, body = JobAccepted), (status = 404), (status = 412),
))]
async fn verify_gateway(
    State(state): State<AppState>,
    caller: Caller,
    context: RequestContext,
    IfMatch(seen): IfMatch,
    key: IdempotencyKey,
    Path(id): Path<String>,
    DigestedOptionalJson {
        body: VerifyBody {},
        digest,
    }: DigestedOptionalJson<VerifyBody>,
) -> ApiResult<Response> {
    let gateway_id = gateway_id(&id)?;
    let request = async |claim: Option<KeyClaim>| {
        let verification_id = Uuid::now_v7();
        let job_id = job_id(verification_id).to_string();
        let accepted = Answer::json(StatusCode::ACCEPTED, None, &JobAccepted { job_id });
        let render = |_: &Loaded<Gateways>| accepted.stored();
        let answering = claim.as_ref().map(|claim| Answering::new(claim, &render));
        let command = GatewaysCommand::RequestVerification {
            gateway_id,
            verification_id,
            seen,
        };
        run(&state, &caller, &context, command, answering).await?;
        Ok(accepted)
    };
    idempotency::once(&state.idempotency, caller.account_id, key, digest, request).await
}
