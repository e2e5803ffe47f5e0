//! The event log on both backends: optimistic concurrency, atomic multi-stream appends,
//! idempotent retries, upcasting on read, and ordered catch-up under concurrent writers.

mod common;

use std::collections::HashSet;

use common::{Backend, TestDatabase};
use serde_json::json;
use switchyard_command::{
    domain::AccountId,
    event_log::{AppendError, EventLog, ExpectedVersion, LogScan, Metadata, NewEvent, StreamWrite},
};
use uuid::Uuid;

on_both_backends!(
    appends_and_reads_a_stream,
    a_conflict_writes_nothing_of_the_whole_append,
    a_retried_append_is_stored_once,
    concurrent_appends_to_one_stream_let_exactly_one_win,
    old_event_shapes_are_upcast_on_read,
    a_scan_reads_the_whole_log_as_position_reads_do,
    a_reader_following_concurrent_writers_sees_every_position_once_in_order,
    an_append_queued_after_another_fails_when_that_one_fails,
);

fn event(n: usize) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "TestHappened".into(),
        schema_version: 1,
        data: json!({"n": n}),
    }
}

fn write(stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> StreamWrite {
    StreamWrite {
        stream_id: stream.into(),
        stream_type: "test".into(),
        expected,
        events,
    }
}

fn metadata() -> Metadata {
    Metadata {
        request_id: Some("req-1".into()),
        client_ip: Some("192.0.2.7".into()),
        user_agent: Some("tests".into()),
        session_id: None,
        ..Metadata::system(AccountId::new())
    }
}

async fn log(backend: Backend) -> (EventLog, TestDatabase) {
    let database = TestDatabase::new(backend).await;
    (
        EventLog::start(database.open().await).await.unwrap(),
        database,
    )
}

/// An append queued on top of another (expecting the stream's last event to be that one's)
/// fails with it, even when a third append has meanwhile brought the stream to the version
/// it expects: its decision was made on a state that never existed.
async fn an_append_queued_after_another_fails_when_that_one_fails(backend: Backend) {
    let (log, _db) = log(backend).await;
    let meta = metadata();
    log.append(
        vec![write("s", ExpectedVersion::NoStream, vec![event(1)])],
        meta.clone(),
    )
    .await
    .unwrap();
    // Queued in this order: one that fails, one that gets in instead, one on top of the first.
    let failing = event(2);
    let on_top_of_failing = ExpectedVersion::After {
        version: 2,
        event_id: failing.event_id,
    };
    let first = log
        .enqueue(
            vec![write("s", ExpectedVersion::Exact(7), vec![failing])],
            meta.clone(),
        )
        .await
        .unwrap();
    let other = event(2);
    let other_id = other.event_id;
    let second = log
        .enqueue(
            vec![write("s", ExpectedVersion::Exact(1), vec![other])],
            meta.clone(),
        )
        .await
        .unwrap();
    let third = log
        .enqueue(
            vec![write("s", on_top_of_failing, vec![event(3)])],
            meta.clone(),
        )
        .await
        .unwrap();
    assert!(matches!(
        first.outcome().await,
        Err(AppendError::Conflict { actual: 1, .. })
    ));
    assert_eq!(second.outcome().await.unwrap().stream_versions, vec![2]);
    assert!(
        matches!(
            third.outcome().await,
            Err(AppendError::Conflict { actual: 2, .. })
        ),
        "the stream is at version 2, but not through the event the append was decided after"
    );
    // On top of the event really there, it goes in.
    let after_other = ExpectedVersion::After {
        version: 2,
        event_id: other_id,
    };
    let appended = log
        .append(vec![write("s", after_other, vec![event(3)])], meta)
        .await
        .unwrap();
    assert_eq!(appended.stream_versions, vec![3]);
}

async fn appends_and_reads_a_stream(backend: Backend) {
    let (log, _db) = log(backend).await;
    let meta = metadata();
    let first = log
        .append(
            vec![write(
                "s-1",
                ExpectedVersion::NoStream,
                vec![event(1), event(2)],
            )],
            meta.clone(),
        )
        .await
        .unwrap();
    assert_eq!(first.stream_versions, vec![2]);
    let second = log
        .append(
            vec![write("s-1", ExpectedVersion::Exact(2), vec![event(3)])],
            meta.clone(),
        )
        .await
        .unwrap();
    assert_eq!(second.stream_versions, vec![3]);
    assert!(second.last_position > first.last_position);

    let stream = log.read_stream("s-1").await.unwrap();
    assert_eq!(
        stream.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        stream
            .iter()
            .map(|e| e.data["n"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(stream[0].metadata, meta, "metadata round-trips");
    assert_eq!(stream[0].stream_type, "test");
    assert!(log.read_stream("s-unknown").await.unwrap().is_empty());
    assert_eq!(log.head_position().await.unwrap(), second.last_position);
}

async fn a_conflict_writes_nothing_of_the_whole_append(backend: Backend) {
    let (log, _db) = log(backend).await;
    log.append(
        vec![write("a", ExpectedVersion::NoStream, vec![event(1)])],
        metadata(),
    )
    .await
    .unwrap();
    // The second write is stale, so the first must not be stored either.
    let outcome = log
        .append(
            vec![
                write("b", ExpectedVersion::NoStream, vec![event(2)]),
                write("a", ExpectedVersion::NoStream, vec![event(3)]),
            ],
            metadata(),
        )
        .await;
    match outcome {
        Err(AppendError::Conflict {
            stream_id,
            expected,
            actual,
        }) => {
            assert_eq!((stream_id.as_str(), expected, actual), ("a", 0, 1));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(log.read_stream("b").await.unwrap().is_empty());
    assert_eq!(log.read_stream("a").await.unwrap().len(), 1);
}

async fn a_retried_append_is_stored_once(backend: Backend) {
    let (log, _db) = log(backend).await;
    let events = vec![event(1), event(2)];
    let first = log
        .append(
            vec![write("r", ExpectedVersion::NoStream, events.clone())],
            metadata(),
        )
        .await
        .unwrap();
    // The same events again, as a client whose first attempt timed out would send them.
    let retried = log
        .append(
            vec![write("r", ExpectedVersion::NoStream, events)],
            metadata(),
        )
        .await
        .unwrap();
    assert_eq!(retried, first);
    assert_eq!(log.read_stream("r").await.unwrap().len(), 2);
}

async fn concurrent_appends_to_one_stream_let_exactly_one_win(backend: Backend) {
    let (log, _db) = log(backend).await;
    let attempts = futures::future::join_all((0..16).map(|n| {
        let log = log.clone();
        async move {
            log.append(
                vec![write("hot", ExpectedVersion::NoStream, vec![event(n)])],
                metadata(),
            )
            .await
        }
    }))
    .await;
    let won = attempts.iter().filter(|a| a.is_ok()).count();
    let conflicts = attempts
        .iter()
        .filter(|a| matches!(a, Err(AppendError::Conflict { .. })))
        .count();
    assert_eq!((won, conflicts), (1, 15));
    assert_eq!(log.read_stream("hot").await.unwrap().len(), 1);
}

async fn old_event_shapes_are_upcast_on_read(backend: Backend) {
    let (log, db) = log(backend).await;
    let db = db.open().await;
    // A GeneralInformationChanged stored by a version that wrote schema 1.
    let v1 = json!({"currency": "EUR", "date_format": "DD.MM.YYYY", "phone": null,
                    "mobile": null, "security_addon": true});
    let meta = serde_json::to_string(&metadata()).unwrap();
    let sql = match backend {
        Backend::Sqlite => {
            "INSERT INTO events (stream_id, stream_type, version, event_id, event_type, schema_version, data, metadata, recorded_at) \
             VALUES ('account-old', 'account', 1, $1, 'GeneralInformationChanged', 1, $2, $3, '2025-01-01T00:00:00.000000Z')"
        }
        Backend::Postgres => {
            "INSERT INTO events (stream_id, stream_type, version, event_id, event_type, schema_version, data, metadata, recorded_at) \
             VALUES ('account-old', 'account', 1, $1::uuid, 'GeneralInformationChanged', 1, $2::json, $3::json, '2025-01-01T00:00:00Z')"
        }
    };
    sqlx::query(sql)
        .bind(Uuid::now_v7().to_string())
        .bind(v1.to_string())
        .bind(meta)
        .execute(&db.pool)
        .await
        .unwrap();
    let stored = log.read_stream("account-old").await.unwrap();
    let scanned = LogScan::open(&db)
        .await
        .unwrap()
        .next_batch(10)
        .await
        .unwrap();
    assert_eq!(
        scanned, stored,
        "a rebuild's scan upcasts as stream reads do"
    );
    assert_eq!(stored[0].schema_version, 2);
    assert_eq!(stored[0].data["login_alerts"], json!(true));
    assert!(stored[0].data.get("security_addon").is_none());
    let general: switchyard_command::account::AccountEvent =
        switchyard_command::event_log::decode(&stored[0]).expect("the upcast shape decodes");
    assert!(matches!(
        general,
        switchyard_command::account::AccountEvent::GeneralInformationChanged(g) if g.login_alerts
    ));
}

/// A rebuild reads through its own scan (a typed connection on PostgreSQL): batch by batch,
/// it must answer exactly what position reads answer, ending with an empty batch.
async fn a_scan_reads_the_whole_log_as_position_reads_do(backend: Backend) {
    let (log, db) = log(backend).await;
    let db = db.open().await;
    for stream in ["a", "b", "c"] {
        let events = (0..3).map(event).collect();
        let append = write(stream, ExpectedVersion::NoStream, events);
        log.append(vec![append], metadata()).await.unwrap();
    }
    let mut scan = LogScan::open(&db).await.unwrap();
    let mut scanned = Vec::new();
    loop {
        let batch = scan.next_batch(4).await.unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 4);
        scanned.extend(batch);
    }
    let read = log.read_after(0, 100).await.unwrap();
    assert_eq!(read.len(), 9);
    assert_eq!(scanned, read);
}

/// Eight writers — each its own event-log instance with its own pool and writer task, as
/// separate processes would be — append thousands of events while a reader follows the log
/// by position. The reader must see every stored position exactly once, in increasing order.
async fn a_reader_following_concurrent_writers_sees_every_position_once_in_order(backend: Backend) {
    const WRITERS: usize = 8;
    const APPENDS_PER_WRITER: usize = 400;
    const EVENTS_PER_APPEND: usize = 3;
    let database = TestDatabase::new(backend).await;
    let reader_log = EventLog::start(database.open().await).await.unwrap();

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let log = EventLog::start(database.open().await).await.unwrap();
        writers.push(tokio::spawn(async move {
            // Several concurrent appenders per writer so its group commit batches them.
            let tasks = (0..4).map(|lane| {
                let log = log.clone();
                tokio::spawn(async move {
                    let stream = format!("w{writer}-lane{lane}");
                    for n in 0..APPENDS_PER_WRITER / 4 {
                        let events = (0..EVENTS_PER_APPEND).map(event).collect();
                        let expected = match n {
                            0 => ExpectedVersion::NoStream,
                            n => ExpectedVersion::Exact((n * EVENTS_PER_APPEND) as i64),
                        };
                        log.append(vec![write(&stream, expected, events)], metadata())
                            .await
                            .unwrap();
                    }
                })
            });
            for task in futures::future::join_all(tasks).await {
                task.unwrap();
            }
        }));
    }
    let all_done = futures::future::join_all(writers);
    tokio::pin!(all_done);

    let total = WRITERS * APPENDS_PER_WRITER * EVENTS_PER_APPEND;
    let mut seen = Vec::with_capacity(total);
    let mut position = 0;
    let mut writers_finished = false;
    loop {
        let batch = reader_log.read_after(position, 97).await.unwrap();
        for event in &batch {
            assert!(event.global_position > position, "positions go backwards");
            position = event.global_position;
            seen.push(position);
        }
        if batch.is_empty() {
            if writers_finished {
                break;
            }
            tokio::select! {
                done = &mut all_done => {
                    done.into_iter().for_each(|w| w.unwrap());
                    writers_finished = true;
                }
                _ = tokio::time::sleep(std::time::Duration::from_millis(1)) => {}
            }
        }
    }

    let db = database.open().await;
    let stored: Vec<i64> =
        sqlx::query_scalar("SELECT global_position FROM events ORDER BY global_position")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(stored.len(), total);
    assert_eq!(
        seen.len(),
        seen.iter().collect::<HashSet<_>>().len(),
        "no position twice"
    );
    let seen: HashSet<i64> = seen.into_iter().collect();
    let skipped: Vec<i64> = stored.into_iter().filter(|p| !seen.contains(p)).collect();
    assert!(
        skipped.is_empty(),
        "the reader skipped {} positions, first {:?}",
        skipped.len(),
        &skipped[..skipped.len().min(10)]
    );
}
