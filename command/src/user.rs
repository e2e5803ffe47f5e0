//! The `User` aggregate: a person who logs in to an account — profile, role, groups,
//! password, two-factor login and the record of each login.
//!
//! Checks that need a clock, a key or a password hash (is this TOTP code right now? is the
//! current password right?) happen before a command is built; the aggregate enforces what
//! must hold atomically with the append: a TOTP step or a recovery code is accepted once.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{
    domain::{AccountId, EmailAddress, GroupId, PhoneNumber, Text, UserId},
    event_log::EventCodec,
    handler::{Aggregate, Inconsistent},
    secrets::EncryptedSecret,
    seen::{SeenVersion, Stale, check_seen},
    snapshot::SnapshotCodec,
    totp::RecoveryCodeHash,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Administrator,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Administrator => "administrator",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::User, Self::Administrator]
            .into_iter()
            .find(|role| role.as_str() == raw)
    }
}

/// What the user list shows of a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub name: Text,
    #[serde(default)]
    pub phone: Option<PhoneNumber>,
    #[serde(default)]
    pub mobile: Option<PhoneNumber>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub account_id: AccountId,
    pub name: Text,
    pub email: EmailAddress,
    pub role: Role,
    /// Argon2id PHC string; never the password.
    pub password_hash: String,
    #[serde(default)]
    pub groups: BTreeSet<GroupId>,
    #[serde(default)]
    pub phone: Option<PhoneNumber>,
    #[serde(default)]
    pub mobile: Option<PhoneNumber>,
}

/// How a login proved the second factor, when the user has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "method")]
pub enum SecondFactor {
    None,
    Totp { step: u64 },
    RecoveryCode { code_hash: RecoveryCodeHash },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockoutScope {
    /// This client, for this user.
    Client,
    /// Every client this user has not logged in from lately.
    Account,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum UserEvent {
    UserRegistered(Registration),
    ProfileChanged(Profile),
    EmailChanged {
        email: EmailAddress,
    },
    RoleChanged {
        role: Role,
    },
    GroupsChanged {
        groups: BTreeSet<GroupId>,
    },
    /// Ends the user's sessions but the one that made the change (the event's `session_id`).
    PasswordChanged {
        password_hash: String,
    },
    UserDeleted,
    /// Logins are refused and the user's sessions end, until enabled again.
    UserDisabled,
    UserEnabled,
    TotpSetupStarted {
        /// The seed, sealed with the secrets keyring.
        seed: EncryptedSecret,
    },
    TotpEnabled {
        /// The step of the code that proved the authenticator works (used up).
        step: u64,
        recovery_codes: Vec<RecoveryCodeHash>,
    },
    TotpDisabled {
        /// True when an administrator reset it for a user who lost their authenticator.
        reset_by_administrator: bool,
    },
    LoggedIn {
        second_factor: SecondFactor,
    },
    LoginLockedOut {
        scope: LockoutScope,
        until: chrono::DateTime<chrono::Utc>,
    },
}

impl EventCodec for UserEvent {
    const STREAM_TYPE: &'static str = "user";
}

/// Two-factor login, as far as the aggregate knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Totp {
    #[default]
    Off,
    /// A seed was handed out; not in force until a code from it is confirmed.
    Pending(EncryptedSecret),
    On(EncryptedSecret),
}

/// A registered, not deleted user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub account_id: AccountId,
    pub email: EmailAddress,
    pub profile: Profile,
    pub role: Role,
    pub groups: BTreeSet<GroupId>,
    pub enabled: bool,
    pub password_hash: String,
    pub totp: Totp,
    /// The last TOTP step accepted: no code of that step or earlier works again.
    pub last_totp_step: Option<u64>,
    pub recovery_codes: Vec<RecoveryCodeHash>,
    /// Stream version of the last change to what `GET /v1/users/{id}` shows: the ETag.
    /// Logins do not move it.
    pub version: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub member: Option<Member>,
    /// Registered once, ever: a deleted user's id is not reused.
    registered: bool,
}

/// An edit of a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserEdit {
    pub name: Option<Text>,
    pub phone: Option<Option<PhoneNumber>>,
    pub mobile: Option<Option<PhoneNumber>>,
    pub email: Option<EmailAddress>,
    pub role: Option<Role>,
    pub groups: Option<BTreeSet<GroupId>>,
    pub enabled: Option<bool>,
    /// A new password's hash, set by someone who manages users.
    pub password_hash: Option<String>,
}

/// Every user command names the caller's account: another account's user is "not found".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    Register(Registration),
    Edit {
        account_id: AccountId,
        edit: UserEdit,
        seen: SeenVersion,
    },
    ChangePassword {
        account_id: AccountId,
        password_hash: String,
    },
    Delete {
        account_id: AccountId,
        seen: SeenVersion,
    },
    StartTotpSetup {
        account_id: AccountId,
        seed: EncryptedSecret,
    },
    /// `step` is the step of a code already verified against the pending seed.
    EnableTotp {
        account_id: AccountId,
        step: u64,
        recovery_codes: Vec<RecoveryCodeHash>,
    },
    /// By the user, `step` being that of a verified code; or by an administrator (`None`).
    DisableTotp {
        account_id: AccountId,
        step: Option<u64>,
    },
    /// A login whose password was checked against `password_hash`: refused if the password
    /// has changed since, so a check against a stale copy cannot open a session.
    RecordLogin {
        second_factor: SecondFactor,
        password_hash: String,
    },
    RecordLockout {
        scope: LockoutScope,
        until: chrono::DateTime<chrono::Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("no such user")]
    NotFound,
    #[error("the user already exists")]
    AlreadyRegistered,
    #[error("the user changed since version {seen}; it is now at {current}")]
    Changed { seen: i64, current: i64 },
    #[error("two-factor login is already on")]
    TotpAlreadyOn,
    #[error("two-factor login has not been set up")]
    TotpNotPending,
    #[error("two-factor login is not on")]
    TotpOff,
    #[error("a code from the authenticator app, or a recovery code, is required")]
    SecondFactorRequired,
    #[error("the code is wrong, expired or already used")]
    SecondFactorRejected,
    #[error("the user is disabled")]
    Disabled,
    #[error("the password changed since it was checked")]
    PasswordChanged,
}

impl User {
    fn member_of(&self, account_id: AccountId) -> Result<&Member, UserError> {
        self.member
            .as_ref()
            .filter(|member| member.account_id == account_id)
            .ok_or(UserError::NotFound)
    }

    fn live(&self) -> Result<&Member, UserError> {
        self.member.as_ref().ok_or(UserError::NotFound)
    }
}

impl From<Stale> for UserError {
    fn from(Stale { seen, current }: Stale) -> Self {
        Self::Changed { seen, current }
    }
}

fn edit_events(member: &Member, edit: UserEdit) -> Vec<UserEvent> {
    let mut events = Vec::new();
    let current = &member.profile;
    let profile = Profile {
        name: edit.name.unwrap_or_else(|| current.name.clone()),
        phone: edit.phone.unwrap_or_else(|| current.phone.clone()),
        mobile: edit.mobile.unwrap_or_else(|| current.mobile.clone()),
    };
    if profile != *current {
        events.push(UserEvent::ProfileChanged(profile));
    }
    if let Some(email) = edit
        .email
        .filter(|e| e.normalized() != member.email.normalized())
    {
        events.push(UserEvent::EmailChanged { email });
    }
    if let Some(role) = edit.role.filter(|r| *r != member.role) {
        events.push(UserEvent::RoleChanged { role });
    }
    if let Some(groups) = edit.groups.filter(|g| *g != member.groups) {
        events.push(UserEvent::GroupsChanged { groups });
    }
    match edit.enabled {
        Some(false) if member.enabled => events.push(UserEvent::UserDisabled),
        Some(true) if !member.enabled => events.push(UserEvent::UserEnabled),
        _ => {}
    }
    if let Some(password_hash) = edit.password_hash {
        events.push(UserEvent::PasswordChanged { password_hash });
    }
    events
}

fn verify_second_factor(
    member: &Member,
    second_factor: &SecondFactor,
    step_must_pass: bool,
) -> Result<(), UserError> {
    let step_is_new = |step: u64| member.last_totp_step.is_none_or(|last| step > last);
    match second_factor {
        SecondFactor::None if step_must_pass => Err(UserError::SecondFactorRequired),
        SecondFactor::None => Ok(()),
        SecondFactor::Totp { step } if step_is_new(*step) => Ok(()),
        SecondFactor::RecoveryCode { code_hash } if member.recovery_codes.contains(code_hash) => {
            Ok(())
        }
        _ => Err(UserError::SecondFactorRejected),
    }
}

impl Aggregate for User {
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;

    /// Every login is an event on the user's stream: it grows without bound.
    const SNAPSHOTS: Option<SnapshotCodec<Self>> = Some(SnapshotCodec::serde(1));

    fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, UserError> {
        use UserCommand as C;
        match command {
            C::Register(registration) => match self.registered {
                true => Err(UserError::AlreadyRegistered),
                false => Ok(vec![UserEvent::UserRegistered(registration)]),
            },
            C::Edit {
                account_id,
                edit,
                seen,
            } => {
                let member = self.member_of(account_id)?;
                check_seen(seen, member.version)?;
                Ok(edit_events(member, edit))
            }
            C::ChangePassword {
                account_id,
                password_hash,
            } => {
                self.member_of(account_id)?;
                Ok(vec![UserEvent::PasswordChanged { password_hash }])
            }
            C::Delete { account_id, seen } => {
                check_seen(seen, self.member_of(account_id)?.version)?;
                Ok(vec![UserEvent::UserDeleted])
            }
            C::StartTotpSetup { account_id, seed } => match self.member_of(account_id)?.totp {
                Totp::On(_) => Err(UserError::TotpAlreadyOn),
                _ => Ok(vec![UserEvent::TotpSetupStarted { seed }]),
            },
            C::EnableTotp {
                account_id,
                step,
                recovery_codes,
            } => {
                let member = self.member_of(account_id)?;
                match member.totp {
                    Totp::Pending(_) => {
                        verify_second_factor(member, &SecondFactor::Totp { step }, true)?;
                        Ok(vec![UserEvent::TotpEnabled {
                            step,
                            recovery_codes,
                        }])
                    }
                    Totp::On(_) => Err(UserError::TotpAlreadyOn),
                    Totp::Off => Err(UserError::TotpNotPending),
                }
            }
            C::DisableTotp { account_id, step } => {
                let member = self.member_of(account_id)?;
                if !matches!(member.totp, Totp::On(_)) {
                    return Err(UserError::TotpOff);
                }
                if let Some(step) = step {
                    verify_second_factor(member, &SecondFactor::Totp { step }, true)?;
                }
                Ok(vec![UserEvent::TotpDisabled {
                    reset_by_administrator: step.is_none(),
                }])
            }
            C::RecordLogin {
                second_factor,
                password_hash,
            } => {
                let member = self.live()?;
                if !member.enabled {
                    return Err(UserError::Disabled);
                }
                if member.password_hash != password_hash {
                    return Err(UserError::PasswordChanged);
                }
                let totp_on = matches!(member.totp, Totp::On(_));
                verify_second_factor(member, &second_factor, totp_on)?;
                Ok(vec![UserEvent::LoggedIn { second_factor }])
            }
            C::RecordLockout { scope, until } => {
                self.live()?;
                Ok(vec![UserEvent::LoginLockedOut { scope, until }])
            }
        }
    }

    fn evolve(&mut self, event: UserEvent, version: i64) -> Result<(), Inconsistent> {
        let member = match (event, &mut self.member) {
            (UserEvent::UserRegistered(registration), member) => {
                self.registered = true;
                *member = Some(Member {
                    account_id: registration.account_id,
                    email: registration.email,
                    profile: Profile {
                        name: registration.name,
                        phone: registration.phone,
                        mobile: registration.mobile,
                    },
                    role: registration.role,
                    groups: registration.groups,
                    enabled: true,
                    password_hash: registration.password_hash,
                    totp: Totp::Off,
                    last_totp_step: None,
                    recovery_codes: Vec::new(),
                    version,
                });
                return Ok(());
            }
            // Nothing is decided for a deleted user.
            (_, None) => return Ok(()),
            (UserEvent::UserDeleted, member) => {
                *member = None;
                return Ok(());
            }
            (UserEvent::ProfileChanged(profile), Some(member)) => {
                member.profile = profile;
                member
            }
            (UserEvent::EmailChanged { email }, Some(member)) => {
                member.email = email;
                member
            }
            (UserEvent::RoleChanged { role }, Some(member)) => {
                member.role = role;
                member
            }
            (UserEvent::GroupsChanged { groups }, Some(member)) => {
                member.groups = groups;
                member
            }
            (UserEvent::UserDisabled, Some(member)) => {
                member.enabled = false;
                member
            }
            (UserEvent::UserEnabled, Some(member)) => {
                member.enabled = true;
                member
            }
            (
                UserEvent::TotpEnabled {
                    step,
                    recovery_codes,
                },
                Some(member),
            ) => {
                if let Totp::Pending(seed) = std::mem::take(&mut member.totp) {
                    member.totp = Totp::On(seed);
                }
                member.last_totp_step = Some(step);
                member.recovery_codes = recovery_codes;
                member
            }
            (UserEvent::TotpDisabled { .. }, Some(member)) => {
                member.totp = Totp::Off;
                member.recovery_codes.clear();
                member
            }
            // The rest does not move what `GET /v1/users/{id}` shows, nor its version.
            (UserEvent::PasswordChanged { password_hash }, Some(member)) => {
                member.password_hash = password_hash;
                return Ok(());
            }
            (UserEvent::TotpSetupStarted { seed }, Some(member)) => {
                // Steps count per seed: the new seed's codes have never been used.
                member.totp = Totp::Pending(seed);
                member.last_totp_step = None;
                return Ok(());
            }
            (UserEvent::LoggedIn { second_factor }, Some(member)) => {
                match second_factor {
                    SecondFactor::Totp { step } => member.last_totp_step = Some(step),
                    SecondFactor::RecoveryCode { code_hash } => {
                        member.recovery_codes.retain(|hash| *hash != code_hash)
                    }
                    SecondFactor::None => {}
                }
                return Ok(());
            }
            (UserEvent::LoginLockedOut { .. }, Some(_)) => return Ok(()),
        };
        member.version = version;
        Ok(())
    }
}

/// Email addresses are unique across the installation (they are the login name). Each address
/// is a stream of its own: claiming it is an append at the version where it was free, in the
/// same atomic append as the registration or email change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EmailClaimEvent {
    EmailClaimed { user_id: UserId },
    EmailReleased { user_id: UserId },
}

impl EventCodec for EmailClaimEvent {
    const STREAM_TYPE: &'static str = "email_claim";
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EmailClaim {
    pub holder: Option<UserId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmailClaimCommand {
    Claim(UserId),
    Release(UserId),
}

/// The address is some user's login name, in this account or another: the refusal says
/// neither, so no account learns about another's users.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this email address is not available: choose another")]
pub struct EmailTaken;

impl Aggregate for EmailClaim {
    type Command = EmailClaimCommand;
    type Event = EmailClaimEvent;
    type Error = EmailTaken;

    fn decide(&self, command: EmailClaimCommand) -> Result<Vec<EmailClaimEvent>, EmailTaken> {
        match (command, self.holder) {
            (EmailClaimCommand::Claim(user_id), None) => {
                Ok(vec![EmailClaimEvent::EmailClaimed { user_id }])
            }
            (EmailClaimCommand::Claim(user_id), Some(holder)) if holder == user_id => Ok(vec![]),
            (EmailClaimCommand::Claim(_), Some(_)) => Err(EmailTaken),
            (EmailClaimCommand::Release(user_id), Some(holder)) if holder == user_id => {
                Ok(vec![EmailClaimEvent::EmailReleased { user_id }])
            }
            (EmailClaimCommand::Release(_), _) => Ok(vec![]),
        }
    }

    fn evolve(&mut self, event: EmailClaimEvent, _version: i64) -> Result<(), Inconsistent> {
        self.holder = match event {
            EmailClaimEvent::EmailClaimed { user_id } => Some(user_id),
            EmailClaimEvent::EmailReleased { .. } => None,
        };
        Ok(())
    }
}

pub fn email_claim_stream(email: &EmailAddress) -> String {
    format!("email-{}", email.normalized())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{handler::testing::given, totp::hash_recovery_code};

    fn registration(account_id: AccountId) -> Registration {
        Registration {
            account_id,
            name: Text::parse("Ada", 1, 100).unwrap(),
            email: EmailAddress::parse("ada@example.com").unwrap(),
            role: Role::Administrator,
            password_hash: "$argon2id$…".into(),
            groups: BTreeSet::new(),
            phone: None,
            mobile: None,
        }
    }

    fn seed() -> EncryptedSecret {
        serde_json::from_value(serde_json::json!("v1.k1.sealed")).unwrap()
    }

    /// A registered user with two-factor login on, whose enabling code was at step 100.
    fn with_totp(account_id: AccountId) -> Vec<UserEvent> {
        vec![
            UserEvent::UserRegistered(registration(account_id)),
            UserEvent::TotpSetupStarted { seed: seed() },
            UserEvent::TotpEnabled {
                step: 100,
                recovery_codes: vec![hash_recovery_code("aaaa-bbbb-cccc")],
            },
        ]
    }

    #[test]
    fn registers_once_and_a_deleted_id_is_not_reused() {
        let account_id = AccountId::new();
        let registration = registration(account_id);
        given::<User>(vec![])
            .when(UserCommand::Register(registration.clone()))
            .then(vec![UserEvent::UserRegistered(registration.clone())]);
        given::<User>(vec![
            UserEvent::UserRegistered(registration.clone()),
            UserEvent::UserDeleted,
        ])
        .when(UserCommand::Register(registration))
        .then_error(UserError::AlreadyRegistered);
    }

    #[test]
    fn another_accounts_user_is_not_found() {
        given::<User>(vec![UserEvent::UserRegistered(registration(
            AccountId::new(),
        ))])
        .when(UserCommand::Delete {
            account_id: AccountId::new(),
            seen: None,
        })
        .then_error(UserError::NotFound);
    }

    #[test]
    fn an_edit_records_only_what_changed() {
        let account_id = AccountId::new();
        let role = Role::User;
        given::<User>(vec![UserEvent::UserRegistered(registration(account_id))])
            .when(UserCommand::Edit {
                account_id,
                edit: UserEdit {
                    email: Some(EmailAddress::parse("ADA@example.com").unwrap()),
                    role: Some(role),
                    ..UserEdit::default()
                },
                seen: Some(1),
            })
            .then(vec![UserEvent::RoleChanged { role }]);
    }

    #[test]
    fn a_login_does_not_move_the_etag_but_an_edit_does() {
        let account_id = AccountId::new();
        let history = vec![
            UserEvent::UserRegistered(registration(account_id)),
            UserEvent::LoggedIn {
                second_factor: SecondFactor::None,
            },
        ];
        given::<User>(history.clone())
            .when(UserCommand::Delete {
                account_id,
                seen: Some(1),
            })
            .then(vec![UserEvent::UserDeleted]);
        let mut edited = history;
        edited.push(UserEvent::RoleChanged { role: Role::User });
        given::<User>(edited)
            .when(UserCommand::Delete {
                account_id,
                seen: Some(1),
            })
            .then_error(UserError::Changed {
                seen: 1,
                current: 3,
            });
    }

    #[test]
    fn a_disabled_user_cannot_log_in_until_enabled() {
        let account_id = AccountId::new();
        let disabled = vec![
            UserEvent::UserRegistered(registration(account_id)),
            UserEvent::UserDisabled,
        ];
        let login = || UserCommand::RecordLogin {
            second_factor: SecondFactor::None,
            password_hash: registration(account_id).password_hash,
        };
        given::<User>(disabled.clone())
            .when(login())
            .then_error(UserError::Disabled);
        let mut enabled = disabled;
        enabled.push(UserEvent::UserEnabled);
        given::<User>(enabled)
            .when(login())
            .then(vec![UserEvent::LoggedIn {
                second_factor: SecondFactor::None,
            }]);
    }

    #[test]
    fn a_login_checked_against_a_password_changed_since_is_refused() {
        let account_id = AccountId::new();
        let old_hash = registration(account_id).password_hash;
        let changed = vec![
            UserEvent::UserRegistered(registration(account_id)),
            UserEvent::PasswordChanged {
                password_hash: "$argon2id$new".into(),
            },
        ];
        let login = |password_hash: &str| UserCommand::RecordLogin {
            second_factor: SecondFactor::None,
            password_hash: password_hash.into(),
        };
        given::<User>(changed.clone())
            .when(login(&old_hash))
            .then_error(UserError::PasswordChanged);
        given::<User>(changed)
            .when(login("$argon2id$new"))
            .then(vec![UserEvent::LoggedIn {
                second_factor: SecondFactor::None,
            }]);
    }

    #[test]
    fn with_totp_on_a_login_needs_a_fresh_step_or_an_unused_recovery_code() {
        let history = with_totp(AccountId::new());
        let login = |second_factor| UserCommand::RecordLogin {
            second_factor,
            password_hash: registration(AccountId::new()).password_hash,
        };
        given::<User>(history.clone())
            .when(login(SecondFactor::None))
            .then_error(UserError::SecondFactorRequired);
        given::<User>(history.clone())
            .when(login(SecondFactor::Totp { step: 100 }))
            .then_error(UserError::SecondFactorRejected);
        given::<User>(history.clone())
            .when(login(SecondFactor::Totp { step: 101 }))
            .then(vec![UserEvent::LoggedIn {
                second_factor: SecondFactor::Totp { step: 101 },
            }]);
        let recovery = SecondFactor::RecoveryCode {
            code_hash: hash_recovery_code("AAAA BBBB CCCC"),
        };
        given::<User>(history.clone())
            .when(login(recovery.clone()))
            .then(vec![UserEvent::LoggedIn {
                second_factor: recovery.clone(),
            }]);
        let mut used = history;
        used.push(UserEvent::LoggedIn {
            second_factor: recovery.clone(),
        });
        given::<User>(used)
            .when(login(recovery))
            .then_error(UserError::SecondFactorRejected);
    }

    #[test]
    fn totp_is_enabled_only_from_a_pending_setup_and_disabled_only_when_on() {
        let account_id = AccountId::new();
        let registered = vec![UserEvent::UserRegistered(registration(account_id))];
        given::<User>(registered.clone())
            .when(UserCommand::EnableTotp {
                account_id,
                step: 5,
                recovery_codes: vec![],
            })
            .then_error(UserError::TotpNotPending);
        given::<User>(registered)
            .when(UserCommand::DisableTotp {
                account_id,
                step: None,
            })
            .then_error(UserError::TotpOff);
        given::<User>(with_totp(account_id))
            .when(UserCommand::StartTotpSetup {
                account_id,
                seed: seed(),
            })
            .then_error(UserError::TotpAlreadyOn);
        given::<User>(with_totp(account_id))
            .when(UserCommand::DisableTotp {
                account_id,
                step: None,
            })
            .then(vec![UserEvent::TotpDisabled {
                reset_by_administrator: true,
            }]);
    }

    #[test]
    fn an_email_is_claimed_by_one_user_at_a_time() {
        let (ada, bob) = (UserId::new(), UserId::new());
        given::<EmailClaim>(vec![EmailClaimEvent::EmailClaimed { user_id: ada }])
            .when(EmailClaimCommand::Claim(bob))
            .then_error(EmailTaken);
        given::<EmailClaim>(vec![
            EmailClaimEvent::EmailClaimed { user_id: ada },
            EmailClaimEvent::EmailReleased { user_id: ada },
        ])
        .when(EmailClaimCommand::Claim(bob))
        .then(vec![EmailClaimEvent::EmailClaimed { user_id: bob }]);
    }
}
