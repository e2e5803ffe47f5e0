//! The `Group` aggregate: a named set of allow/deny permissions within one account; and the
//! `GroupName` aggregate that keeps its name unique in the account.

use serde::{Deserialize, Serialize};

use crate::{
    domain::{AccountId, GroupId, Text},
    event_log::{EventCodec, Metadata},
    handler::{Aggregate, Changes, CommandError, CommandHandler, Inconsistent, Loaded},
    idempotency::Answering,
    permissions::Permissions,
    seen::{SeenVersion, Stale, check_seen},
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSettings {
    pub name: Text,
    pub permissions: Permissions,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum GroupEvent {
    GroupCreated {
        account_id: AccountId,
        settings: GroupSettings,
    },
    GroupChanged(GroupSettings),
    GroupDeleted,
}

impl EventCodec for GroupEvent {
    const STREAM_TYPE: &'static str = "group";
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    /// Set once created; `None` before and after deletion.
    pub live: Option<LiveGroup>,
    /// The account it was created in, kept after deletion.
    account_id: Option<AccountId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveGroup {
    pub account_id: AccountId,
    pub settings: GroupSettings,
    /// Stream version of the last change: the ETag.
    pub version: i64,
}

/// Commands carry the caller's account: a group of another account is "not found".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupCommand {
    Create {
        account_id: AccountId,
        settings: GroupSettings,
    },
    Change {
        account_id: AccountId,
        settings: GroupSettings,
        seen: SeenVersion,
    },
    Delete {
        account_id: AccountId,
        seen: SeenVersion,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("no such group")]
    NotFound,
    #[error("the group already exists")]
    AlreadyExists,
    #[error("the group changed since version {seen}; it is now at {current}")]
    Changed { seen: i64, current: i64 },
    #[error("another group of this account is named \"{0}\"")]
    NameTaken(String),
}

impl Group {
    fn in_account(&self, account_id: AccountId) -> Result<&LiveGroup, GroupError> {
        self.live
            .as_ref()
            .filter(|group| group.account_id == account_id)
            .ok_or(GroupError::NotFound)
    }
}

impl From<Stale> for GroupError {
    fn from(Stale { seen, current }: Stale) -> Self {
        Self::Changed { seen, current }
    }
}

impl Aggregate for Group {
    type Command = GroupCommand;
    type Event = GroupEvent;
    type Error = GroupError;

    fn decide(&self, command: GroupCommand) -> Result<Vec<GroupEvent>, GroupError> {
        match command {
            GroupCommand::Create {
                account_id,
                settings,
            } => match self.account_id {
                Some(_) => Err(GroupError::AlreadyExists),
                None => Ok(vec![GroupEvent::GroupCreated {
                    account_id,
                    settings,
                }]),
            },
            GroupCommand::Change {
                account_id,
                settings,
                seen,
            } => {
                let group = self.in_account(account_id)?;
                check_seen(seen, group.version)?;
                Ok(if group.settings == settings {
                    vec![]
                } else {
                    vec![GroupEvent::GroupChanged(settings)]
                })
            }
            GroupCommand::Delete { account_id, seen } => {
                check_seen(seen, self.in_account(account_id)?.version)?;
                Ok(vec![GroupEvent::GroupDeleted])
            }
        }
    }

    fn evolve(&mut self, event: GroupEvent, version: i64) -> Result<(), Inconsistent> {
        match event {
            GroupEvent::GroupCreated {
                account_id,
                settings,
            } => {
                self.account_id = Some(account_id);
                self.live = Some(LiveGroup {
                    account_id,
                    settings,
                    version,
                });
            }
            GroupEvent::GroupChanged(settings) => {
                if let Some(group) = &mut self.live {
                    group.settings = settings;
                    group.version = version;
                }
            }
            GroupEvent::GroupDeleted => self.live = None,
        }
        Ok(())
    }
}

/// Group names are unique within an account, as [`Text::key`] compares them (case,
/// normalisation and invisible characters aside). Each name is a stream of its own: taking it
/// is an append at the version where it was free, in the same atomic append as the group's
/// creation or rename, so two racing commands cannot both take it. Groups created before
/// names were claimed hold no claim; their names are guarded from their next rename on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum GroupNameEvent {
    GroupNameClaimed { group_id: GroupId },
    GroupNameReleased { group_id: GroupId },
}

impl EventCodec for GroupNameEvent {
    const STREAM_TYPE: &'static str = "group_name";
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupName {
    pub holder: Option<GroupId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupNameCommand {
    Claim(GroupId),
    Release(GroupId),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the name belongs to another group")]
pub struct GroupNameTaken;

impl Aggregate for GroupName {
    type Command = GroupNameCommand;
    type Event = GroupNameEvent;
    type Error = GroupNameTaken;

    fn decide(&self, command: GroupNameCommand) -> Result<Vec<GroupNameEvent>, GroupNameTaken> {
        match (command, self.holder) {
            (GroupNameCommand::Claim(group_id), None) => {
                Ok(vec![GroupNameEvent::GroupNameClaimed { group_id }])
            }
            (GroupNameCommand::Claim(group_id), Some(holder)) if holder == group_id => Ok(vec![]),
            (GroupNameCommand::Claim(_), Some(_)) => Err(GroupNameTaken),
            (GroupNameCommand::Release(group_id), Some(holder)) if holder == group_id => {
                Ok(vec![GroupNameEvent::GroupNameReleased { group_id }])
            }
            (GroupNameCommand::Release(_), _) => Ok(vec![]),
        }
    }

    fn evolve(&mut self, event: GroupNameEvent, _version: i64) -> Result<(), Inconsistent> {
        self.holder = match event {
            GroupNameEvent::GroupNameClaimed { group_id } => Some(group_id),
            GroupNameEvent::GroupNameReleased { .. } => None,
        };
        Ok(())
    }
}

pub fn group_name_stream(account_id: AccountId, name: &Text) -> String {
    format!("group_name-{account_id}-{}", name.key())
}

/// Runs a group command together with the claims on the names it takes and frees: creating
/// claims the name, renaming moves the claim, deleting releases it. Answers the group as the
/// command left it and where its events landed (`None`: nothing changed). Under an
/// idempotency key, `answering` renders the answer its append stores.
pub async fn execute(
    handler: &CommandHandler,
    id: GroupId,
    command: GroupCommand,
    metadata: &Metadata,
    answering: Option<Answering<'_, Loaded<Group>>>,
) -> Result<(Loaded<Group>, Option<i64>), CommandError<GroupError>> {
    let (stream, command) = (&id.stream_id(), &command);
    handler
        .execute_across_answering(metadata, answering, || {
            Box::pin(async move {
                let group: Loaded<Group> = handler.load(stream).await?;
                let events = group
                    .state
                    .decide(command.clone())
                    .map_err(CommandError::Domain)?;
                let after = group.after(stream, &events)?;
                let mut changes = Changes::default();
                let (before_name, after_name) = (name_stream(&group), name_stream(&after));
                if before_name != after_name {
                    if let Some(released) = before_name {
                        let release = GroupNameCommand::Release(id);
                        claim(handler, &mut changes, &released, release, &after).await?;
                    }
                    if let Some(claimed) = after_name {
                        let take = GroupNameCommand::Claim(id);
                        claim(handler, &mut changes, &claimed, take, &after).await?;
                    }
                }
                changes.add(stream, &group, &events);
                Ok((changes, after))
            })
        })
        .await
}

/// The claim stream of a live group's name.
fn name_stream(group: &Loaded<Group>) -> Option<String> {
    let live = group.state.live.as_ref()?;
    Some(group_name_stream(live.account_id, &live.settings.name))
}

/// Adds the events of `command` on the name's claim stream, loaded fresh.
async fn claim(
    handler: &CommandHandler,
    changes: &mut Changes,
    stream: &str,
    command: GroupNameCommand,
    group: &Loaded<Group>,
) -> Result<(), CommandError<GroupError>> {
    let loaded: Loaded<GroupName> = handler.load(stream).await?;
    let events = loaded.state.decide(command).map_err(|GroupNameTaken| {
        let name = group.state.live.as_ref().map(|g| g.settings.name.as_str());
        CommandError::Domain(GroupError::NameTaken(name.unwrap_or_default().to_owned()))
    })?;
    changes.add(stream, &loaded, &events);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        handler::testing::given,
        permissions::{Access, Resource},
    };

    fn settings(name: &str, permissions: &[(Resource, Access)]) -> GroupSettings {
        GroupSettings {
            name: Text::parse(name, 1, 100).unwrap(),
            permissions: permissions.iter().copied().collect(),
        }
    }

    fn created(account_id: AccountId) -> GroupEvent {
        GroupEvent::GroupCreated {
            account_id,
            settings: settings("Billing", &[(Resource::Payments, Access::Allow)]),
        }
    }

    #[test]
    fn another_accounts_group_is_not_found() {
        let (mine, theirs) = (AccountId::new(), AccountId::new());
        given::<Group>(vec![created(theirs)])
            .when(GroupCommand::Delete {
                account_id: mine,
                seen: None,
            })
            .then_error(GroupError::NotFound);
    }

    #[test]
    fn changes_only_what_differs_and_honours_if_match() {
        let account_id = AccountId::new();
        let same = settings("Billing", &[(Resource::Payments, Access::Allow)]);
        given::<Group>(vec![created(account_id)])
            .when(GroupCommand::Change {
                account_id,
                settings: same,
                seen: Some(1),
            })
            .then(vec![]);
        let denied = settings("Billing", &[(Resource::Payments, Access::Deny)]);
        given::<Group>(vec![created(account_id)])
            .when(GroupCommand::Change {
                account_id,
                settings: denied.clone(),
                seen: None,
            })
            .then(vec![GroupEvent::GroupChanged(denied.clone())]);
        given::<Group>(vec![
            created(account_id),
            GroupEvent::GroupChanged(denied.clone()),
        ])
        .when(GroupCommand::Change {
            account_id,
            settings: denied,
            seen: Some(1),
        })
        .then_error(GroupError::Changed {
            seen: 1,
            current: 2,
        });
    }

    #[test]
    fn a_group_name_is_held_by_one_group_at_a_time() {
        let (support, other) = (GroupId::new(), GroupId::new());
        let held = vec![GroupNameEvent::GroupNameClaimed { group_id: support }];
        given::<GroupName>(held.clone())
            .when(GroupNameCommand::Claim(other))
            .then_error(GroupNameTaken);
        given::<GroupName>(held.clone())
            .when(GroupNameCommand::Claim(support))
            .then(vec![]);
        given::<GroupName>(held.clone())
            .when(GroupNameCommand::Release(other))
            .then(vec![]);
        let mut released = held;
        released.push(GroupNameEvent::GroupNameReleased { group_id: support });
        given::<GroupName>(released)
            .when(GroupNameCommand::Claim(other))
            .then(vec![GroupNameEvent::GroupNameClaimed { group_id: other }]);
    }

    #[test]
    fn names_that_read_the_same_share_a_claim_stream_within_an_account() {
        let (acme, globex) = (AccountId::new(), AccountId::new());
        let name = |raw: &str| Text::parse(raw, 1, 100).unwrap();
        assert_eq!(
            group_name_stream(acme, &name("Support")),
            group_name_stream(acme, &name("support\u{200B}"))
        );
        assert_ne!(
            group_name_stream(acme, &name("Support")),
            group_name_stream(globex, &name("Support"))
        );
    }

    #[test]
    fn a_deleted_group_is_gone_and_its_id_cannot_be_reused() {
        let account_id = AccountId::new();
        let history = vec![created(account_id), GroupEvent::GroupDeleted];
        given::<Group>(history.clone())
            .when(GroupCommand::Delete {
                account_id,
                seen: None,
            })
            .then_error(GroupError::NotFound);
        given::<Group>(history)
            .when(GroupCommand::Create {
                account_id,
                settings: settings("Again", &[]),
            })
            .then_error(GroupError::AlreadyExists);
    }
}
