//! Commands on an account's users that span streams: a user, the claims on their email
//! addresses, the account's roster (which keeps the last administrator) and the groups they
//! join. Each is decided on fresh states and appended atomically.

use std::collections::BTreeSet;

use crate::{
    domain::{AccountId, EmailAddress, GroupId, PhoneNumber, Text, UserId},
    event_log::Metadata,
    group::Group,
    handler::{Aggregate, Changes, CommandError, CommandHandler, Loaded},
    idempotency::Answering,
    roster::{LastAdministrator, Roster, RosterCommand, roster_stream},
    user::{
        EmailClaim, EmailClaimCommand, EmailTaken, Member, Registration, Role, User, UserCommand,
        UserEdit, UserError, email_claim_stream,
    },
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TeamError {
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    EmailTaken(#[from] EmailTaken),
    #[error(transparent)]
    LastAdministrator(#[from] LastAdministrator),
    #[error("group {0} does not exist in this account")]
    UnknownGroup(GroupId),
}

type TeamResult<T> = Result<T, CommandError<TeamError>>;

fn refused(error: impl Into<TeamError>) -> CommandError<TeamError> {
    CommandError::Domain(error.into())
}

pub struct NewUser {
    pub account_id: AccountId,
    pub name: Text,
    pub email: EmailAddress,
    pub role: Role,
    pub groups: BTreeSet<GroupId>,
    pub phone: Option<PhoneNumber>,
    pub mobile: Option<PhoneNumber>,
    pub password_hash: String,
}

/// A user as a command left them, and where its events landed (`None`: nothing changed).
#[derive(Debug, Clone)]
pub struct UserOutcome {
    pub user_id: UserId,
    pub member: Member,
    pub position: Option<i64>,
}

/// Every group must be a live group of the account.
async fn check_groups(
    handler: &CommandHandler,
    account_id: AccountId,
    groups: &BTreeSet<GroupId>,
) -> TeamResult<()> {
    for group_id in groups {
        let group: Loaded<Group> = handler.load(&group_id.stream_id()).await?;
        if group.state.live.is_none_or(|g| g.account_id != account_id) {
            return Err(refused(TeamError::UnknownGroup(*group_id)));
        }
    }
    Ok(())
}

/// Adds `events` for the claim stream of `email`, loaded fresh.
async fn claim(
    handler: &CommandHandler,
    changes: &mut Changes,
    email: &EmailAddress,
    command: EmailClaimCommand,
) -> TeamResult<()> {
    let stream = email_claim_stream(email);
    let loaded: Loaded<EmailClaim> = handler.load(&stream).await?;
    let events = loaded.state.decide(command).map_err(refused)?;
    changes.add(&stream, &loaded, &events);
    Ok(())
}

async fn roster(
    handler: &CommandHandler,
    changes: &mut Changes,
    account_id: AccountId,
    command: RosterCommand,
) -> TeamResult<()> {
    let stream = roster_stream(account_id);
    let loaded: Loaded<Roster> = handler.load(&stream).await?;
    let events = loaded.state.decide(command).map_err(refused)?;
    changes.add(&stream, &loaded, &events);
    Ok(())
}

/// Registers a user: their stream, the claim on their email, their place on the roster.
/// Under an idempotency key, `answering` renders the request's answer from the new user.
pub async fn add_user(
    handler: &CommandHandler,
    new: NewUser,
    metadata: &Metadata,
    answering: Option<Answering<'_, UserOutcome>>,
) -> TeamResult<UserOutcome> {
    check_groups(handler, new.account_id, &new.groups).await?;
    let user_id = UserId::new();
    let new = &new;
    let (added, position) = handler
        .execute_across_answering(metadata, answering, || {
            Box::pin(async move {
                let mut changes = Changes::default();
                let user = add_user_changes(handler, &mut changes, user_id, new).await?;
                Ok((changes, outcome(user_id, user, None)?))
            })
        })
        .await?;
    Ok(UserOutcome { position, ..added })
}

/// The changes that register `new` as `user_id`, and the user they make.
pub(crate) async fn add_user_changes(
    handler: &CommandHandler,
    changes: &mut Changes,
    user_id: UserId,
    new: &NewUser,
) -> TeamResult<Loaded<User>> {
    claim(
        handler,
        changes,
        &new.email,
        EmailClaimCommand::Claim(user_id),
    )
    .await?;
    let join = RosterCommand::Join(user_id, new.role);
    roster(handler, changes, new.account_id, join).await?;
    let user = Loaded::<User>::default();
    let registration = Registration {
        account_id: new.account_id,
        name: new.name.clone(),
        email: new.email.clone(),
        role: new.role,
        password_hash: new.password_hash.clone(),
        groups: new.groups.clone(),
        phone: new.phone.clone(),
        mobile: new.mobile.clone(),
    };
    let events = user
        .state
        .decide(UserCommand::Register(registration))
        .map_err(refused)?;
    let stream = user_id.stream_id();
    changes.add(&stream, &user, &events);
    Ok(user.after(&stream, &events)?)
}

/// Edits a user; an email change moves the claim, a role or enabled change goes through the
/// roster.
pub async fn edit_user(
    handler: &CommandHandler,
    account_id: AccountId,
    user_id: UserId,
    edit: UserEdit,
    seen: Option<i64>,
    metadata: &Metadata,
) -> TeamResult<UserOutcome> {
    if let Some(groups) = &edit.groups {
        check_groups(handler, account_id, groups).await?;
    }
    let (stream, edit) = (&user_id.stream_id(), &edit);
    let (user, position) = handler
        .execute_across(metadata, || {
            Box::pin(async move {
                let user: Loaded<User> = handler.load(stream).await?;
                let command = UserCommand::Edit {
                    account_id,
                    edit: edit.clone(),
                    seen,
                };
                let events = user.state.decide(command).map_err(refused)?;
                let mut changes = Changes::default();
                let after = user.after(stream, &events)?;
                let (before, now) = (member(&user)?, member(&after)?);
                if before.email != now.email {
                    let release = EmailClaimCommand::Release(user_id);
                    claim(handler, &mut changes, &before.email, release).await?;
                    claim(
                        handler,
                        &mut changes,
                        &now.email,
                        EmailClaimCommand::Claim(user_id),
                    )
                    .await?;
                }
                if before.role != now.role {
                    let change = RosterCommand::ChangeRole(user_id, now.role);
                    roster(handler, &mut changes, account_id, change).await?;
                }
                if before.enabled != now.enabled {
                    let change = match now.enabled {
                        true => RosterCommand::Enable(user_id),
                        false => RosterCommand::Disable(user_id),
                    };
                    roster(handler, &mut changes, account_id, change).await?;
                }
                changes.add(stream, &user, &events);
                Ok((changes, after))
            })
        })
        .await?;
    outcome(user_id, user, position)
}

/// Deletes a user: off the roster (never the last administrator), email free again.
pub async fn delete_user(
    handler: &CommandHandler,
    account_id: AccountId,
    user_id: UserId,
    seen: Option<i64>,
    metadata: &Metadata,
) -> TeamResult<Option<i64>> {
    let stream = &user_id.stream_id();
    let ((), position) = handler
        .execute_across(metadata, || {
            Box::pin(async move {
                let user: Loaded<User> = handler.load(stream).await?;
                let command = UserCommand::Delete { account_id, seen };
                let events = user.state.decide(command).map_err(refused)?;
                let email = &member(&user)?.email;
                let mut changes = Changes::default();
                roster(
                    handler,
                    &mut changes,
                    account_id,
                    RosterCommand::Leave(user_id),
                )
                .await?;
                claim(
                    handler,
                    &mut changes,
                    email,
                    EmailClaimCommand::Release(user_id),
                )
                .await?;
                changes.add(stream, &user, &events);
                Ok((changes, ()))
            })
        })
        .await?;
    Ok(position)
}

fn member(user: &Loaded<User>) -> TeamResult<&Member> {
    user.state
        .member
        .as_ref()
        .ok_or(refused(UserError::NotFound))
}

fn outcome(user_id: UserId, user: Loaded<User>, position: Option<i64>) -> TeamResult<UserOutcome> {
    Ok(UserOutcome {
        user_id,
        member: member(&user)?.clone(),
        position,
    })
}
