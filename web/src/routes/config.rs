//! Account configuration: company information and general information.

use axum::{
    Json,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use switchyard_command::{
    account::{Account, AccountCommand, CompanyInformation, GeneralInformation, Versioned},
    domain::{
        CountryCode, CurrencyCode, DateFormat, EmailAddress, FieldError, PhoneNumber, Text,
        Validator,
    },
};
use switchyard_projections::{COMPANY_SECTION, GENERAL_SECTION, queries};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::{Authorized, Caller, section},
    error::{ApiError, ApiResult},
    etag,
    extract::{IfMatch, JsonBody, RequestContext},
    state::AppState,
};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_company, put_company))
        .routes(routes!(get_general, put_general))
}

/// Company information, as shown and as sent. Text fields other than `name` may be empty.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Company {
    #[schema(max_length = 100, min_length = 1)]
    name: String,
    #[schema(format = Email)]
    email: String,
    #[serde(default)]
    #[schema(max_length = 100)]
    company: String,
    #[serde(default)]
    #[schema(max_length = 200)]
    address_line1: String,
    #[serde(default)]
    #[schema(max_length = 200)]
    address_line2: String,
    /// ISO 3166-1 alpha-2.
    #[serde(default)]
    #[schema(example = "GB")]
    country: Option<String>,
    #[serde(default)]
    #[schema(max_length = 100)]
    city: String,
    #[serde(default)]
    #[schema(max_length = 20)]
    post_code: String,
}

impl Company {
    fn parse(self) -> Result<CompanyInformation, Vec<FieldError>> {
        let mut v = Validator::default();
        let name = v.field("name", Text::parse(&self.name, 1, 100));
        let email = v.field("email", EmailAddress::parse(&self.email));
        let company = v.field("company", Text::parse(&self.company, 0, 100));
        let address_line1 = v.field("address_line1", Text::parse(&self.address_line1, 0, 200));
        let address_line2 = v.field("address_line2", Text::parse(&self.address_line2, 0, 200));
        let country = v.field(
            "country",
            optional(self.country.as_deref(), CountryCode::parse),
        );
        let city = v.field("city", Text::parse(&self.city, 0, 100));
        let post_code = v.field("post_code", Text::parse(&self.post_code, 0, 20));
        v.finish(|| {
            Some(CompanyInformation {
                name: name?,
                email: email?,
                company: company?,
                address_line1: address_line1?,
                address_line2: address_line2?,
                country: country?,
                city: city?,
                post_code: post_code?,
            })
        })
    }
}

/// General information, as shown and as sent.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct General {
    /// ISO 4217.
    #[schema(example = "USD")]
    currency: String,
    #[schema(value_type = crate::openapi::values::DateFormat)]
    date_format: String,
    /// E.164.
    #[serde(default)]
    #[schema(example = "+442071234567")]
    phone: Option<String>,
    /// E.164.
    #[serde(default)]
    mobile: Option<String>,
    /// Email the user at every login (the tutorial's "security add-on").
    #[serde(default)]
    login_alerts: bool,
}

impl General {
    fn parse(self) -> Result<GeneralInformation, Vec<FieldError>> {
        let mut v = Validator::default();
        let currency = v.field("currency", CurrencyCode::parse(&self.currency));
        let date_format = v.field("date_format", DateFormat::parse(&self.date_format));
        let phone = v.field("phone", optional(self.phone.as_deref(), PhoneNumber::parse));
        let mobile = v.field(
            "mobile",
            optional(self.mobile.as_deref(), PhoneNumber::parse),
        );
        v.finish(|| {
            Some(GeneralInformation {
                currency: currency?,
                date_format: date_format?,
                phone: phone?,
                mobile: mobile?,
                login_alerts: self.login_alerts,
            })
        })
    }
}

/// Absent, null and empty all mean "not set".
pub(crate) fn optional<T, E>(
    raw: Option<&str>,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, E> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => parse(raw).map(Some),
    }
}

/// A section as the response body, with its version as the ETag.
pub(crate) fn section_response(version: i64, body: impl Serialize) -> Response {
    ([(header::ETAG, etag::format(version))], Json(body)).into_response()
}

/// A section as stored, or `missing` when it was never set.
pub(crate) async fn read_section<T: DeserializeOwned + Serialize>(
    state: &AppState,
    caller: &Caller,
    section: &str,
    missing: impl FnOnce() -> ApiError,
) -> ApiResult<Response> {
    let stored = queries::config_section(&state.db, caller.account_id, section)
        .await?
        .ok_or_else(missing)?;
    let body: T = serde_json::from_value(stored.data).map_err(ApiError::internal)?;
    Ok(section_response(stored.version, body))
}

/// Runs a configuration command and answers the section as it now is.
async fn change_section<T: Serialize>(
    state: &AppState,
    caller: &Caller,
    context: &RequestContext,
    command: AccountCommand,
    section: impl FnOnce(&Account) -> Option<&Versioned<T>>,
) -> ApiResult<Response> {
    let metadata = context.metadata_for(caller);
    let stream = caller.account_id.stream_id();
    let executed = state
        .execute::<Account>(&stream, command, &metadata)
        .await?;
    let current = section(&executed.state).ok_or_else(|| ApiError::not_found("account"))?;
    Ok(section_response(current.version, &current.value))
}

/// Company information.
#[utoipa::path(get, path = "/v1/account/company", responses(
    (status = 200, body = Company, headers(("ETag" = String))),
    (status = 401), (status = 403),
))]
async fn get_company(
    State(state): State<AppState>,
    caller: Authorized<section::Config>,
) -> ApiResult<Response> {
    let missing = || ApiError::not_found("account configuration");
    read_section::<Company>(&state, &caller, COMPANY_SECTION, missing).await
}

/// Replace company information. `If-Match` with the ETag of the last read refuses (412) to
/// overwrite someone else's change.
#[utoipa::path(put, path = "/v1/account/company", request_body = Company, params(IfMatch), responses(
    (status = 200, body = Company, headers(("ETag" = String))),
    (status = 412, description = "Changed since the If-Match version"),
    (status = 422, description = "Invalid fields, each named"),
))]
async fn put_company(
    State(state): State<AppState>,
    caller: Authorized<section::Config>,
    context: RequestContext,
    IfMatch(seen): IfMatch,
    JsonBody(body): JsonBody<Company>,
) -> ApiResult<Response> {
    let company = body.parse().map_err(ApiError::validation)?;
    let command = AccountCommand::ChangeCompanyInformation(company, seen);
    change_section(&state, &caller, &context, command, |account| {
        account.sections.as_ref().map(|(company, _)| company)
    })
    .await
}

/// General information.
#[utoipa::path(get, path = "/v1/account/general", responses(
    (status = 200, body = General, headers(("ETag" = String))),
    (status = 401), (status = 403),
))]
async fn get_general(
    State(state): State<AppState>,
    caller: Authorized<section::Config>,
) -> ApiResult<Response> {
    let missing = || ApiError::not_found("account configuration");
    read_section::<General>(&state, &caller, GENERAL_SECTION, missing).await
}

/// Replace general information; `If-Match` as for the company.
#[utoipa::path(put, path = "/v1/account/general", request_body = General, params(IfMatch), responses(
    (status = 200, body = General, headers(("ETag" = String))),
    (status = 412, description = "Changed since the If-Match version"),
    (status = 422, description = "Invalid fields, each named"),
))]
async fn put_general(
    State(state): State<AppState>,
    caller: Authorized<section::Config>,
    context: RequestContext,
    IfMatch(seen): IfMatch,
    JsonBody(body): JsonBody<General>,
) -> ApiResult<Response> {
    let general = body.parse().map_err(ApiError::validation)?;
    let command = AccountCommand::ChangeGeneralInformation(general, seen);
    change_section(&state, &caller, &context, command, |account| {
        account.sections.as_ref().map(|(_, general)| general)
    })
    .await
}
