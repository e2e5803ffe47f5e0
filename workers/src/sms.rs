//! Sending one SMS through the account's gateway (`twilio` or `http`, see API.md "SMTP and
//! SMS"). The "Test Mobile" job and later notifications use this same path, and record the
//! returned [`SmsDelivery`] on the job: the gateway's status line, an excerpt of its answer,
//! and what went wrong in words a user can act on. Requests go through the outbound policy's
//! HTTP client ([`TenantHttp`]): only to allowed addresses, never following a redirect.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::outbound::{
    OutboundError, TenantHttp, excerpt, outbound_refusal, read_body_start, root_cause,
    without_secret,
};

/// An account's SMS gateway, with its API key decrypted. `Debug` shows the key as redacted.
#[derive(Debug, Clone)]
pub enum SmsSettings {
    /// Posts the form `From, To, Body` to `{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`
    /// with basic auth `account_sid:api_key`.
    Twilio {
        base_url: String,
        account_sid: String,
        from_number: String,
        api_key: SecretString,
    },
    /// Posts the JSON `{from, to, text}` to `base_url` itself, with `Authorization: Bearer
    /// <api_key>`; when `username` is set, with basic auth `username:api_key` instead, as
    /// gateways that name an account besides the key expect.
    Http {
        base_url: String,
        from_number: String,
        username: Option<String>,
        api_key: SecretString,
    },
}

/// What happened to one message, as recorded on its job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsDelivery {
    /// The gateway's HTTP status; `None` when it never answered.
    pub status: Option<u16>,
    /// An [`excerpt`] of the gateway's answer; `None` when it never answered.
    pub excerpt: Option<String>,
    /// The gateway's message id when it accepted the message and names one (Twilio's `sid`).
    pub outcome: Result<Option<String>, SmsError>,
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct SmsError {
    #[serde(flatten)]
    pub kind: SmsFailure,
    /// What went wrong and what to check, for the user.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SmsFailure {
    /// No connection, or it broke before an answer.
    Unreachable,
    /// No answer within the timeout. The gateway may still have sent the message.
    Timeout,
    /// The gateway refused this message (4xx other than 401, 403 and 429), or redirected it
    /// (3xx, never followed): sending it again gets the same answer.
    Rejected { status: u16 },
    /// 401 or 403: the credentials are wrong or not allowed to send.
    Unauthorized,
    /// 429.
    RateLimited,
    /// 5xx.
    ProviderError { status: u16 },
    /// The settings cannot form a request (the base URL is not an http(s) URL, or the key
    /// cannot be sent in a header).
    InvalidSettings,
    /// The base URL's host is, or resolves only to, addresses the service may not connect to
    /// (private, loopback, link-local, …): nothing was sent.
    AddressNotAllowed,
}

impl SmsFailure {
    /// Whether trying the same message again later may succeed.
    pub fn is_transient(self) -> bool {
        match self {
            Self::Unreachable | Self::Timeout | Self::RateLimited | Self::ProviderError { .. } => {
                true
            }
            Self::Rejected { .. }
            | Self::Unauthorized
            | Self::InvalidSettings
            | Self::AddressNotAllowed => false,
        }
    }
}

impl SmsError {
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }
}

/// Sends `text` to `to` through the gateway, giving up after `timeout` (connecting, sending
/// and reading the answer together). Never fails: every outcome is a delivery to record.
pub async fn send(
    http: &TenantHttp,
    settings: &SmsSettings,
    to: &str,
    text: &str,
    timeout: Duration,
) -> SmsDelivery {
    match request(http, settings, to, text) {
        Ok((url, request)) => deliver(settings, &url, request, timeout).await,
        Err(error) => SmsDelivery::unanswered(error),
    }
}

fn request(
    http: &TenantHttp,
    settings: &SmsSettings,
    to: &str,
    text: &str,
) -> Result<(Url, RequestBuilder), SmsError> {
    match settings {
        SmsSettings::Twilio {
            base_url,
            account_sid,
            from_number,
            api_key,
        } => {
            let url = twilio_messages_url(base_url, account_sid)?;
            let request = post(http, settings, &url)?
                .basic_auth(account_sid, Some(api_key.expose_secret()))
                .form(&[("From", from_number.as_str()), ("To", to), ("Body", text)]);
            Ok((url, request))
        }
        SmsSettings::Http {
            base_url,
            from_number,
            username,
            api_key,
        } => {
            let url = parse_base_url(base_url)?;
            let request = post(http, settings, &url)?.json(&serde_json::json!({
                "from": from_number,
                "to": to,
                "text": text,
            }));
            let request = match username {
                Some(username) => request.basic_auth(username, Some(api_key.expose_secret())),
                None => request.bearer_auth(api_key.expose_secret()),
            };
            Ok((url, request))
        }
    }
}

fn post(http: &TenantHttp, settings: &SmsSettings, url: &Url) -> Result<RequestBuilder, SmsError> {
    http.request(Method::POST, url.clone())
        .map_err(|refused| not_allowed(settings, url, &refused))
}

/// `{base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`, with or without a trailing
/// slash on `base_url`; the SID is one percent-encoded path segment, so it cannot reach
/// another path.
fn twilio_messages_url(base_url: &str, account_sid: &str) -> Result<Url, SmsError> {
    let mut url = parse_base_url(base_url)?;
    url.path_segments_mut()
        .map_err(|()| invalid_base_url())?
        .pop_if_empty()
        .extend(["2010-04-01", "Accounts", account_sid, "Messages.json"]);
    Ok(url)
}

fn parse_base_url(base_url: &str) -> Result<Url, SmsError> {
    Url::parse(base_url)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"))
        .ok_or_else(invalid_base_url)
}

fn invalid_base_url() -> SmsError {
    SmsError {
        kind: SmsFailure::InvalidSettings,
        message: "The SMS base URL is not an http(s) URL: check the SMS settings".into(),
    }
}

async fn deliver(
    settings: &SmsSettings,
    url: &Url,
    request: RequestBuilder,
    timeout: Duration,
) -> SmsDelivery {
    let response = match request.timeout(timeout).send().await {
        Ok(response) => response,
        Err(error) => {
            return SmsDelivery::unanswered(transport_failure(settings, url, &error, timeout));
        }
    };
    let status = response.status();
    let body = without_secret(read_body_start(response).await, settings.api_key());
    // The status alone decides: a gateway that accepted the message and then stalled or
    // garbled its answer has still accepted it, and sending again would send it twice.
    let outcome = if status.is_success() {
        Ok(settings.message_id(&body))
    } else {
        Err(refusal(settings, status, &body))
    };
    SmsDelivery {
        status: Some(status.as_u16()),
        excerpt: Some(excerpt(&body)),
        outcome,
    }
}

fn transport_failure(
    settings: &SmsSettings,
    url: &Url,
    error: &reqwest::Error,
    timeout: Duration,
) -> SmsError {
    let gateway = settings.gateway_name();
    // The origin only: a base URL may carry credentials in its user info.
    let origin = url.origin().ascii_serialization();
    if let Some(refused) = outbound_refusal(error) {
        return not_allowed(settings, url, refused);
    }
    let cause = root_cause(error);
    if error.is_timeout() {
        SmsError {
            kind: SmsFailure::Timeout,
            message: format!(
                "{gateway} at {origin} did not answer within {timeout:?}: check the base URL, \
                 or try again later"
            ),
        }
    } else if error.is_builder() {
        SmsError {
            kind: SmsFailure::InvalidSettings,
            message: format!(
                "The SMS settings do not form a valid request ({cause}): check the SMS settings"
            ),
        }
    } else {
        SmsError {
            kind: SmsFailure::Unreachable,
            message: format!(
                "Could not reach {gateway} at {origin} ({cause}): check the base URL, and that \
                 the gateway is up"
            ),
        }
    }
}

fn not_allowed(settings: &SmsSettings, url: &Url, refusal: &OutboundError) -> SmsError {
    let gateway = settings.gateway_name();
    let origin = url.origin().ascii_serialization();
    SmsError {
        kind: SmsFailure::AddressNotAllowed,
        message: format!(
            "{gateway} at {origin} was not contacted ({refusal}): give the gateway's public \
             address, or ask the operator to allow the range"
        ),
    }
}

fn refusal(settings: &SmsSettings, status: StatusCode, body: &str) -> SmsError {
    let code = status.as_u16();
    let (kind, headline, advice) = match code {
        401 | 403 => (
            SmsFailure::Unauthorized,
            "refused the credentials",
            settings.credentials_hint(),
        ),
        300..=399 => (
            SmsFailure::Rejected { status: code },
            "answered with a redirect, which is not followed",
            "set the base URL to the address the gateway documents",
        ),
        404 => (
            SmsFailure::Rejected { status: code },
            "has no such address",
            "check the base URL",
        ),
        429 => (
            SmsFailure::RateLimited,
            "is limiting the sending rate",
            "try again later",
        ),
        500..=599 => (
            SmsFailure::ProviderError { status: code },
            "failed",
            "try again later",
        ),
        _ => (
            SmsFailure::Rejected { status: code },
            "rejected the message",
            "check the sender number, the recipient number and the text",
        ),
    };
    let gateway = settings.gateway_name();
    let mut message = format!("{gateway} {headline} ({code}): {advice}");
    if let Some(detail) = settings.explain(body) {
        message.push_str(&format!(". {gateway} says: {detail}"));
    }
    SmsError { kind, message }
}

/// Twilio's answer to a created message (only what we keep).
#[derive(Deserialize)]
struct TwilioMessage {
    sid: String,
}

/// Twilio's error body: `{"code": 21211, "message": "…", "more_info": "https://…", "status": 400}`.
#[derive(Deserialize)]
struct TwilioError {
    message: String,
    code: Option<u32>,
    more_info: Option<String>,
}

impl TwilioError {
    fn describe(&self) -> String {
        match (self.code, &self.more_info) {
            (Some(code), Some(more_info)) => {
                format!("{} (error {code}, {more_info})", self.message)
            }
            (Some(code), None) => format!("{} (error {code})", self.message),
            (None, _) => self.message.clone(),
        }
    }
}

impl SmsSettings {
    fn api_key(&self) -> &SecretString {
        match self {
            Self::Twilio { api_key, .. } | Self::Http { api_key, .. } => api_key,
        }
    }

    fn gateway_name(&self) -> &'static str {
        match self {
            Self::Twilio { .. } => "Twilio",
            Self::Http { .. } => "The SMS gateway",
        }
    }

    fn credentials_hint(&self) -> &'static str {
        match self {
            Self::Twilio { .. } => "check the account SID and API key",
            Self::Http {
                username: Some(_), ..
            } => "check the username and API key",
            Self::Http { username: None, .. } => "check the API key",
        }
    }

    /// The id the gateway gave an accepted message. Generic gateways answer in their own
    /// shapes, so only Twilio's is read; an excerpt of their answer is recorded anyway.
    fn message_id(&self, body: &str) -> Option<String> {
        match self {
            Self::Twilio { .. } => serde_json::from_str::<TwilioMessage>(body)
                .ok()
                .map(|message| message.sid),
            Self::Http { .. } => None,
        }
    }

    /// What the gateway said about a refusal: Twilio's error message, or the start of any
    /// other answer.
    fn explain(&self, body: &str) -> Option<String> {
        if let Self::Twilio { .. } = self
            && let Ok(error) = serde_json::from_str::<TwilioError>(body)
        {
            return Some(excerpt(&error.describe()));
        }
        Some(excerpt(body)).filter(|shown| !shown.is_empty())
    }
}

impl SmsDelivery {
    fn unanswered(error: SmsError) -> Self {
        Self {
            status: None,
            excerpt: None,
            outcome: Err(error),
        }
    }

    /// What the job's stage shows: the status line and the excerpt ("HTTP 201 Created: {…}"),
    /// or why there was no answer.
    pub fn detail(&self) -> String {
        let status_line = self.status.map(|code| {
            let reason = StatusCode::from_u16(code)
                .ok()
                .and_then(|status| status.canonical_reason());
            match reason {
                Some(reason) => format!("HTTP {code} {reason}"),
                None => format!("HTTP {code}"),
            }
        });
        match (status_line, self.excerpt.as_deref(), &self.outcome) {
            (Some(line), Some(shown), _) if !shown.is_empty() => format!("{line}: {shown}"),
            (Some(line), _, _) => line,
            (None, _, Err(error)) => error.message.clone(),
            (None, _, Ok(_)) => "accepted".into(),
        }
    }
}
