//! The SMTP send path against a real SMTP server on loopback: each security mode delivers, and
//! each kind of failure is reported at its stage, in its own words.

mod common;

use std::time::{Duration, Instant};

use common::{
    dns_server::DnsServer,
    smtp_server::{ServerOptions, ServerTls, SilentServer, SmtpServer, TestPki},
};
use secrecy::SecretString;
use switchyard_workers::smtp::{
    self, Delivery, FailureKind, Message, Security, SmtpSettings, StageName,
};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(5);
const USERNAME: &str = "mailer";
const PASSWORD: &str = "s3cret-smtp-password";

fn settings(host: &str, port: u16, security: Security) -> SmtpSettings {
    SmtpSettings {
        host: host.to_owned(),
        port,
        security,
        username: None,
        password: None,
        from: "Switchyard <noreply@acme.example.com>".to_owned(),
        extra_root_certificate: None,
    }
}

/// Sends as the workers do, with tenants' servers allowed on loopback, resolving names
/// through a DNS server of the test's own that knows none.
async fn send(settings: &SmtpSettings, message: &Message, timeout: Duration) -> Delivery {
    let outbound = common::loopback_outbound(&DnsServer::start().await);
    smtp::send(&outbound, settings, message, timeout).await
}

fn with_login(settings: SmtpSettings, password: &str) -> SmtpSettings {
    SmtpSettings {
        username: Some(USERNAME.to_owned()),
        password: Some(SecretString::from(password)),
        ..settings
    }
}

fn trusting(settings: SmtpSettings, pki: &TestPki) -> SmtpSettings {
    SmtpSettings {
        extra_root_certificate: Some(pki.ca_pem.clone()),
        ..settings
    }
}

fn message(to: &str) -> Message {
    Message {
        to: to.to_owned(),
        subject: "Your SMTP settings work".to_owned(),
        text_body: "Hello from Switchyard.\n.A line starting with a dot.\n".to_owned(),
    }
}

fn login_server_options() -> ServerOptions {
    ServerOptions {
        credentials: Some((USERNAME.to_owned(), PASSWORD.to_owned())),
        ..ServerOptions::default()
    }
}

/// The names of the stages, in order, with whether each went well.
fn stage_names(delivery: &Delivery) -> Vec<(StageName, bool)> {
    delivery
        .stages
        .iter()
        .map(|stage| (stage.stage, stage.ok))
        .collect()
}

fn detail(delivery: &Delivery, name: StageName) -> &str {
    let stage = delivery.stages.iter().find(|stage| stage.stage == name);
    &stage
        .unwrap_or_else(|| panic!("no {name:?} stage in {delivery:#?}"))
        .detail
}

/// Checks what the server received against [`message`].
fn assert_received_message(server: &SmtpServer, to: &str) -> common::smtp_server::ReceivedMessage {
    let received = server.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    let email = received.into_iter().next().unwrap();
    assert_eq!(email.mail_from, "noreply@acme.example.com");
    assert_eq!(email.rcpt_to, [to]);
    assert_eq!(
        email.header("From"),
        Some("Switchyard <noreply@acme.example.com>")
    );
    assert_eq!(email.header("To"), Some(to));
    assert_eq!(email.header("Subject"), Some("Your SMTP settings work"));
    assert_eq!(
        email.header("Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(email.header("Date").is_some());
    let message_id = email.header("Message-ID").unwrap();
    assert!(message_id.ends_with("@acme.example.com>"), "{message_id}");
    // The dot survives the round trip only if the sender doubled it; lettre ends the data with
    // CRLF.CRLF after the body's own CRLF, which leaves an empty last line.
    assert_eq!(
        email.body().trim_end_matches("\r\n"),
        "Hello from Switchyard.\r\n.A line starting with a dot."
    );
    email
}

#[tokio::test]
async fn plain_smtp_delivers_the_message() {
    let server = SmtpServer::start(ServerOptions::default()).await;

    let delivery = send(
        &settings("127.0.0.1", server.port(), Security::None),
        &message("alice@example.org"),
        TIMEOUT,
    )
    .await;

    assert_eq!(delivery.outcome, Ok(()), "{delivery:#?}");
    assert_eq!(
        stage_names(&delivery),
        [
            (StageName::Connect, true),
            (StageName::MailFrom, true),
            (StageName::RcptTo, true),
            (StageName::Data, true),
        ]
    );
    assert_eq!(
        detail(&delivery, StageName::Connect),
        "220 localhost ESMTP Switchyard test server"
    );
    assert_eq!(detail(&delivery, StageName::MailFrom), "250 2.1.0 Ok");
    assert_eq!(detail(&delivery, StageName::RcptTo), "250 2.1.5 Ok");
    assert_eq!(
        detail(&delivery, StageName::Data),
        "250 2.0.0 Ok: queued as TEST1"
    );
    let email = assert_received_message(&server, "alice@example.org");
    assert!(!email.over_tls);
}

#[tokio::test]
async fn starttls_delivers_over_tls_after_logging_in() {
    let pki = TestPki::generate();
    let server = SmtpServer::start(ServerOptions {
        tls: ServerTls::StartTls(pki.server_config.clone()),
        ..login_server_options()
    })
    .await;
    let settings = trusting(
        settings("localhost", server.port(), Security::StartTls),
        &pki,
    );

    let delivery = send(
        &with_login(settings, PASSWORD),
        &message("alice@example.org"),
        TIMEOUT,
    )
    .await;

    assert_eq!(delivery.outcome, Ok(()), "{delivery:#?}");
    assert_eq!(
        stage_names(&delivery),
        [
            (StageName::Connect, true),
            (StageName::Tls, true),
            (StageName::Auth, true),
            (StageName::MailFrom, true),
            (StageName::RcptTo, true),
            (StageName::Data, true),
        ]
    );
    let tls = detail(&delivery, StageName::Tls);
    assert!(
        tls.starts_with("220 2.0.0 Ready to start TLS; TLS 1."),
        "{tls}"
    );
    assert!(tls.ends_with("certificate verified for localhost"), "{tls}");
    assert_eq!(
        detail(&delivery, StageName::Auth),
        "235 2.7.0 Authentication successful"
    );
    assert!(detail(&delivery, StageName::Data).starts_with("250 "));
    let email = assert_received_message(&server, "alice@example.org");
    assert!(email.over_tls);
    assert_eq!(email.authenticated_as.as_deref(), Some(USERNAME));
}

#[tokio::test]
async fn implicit_tls_delivers_the_message() {
    let pki = TestPki::generate();
    let server = SmtpServer::start(ServerOptions {
        tls: ServerTls::Implicit(pki.server_config.clone()),
        ..ServerOptions::default()
    })
    .await;
    let settings = trusting(settings("localhost", server.port(), Security::Tls), &pki);

    let delivery = send(&settings, &message("alice@example.org"), TIMEOUT).await;

    assert_eq!(delivery.outcome, Ok(()), "{delivery:#?}");
    assert_eq!(
        stage_names(&delivery),
        [
            (StageName::Connect, true),
            (StageName::Tls, true),
            (StageName::MailFrom, true),
            (StageName::RcptTo, true),
            (StageName::Data, true),
        ]
    );
    let connect = detail(&delivery, StageName::Connect);
    assert_eq!(connect, format!("connected to 127.0.0.1:{}", server.port()));
    let tls = detail(&delivery, StageName::Tls);
    assert!(tls.starts_with("TLS 1."), "{tls}");
    assert!(
        tls.ends_with(
            "certificate verified for localhost; 220 localhost ESMTP Switchyard test server"
        ),
        "{tls}"
    );
    assert!(detail(&delivery, StageName::Data).starts_with("250 "));
    let email = assert_received_message(&server, "alice@example.org");
    assert!(email.over_tls);
}

#[tokio::test]
async fn auth_login_is_used_when_the_server_offers_only_that() {
    let server = SmtpServer::start(ServerOptions {
        auth_mechanisms: "LOGIN",
        ..login_server_options()
    })
    .await;
    let settings = with_login(
        settings("127.0.0.1", server.port(), Security::None),
        PASSWORD,
    );

    let delivery = send(&settings, &message("alice@example.org"), TIMEOUT).await;

    assert_eq!(delivery.outcome, Ok(()), "{delivery:#?}");
    assert_eq!(
        detail(&delivery, StageName::Auth),
        "235 2.7.0 Authentication successful"
    );
    assert_eq!(
        server.received()[0].authenticated_as.as_deref(),
        Some(USERNAME)
    );
}

#[tokio::test]
async fn a_wrong_password_is_rejected_before_mail_from() {
    let server = SmtpServer::start(login_server_options()).await;
    let settings = with_login(
        settings("127.0.0.1", server.port(), Security::None),
        "wrong",
    );

    let delivery = send(&settings, &message("alice@example.org"), TIMEOUT).await;

    let error = delivery.outcome.clone().unwrap_err();
    assert_eq!(
        error.kind,
        FailureKind::AuthenticationRejected { code: 535 }
    );
    assert!(!error.is_transient());
    assert!(
        error
            .message
            .contains("check the SMTP username and password"),
        "{error}"
    );
    assert_eq!(
        stage_names(&delivery),
        [(StageName::Connect, true), (StageName::Auth, false)]
    );
    let auth = detail(&delivery, StageName::Auth);
    assert!(auth.starts_with("535 5.7.8 "), "{auth}");
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_refused_recipient_is_reported_with_the_server_reply() {
    let server = SmtpServer::start(ServerOptions {
        refused_recipients: vec!["nobody@example.org".to_owned()],
        ..ServerOptions::default()
    })
    .await;
    let settings = settings("127.0.0.1", server.port(), Security::None);

    let delivery = send(&settings, &message("nobody@example.org"), TIMEOUT).await;

    let error = delivery.outcome.clone().unwrap_err();
    assert_eq!(error.kind, FailureKind::RecipientRefused { code: 550 });
    assert!(!error.is_transient());
    assert!(error.message.contains("nobody@example.org"), "{error}");
    assert_eq!(
        stage_names(&delivery),
        [
            (StageName::Connect, true),
            (StageName::MailFrom, true),
            (StageName::RcptTo, false),
        ]
    );
    assert_eq!(
        detail(&delivery, StageName::RcptTo),
        "550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown"
    );
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_port_nobody_listens_on_is_a_transient_connection_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);

    let delivery = send(
        &settings("127.0.0.1", port, Security::None),
        &message("alice@example.org"),
        TIMEOUT,
    )
    .await;

    let error = delivery.outcome.clone().unwrap_err();
    assert_eq!(error.kind, FailureKind::ConnectionRefused);
    assert!(error.is_transient());
    assert_eq!(stage_names(&delivery), [(StageName::Connect, false)]);
    let connect = detail(&delivery, StageName::Connect);
    assert!(connect.contains("refused"), "{connect}");
}

#[tokio::test]
async fn an_unknown_host_is_a_permanent_name_not_resolved() {
    let delivery = send(
        &settings("no-such-host.invalid", 587, Security::StartTls),
        &message("alice@example.org"),
        TIMEOUT,
    )
    .await;

    let error = delivery.outcome.clone().unwrap_err();
    assert_eq!(error.kind, FailureKind::NameNotResolved, "{delivery:#?}");
    assert!(!error.is_transient());
    assert!(error.message.contains("check the host name"), "{error}");
    assert_eq!(stage_names(&delivery), [(StageName::Connect, false)]);
}

#[tokio::test]
async fn an_untrusted_certificate_fails_the_handshake_with_implicit_tls_and_starttls() {
    let pki = TestPki::generate();
    for (tls, security) in [
        (
            ServerTls::Implicit(pki.server_config.clone()),
            Security::Tls,
        ),
        (
            ServerTls::StartTls(pki.server_config.clone()),
            Security::StartTls,
        ),
    ] {
        let server = SmtpServer::start(ServerOptions {
            tls,
            ..ServerOptions::default()
        })
        .await;
        // Without the test CA as an extra root, only the public roots are trusted.
        let settings = settings("localhost", server.port(), security);

        let delivery = send(&settings, &message("alice@example.org"), TIMEOUT).await;

        let error = delivery.outcome.clone().unwrap_err();
        assert_eq!(error.kind, FailureKind::TlsHandshake, "{delivery:#?}");
        assert!(!error.is_transient());
        assert_eq!(
            stage_names(&delivery),
            [(StageName::Connect, true), (StageName::Tls, false)]
        );
        let tls = detail(&delivery, StageName::Tls);
        assert!(
            tls.contains("not signed by a trusted authority") && tls.contains("UnknownIssuer"),
            "{tls}"
        );
        assert!(server.received().is_empty());
    }
}

#[tokio::test]
async fn a_certificate_for_another_name_fails_the_handshake() {
    let pki = TestPki::generate();
    let server = SmtpServer::start(ServerOptions {
        tls: ServerTls::Implicit(pki.server_config.clone()),
        ..ServerOptions::default()
    })
    .await;
    // The certificate names localhost, not the address.
    let settings = trusting(settings("127.0.0.1", server.port(), Security::Tls), &pki);

    let delivery = send(&settings, &message("alice@example.org"), TIMEOUT).await;

    let error = delivery.outcome.clone().unwrap_err();
    assert_eq!(error.kind, FailureKind::TlsHandshake, "{delivery:#?}");
    let tls = detail(&delivery, StageName::Tls);
    assert!(tls.contains("for another host name"), "{tls}");
}

#[tokio::test]
async fn starttls_is_not_attempted_in_the_clear_when_the_server_does_not_offer_it() {
    let server = SmtpServer::start(login_server_options()).await;
    let settings = with_login(
        settings("127.0.0.1", server.port(), Security::StartTls),
        PASSWORD,
    );

    let delivery = send(&settings, &message("alice@example.org"), TIMEOUT).await;

    let error = delivery.outcome.clone().unwrap_err();
    assert_eq!(error.kind, FailureKind::TlsNotOffered);
    assert_eq!(
        stage_names(&delivery),
        [(StageName::Connect, true), (StageName::Tls, false)]
    );
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_within_the_timeout() {
    let server = SilentServer::start().await;
    let timeout = Duration::from_secs(1);
    let started = Instant::now();

    let delivery = send(
        &settings("127.0.0.1", server.address.port(), Security::None),
        &message("alice@example.org"),
        timeout,
    )
    .await;

    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let error = delivery.outcome.clone().unwrap_err();
    assert_eq!(error.kind, FailureKind::Timeout);
    assert!(error.is_transient());
    assert_eq!(stage_names(&delivery), [(StageName::Connect, false)]);
    assert_eq!(
        detail(&delivery, StageName::Connect),
        "no answer within 1s waiting for the server's greeting"
    );
}

#[tokio::test]
async fn the_password_shows_neither_in_debug_output_nor_in_the_delivery() {
    let server = SmtpServer::start(login_server_options()).await;
    let settings = with_login(
        settings("127.0.0.1", server.port(), Security::None),
        PASSWORD,
    );
    assert!(!format!("{settings:?}").contains(PASSWORD));

    let delivery = send(&settings, &message("alice@example.org"), TIMEOUT).await;

    assert_eq!(delivery.outcome, Ok(()), "{delivery:#?}");
    let recorded = serde_json::to_string(&delivery).unwrap();
    assert!(!recorded.contains(PASSWORD), "{recorded}");
    assert!(!format!("{delivery:?}").contains(PASSWORD));
}

#[tokio::test]
async fn bad_settings_fail_at_once_without_connecting() {
    let mut settings = settings("127.0.0.1", 9, Security::None);
    settings.from = "not an address".to_owned();

    let delivery = send(&settings, &message("alice@example.org"), TIMEOUT).await;

    let error = delivery.outcome.clone().unwrap_err();
    assert_eq!(error.kind, FailureKind::InvalidSettings);
    assert!(!error.is_transient());
    assert!(error.message.contains("not an address"), "{error}");
    assert!(delivery.stages.is_empty());
}
