//! Opening an account: the account, its first administrator, the administrator's place on the
//! roster and the claim on their email address are appended atomically, or not at all. The
//! first account opened in an installation becomes its operator in the same append.

use crate::{
    account::{Account, AccountCommand, CompanyInformation, GeneralInformation},
    domain::{AccountId, EmailAddress, Text, UserId},
    event_log::Metadata,
    handler::{Aggregate, Changes, CommandError, CommandHandler, Loaded},
    installation::{INSTALLATION_STREAM, Installation, InstallationCommand},
    team::{NewUser, TeamError, add_user_changes},
    user::Role,
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
    /// Whether it became the installation's operator (it was the first).
    pub operator: bool,
}

pub async fn open_account(
    handler: &CommandHandler,
    new: NewAccount,
) -> Result<OpenedAccount, CommandError<TeamError>> {
    let account_id = AccountId::new();
    let admin_id = UserId::new();
    let administrator = NewUser {
        account_id,
        name: new.admin_name,
        email: new.admin_email.clone(),
        role: Role::Administrator,
        groups: Default::default(),
        phone: None,
        mobile: None,
        password_hash: new.admin_password_hash,
    };
    let account = Loaded::<Account>::default();
    // A fresh stream cannot refuse this command.
    let account_events = account
        .state
        .decide(AccountCommand::Open {
            company: CompanyInformation::initial(new.name, new.admin_email),
            general: GeneralInformation::default(),
        })
        .expect("a new account opens");
    let (account, account_events, administrator) = (&account, &account_events, &administrator);
    let (operator, position) = handler
        .execute_across(&Metadata::system(account_id), || {
            Box::pin(async move {
                let mut changes = Changes::default();
                changes.add(&account_id.stream_id(), account, account_events);
                add_user_changes(handler, &mut changes, admin_id, administrator).await?;
                let installation: Loaded<Installation> = handler.load(INSTALLATION_STREAM).await?;
                let designate = InstallationCommand::DesignateOperatorIfNone(account_id);
                let Ok(designated) = installation.state.decide(designate);
                changes.add(INSTALLATION_STREAM, &installation, &designated);
                Ok((changes, !designated.is_empty()))
            })
        })
        .await?;
    Ok(OpenedAccount {
        account_id,
        admin_id,
        position: position.expect("opening an account appends"),
        operator,
    })
}
