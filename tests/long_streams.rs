//! Long streams stay cheap to load: a user who logs in often keeps snapshots of their state,
//! a cold load starts from the newest one (ignoring those of another state layout), and a
//! stream as it stood at any position agrees with folding it from its start.

mod common;

use common::{Backend, TestDatabase};
use switchyard_command::{
    Database,
    domain::{EmailAddress, Text},
    event_log::{EventLog, Metadata, read_stream_until},
    handler::{CommandHandler, Loaded, load_at},
    onboarding::{NewAccount, open_account},
    user::{SecondFactor, User, UserCommand},
};

on_both_backends!(
    a_cold_load_starts_from_the_newest_snapshot,
    a_stream_as_it_stood_agrees_with_folding_it_whole,
);

const LOGINS: usize = 250;

/// A user with `LOGINS` logins recorded through the command path; answers the handler,
/// the user's stream and the database.
async fn user_who_logged_in_often(
    backend: Backend,
) -> (CommandHandler, String, Database, TestDatabase) {
    let database = TestDatabase::new(backend).await;
    let db = database.open().await;
    let handler = CommandHandler::new(EventLog::start(db.clone()).await.unwrap());
    let opened = open_account(
        &handler,
        NewAccount {
            name: Text::parse("Acme", 1, 100).unwrap(),
            admin_name: Text::parse("Ada", 1, 100).unwrap(),
            admin_email: EmailAddress::parse("ada@acme.example.com").unwrap(),
            admin_password_hash: "not used".into(),
        },
    )
    .await
    .unwrap();
    let stream = opened.admin_id.stream_id();
    let metadata = Metadata::system(opened.account_id);
    for _ in 0..LOGINS {
        let login = UserCommand::RecordLogin {
            second_factor: SecondFactor::None,
            password_hash: "not used".into(),
        };
        handler
            .execute::<User>(&stream, login, &metadata)
            .await
            .unwrap();
    }
    (handler, stream, db, database)
}

async fn fresh_load(db: &Database, stream: &str) -> Loaded<User> {
    let handler = CommandHandler::new(EventLog::start(db.clone()).await.unwrap());
    handler.load::<User, ()>(stream).await.unwrap()
}

/// `(stream version, state version, data)` of the stream's snapshots, newest first; waits
/// for the one written in the background after the last login.
async fn snapshots(db: &Database, stream: &str) -> Vec<(i64, i32, String)> {
    for _ in 0..100 {
        let rows: Vec<(i64, i32, String)> = sqlx::query_as(
            "SELECT stream_version, state_version, data FROM snapshots \
             WHERE stream_id = $1 ORDER BY stream_version DESC",
        )
        .bind(stream)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        if rows.first().is_some_and(|(version, ..)| *version >= 200) {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no snapshot of {stream} at version 200 or later");
}

async fn a_cold_load_starts_from_the_newest_snapshot(backend: Backend) {
    let (_handler, stream, db, _database) = user_who_logged_in_often(backend).await;
    let version = 1 + LOGINS as i64;
    let whole = fresh_load(&db, &stream).await;
    assert_eq!(whole.version, version);

    let stored = snapshots(&db, &stream).await;
    let (newest, state_version, data) = stored[0].clone();
    assert!(
        stored.iter().all(|(v, ..)| *v > 0 && *v <= version),
        "{stored:?}"
    );
    // Mark the newest snapshot: a load that starts from it shows the mark.
    let mut marked: serde_json::Value = serde_json::from_str(&data).unwrap();
    marked["member"]["profile"]["name"] = "From the snapshot".into();
    sqlx::query("UPDATE snapshots SET data = $1 WHERE stream_id = $2 AND stream_version = $3")
        .bind(marked.to_string())
        .bind(&stream)
        .bind(newest)
        .execute(&db.pool)
        .await
        .unwrap();
    let cold = fresh_load(&db, &stream).await;
    assert_eq!(
        cold.version, version,
        "the events after the snapshot are read too"
    );
    let member = cold.state.member.as_ref().unwrap();
    assert_eq!(member.profile.name.as_str(), "From the snapshot");

    // Snapshots of another layout of the state are ignored: the stream is folded instead.
    sqlx::query("UPDATE snapshots SET state_version = $1 WHERE stream_id = $2")
        .bind(state_version + 1)
        .bind(&stream)
        .execute(&db.pool)
        .await
        .unwrap();
    let refolded = fresh_load(&db, &stream).await;
    assert_eq!(refolded, whole);
}

async fn a_stream_as_it_stood_agrees_with_folding_it_whole(backend: Backend) {
    let (handler, stream, db, _database) = user_who_logged_in_often(backend).await;
    snapshots(&db, &stream).await;
    let events = handler.log().read_stream(&stream).await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    // Before the first snapshot, at snapshots, just after, and at the end.
    for version in [1, 2, 99, 100, 101, 150, 200, 201, 250, 251] {
        let position = events[version - 1].global_position;
        let at = load_at::<User>(&mut conn, db.backend, &stream, position)
            .await
            .unwrap();
        let history = read_stream_until(&mut *conn, db.backend, &stream, 0, position)
            .await
            .unwrap();
        let mut folded = Loaded::<User>::default();
        folded.fold(&history).unwrap();
        assert_eq!(at, folded, "as of version {version}");
        assert_eq!(at.version, version as i64);
    }
}
