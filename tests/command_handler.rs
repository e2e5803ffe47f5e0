//! The command handler's state cache never lets a stale state decide: two handlers on one
//! database act like two processes, each with its own cache.

mod common;

use common::{Backend, TestDatabase};
use switchyard_command::{
    account::{Account, AccountCommand, AccountError, CompanyInformation},
    domain::{EmailAddress, Text},
    event_log::{EventLog, Metadata},
    handler::{CommandError, CommandHandler, Executed},
    onboarding::{NewAccount, open_account},
};

on_both_backends!(
    a_stale_cache_never_decides,
    concurrent_commands_on_one_stream_queue_instead_of_conflicting,
    commands_of_two_processes_on_one_stream_each_land_where_they_say,
);

/// Writers on one stream, each running `commands` unconditional company changes; answers
/// each outcome with the name it set.
async fn race_on_one_stream(
    handler: &CommandHandler,
    stream: &str,
    meta: &Metadata,
    prefix: &str,
    writers: usize,
    commands: usize,
) -> Vec<(
    String,
    Result<Executed<Account>, CommandError<AccountError>>,
)> {
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let (handler, stream, meta) = (handler.clone(), stream.to_owned(), meta.clone());
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for n in 0..commands {
                    let name = format!("{prefix} {writer}-{n}");
                    let command = AccountCommand::ChangeCompanyInformation(company(&name), None);
                    let outcome = handler.execute::<Account>(&stream, command, &meta).await;
                    outcomes.push((name, outcome));
                }
                outcomes
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.unwrap());
    }
    outcomes
}

async fn open_acme(handler: &CommandHandler) -> (String, Metadata) {
    let opened = open_account(
        handler,
        NewAccount {
            name: Text::parse("Acme", 1, 100).unwrap(),
            admin_name: Text::parse("Ada", 1, 100).unwrap(),
            admin_email: EmailAddress::parse("ada@acme.example.com").unwrap(),
            admin_password_hash: "not used".into(),
        },
    )
    .await
    .unwrap();
    (
        opened.account_id.stream_id(),
        Metadata::system(opened.account_id),
    )
}

/// What the log holds at `version` of the account stream: the company name set there.
async fn name_at(handler: &CommandHandler, stream: &str, version: i64) -> String {
    let events = handler.log().read_stream(stream).await.unwrap();
    events[version as usize - 1].data["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Within one process, commands on one stream run one after another on the state the one
/// before left: sixteen unconditional writers never see a conflict.
async fn concurrent_commands_on_one_stream_queue_instead_of_conflicting(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let handler = CommandHandler::new(EventLog::start(database.open().await).await.unwrap());
    let (stream, meta) = open_acme(&handler).await;
    let (writers, commands) = (16, 25);
    let outcomes = race_on_one_stream(&handler, &stream, &meta, "Acme", writers, commands).await;
    let mut versions = Vec::new();
    for (name, outcome) in outcomes {
        let executed = outcome.unwrap_or_else(|e| panic!("{name}: {e}"));
        let (company, _) = executed.state.sections.as_ref().unwrap();
        assert_eq!(
            company.value.name.as_str(),
            name,
            "the state after its own change"
        );
        versions.push(executed.version);
    }
    versions.sort_unstable();
    let expected: Vec<i64> = (2..2 + (writers * commands) as i64).collect();
    assert_eq!(versions, expected, "each change at a version of its own");
    let loaded = handler.load::<Account, ()>(&stream).await.unwrap();
    assert_eq!(loaded.version, 1 + (writers * commands) as i64);
}

/// Two processes hammering one stream: each queues its own commands, and the version check
/// arbitrates between them. Whatever a command reports, the log agrees with: its change is
/// at the version it answered (an append decided on a state that then failed to commit
/// never lands on top of the other process's events instead).
async fn commands_of_two_processes_on_one_stream_each_land_where_they_say(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let first = CommandHandler::new(EventLog::start(database.open().await).await.unwrap());
    let second = CommandHandler::new(EventLog::start(database.open().await).await.unwrap());
    let (stream, meta) = open_acme(&first).await;
    let (a, b) = tokio::join!(
        race_on_one_stream(&first, &stream, &meta, "First", 8, 20),
        race_on_one_stream(&second, &stream, &meta, "Second", 8, 20),
    );
    let mut succeeded = 0;
    for (name, outcome) in a.into_iter().chain(b) {
        match outcome {
            Ok(executed) => {
                succeeded += 1;
                assert_eq!(name_at(&first, &stream, executed.version).await, name);
            }
            Err(CommandError::TooMuchContention(_)) => {}
            Err(other) => panic!("{name}: {other}"),
        }
    }
    let loaded = first.load::<Account, ()>(&stream).await.unwrap();
    assert_eq!(
        loaded.version,
        1 + succeeded,
        "nothing stored but what was answered"
    );
}

fn company(name: &str) -> CompanyInformation {
    CompanyInformation::initial(
        Text::parse(name, 1, 100).unwrap(),
        EmailAddress::parse("ops@acme.example.com").unwrap(),
    )
}

async fn a_stale_cache_never_decides(backend: Backend) {
    let database = TestDatabase::new(backend).await;
    let first = CommandHandler::new(EventLog::start(database.open().await).await.unwrap());
    let second = CommandHandler::new(EventLog::start(database.open().await).await.unwrap());
    let opened = open_account(
        &first,
        NewAccount {
            name: Text::parse("Acme", 1, 100).unwrap(),
            admin_name: Text::parse("Ada", 1, 100).unwrap(),
            admin_email: EmailAddress::parse("ada@acme.example.com").unwrap(),
            admin_password_hash: "not used".into(),
        },
    )
    .await
    .unwrap();
    let stream = opened.account_id.stream_id();
    let meta = Metadata::system(opened.account_id);
    let change = |name: &str, seen| AccountCommand::ChangeCompanyInformation(company(name), seen);

    // Both handlers cache the account at version 2.
    first
        .execute::<Account>(&stream, change("One", None), &meta)
        .await
        .unwrap();
    assert_eq!(
        second.load::<Account, ()>(&stream).await.unwrap().version,
        2
    );
    // The first handler moves it on; the second's cache is now stale.
    first
        .execute::<Account>(&stream, change("Two", None), &meta)
        .await
        .unwrap();

    // A guard checked against the stale cache would pass; against the log it must fail.
    let stale_guard = second
        .execute::<Account>(&stream, change("Three", Some(2)), &meta)
        .await;
    assert!(matches!(
        stale_guard,
        Err(CommandError::Domain(AccountError::SectionChanged {
            seen: 2,
            current: 3
        }))
    ));
    // Setting the value the log already has is a no-op, not a change back.
    let same = second
        .execute::<Account>(&stream, change("Two", None), &meta)
        .await
        .unwrap();
    assert_eq!((same.version, same.position), (3, None));
    // A real change from the stale cache is appended after the other handler's.
    let moved = second
        .execute::<Account>(&stream, change("Four", Some(3)), &meta)
        .await
        .unwrap();
    assert_eq!(moved.version, 4);
    let names: Vec<String> = first
        .log()
        .read_stream(&stream)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| e.data["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(names, ["One", "Two", "Four"]);
}
