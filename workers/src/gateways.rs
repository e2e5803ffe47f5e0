//! Verifying a payment gateway with its provider (the API section's "Verify"): does the
//! provider take the credentials, and are they of the gateway's mode?
//!
//! - Stripe: `GET {stripe}/v1/balance` with the secret key as a bearer token; the balance's
//!   `livemode` must be the gateway's mode.
//! - PayPal: `POST {paypal}/v1/oauth2/token` (`grant_type=client_credentials`, basic auth
//!   `client_id:client_secret`) at the mode's host: sandbox credentials only work on the
//!   sandbox host and live ones on the live host, so a token answers both questions.
//!
//! Requests go through the outbound policy's HTTP client ([`TenantHttp`]): only to allowed
//! addresses, never following a redirect. A report shows an excerpt of a refusal (the
//! provider's message, the secret scrubbed) and never the body of a success, which carries
//! an access token or the account's balance.

use std::time::Duration;

use reqwest::{Method, Response, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use switchyard_command::gateways::Mode;

use crate::outbound::{
    TenantHttp, excerpt, outbound_refusal, read_body_start, root_cause, without_secret,
};

/// Where the providers' APIs are: their own hosts, or fakes and staging servers (the
/// installation settings `SWITCHYARD_STRIPE_API_BASE` and `SWITCHYARD_PAYPAL_API_BASE`).
#[derive(Debug, Clone)]
pub struct ProviderApis {
    pub stripe: Url,
    /// `None`: PayPal's live or sandbox host, by the gateway's mode.
    pub paypal: Option<Url>,
}

impl Default for ProviderApis {
    fn default() -> Self {
        Self {
            stripe: Url::parse("https://api.stripe.com").expect("a URL"),
            paypal: None,
        }
    }
}

impl ProviderApis {
    fn paypal(&self, mode: Mode) -> Url {
        self.paypal.clone().unwrap_or_else(|| {
            let host = match mode {
                Mode::Live => "https://api-m.paypal.com",
                Mode::Test => "https://api-m.sandbox.paypal.com",
            };
            Url::parse(host).expect("a URL")
        })
    }
}

/// A gateway's credentials, opened. `Debug` shows the secrets as redacted.
#[derive(Debug)]
pub enum GatewayCredentials {
    Stripe {
        secret_key: SecretString,
    },
    Paypal {
        client_id: String,
        client_secret: SecretString,
    },
}

impl GatewayCredentials {
    fn secret(&self) -> &SecretString {
        match self {
            Self::Stripe { secret_key } => secret_key,
            Self::Paypal { client_secret, .. } => client_secret,
        }
    }

    fn provider(&self) -> &'static str {
        match self {
            Self::Stripe { .. } => "Stripe",
            Self::Paypal { .. } => "PayPal",
        }
    }
}

/// One question the verification asked, as its job report shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// `credentials` or `mode`.
    pub stage: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Why the provider did not confirm the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What went wrong and what to check, for the user.
    pub message: String,
    /// Whether asking again later may succeed (the provider was down, slow or limiting).
    pub transient: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub stages: Vec<Stage>,
    pub outcome: Result<(), Refusal>,
}

impl Verification {
    /// The credentials stage failed: nothing more was asked.
    fn refused(message: String, transient: bool) -> Self {
        Self {
            stages: vec![Stage {
                stage: "credentials",
                ok: false,
                detail: message.clone(),
            }],
            outcome: Err(Refusal { message, transient }),
        }
    }

    /// The credentials were taken; `mode_ok` says whether they are of the gateway's mode.
    fn taken(credentials: String, mode_ok: bool, mode: String) -> Self {
        let outcome = match mode_ok {
            true => Ok(()),
            false => Err(Refusal {
                message: mode.clone(),
                transient: false,
            }),
        };
        Self {
            stages: vec![
                Stage {
                    stage: "credentials",
                    ok: true,
                    detail: credentials,
                },
                Stage {
                    stage: "mode",
                    ok: mode_ok,
                    detail: mode,
                },
            ],
            outcome,
        }
    }
}

/// Asks the provider about `credentials`, giving up after `timeout`. Never fails: every
/// outcome is a verification to record.
pub async fn verify(
    http: &TenantHttp,
    apis: &ProviderApis,
    mode: Mode,
    credentials: &GatewayCredentials,
    timeout: Duration,
) -> Verification {
    let (url, request) = match credentials {
        GatewayCredentials::Stripe { secret_key } => {
            let url = endpoint(&apis.stripe, &["v1", "balance"]);
            let request = http
                .request(Method::GET, url.clone())
                .map(|r| r.bearer_auth(secret_key.expose_secret()));
            (url, request)
        }
        GatewayCredentials::Paypal {
            client_id,
            client_secret,
        } => {
            let url = endpoint(&apis.paypal(mode), &["v1", "oauth2", "token"]);
            let request = http.request(Method::POST, url.clone()).map(|r| {
                r.basic_auth(client_id, Some(client_secret.expose_secret()))
                    .header("accept", "application/json")
                    .form(&[("grant_type", "client_credentials")])
            });
            (url, request)
        }
    };
    let provider = credentials.provider();
    let origin = url.origin().ascii_serialization();
    let request = match request {
        Ok(request) => request,
        Err(refused) => return not_allowed(provider, &origin, &refused.to_string()),
    };
    match request.timeout(timeout).send().await {
        Ok(response) => answered(credentials, mode, &origin, response).await,
        Err(error) => {
            if let Some(refused) = outbound_refusal(&error) {
                return not_allowed(provider, &origin, &refused.to_string());
            }
            let message = match error.is_timeout() {
                true => format!("{provider} at {origin} did not answer within {timeout:?}"),
                false => format!(
                    "Could not reach {provider} at {origin} ({})",
                    root_cause(&error)
                ),
            };
            Verification::refused(format!("{message}: try again later"), true)
        }
    }
}

/// `base` with `path` after its own path, with or without a trailing slash on it.
fn endpoint(base: &Url, path: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().extend(path);
    }
    url
}

fn not_allowed(provider: &str, origin: &str, refusal: &str) -> Verification {
    let message = format!(
        "{provider} at {origin} was not contacted ({refusal}): ask the operator to check the \
         provider's API base URL, or to allow the range"
    );
    Verification::refused(message, false)
}

/// Stripe's balance, as far as the verification reads it.
#[derive(Deserialize)]
struct StripeBalance {
    livemode: bool,
}

/// Stripe's error body: `{"error": {"type": "invalid_request_error", "message": "…"}}`.
#[derive(Deserialize)]
struct StripeError {
    error: StripeErrorDetail,
}

#[derive(Deserialize)]
struct StripeErrorDetail {
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// PayPal's OAuth error: `{"error": "invalid_client", "error_description": "…"}`.
#[derive(Deserialize)]
struct PaypalError {
    error: String,
    error_description: Option<String>,
}

/// What the provider says about a refusal: its own error message, or the start of its answer.
fn explain(credentials: &GatewayCredentials, body: &str) -> Option<String> {
    let said =
        match credentials {
            GatewayCredentials::Stripe { .. } => serde_json::from_str::<StripeError>(body)
                .ok()
                .and_then(|e| match (e.error.message, e.error.kind) {
                    (Some(message), Some(kind)) => Some(format!("{message} ({kind})")),
                    (message, kind) => message.or(kind),
                }),
            GatewayCredentials::Paypal { .. } => serde_json::from_str::<PaypalError>(body)
                .ok()
                .map(|e| match e.error_description {
                    Some(description) => format!("{description} ({})", e.error),
                    None => e.error,
                }),
        };
    Some(excerpt(&said.unwrap_or_else(|| body.to_owned()))).filter(|shown| !shown.is_empty())
}

async fn answered(
    credentials: &GatewayCredentials,
    mode: Mode,
    origin: &str,
    response: Response,
) -> Verification {
    let status = response.status();
    let provider = credentials.provider();
    let body = without_secret(read_body_start(response).await, credentials.secret());
    if !status.is_success() {
        let code = status.as_u16();
        let (headline, advice, transient) = match code {
            401 => (
                "refused the credentials",
                credentials_hint(credentials),
                false,
            ),
            403 => (
                "does not let these credentials do this",
                "give a key allowed to read the balance",
                false,
            ),
            300..=399 => (
                "answered with a redirect, which is not followed",
                "check the provider's API base URL",
                false,
            ),
            429 => ("is limiting requests", "try again later", true),
            500..=599 => ("failed", "try again later", true),
            _ => ("refused the request", credentials_hint(credentials), false),
        };
        let mut message = format!("{provider} {headline} (HTTP {code}): {advice}");
        if let Some(said) = explain(credentials, &body) {
            message.push_str(&format!(". {provider} says: {said}"));
        }
        return Verification::refused(message, transient);
    }
    let taken = format!("HTTP {status}: {provider} took the credentials");
    match credentials {
        GatewayCredentials::Stripe { .. } => {
            let Ok(balance) = serde_json::from_str::<StripeBalance>(&body) else {
                let message = format!(
                    "{provider} at {origin} answered HTTP {status} with something other than a \
                     balance: check the provider's API base URL"
                );
                return Verification::refused(message, false);
            };
            let key_mode = if balance.livemode { "live" } else { "test" };
            let mode_ok = balance.livemode == (mode == Mode::Live);
            let detail = match mode_ok {
                true => format!("the key is a {key_mode} mode key, as the gateway"),
                false => format!(
                    "the key is a {key_mode} mode key, but the gateway is in {} mode: save a \
                     {} mode key",
                    mode.as_str(),
                    mode.as_str()
                ),
            };
            Verification::taken(taken, mode_ok, detail)
        }
        GatewayCredentials::Paypal { .. } => {
            let host = match mode {
                Mode::Live => "live",
                Mode::Test => "sandbox",
            };
            let detail = format!(
                "{origin} (PayPal's {host} host for {} mode) issued a token for them",
                mode.as_str()
            );
            Verification::taken(taken, true, detail)
        }
    }
}

fn credentials_hint(credentials: &GatewayCredentials) -> &'static str {
    match credentials {
        GatewayCredentials::Stripe { .. } => "check the secret key",
        GatewayCredentials::Paypal { .. } => "check the client id and secret, and the mode",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_go_after_the_base_path() {
        let base = |raw| Url::parse(raw).unwrap();
        for raw in ["https://api.stripe.com", "https://api.stripe.com/"] {
            assert_eq!(
                endpoint(&base(raw), &["v1", "balance"]).as_str(),
                "https://api.stripe.com/v1/balance"
            );
        }
        assert_eq!(
            endpoint(&base("http://127.0.0.1:9/stripe/"), &["v1", "balance"]).as_str(),
            "http://127.0.0.1:9/stripe/v1/balance"
        );
    }

    #[test]
    fn paypal_has_a_host_per_mode_unless_the_operator_names_one() {
        let apis = ProviderApis::default();
        assert_eq!(
            apis.paypal(Mode::Live).as_str(),
            "https://api-m.paypal.com/"
        );
        assert_eq!(
            apis.paypal(Mode::Test).as_str(),
            "https://api-m.sandbox.paypal.com/"
        );
        let fake = Url::parse("http://127.0.0.1:8080").unwrap();
        let apis = ProviderApis {
            paypal: Some(fake.clone()),
            ..apis
        };
        assert_eq!(apis.paypal(Mode::Live), fake);
    }

    #[test]
    fn refusals_show_the_providers_own_words() {
        let stripe = GatewayCredentials::Stripe {
            secret_key: "sk_test_x".into(),
        };
        let body = r#"{"error": {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****1234"}}"#;
        assert_eq!(
            explain(&stripe, body).unwrap(),
            "Invalid API Key provided: sk_test_****1234 (invalid_request_error)"
        );
        let paypal = GatewayCredentials::Paypal {
            client_id: "id".into(),
            client_secret: "secret".into(),
        };
        let body =
            r#"{"error":"invalid_client","error_description":"Client Authentication failed"}"#;
        assert_eq!(
            explain(&paypal, body).unwrap(),
            "Client Authentication failed (invalid_client)"
        );
        assert_eq!(
            explain(&paypal, "<html>\nBad\n</html>").unwrap(),
            "<html> Bad </html>"
        );
    }
}
