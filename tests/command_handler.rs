//! The command handler's state cache never lets a stale state decide: two handlers on one
//! database act like two processes, each with its own cache.

mod common;

use common::{Backend, TestDatabase};
use switchyard_command::{
    account::{Account, AccountCommand, AccountError, CompanyInformation},
    domain::{EmailAddress, Text},
    event_log::{EventLog, Metadata},
    handler::{CommandError, CommandHandler},
    onboarding::{NewAccount, open_account},
};

on_both_backends!(a_stale_cache_never_decides);

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
