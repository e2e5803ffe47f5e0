//! Lists: `?limit=&cursor=` in, `{items, next_cursor}` out.

use std::fmt;

use serde::{Deserialize, Deserializer, de::Error as _};
use switchyard_command::domain::{GatewayId, GroupId, UserId};
use ulid::Ulid;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, bound = "K: CursorKey")]
#[into_params(parameter_in = Query)]
pub struct PageQuery<K> {
    /// `next_cursor` of the previous page (the id of its last item).
    #[param(value_type = Option<String>, format = Uuid)]
    pub cursor: Option<Cursor<K>>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

impl<K> PageQuery<K> {
    pub fn limit(&self) -> ApiResult<i64> {
        checked_limit(self.limit)
    }
}

/// A list's `?cursor=`: the `next_cursor` the previous page gave out, which is the sort key
/// of its last item. One that does not parse as the list's key is refused (422 naming
/// `cursor`) rather than starting a page at an arbitrary place.
#[derive(Debug)]
pub struct Cursor<K>(pub K);

impl<K: fmt::Display> Cursor<K> {
    /// The key as the list's query compares it.
    pub fn key(&self) -> String {
        self.0.to_string()
    }
}

/// What a list is sorted by, as its cursors carry it.
pub trait CursorKey: Sized + fmt::Display {
    fn parse_key(raw: &str) -> Option<Self>;
}

impl CursorKey for UserId {
    fn parse_key(raw: &str) -> Option<Self> {
        Self::parse(raw)
    }
}

impl CursorKey for GroupId {
    fn parse_key(raw: &str) -> Option<Self> {
        Self::parse(raw)
    }
}

impl CursorKey for GatewayId {
    fn parse_key(raw: &str) -> Option<Self> {
        Self::parse(raw)
    }
}

/// A log position (the audit log).
impl CursorKey for i64 {
    fn parse_key(raw: &str) -> Option<Self> {
        raw.parse().ok()
    }
}

/// A job id.
impl CursorKey for Ulid {
    fn parse_key(raw: &str) -> Option<Self> {
        raw.parse().ok()
    }
}

impl<'de, K: CursorKey> Deserialize<'de> for Cursor<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        K::parse_key(&raw)
            .map(Cursor)
            .ok_or_else(|| D::Error::custom("is not a cursor this API gave out"))
    }
}

/// `?limit=` as asked (default 50), or 422 when out of range.
pub fn checked_limit(limit: Option<i64>) -> ApiResult<i64> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be 1 to {MAX_LIMIT}"),
        ));
    }
    Ok(limit)
}

/// Cuts `rows` (fetched with `limit + 1`) to a page, and the cursor of the next one.
pub fn page<T>(
    mut rows: Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() <= limit {
        return (rows, None);
    }
    rows.truncate(limit);
    let next = rows.last().map(cursor_of);
    (rows, next)
}
