//! Opening an account: the account, its first administrator and the claim on that
//! administrator's email address are appended atomically, or not at all.

use crate::{
    account::{Account, AccountCommand, CompanyInformation, GeneralInformation},
    domain::{AccountId, EmailAddress, Text, UserId},
    event_log::{
        AppendError, EventCodec, EventLog, ExpectedVersion, Metadata, StreamWrite, encode,
    },
    handler::Aggregate,
    user::{EmailClaimEvent, Registration, Role, User, email_claim_stream},
};

pub struct NewAccount {
    pub name: Text,
    pub admin_name: Text,
    pub admin_email: EmailAddress,
    pub admin_password_hash: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenedAccount {
    pub account_id: AccountId,
    pub admin_id: UserId,
    pub position: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenAccountError {
    #[error("a user with this email address already exists")]
    EmailTaken,
    #[error(transparent)]
    Append(AppendError),
}

fn new_stream<E: EventCodec>(stream_id: String, events: &[E]) -> StreamWrite {
    StreamWrite {
        stream_id,
        stream_type: E::STREAM_TYPE.to_owned(),
        expected: ExpectedVersion::NoStream,
        events: events.iter().map(encode).collect(),
    }
}

pub async fn open_account(
    log: &EventLog,
    new: NewAccount,
) -> Result<OpenedAccount, OpenAccountError> {
    let account_id = AccountId::new();
    let admin_id = UserId::new();
    let claim_stream = email_claim_stream(&new.admin_email);
    // Fresh streams cannot refuse these commands.
    let account_events = Account::default()
        .decide(AccountCommand::Open {
            company: CompanyInformation::initial(new.name, new.admin_email.clone()),
            general: GeneralInformation::default(),
        })
        .expect("a new account opens");
    let user_events = User::default()
        .decide(Registration {
            account_id,
            name: new.admin_name,
            email: new.admin_email,
            role: Role::Administrator,
            password_hash: new.admin_password_hash,
        })
        .expect("a new user registers");
    let writes = vec![
        new_stream(account_id.stream_id(), &account_events),
        new_stream(admin_id.stream_id(), &user_events),
        new_stream(
            claim_stream.clone(),
            &[EmailClaimEvent::EmailClaimed { user_id: admin_id }],
        ),
    ];
    match log.append(writes, Metadata::system(account_id)).await {
        Ok(appended) => Ok(OpenedAccount {
            account_id,
            admin_id,
            position: appended.last_position,
        }),
        Err(AppendError::Conflict { stream_id, .. }) if stream_id == claim_stream => {
            Err(OpenAccountError::EmailTaken)
        }
        Err(other) => Err(OpenAccountError::Append(other)),
    }
}
