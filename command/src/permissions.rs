//! What a user may do: administrators everything; a `user` a resource when one of their groups
//! allows it and none denies it. An explicit deny beats every allow, and each decision says
//! which groups made it, so "why can't I?" has an answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{domain::GroupId, user::Role};

/// Every area a permission can be set for: platform areas (checked by other services through
/// the permissions endpoints) and the account's own sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Customer,
    Carrier,
    Card,
    Cdr,
    Log,
    Report,
    Data,
    Pcap,
    Config,
    Users,
    Api,
    Domains,
    Payments,
    Usage,
    Packages,
    Servers,
    Audit,
}

impl Resource {
    pub const ALL: [Resource; 17] = [
        Self::Customer,
        Self::Carrier,
        Self::Card,
        Self::Cdr,
        Self::Log,
        Self::Report,
        Self::Data,
        Self::Pcap,
        Self::Config,
        Self::Users,
        Self::Api,
        Self::Domains,
        Self::Payments,
        Self::Usage,
        Self::Packages,
        Self::Servers,
        Self::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Carrier => "carrier",
            Self::Card => "card",
            Self::Cdr => "cdr",
            Self::Log => "log",
            Self::Report => "report",
            Self::Data => "data",
            Self::Pcap => "pcap",
            Self::Config => "config",
            Self::Users => "users",
            Self::Api => "api",
            Self::Domains => "domains",
            Self::Payments => "payments",
            Self::Usage => "usage",
            Self::Packages => "packages",
            Self::Servers => "servers",
            Self::Audit => "audit",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|resource| resource.as_str() == raw)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Allow,
    Deny,
}

/// A group's settings: resources left out are unset (the tutorial's "Select").
pub type Permissions = BTreeMap<Resource, Access>;

/// A group as the permission check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupGrant {
    pub id: GroupId,
    pub name: String,
    pub permissions: Permissions,
}

/// Why a resource is allowed or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Administrator,
    /// These groups deny it (and win over any allow).
    DeniedBy(Vec<GroupId>),
    AllowedBy(Vec<GroupId>),
    /// No group says anything: not allowed.
    NotGranted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
}

/// The effective permission of every resource for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectivePermissions {
    pub role: Role,
    decisions: BTreeMap<Resource, Decision>,
}

impl EffectivePermissions {
    pub fn of(role: Role, groups: &[GroupGrant]) -> Self {
        let decisions = Resource::ALL
            .into_iter()
            .map(|resource| (resource, decide(role, groups, resource)))
            .collect();
        Self { role, decisions }
    }

    pub fn allows(&self, resource: Resource) -> bool {
        self.decisions[&resource].allowed
    }

    /// A user who is not an administrator may only change settings of resources they are
    /// allowed themselves, so nobody hands out (or lifts a deny on) what they do not hold.
    /// Answers the first resource in `touched` they may not delegate.
    pub fn may_delegate(
        &self,
        touched: impl IntoIterator<Item = Resource>,
    ) -> Result<(), Resource> {
        match touched.into_iter().find(|resource| !self.allows(*resource)) {
            Some(resource) => Err(resource),
            None => Ok(()),
        }
    }

    pub fn decisions(&self) -> impl Iterator<Item = (Resource, &Decision)> {
        self.decisions
            .iter()
            .map(|(resource, decision)| (*resource, decision))
    }
}

/// The resources whose setting differs between two versions of a group's permissions.
pub fn touched(before: &Permissions, after: &Permissions) -> Vec<Resource> {
    Resource::ALL
        .into_iter()
        .filter(|resource| before.get(resource) != after.get(resource))
        .collect()
}

fn decide(role: Role, groups: &[GroupGrant], resource: Resource) -> Decision {
    if role == Role::Administrator {
        return Decision {
            allowed: true,
            reason: Reason::Administrator,
        };
    }
    let saying = |access: Access| -> Vec<GroupId> {
        groups
            .iter()
            .filter(|group| group.permissions.get(&resource) == Some(&access))
            .map(|group| group.id)
            .collect()
    };
    let (deniers, allowers) = (saying(Access::Deny), saying(Access::Allow));
    if !deniers.is_empty() {
        Decision {
            allowed: false,
            reason: Reason::DeniedBy(deniers),
        }
    } else if !allowers.is_empty() {
        Decision {
            allowed: true,
            reason: Reason::AllowedBy(allowers),
        }
    } else {
        Decision {
            allowed: false,
            reason: Reason::NotGranted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(permissions: &[(Resource, Access)]) -> GroupGrant {
        GroupGrant {
            id: GroupId::new(),
            name: "g".into(),
            permissions: permissions.iter().copied().collect(),
        }
    }

    #[test]
    fn a_deny_in_any_group_beats_every_allow() {
        let allows = group(&[
            (Resource::Cdr, Access::Allow),
            (Resource::Log, Access::Allow),
        ]);
        let denies = group(&[(Resource::Cdr, Access::Deny)]);
        let effective = EffectivePermissions::of(Role::User, &[allows.clone(), denies.clone()]);
        assert_eq!(
            effective.decisions[&Resource::Cdr],
            Decision {
                allowed: false,
                reason: Reason::DeniedBy(vec![denies.id])
            }
        );
        assert_eq!(
            effective.decisions[&Resource::Log].reason,
            Reason::AllowedBy(vec![allows.id])
        );
        assert!(!effective.allows(Resource::Users));
        assert_eq!(
            effective.decisions[&Resource::Users].reason,
            Reason::NotGranted
        );
    }

    #[test]
    fn administrators_may_do_everything_whatever_their_groups_say() {
        let denies_all = group(&Resource::ALL.map(|r| (r, Access::Deny)));
        let effective = EffectivePermissions::of(Role::Administrator, &[denies_all]);
        assert!(Resource::ALL.into_iter().all(|r| effective.allows(r)));
    }

    #[test]
    fn a_user_in_no_group_may_do_nothing() {
        let effective = EffectivePermissions::of(Role::User, &[]);
        assert!(Resource::ALL.into_iter().all(|r| !effective.allows(r)));
    }

    #[test]
    fn nobody_delegates_what_they_do_not_hold() {
        let manager = group(&[
            (Resource::Users, Access::Allow),
            (Resource::Cdr, Access::Allow),
        ]);
        let effective = EffectivePermissions::of(Role::User, &[manager]);
        assert_eq!(effective.may_delegate([Resource::Cdr]), Ok(()));
        let before = Permissions::new();
        let after = group(&[
            (Resource::Cdr, Access::Allow),
            (Resource::Config, Access::Allow),
        ]);
        let changed = touched(&before, &after.permissions);
        assert_eq!(changed, vec![Resource::Cdr, Resource::Config]);
        assert_eq!(effective.may_delegate(changed), Err(Resource::Config));
    }

    #[test]
    fn resource_names_round_trip() {
        for resource in Resource::ALL {
            assert_eq!(Resource::parse(resource.as_str()), Some(resource));
        }
        assert_eq!(Resource::parse("everything"), None);
    }
}
