//! SMTP and SMS settings: how the account's emails and text messages go out. Passwords and
//! API keys are write-only: sealed with the keyring on the way in, answered as `*_set`.

use axum::{extract::State, http::StatusCode, response::Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};
use switchyard_command::{
    channels::{
        Channels, ChannelsCommand, ChannelsError, SecretChange, Security, SmsProvider, SmsSettings,
        SmtpSettings, channels_stream,
    },
    domain::{
        AccountId, BaseUrl, EmailAddress, FieldError, Hostname, InvalidValue, PhoneNumber, Port,
        Text, Validator,
    },
    handler::Loaded,
    idempotency::{Answering, KeyClaim},
    user::{Member, User},
};
use switchyard_projections::{SMS_SECTION, SMTP_SECTION, queries::job_id, without_secret};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    answer::Answer,
    auth::{Authorized, section},
    domain_errors::DomainError,
    error::{ApiError, ApiResult},
    extract::{IfMatch, JsonBody, RequestContext},
    idempotency::{self, DigestedOptionalJson, IdempotencyKey},
    routes::config::{optional, read_section, section_response},
    state::AppState,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_smtp, put_smtp))
        .routes(routes!(get_sms, put_sms))
        .routes(routes!(test_smtp))
        .routes(routes!(test_sms))
}

impl DomainError for ChannelsError {
    fn into_api_error(self) -> ApiError {
        match self {
            ChannelsError::Changed { .. } => {
                ApiError::precondition_failed(format!("If-Match is stale: {self}"))
            }
            ChannelsError::NotConfigured(_) => ApiError::conflict(self.to_string()),
        }
    }
}

/// Absent keeps the stored secret, `null` or `""` clears it, anything else replaces it.
pub(crate) fn secret_field<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<SecretString>>, D::Error> {
    Option::<String>::deserialize(deserializer)
        .map(|secret| Some(secret.filter(|s| !s.is_empty()).map(SecretString::from)))
}

fn seal(
    state: &AppState,
    account: AccountId,
    field: &str,
    v: &mut Validator,
    raw: Option<Option<SecretString>>,
) -> Option<SecretChange> {
    match raw {
        None => Some(SecretChange::Keep),
        Some(None) => Some(SecretChange::Clear),
        Some(Some(secret)) if secret.expose_secret().chars().count() > 500 => {
            v.field::<()>(
                field,
                Err(InvalidValue("must be at most 500 characters".into())),
            );
            None
        }
        Some(Some(secret)) => Some(SecretChange::Set(
            state.secrets.encrypt(account, secret.expose_secret()),
        )),
    }
}

/// SMTP settings as shown.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
struct SmtpView {
    from_address: String,
    host: String,
    port: u16,
    #[schema(value_type = crate::openapi::values::SmtpSecurity)]
    security: String,
    username: Option<String>,
    password_set: bool,
}

/// SMTP settings as sent.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SmtpBody {
    /// The address emails come from.
    #[schema(format = Email)]
    from_address: String,
    /// Host name or IP address, without the port. Private, loopback, link-local and other
    /// non-public addresses are refused, unless the operator allows their range.
    host: String,
    /// 1 to 65535: usually 587 with `starttls`, 465 with `tls`.
    #[schema(minimum = 1, maximum = 65535)]
    port: u32,
    #[schema(value_type = crate::openapi::values::SmtpSecurity)]
    security: String,
    username: Option<String>,
    /// Write-only. Left out: unchanged; `null` or `""`: removed.
    #[serde(default, deserialize_with = "secret_field")]
    #[schema(value_type = Option<String>)]
    password: Option<Option<SecretString>>,
}

impl SmtpBody {
    fn parse(
        self,
        state: &AppState,
        account: AccountId,
    ) -> Result<(SmtpSettings, SecretChange), Vec<FieldError>> {
        let mut v = Validator::default();
        let from_address = v.field("from_address", EmailAddress::parse(&self.from_address));
        let host = v.field(
            "host",
            Hostname::parse(&self.host).and_then(|host| {
                state.outbound.check_literal(host.literal_ip())?;
                Ok(host)
            }),
        );
        let port = v.field("port", Port::parse(self.port));
        let security = v.field(
            "security",
            match self.security.as_str() {
                "starttls" => Ok(Security::Starttls),
                "tls" => Ok(Security::Tls),
                "none" => Ok(Security::None),
                _ => Err(InvalidValue("must be `starttls`, `tls` or `none`".into())),
            },
        );
        let username = v.field(
            "username",
            optional(self.username.as_deref(), |raw| Text::parse(raw, 1, 200)),
        );
        let password = seal(state, account, "password", &mut v, self.password);
        v.finish(|| {
            let settings = SmtpSettings {
                from_address: from_address?,
                host: host?,
                port: port?,
                security: security?,
                username: username?,
                password: None,
            };
            Some((settings, password?))
        })
    }
}

/// SMS settings as shown.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
struct SmsView {
    #[schema(value_type = crate::openapi::values::SmsProvider)]
    provider: String,
    from_number: String,
    base_url: String,
    /// Twilio only.
    account_sid: Option<String>,
    /// `http` only.
    username: Option<String>,
    api_key_set: bool,
}

/// SMS settings as sent.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SmsBody {
    #[schema(value_type = crate::openapi::values::SmsProvider)]
    provider: String,
    /// E.164.
    from_number: String,
    /// e.g. `https://api.twilio.com`, or the `http` gateway's endpoint. Its host may not be a
    /// private, loopback, link-local or other non-public address, unless the operator allows
    /// its range. Redirects are not followed.
    base_url: String,
    /// Required for `twilio`.
    account_sid: Option<String>,
    /// For `http`, optional.
    username: Option<String>,
    /// Write-only. Left out: unchanged; `null` or `""`: removed.
    #[serde(default, deserialize_with = "secret_field")]
    #[schema(value_type = Option<String>)]
    api_key: Option<Option<SecretString>>,
}

impl SmsBody {
    fn parse(
        self,
        state: &AppState,
        account: AccountId,
    ) -> Result<(SmsSettings, SecretChange), Vec<FieldError>> {
        let mut v = Validator::default();
        let provider = match self.provider.as_str() {
            "twilio" => v
                .field(
                    "account_sid",
                    Text::parse(self.account_sid.as_deref().unwrap_or_default(), 1, 100),
                )
                .map(|account_sid| SmsProvider::Twilio { account_sid }),
            "http" => v
                .field(
                    "username",
                    optional(self.username.as_deref(), |raw| Text::parse(raw, 1, 200)),
                )
                .map(|username| SmsProvider::Http { username }),
            _ => v.field(
                "provider",
                Err(InvalidValue("must be `twilio` or `http`".into())),
            ),
        };
        let from_number = v.field("from_number", PhoneNumber::parse(&self.from_number));
        let base_url = v.field(
            "base_url",
            BaseUrl::parse(&self.base_url).and_then(|url| {
                state.outbound.check_literal(url.literal_ip())?;
                Ok(url)
            }),
        );
        let api_key = seal(state, account, "api_key", &mut v, self.api_key);
        v.finish(|| {
            let settings = SmsSettings {
                provider: provider?,
                from_number: from_number?,
                base_url: base_url?,
                api_key: None,
            };
            Some((settings, api_key?))
        })
    }
}

/// Runs the command and answers the section through its view `V`, as a GET would.
async fn change<V: DeserializeOwned + Serialize>(
    state: &AppState,
    caller: &Authorized<section::Config>,
    context: &RequestContext,
    command: ChannelsCommand,
    read: impl FnOnce(&Channels) -> Option<(i64, serde_json::Value)>,
) -> ApiResult<Response> {
    let executed = state
        .execute::<Channels>(
            &channels_stream(caller.account_id),
            command,
            &context.metadata_for(caller),
        )
        .await?;
    let (version, body) = read(&executed.state).ok_or_else(|| ApiError::not_found("settings"))?;
    let view: V = serde_json::from_value(body).map_err(ApiError::internal)?;
    Ok(section_response(version, view))
}

/// SMTP settings (404 until set).
#[utoipa::path(get, path = "/v1/account/smtp", responses(
    (status = 200, body = SmtpView, headers(("ETag" = String))), (status = 404),
))]
async fn get_smtp(
    State(state): State<AppState>,
    caller: Authorized<section::Config>,
) -> ApiResult<Response> {
    let missing = || ApiError::not_configured("SMTP settings", "/v1/account/smtp");
    read_section::<SmtpView>(&state, &caller, SMTP_SECTION, missing).await
}

/// Replace the SMTP settings; `If-Match: "0"` when setting them the first time guards
/// against a concurrent first setting.
#[utoipa::path(put, path = "/v1/account/smtp", request_body = SmtpBody, params(IfMatch), responses(
    (status = 200, body = SmtpView, headers(("ETag" = String))),
    (status = 412), (status = 422, description = "Invalid fields, each named"),
))]
async fn put_smtp(
    State(state): State<AppState>,
    caller: Authorized<section::Config>,
    context: RequestContext,
    IfMatch(seen): IfMatch,
    JsonBody(body): JsonBody<SmtpBody>,
) -> ApiResult<Response> {
    let (settings, password) = body
        .parse(&state, caller.account_id)
        .map_err(ApiError::validation)?;
    let command = ChannelsCommand::ChangeSmtp {
        settings,
        password,
        seen,
    };
    change::<SmtpView>(&state, &caller, &context, command, |channels| {
        let smtp = channels.smtp.as_ref()?;
        Some((smtp.version, without_secret(&smtp.value, "password")))
    })
    .await
}

/// SMS settings (404 until set).
#[utoipa::path(get, path = "/v1/account/sms", responses(
    (status = 200, body = SmsView, headers(("ETag" = String))), (status = 404),
))]
async fn get_sms(
    State(state): State<AppState>,
    caller: Authorized<section::Config>,
) -> ApiResult<Response> {
    let missing = || ApiError::not_configured("SMS settings", "/v1/account/sms");
    read_section::<SmsView>(&state, &caller, SMS_SECTION, missing).await
}

/// Replace the SMS settings.
#[utoipa::path(put, path = "/v1/account/sms", request_body = SmsBody, params(IfMatch), responses(
    (status = 200, body = SmsView, headers(("ETag" = String))),
    (status = 412), (status = 422, description = "Invalid fields, each named"),
))]
async fn put_sms(
    State(state): State<AppState>,
    caller: Authorized<section::Config>,
    context: RequestContext,
    IfMatch(seen): IfMatch,
    JsonBody(body): JsonBody<SmsBody>,
) -> ApiResult<Response> {
    let (settings, api_key) = body
        .parse(&state, caller.account_id)
        .map_err(ApiError::validation)?;
    let command = ChannelsCommand::ChangeSms {
        settings,
        api_key,
        seen,
    };
    change::<SmsView>(&state, &caller, &context, command, |channels| {
        let sms = channels.sms.as_ref()?;
        Some((sms.version, without_secret(&sms.value, "api_key")))
    })
    .await
}

/// `POST …/test`: where the test goes.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TestBody {
    /// Email address (Test Email) or E.164 number (Test Mobile); default: the caller's own.
    to: Option<String>,
}

/// A job was queued: follow it at `GET /v1/jobs/{job_id}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobAccepted {
    pub job_id: String,
}

/// Queues the test and answers where to follow it: under an `Idempotency-Key`, the same
/// job for every retry.
async fn request_test(
    state: &AppState,
    caller: &Authorized<section::Config>,
    context: &RequestContext,
    test_id: Uuid,
    command: ChannelsCommand,
    claim: Option<KeyClaim>,
) -> ApiResult<Answer> {
    let job_id = job_id(test_id).to_string();
    let accepted = Answer::json(StatusCode::ACCEPTED, None, &JobAccepted { job_id });
    let render = |_: &Loaded<Channels>| accepted.stored();
    let answering = claim.as_ref().map(|claim| Answering::new(claim, &render));
    state
        .execute_answering::<Channels>(
            &channels_stream(caller.account_id),
            command,
            &context.metadata_for(caller),
            answering,
        )
        .await?;
    Ok(accepted)
}

/// The caller as a user, for their own address or number.
async fn caller_member(
    state: &AppState,
    caller: &Authorized<section::Config>,
) -> ApiResult<Member> {
    state
        .load::<User>(&caller.user_id.stream_id())
        .await?
        .state
        .member
        .ok_or_else(|| ApiError::not_found("user"))
}

/// Test Email: send one email through the saved SMTP settings, through the same path as
/// every email. Follow it at `GET /v1/jobs/{job_id}`: each stage with the server's reply.
#[utoipa::path(post, path = "/v1/account/smtp/test", request_body = TestBody, params(IdempotencyKey), responses(
    (status = 202, body = JobAccepted),
    (status = 409, description = "SMTP settings are not saved yet"),
    (status = 422, description = "`to` is not an email address"),
))]
async fn test_smtp(
    State(state): State<AppState>,
    caller: Authorized<section::Config>,
    context: RequestContext,
    key: IdempotencyKey,
    DigestedOptionalJson { body, digest }: DigestedOptionalJson<TestBody>,
) -> ApiResult<Response> {
    let request = async |claim| {
        let to = match body.to {
            Some(raw) => EmailAddress::parse(&raw)
                .map_err(|e| ApiError::invalid_field("to", e.to_string()))?,
            None => caller_member(&state, &caller).await?.email,
        };
        let test_id = Uuid::now_v7();
        let command = ChannelsCommand::RequestSmtpTest { test_id, to };
        request_test(&state, &caller, &context, test_id, command, claim).await
    };
    idempotency::once(&state.idempotency, caller.account_id, key, digest, request).await
}

/// Test Mobile: send one text message through the saved SMS settings. Follow it at
/// `GET /v1/jobs/{job_id}`: the gateway's status and answer.
#[utoipa::path(post, path = "/v1/account/sms/test", request_body = TestBody, params(IdempotencyKey), responses(
    (status = 202, body = JobAccepted),
    (status = 409, description = "SMS settings are not saved yet"),
    (status = 422, description = "`to` is not an E.164 number, or left out and the caller has no mobile"),
))]
async fn test_sms(
    State(state): State<AppState>,
    caller: Authorized<section::Config>,
    context: RequestContext,
    key: IdempotencyKey,
    DigestedOptionalJson { body, digest }: DigestedOptionalJson<TestBody>,
) -> ApiResult<Response> {
    let request = async |claim| {
        let to = match body.to {
            Some(raw) => PhoneNumber::parse(&raw)
                .map_err(|e| ApiError::invalid_field("to", e.to_string()))?,
            None => caller_member(&state, &caller)
                .await?
                .profile
                .mobile
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "to",
                        "your profile has no mobile number: give `to`, or add one at /v1/me",
                    )
                })?,
        };
        let test_id = Uuid::now_v7();
        let command = ChannelsCommand::RequestSmsTest { test_id, to };
        request_test(&state, &caller, &context, test_id, command, claim).await
    };
    idempotency::once(&state.idempotency, caller.account_id, key, digest, request).await
}
