//! The `Group` aggregate: a named set of allow/deny permissions within one account.

use serde::{Deserialize, Serialize};

use crate::{
    domain::{AccountId, Text},
    event_log::EventCodec,
    handler::Aggregate,
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

    fn evolve(&mut self, event: GroupEvent, version: i64) {
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
    }
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
