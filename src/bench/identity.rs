//! `switchyard bench identity`: logins per second with concurrent clients (Argon2id bounds
//! them), the cost of the permission check every request makes, and paging through a large
//! user list — against the real service on a local port.

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::Utc;
use serde_json::{Value, json};
use switchyard_command::{
    Database,
    access::sessions::hash_token,
    domain::{EmailAddress, GroupId, Text},
    event_log::Metadata,
    group::{self, GroupCommand, GroupSettings},
    permissions::{Access, EffectivePermissions, GroupGrant, Resource},
    secrets::SecretKeyring,
    team::{self, NewUser},
    user::Role,
};
use switchyard_projections::queries;
use tokio::net::TcpListener;

use super::peak_rss_kib;
use crate::service::{AdminCredentials, Service};

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Users in the account (the list that is paged through).
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Logins to time.
    #[arg(long, default_value_t = 320)]
    pub logins: usize,
    /// Concurrent login clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Session lookups (the per-request permission check) to time.
    #[arg(long, default_value_t = 5_000)]
    pub checks: usize,
}

pub struct Report {
    pub users: usize,
    pub user_creation: Duration,
    pub logins: usize,
    pub login_time: Duration,
    pub peak_rss_kib: Option<u64>,
    /// One session lookup: session, user and groups in one query.
    pub session_lookup: Duration,
    /// Deciding every resource for a user in three groups, in memory.
    pub permission_evaluation: Duration,
    /// `GET /v1/users` through every page, per page size.
    pub paging: Vec<(usize, usize, Duration)>,
}

const PASSWORD: &str = "bench password, long enough";
const ADMIN_EMAIL: &str = "admin@bench.example.com";

/// Runs on an empty, migrated database.
pub async fn run(
    db: Database,
    options: &Options,
    keyring: SecretKeyring,
) -> anyhow::Result<Report> {
    anyhow::ensure!(options.users >= options.logins, "need a user per login");
    let mut service = Service::start(db.clone(), keyring).await?;
    let admin = AdminCredentials {
        email: ADMIN_EMAIL.into(),
        password: Some(PASSWORD.into()),
    };
    let opened = service
        .bootstrap("Bench", admin)
        .await?
        .context("bench needs an empty database")?
        .opened;
    let base = format!(
        "http://{}",
        service.serve(TcpListener::bind("127.0.0.1:0").await?)?
    );
    let state = service.state.clone();
    let metadata = Metadata::system(opened.account_id);

    let groups = create_groups(&state, &metadata).await?;
    let password_hash = state.passwords.hash(PASSWORD.into()).await;
    let started = Instant::now();
    let mut last = None;
    for n in 0..options.users {
        let new = NewUser {
            account_id: opened.account_id,
            name: Text::parse(&format!("User {n}"), 1, 100)?,
            email: EmailAddress::parse(&user_email(n))?,
            role: Role::User,
            groups: groups.iter().copied().collect(),
            phone: None,
            mobile: None,
            password_hash: password_hash.clone(),
        };
        last = team::add_user(&state.commands, new, &metadata, None)
            .await?
            .position;
    }
    let user_creation = started.elapsed();
    if let Some(position) = last {
        anyhow::ensure!(
            state
                .projections
                .wait_for(position, Duration::from_secs(120))
                .await,
            "read models did not catch up with the users"
        );
    }

    // Statistics as autovacuum (PostgreSQL) or a scheduled ANALYZE (SQLite) would have them
    // after such a load: without, PostgreSQL plans the list for a dozen users.
    sqlx::query("ANALYZE").execute(&db.pool).await?;

    let client = reqwest::Client::new();
    let (logins, login_time) = time_logins(&client, &base, options).await?;
    let peak_rss_kib = peak_rss_kib();
    let session_lookup = time_session_lookups(&client, &base, &db, options.checks).await?;
    let permission_evaluation = time_permission_evaluation(&groups);
    let admin_token = login(&client, &base, ADMIN_EMAIL).await?;
    let mut paging = Vec::new();
    // Every user added, and the administrator.
    let account_users = options.users + 1;
    for page_size in [50, 500] {
        let (pages, time) =
            time_paging(&client, &base, &admin_token, page_size, account_users).await?;
        paging.push((page_size, pages, time));
    }
    service.shutdown().await?;
    Ok(Report {
        users: options.users,
        user_creation,
        logins,
        login_time,
        peak_rss_kib,
        session_lookup,
        permission_evaluation,
        paging,
    })
}

fn user_email(n: usize) -> String {
    format!("user{n}@bench.example.com")
}

/// Three groups every user is in: an allow, a deny and a mix, so decisions need all three.
async fn create_groups(
    state: &switchyard_web::AppState,
    metadata: &Metadata,
) -> anyhow::Result<Vec<GroupId>> {
    let sets = [
        vec![
            (Resource::Cdr, Access::Allow),
            (Resource::Users, Access::Allow),
        ],
        vec![(Resource::Cdr, Access::Deny)],
        vec![
            (Resource::Audit, Access::Allow),
            (Resource::Config, Access::Deny),
        ],
    ];
    let mut ids = Vec::new();
    for (n, permissions) in sets.into_iter().enumerate() {
        let id = GroupId::new();
        let command = GroupCommand::Create {
            account_id: metadata.account_id,
            settings: GroupSettings {
                name: Text::parse(&format!("Group {n}"), 1, 100)?,
                permissions: permissions.into_iter().collect(),
            },
        };
        group::execute(&state.commands, id, command, metadata, None).await?;
        ids.push(id);
    }
    Ok(ids)
}

async fn login(client: &reqwest::Client, base: &str, email: &str) -> anyhow::Result<String> {
    let response = client
        .post(format!("{base}/v1/sessions"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 201,
        "login of {email}: {}",
        response.status()
    );
    let body: Value = response.json().await?;
    Ok(body["token"].as_str().context("token")?.to_owned())
}

/// `clients` tasks log distinct users in until `logins` are done.
async fn time_logins(
    client: &reqwest::Client,
    base: &str,
    options: &Options,
) -> anyhow::Result<(usize, Duration)> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..options.clients)
        .map(|_| {
            let (client, base, next, total) = (
                client.clone(),
                base.to_owned(),
                next.clone(),
                options.logins,
            );
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return anyhow::Ok(());
                    }
                    login(&client, &base, &user_email(n)).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok((options.logins, started.elapsed()))
}

/// The mean time of the query every authenticated request makes.
async fn time_session_lookups(
    client: &reqwest::Client,
    base: &str,
    db: &Database,
    checks: usize,
) -> anyhow::Result<Duration> {
    let token = login(client, base, &user_email(0)).await?;
    let token_hash = hash_token(&token);
    let now = Utc::now();
    let started = Instant::now();
    for _ in 0..checks {
        let session = queries::session_user(db, &token_hash, now).await?;
        anyhow::ensure!(session.is_some_and(|s| s.grants.len() == 3), "three groups");
    }
    Ok(started.elapsed() / checks.max(1) as u32)
}

fn time_permission_evaluation(groups: &[GroupId]) -> Duration {
    let grants: Vec<GroupGrant> = groups
        .iter()
        .map(|id| GroupGrant {
            id: *id,
            name: "g".into(),
            permissions: [
                (Resource::Cdr, Access::Deny),
                (Resource::Users, Access::Allow),
            ]
            .into_iter()
            .collect(),
        })
        .collect();
    const ROUNDS: u32 = 100_000;
    let started = Instant::now();
    let mut allowed = 0;
    for _ in 0..ROUNDS {
        let effective = EffectivePermissions::of(Role::User, std::hint::black_box(&grants));
        allowed += usize::from(effective.allows(Resource::Users));
    }
    assert_eq!(allowed, ROUNDS as usize);
    started.elapsed() / ROUNDS
}

/// Pages through `GET /v1/users`, expecting `expected` users; answers the pages read and
/// the time.
async fn time_paging(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    limit: usize,
    expected: usize,
) -> anyhow::Result<(usize, Duration)> {
    let started = Instant::now();
    let (mut pages, mut seen) = (0, BTreeSet::new());
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/users?limit={limit}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = client
            .get(url)
            .bearer_auth(token)
            .send()
            .await?
            .json()
            .await?;
        pages += 1;
        for user in page["items"].as_array().context("items")? {
            seen.insert(user["id"].as_str().context("id")?.to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    anyhow::ensure!(
        seen.len() == expected,
        "paging showed {} of {expected} users",
        seen.len()
    );
    Ok((pages, started.elapsed()))
}
