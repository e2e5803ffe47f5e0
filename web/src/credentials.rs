//! Checking what a person claims to know — their password, a code from their authenticator
//! app — at login and when a signed-in user confirms who they are (a new password or email,
//! turning two-factor login off). Every check is an [`Attempt`] that the login throttle
//! counts under the email and the client's address, reserved before anything is verified:
//! guesses sent at the same moment cannot outrun the lockout.

use std::time::Duration;

use chrono::Utc;
use secrecy::ExposeSecret;
use switchyard_command::{
    access::throttle::{self, UNKNOWN_CLIENT, Verdict},
    domain::{AccountId, UserId},
    event_log::Actor,
    secrets::EncryptedSecret,
    totp::{self, TotpSeed},
    user::{Member, User, UserCommand},
};

use crate::{
    error::{ApiError, ApiResult},
    extract::RequestContext,
    state::AppState,
};

/// One attempt at proving who you are, counted as a failure until it succeeds.
pub struct Attempt<'a> {
    state: &'a AppState,
    context: &'a RequestContext,
    reserved: throttle::Attempt,
    /// Whose login the email names, if anyone's: lockouts go to their audit trail.
    user: Option<(UserId, AccountId)>,
}

impl<'a> Attempt<'a> {
    /// Reserves an attempt at `email` (normalized) from the request's client: 429 with
    /// `Retry-After` while that is locked out; otherwise waits out the slow-down first.
    pub async fn begin(
        state: &'a AppState,
        context: &'a RequestContext,
        email: &str,
        user: Option<(UserId, AccountId)>,
    ) -> ApiResult<Self> {
        let client = context.client_ip.as_deref().unwrap_or(UNKNOWN_CLIENT);
        match state.throttle.reserve(email, client, Utc::now()).await? {
            Verdict::Refused { retry_after } => Err(too_many_attempts(retry_after)),
            Verdict::Proceed(reserved) => {
                tokio::time::sleep(reserved.delay()).await;
                Ok(Self {
                    state,
                    context,
                    reserved,
                    user,
                })
            }
        }
    }

    /// Verifies `password` against `hash`, or against a stand-in when there is none (an
    /// unknown email costs the time a wrong password does); a wrong one fails the attempt
    /// with `wrong`.
    pub async fn verify_password(
        self,
        password: String,
        hash: Option<String>,
        wrong: impl FnOnce() -> ApiError,
    ) -> ApiResult<Self> {
        match self.state.passwords.verify(password.into(), hash).await {
            true => Ok(self),
            false => Err(self.failed(wrong()).await),
        }
    }

    /// Verifies a code from `member`'s authenticator app (`sealed` is their seed) and
    /// answers its step; a wrong, expired or used one fails the attempt with `wrong`.
    pub async fn verify_code(
        self,
        member: &Member,
        sealed: &EncryptedSecret,
        code: &str,
        wrong: impl FnOnce() -> ApiError,
    ) -> ApiResult<(Self, u64)> {
        match totp_step(self.state, member, sealed, code)? {
            Some(step) => Ok((self, step)),
            None => Err(self.failed(wrong()).await),
        }
    }

    /// The attempt failed: it stays counted, and a lockout that counting it started is
    /// recorded in the user's audit trail. Answers `answer`.
    pub async fn failed(self, answer: ApiError) -> ApiError {
        let Some((user_id, account_id)) = self.user else {
            return answer;
        };
        let metadata = self.context.metadata(account_id, Actor::System);
        for lockout in self.reserved.lockouts() {
            let command = UserCommand::RecordLockout {
                scope: lockout.scope,
                until: lockout.until,
            };
            let audited = self
                .state
                .execute::<User>(&user_id.stream_id(), command, &metadata)
                .await;
            if let Err(error) = audited {
                return error;
            }
        }
        answer
    }

    /// The person proved who they are: the attempt is no failure, and their client's
    /// failures are forgotten.
    pub async fn succeeded(self) -> ApiResult<()> {
        Ok(self
            .state
            .throttle
            .succeeded(self.reserved, Utc::now())
            .await?)
    }

    /// The attempt proved nothing either way (the password was right, but a second factor
    /// is needed, or the user is disabled): it stops counting.
    pub async fn withdraw(self) -> ApiResult<()> {
        Ok(self
            .state
            .throttle
            .withdraw(self.reserved, Utc::now())
            .await?)
    }
}

fn too_many_attempts(retry_after: Duration) -> ApiError {
    ApiError::too_many_requests(
        retry_after,
        "too many failed attempts: wait before trying again",
    )
}

/// The step of `code` under `member`'s seed, if it is right now and not used before.
pub fn totp_step(
    state: &AppState,
    member: &Member,
    sealed: &EncryptedSecret,
    code: &str,
) -> ApiResult<Option<u64>> {
    let seed = state
        .secrets
        .decrypt(member.account_id, sealed)
        .map_err(ApiError::internal)?;
    let seed = TotpSeed::from_base32(seed.expose_secret()).map_err(ApiError::internal)?;
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or_default();
    Ok(totp::verify(&seed, code.trim(), now, member.last_totp_step))
}
