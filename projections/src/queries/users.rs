//! Reads of users, groups and what a session may do. Deleted users are kept for the audit
//! log's sake and are invisible here.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use sqlx::{FromRow, Row, any::AnyRow};
use switchyard_command::{
    Database,
    access::sessions::SESSION_IDLE_TIMEOUT,
    db::PerBackend,
    domain::{AccountId, GroupId, UserId},
    permissions::{GroupGrant, Permissions},
    timestamp,
};

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: String,
    pub account_id: String,
    pub email: String,
    pub name: String,
    pub role: String,
    pub password_hash: String,
    pub phone: Option<String>,
    pub mobile: Option<String>,
    /// 0 or 1.
    pub totp_enabled: i64,
    pub version: i64,
    pub last_login_at: Option<String>,
    pub disabled_at: Option<String>,
}

/// The statements that compare or read times, per backend.
struct Statements {
    user_by_email: String,
    user: String,
    users_page: String,
    session_user: String,
}

static SQL: PerBackend<Statements> = PerBackend::new(|backend| {
    let read = |column| format!("{} AS {column}", timestamp::read(backend, column));
    let user_columns = format!(
        "id, account_id, email, name, role, password_hash, phone, mobile, totp_enabled, \
         version, {}, {}",
        read("last_login_at"),
        read("disabled_at")
    );
    let time = |n| timestamp::param(backend, n);
    Statements {
        user_by_email: format!(
            "SELECT {user_columns} FROM users WHERE email = $1 AND deleted_at IS NULL"
        ),
        user: format!(
            "SELECT {user_columns} FROM users \
             WHERE account_id = $1 AND id = $2 AND deleted_at IS NULL"
        ),
        users_page: format!(
            "SELECT {user_columns} FROM users \
             WHERE account_id = $1 AND deleted_at IS NULL AND id > COALESCE($2, '') \
             ORDER BY id LIMIT $3"
        ),
        // One row per group (or one with NULL group columns): one query for the whole check.
        session_user: format!(
            "SELECT s.id, u.id, u.account_id, u.role, g.id, g.name, g.permissions, {} \
             FROM sessions s \
             JOIN users u ON u.id = s.user_id AND u.account_id = s.account_id \
                          AND u.deleted_at IS NULL AND u.disabled_at IS NULL \
                          AND (s.user_version > u.sessions_ended_at_version \
                               OR s.id = u.session_kept) \
             LEFT JOIN user_groups ug ON ug.user_id = u.id \
             LEFT JOIN groups g ON g.id = ug.group_id \
             WHERE s.token_hash = $1 AND s.expires_at > {} AND s.last_used_at > {}",
            timestamp::read(backend, "s.last_used_at"),
            time(2),
            time(3)
        ),
    }
});

/// For login: emails are unique across the installation.
pub async fn user_by_email(
    db: &Database,
    normalized_email: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(SQL.get(db.backend).user_by_email.as_str())
        .bind(normalized_email)
        .fetch_optional(&db.pool)
        .await
}

/// A user and the ids of their groups.
#[derive(Debug, Clone)]
pub struct UserWithGroups {
    pub user: UserRow,
    pub groups: Vec<String>,
}

pub async fn user(
    db: &Database,
    account: AccountId,
    user: UserId,
) -> Result<Option<UserWithGroups>, sqlx::Error> {
    let row: Option<UserRow> = sqlx::query_as(SQL.get(db.backend).user.as_str())
        .bind(account.to_string())
        .bind(user.to_string())
        .fetch_optional(&db.pool)
        .await?;
    match row {
        Some(row) => Ok(with_groups(db, vec![row]).await?.pop()),
        None => Ok(None),
    }
}

/// The account's users in id order (which is creation order), after `after`.
///
/// The cursor is a plain range (`id > COALESCE(…)`), not `$2 IS NULL OR id > $2`: PostgreSQL
/// plans the latter as a filter, scanning every earlier row for each page.
pub async fn users_page(
    db: &Database,
    account: AccountId,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<UserWithGroups>, sqlx::Error> {
    let rows: Vec<UserRow> = sqlx::query_as(SQL.get(db.backend).users_page.as_str())
        .bind(account.to_string())
        .bind(after)
        .bind(limit)
        .fetch_all(&db.pool)
        .await?;
    with_groups(db, rows).await
}

/// Adds each user's group ids, in one query for the whole page.
async fn with_groups(
    db: &Database,
    users: Vec<UserRow>,
) -> Result<Vec<UserWithGroups>, sqlx::Error> {
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    if !users.is_empty() {
        let sql = format!(
            // Joined with groups: a membership added while its group was being deleted
            // names no group any more.
            "SELECT ug.user_id, ug.group_id FROM user_groups ug \
             JOIN groups g ON g.id = ug.group_id WHERE ug.user_id IN ({}) ORDER BY ug.group_id",
            db.backend.placeholders(users.len(), "")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for user in &users {
            query = query.bind(user.id.as_str());
        }
        for row in query.fetch_all(&db.pool).await? {
            groups
                .entry(row.try_get(0)?)
                .or_default()
                .push(row.try_get(1)?);
        }
    }
    Ok(users
        .into_iter()
        .map(|user| UserWithGroups {
            groups: groups.remove(&user.id).unwrap_or_default(),
            user,
        })
        .collect())
}

#[derive(Debug, Clone, FromRow)]
pub struct GroupRow {
    pub id: String,
    pub name: String,
    pub permissions: String,
    pub version: i64,
}

impl GroupRow {
    pub fn permissions(&self) -> Result<Permissions, serde_json::Error> {
        serde_json::from_str(&self.permissions)
    }
}

/// Which of `groups` are live groups of `account`: a user's stream keeps the ids of groups
/// deleted since they joined, which answers must not show.
pub async fn live_groups(
    db: &Database,
    account: AccountId,
    groups: &BTreeSet<GroupId>,
) -> Result<BTreeSet<GroupId>, sqlx::Error> {
    if groups.is_empty() {
        return Ok(BTreeSet::new());
    }
    let sql = format!(
        "SELECT id FROM groups WHERE account_id = $1 AND id IN ({})",
        (2..groups.len() + 2)
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut query =
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).bind(account.to_string());
    for group in groups {
        query = query.bind(group.to_string());
    }
    Ok(query
        .fetch_all(&db.pool)
        .await?
        .iter()
        .filter_map(|id| GroupId::parse(id))
        .collect())
}

pub async fn group(
    db: &Database,
    account: AccountId,
    group: GroupId,
) -> Result<Option<GroupRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, permissions, version FROM groups WHERE account_id = $1 AND id = $2",
    )
    .bind(account.to_string())
    .bind(group.to_string())
    .fetch_optional(&db.pool)
    .await
}

pub async fn groups_page(
    db: &Database,
    account: AccountId,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<GroupRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, permissions, version FROM groups \
         WHERE account_id = $1 AND id > COALESCE($2, '') ORDER BY id LIMIT $3",
    )
    .bind(account.to_string())
    .bind(after)
    .bind(limit)
    .fetch_all(&db.pool)
    .await
}

/// The groups a user belongs to, as the permission check needs them.
pub async fn grants_of(db: &Database, user: UserId) -> Result<Vec<GroupGrant>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT g.id, g.name, g.permissions FROM user_groups ug \
         JOIN groups g ON g.id = ug.group_id WHERE ug.user_id = $1 ORDER BY g.id",
    )
    .bind(user.to_string())
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(|row| grant(row, 0)).collect()
}

/// A session's user with their groups, in one round trip.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub session_id: String,
    pub last_used_at: String,
    pub user_id: String,
    pub account_id: String,
    pub role: String,
    pub grants: Vec<GroupGrant>,
}

/// The session with `token_hash`, unless at `now` it expired or has gone unused for
/// [`SESSION_IDLE_TIMEOUT`], or an event of its user's stream ended it: one issued after its
/// login (a higher version), keeping it only if that event named it as the changer's own.
pub async fn session_user(
    db: &Database,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<SessionUser>, sqlx::Error> {
    let rows = sqlx::query(SQL.get(db.backend).session_user.as_str())
        .bind(token_hash)
        .bind(timestamp::format(now))
        .bind(timestamp::format(now - SESSION_IDLE_TIMEOUT))
        .fetch_all(&db.pool)
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut grants = Vec::new();
    for row in &rows {
        if row.try_get::<Option<String>, _>(4)?.is_some() {
            grants.push(grant(row, 4)?);
        }
    }
    Ok(Some(SessionUser {
        session_id: first.try_get(0)?,
        last_used_at: first.try_get(7)?,
        user_id: first.try_get(1)?,
        account_id: first.try_get(2)?,
        role: first.try_get(3)?,
        grants,
    }))
}

/// Reads `(id, name, permissions)` starting at column `first`.
fn grant(row: &AnyRow, first: usize) -> Result<GroupGrant, sqlx::Error> {
    let id: String = row.try_get(first)?;
    let decode = |e: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::Decode(e);
    Ok(GroupGrant {
        id: GroupId::parse(&id).ok_or_else(|| decode(format!("group id {id}").into()))?,
        name: row.try_get(first + 1)?,
        permissions: serde_json::from_str(&row.try_get::<String, _>(first + 2)?)
            .map_err(|e| decode(Box::new(e)))?,
    })
}
