//! The `Roster` aggregate: who belongs to an account, with which role, and whether enabled.
//! It exists to keep one invariant that spans users: an account always has an enabled
//! administrator. Adding, removing, re-roling or disabling a user appends to the roster in the
//! same atomic append as to the user, so two concurrent demotions of the last two
//! administrators cannot both succeed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    domain::{AccountId, UserId},
    event_log::EventCodec,
    handler::{Aggregate, Inconsistent},
    user::Role,
};

pub fn roster_stream(account_id: AccountId) -> String {
    format!("roster-{account_id}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum RosterEvent {
    MemberJoined { user_id: UserId, role: Role },
    MemberRoleChanged { user_id: UserId, role: Role },
    MemberLeft { user_id: UserId },
    MemberDisabled { user_id: UserId },
    MemberEnabled { user_id: UserId },
}

impl EventCodec for RosterEvent {
    const STREAM_TYPE: &'static str = "roster";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Membership {
    role: Role,
    enabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    members: BTreeMap<UserId, Membership>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterCommand {
    Join(UserId, Role),
    ChangeRole(UserId, Role),
    Leave(UserId),
    Disable(UserId),
    Enable(UserId),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the account's last administrator cannot be removed, demoted or disabled")]
pub struct LastAdministrator;

impl Roster {
    /// The account's enabled administrators: who account-wide notices go to.
    pub fn administrators(&self) -> impl Iterator<Item = UserId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.role == Role::Administrator && m.enabled)
            .map(|(user_id, _)| *user_id)
    }

    fn is_last_administrator(&self, user_id: UserId) -> bool {
        let active_administrator = |m: &Membership| m.role == Role::Administrator && m.enabled;
        let administrators = self.members.values().filter(|m| active_administrator(m));
        self.members.get(&user_id).is_some_and(active_administrator) && administrators.count() == 1
    }
}

impl Aggregate for Roster {
    type Command = RosterCommand;
    type Event = RosterEvent;
    type Error = LastAdministrator;

    fn decide(&self, command: RosterCommand) -> Result<Vec<RosterEvent>, LastAdministrator> {
        Ok(match command {
            RosterCommand::Join(user_id, role) => vec![RosterEvent::MemberJoined { user_id, role }],
            RosterCommand::ChangeRole(user_id, role) => {
                if role == Role::User && self.is_last_administrator(user_id) {
                    return Err(LastAdministrator);
                }
                vec![RosterEvent::MemberRoleChanged { user_id, role }]
            }
            RosterCommand::Leave(user_id) => {
                if self.is_last_administrator(user_id) {
                    return Err(LastAdministrator);
                }
                vec![RosterEvent::MemberLeft { user_id }]
            }
            RosterCommand::Disable(user_id) => {
                if self.is_last_administrator(user_id) {
                    return Err(LastAdministrator);
                }
                vec![RosterEvent::MemberDisabled { user_id }]
            }
            RosterCommand::Enable(user_id) => vec![RosterEvent::MemberEnabled { user_id }],
        })
    }

    fn evolve(&mut self, event: RosterEvent, _version: i64) -> Result<(), Inconsistent> {
        match event {
            RosterEvent::MemberJoined { user_id, role } => {
                let enabled = true;
                self.members.insert(user_id, Membership { role, enabled });
            }
            RosterEvent::MemberRoleChanged { user_id, role } => {
                let member = self.members.entry(user_id);
                member
                    .or_insert(Membership {
                        role,
                        enabled: true,
                    })
                    .role = role;
            }
            RosterEvent::MemberLeft { user_id } => {
                self.members.remove(&user_id);
            }
            RosterEvent::MemberDisabled { user_id } | RosterEvent::MemberEnabled { user_id } => {
                if let Some(member) = self.members.get_mut(&user_id) {
                    member.enabled = matches!(event, RosterEvent::MemberEnabled { .. });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::testing::given;

    #[test]
    fn the_last_administrator_can_be_neither_demoted_nor_removed() {
        let (ada, bob) = (UserId::new(), UserId::new());
        let history = vec![
            RosterEvent::MemberJoined {
                user_id: ada,
                role: Role::Administrator,
            },
            RosterEvent::MemberJoined {
                user_id: bob,
                role: Role::User,
            },
        ];
        given::<Roster>(history.clone())
            .when(RosterCommand::ChangeRole(ada, Role::User))
            .then_error(LastAdministrator);
        given::<Roster>(history.clone())
            .when(RosterCommand::Leave(ada))
            .then_error(LastAdministrator);
        given::<Roster>(history.clone())
            .when(RosterCommand::Disable(ada))
            .then_error(LastAdministrator);
        given::<Roster>(history)
            .when(RosterCommand::Leave(bob))
            .then(vec![RosterEvent::MemberLeft { user_id: bob }]);
    }

    #[test]
    fn a_disabled_administrator_does_not_count() {
        let (ada, bob) = (UserId::new(), UserId::new());
        let history = vec![
            RosterEvent::MemberJoined {
                user_id: ada,
                role: Role::Administrator,
            },
            RosterEvent::MemberJoined {
                user_id: bob,
                role: Role::Administrator,
            },
            RosterEvent::MemberDisabled { user_id: bob },
        ];
        given::<Roster>(history)
            .when(RosterCommand::ChangeRole(ada, Role::User))
            .then_error(LastAdministrator);
    }

    #[test]
    fn with_a_second_administrator_the_first_may_go() {
        let (ada, bob) = (UserId::new(), UserId::new());
        given::<Roster>(vec![
            RosterEvent::MemberJoined {
                user_id: ada,
                role: Role::Administrator,
            },
            RosterEvent::MemberRoleChanged {
                user_id: bob,
                role: Role::Administrator,
            },
        ])
        .when(RosterCommand::ChangeRole(ada, Role::User))
        .then(vec![RosterEvent::MemberRoleChanged {
            user_id: ada,
            role: Role::User,
        }]);
    }
}
