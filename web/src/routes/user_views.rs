//! How users and their permissions look in answers, and the profile fields that both
//! `/v1/me` and `/v1/users` parse.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use switchyard_command::{
    domain::{GroupId, PhoneNumber, UserId, Validator},
    permissions::{EffectivePermissions, GroupGrant, Reason},
    user::{Member, Totp},
};
use switchyard_projections::queries::UserWithGroups;
use utoipa::ToSchema;

/// A user as the API shows them.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    id: String,
    name: String,
    email: String,
    phone: Option<String>,
    mobile: Option<String>,
    #[schema(value_type = crate::openapi::values::Role)]
    role: String,
    /// Ids of the groups the user belongs to.
    groups: Vec<String>,
    /// A disabled user cannot log in.
    enabled: bool,
    totp_enabled: bool,
}

impl UserView {
    /// `member` as its stream has them, showing only the groups in `live` (the stream keeps
    /// groups deleted since; see `queries::live_groups`).
    pub fn of_member(user_id: UserId, member: &Member, live: &BTreeSet<GroupId>) -> Self {
        Self {
            id: user_id.to_string(),
            name: member.profile.name.as_str().to_owned(),
            email: member.email.as_str().to_owned(),
            phone: member.profile.phone.as_ref().map(|p| p.as_str().to_owned()),
            mobile: member
                .profile
                .mobile
                .as_ref()
                .map(|p| p.as_str().to_owned()),
            role: member.role.as_str().to_owned(),
            groups: member
                .groups
                .intersection(live)
                .map(ToString::to_string)
                .collect(),
            enabled: member.enabled,
            totp_enabled: matches!(member.totp, Totp::On(_)),
        }
    }

    pub fn of_row(row: UserWithGroups) -> Self {
        Self {
            id: row.user.id,
            name: row.user.name,
            email: row.user.email,
            phone: row.user.phone,
            mobile: row.user.mobile,
            role: row.user.role,
            groups: row.groups,
            enabled: row.user.disabled_at.is_none(),
            totp_enabled: row.user.totp_enabled != 0,
        }
    }
}

/// Parses an optional phone field: absent keeps, `null` or `""` clears.
pub fn phone_field(
    v: &mut Validator,
    field: &str,
    raw: Option<Option<String>>,
) -> Option<Option<Option<PhoneNumber>>> {
    match raw {
        None => Some(None),
        Some(raw) => {
            let raw = raw.filter(|raw| !raw.trim().is_empty());
            v.field(field, raw.map(|raw| PhoneNumber::parse(&raw)).transpose())
                .map(Some)
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct GroupRef {
    id: String,
    name: String,
}

#[derive(Serialize, ToSchema)]
pub struct DecisionView {
    /// `administrator`, `allowed_by`, `denied_by` or `not_granted`.
    reason: &'static str,
    /// The groups that decided it (for `allowed_by` and `denied_by`).
    groups: Vec<GroupRef>,
}

/// Effective permissions: `resources` as API.md lists them, `decided_by` says why.
#[derive(Serialize, ToSchema)]
pub struct PermissionsView {
    role: String,
    /// `allow` or `deny` for every resource.
    resources: BTreeMap<String, String>,
    decided_by: BTreeMap<String, DecisionView>,
}

pub fn permissions_view(
    effective: &EffectivePermissions,
    grants: &[GroupGrant],
) -> PermissionsView {
    let group_refs = |ids: &[GroupId]| {
        ids.iter()
            .filter_map(|id| grants.iter().find(|g| g.id == *id))
            .map(|g| GroupRef {
                id: g.id.to_string(),
                name: g.name.clone(),
            })
            .collect()
    };
    let mut resources = BTreeMap::new();
    let mut decided_by = BTreeMap::new();
    for (resource, decision) in effective.decisions() {
        let access = if decision.allowed { "allow" } else { "deny" };
        resources.insert(resource.as_str().to_owned(), access.to_owned());
        let (reason, groups) = match &decision.reason {
            Reason::Administrator => ("administrator", vec![]),
            Reason::AllowedBy(ids) => ("allowed_by", group_refs(ids)),
            Reason::DeniedBy(ids) => ("denied_by", group_refs(ids)),
            Reason::NotGranted => ("not_granted", vec![]),
        };
        decided_by.insert(
            resource.as_str().to_owned(),
            DecisionView { reason, groups },
        );
    }
    PermissionsView {
        role: effective.role.as_str().to_owned(),
        resources,
        decided_by,
    }
}
