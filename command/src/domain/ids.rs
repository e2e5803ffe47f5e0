use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An id type; with a prefix, also the event stream the entity's history is kept in.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        id_type!($(#[$doc])* $name);

        impl $name {
            /// The event stream that holds this entity's history.
            pub fn stream_id(&self) -> String {
                format!(concat!($prefix, "-{}"), self.0)
            }
        }
    };
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn parse(raw: &str) -> Option<Self> {
                Uuid::parse_str(raw).ok().map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(raw: &str) -> Result<Self, String> {
                Self::parse(raw).ok_or_else(|| format!("{raw:?} is not an id (a UUID)"))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A tenant account: the boundary of every query and command.
    AccountId,
    "account"
);
id_type!(
    /// A person who logs in to an account.
    UserId,
    "user"
);
id_type!(
    /// A named set of allow/deny permissions that users of an account belong to.
    GroupId,
    "group"
);
id_type!(
    /// One payment gateway of an account (the API section). It has no stream of its own:
    /// an account's gateways share one (`gateways_stream`).
    GatewayId
);
