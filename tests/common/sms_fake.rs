//! Fake SMS gateways on 127.0.0.1, checking each request as the real one would: Twilio's
//! Messages API, and the generic `http` gateway of API.md. They answer in the provider's
//! format, so a mistake in what we send shows as the provider's refusal.

use std::sync::{Arc, Mutex};

use axum::{
    Form, Json, Router,
    extract::{
        Path, State,
        rejection::{FormRejection, JsonRejection},
    },
    http::{
        HeaderMap, StatusCode,
        header::{AUTHORIZATION, LOCATION},
    },
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// The path of the generic gateway, which `base_url` names in full.
const HTTP_GATEWAY_PATH: &str = "/sms";
/// Where the Twilio fake serves its API, as behind a proxy: the client must join its paths
/// onto a base URL that has a path.
const TWILIO_PREFIX: &str = "/twilio";

/// A message a fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSms {
    pub from: String,
    pub to: String,
    pub text: String,
}

pub struct SmsFake {
    /// What to configure as the settings' `base_url`.
    pub base_url: String,
    state: Arc<FakeState>,
}

struct FakeState {
    gateway: Gateway,
    behaviour: Mutex<Behaviour>,
    received: Mutex<Vec<ReceivedSms>>,
}

enum Gateway {
    Twilio {
        account_sid: String,
        api_key: String,
    },
    Http {
        username: Option<String>,
        api_key: String,
    },
}

#[derive(Clone)]
enum Behaviour {
    /// Check the request like the provider and accept a valid one.
    Check,
    /// Answer this JSON, whatever the request (an outage, a rate limit, a scripted refusal).
    Answer(StatusCode, Value),
    /// Answer this text as it is, whatever the request.
    AnswerText(StatusCode, String),
    /// Redirect every request to this URL.
    Redirect(String),
    /// Accept the connection and never answer.
    Hang,
}

impl SmsFake {
    /// Twilio, for this account SID and API key (the auth token or API key secret).
    pub async fn twilio(account_sid: &str, api_key: &str) -> Self {
        let gateway = Gateway::Twilio {
            account_sid: account_sid.into(),
            api_key: api_key.into(),
        };
        let router = Router::new()
            .route(
                &format!("{TWILIO_PREFIX}/2010-04-01/Accounts/{{account_sid}}/Messages.json"),
                post(twilio_messages),
            )
            .fallback(|| async {
                twilio_error(
                    StatusCode::NOT_FOUND,
                    20404,
                    "The requested resource was not found",
                )
            });
        Self::serve(gateway, router, TWILIO_PREFIX).await
    }

    /// A generic gateway expecting basic auth `username:api_key` when `username` is given,
    /// else `Bearer <api_key>`.
    pub async fn http(username: Option<&str>, api_key: &str) -> Self {
        let gateway = Gateway::Http {
            username: username.map(str::to_owned),
            api_key: api_key.into(),
        };
        let router = Router::new().route(HTTP_GATEWAY_PATH, post(http_sms));
        Self::serve(gateway, router, HTTP_GATEWAY_PATH).await
    }

    async fn serve(gateway: Gateway, router: Router<Arc<FakeState>>, path: &str) -> Self {
        let state = Arc::new(FakeState {
            gateway,
            behaviour: Mutex::new(Behaviour::Check),
            received: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}{path}", listener.local_addr().unwrap());
        let router = router.with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { base_url, state }
    }

    /// From now on, answers every request with `status` and `body`.
    pub fn answer(&self, status: StatusCode, body: Value) {
        *self.state.behaviour.lock().unwrap() = Behaviour::Answer(status, body);
    }

    /// From now on, answers every request with `status` and `text` as it is.
    pub fn answer_text(&self, status: StatusCode, text: &str) {
        *self.state.behaviour.lock().unwrap() = Behaviour::AnswerText(status, text.to_owned());
    }

    /// From now on, answers every request with `302 Found` to `location`.
    pub fn redirect(&self, location: &str) {
        *self.state.behaviour.lock().unwrap() = Behaviour::Redirect(location.to_owned());
    }

    /// From now on, never answers.
    pub fn hang(&self) {
        *self.state.behaviour.lock().unwrap() = Behaviour::Hang;
    }

    /// The messages accepted so far.
    pub fn received(&self) -> Vec<ReceivedSms> {
        self.state.received.lock().unwrap().clone()
    }
}

/// Twilio's error body, as its API answers it.
pub fn twilio_error_body(status: StatusCode, code: u32, message: &str) -> Value {
    json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    })
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    (status, Json(twilio_error_body(status, code, message))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct TwilioForm {
    from: String,
    to: String,
    body: String,
}

async fn twilio_messages(
    State(state): State<Arc<FakeState>>,
    Path(account_sid): Path<String>,
    headers: HeaderMap,
    form: Result<Form<TwilioForm>, FormRejection>,
) -> Response {
    if let Some(answer) = state.scripted_answer().await {
        return answer;
    }
    let Gateway::Twilio {
        account_sid: expected_sid,
        api_key,
    } = &state.gateway
    else {
        unreachable!("the Twilio route belongs to a Twilio fake");
    };
    if authorization(&headers) != Some(basic_auth(expected_sid, api_key)) {
        return twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    if account_sid != *expected_sid {
        return twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        );
    }
    let Form(form) = match form {
        Ok(form) => form,
        Err(rejection) => {
            return twilio_error(StatusCode::BAD_REQUEST, 21602, &rejection.body_text());
        }
    };
    if !is_e164(&form.to) {
        let message = format!("The 'To' number {} is not a valid phone number.", form.to);
        return twilio_error(StatusCode::BAD_REQUEST, 21211, &message);
    }
    let resource = json!({
        "sid": "SM0123456789abcdef0123456789abcdef",
        "account_sid": account_sid,
        "from": form.from,
        "to": form.to,
        "body": form.body,
        "status": "queued",
        "num_segments": "1",
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
    });
    state.received.lock().unwrap().push(ReceivedSms {
        from: form.from,
        to: form.to,
        text: form.body,
    });
    (StatusCode::CREATED, Json(resource)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSms {
    from: String,
    to: String,
    text: String,
}

async fn http_sms(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    sms: Result<Json<HttpSms>, JsonRejection>,
) -> Response {
    if let Some(answer) = state.scripted_answer().await {
        return answer;
    }
    let Gateway::Http { username, api_key } = &state.gateway else {
        unreachable!("the http route belongs to an http fake");
    };
    let expected = match username {
        Some(username) => basic_auth(username, api_key),
        None => format!("Bearer {api_key}"),
    };
    if authorization(&headers) != Some(expected) {
        let body = json!({"error": "invalid credentials"});
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    let Json(sms) = match sms {
        Ok(sms) => sms,
        Err(rejection) => return (rejection.status(), rejection.body_text()).into_response(),
    };
    state.received.lock().unwrap().push(ReceivedSms {
        from: sms.from,
        to: sms.to,
        text: sms.text,
    });
    let body = json!({"id": "msg-1", "status": "accepted"});
    (StatusCode::OK, Json(body)).into_response()
}

impl FakeState {
    /// The answer `answer` or `hang` set, if any; never returns when hanging.
    async fn scripted_answer(&self) -> Option<Response> {
        let behaviour = self.behaviour.lock().unwrap().clone();
        match behaviour {
            Behaviour::Check => None,
            Behaviour::Answer(status, body) => Some((status, Json(body)).into_response()),
            Behaviour::AnswerText(status, text) => Some((status, text).into_response()),
            Behaviour::Redirect(location) => {
                Some((StatusCode::FOUND, [(LOCATION, location)]).into_response())
            }
            Behaviour::Hang => std::future::pending().await,
        }
    }
}

fn authorization(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    Some(value.to_owned())
}

fn basic_auth(username: &str, password: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{username}:{password}")))
}

/// `+` and 8 to 15 digits, the first not 0, as Twilio expects.
fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len())
            && digits.bytes().all(|digit| digit.is_ascii_digit())
            && !digits.starts_with('0')
    })
}
