//! A real SMTP server on loopback, for tests of the SMTP send path: plain, STARTTLS or implicit
//! TLS with certificates from a CA made for the test, AUTH PLAIN and LOGIN, refusing chosen
//! recipients, and recording every message it accepts.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::{
    ServerConfig,
    pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;

/// A CA made for one test, and a server certificate it signed for `localhost` (only: a client
/// that checks it against 127.0.0.1 must refuse it).
pub struct TestPki {
    /// The CA certificate, to give the sender as its extra trusted root.
    pub ca_pem: Vec<u8>,
    pub server_config: Arc<ServerConfig>,
}

impl TestPki {
    pub fn generate() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Switchyard test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let server_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let server_certificate = server_params.signed_by(&server_key, &ca).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![server_certificate.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .unwrap();
        Self {
            ca_pem: ca.pem().into_bytes(),
            server_config: Arc::new(server_config),
        }
    }
}

#[derive(Clone)]
pub enum ServerTls {
    None,
    /// Offers STARTTLS in its EHLO reply.
    StartTls(Arc<ServerConfig>),
    /// TLS from the first byte.
    Implicit(Arc<ServerConfig>),
}

#[derive(Clone)]
pub struct ServerOptions {
    pub tls: ServerTls,
    /// When set, AUTH is offered and required before MAIL.
    pub credentials: Option<(String, String)>,
    /// The mechanisms listed after AUTH in the EHLO reply.
    pub auth_mechanisms: &'static str,
    /// Answered `550 5.1.1` at RCPT TO.
    pub refused_recipients: Vec<String>,
    /// How long the server takes to answer the end of DATA. The message is recorded before
    /// the wait: a sender that dies meanwhile has handed it over without hearing so.
    pub data_delay: Option<Duration>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            tls: ServerTls::None,
            credentials: None,
            auth_mechanisms: "PLAIN LOGIN",
            refused_recipients: Vec::new(),
            data_delay: None,
        }
    }
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message after DATA, dot-unstuffed, without the final dot line.
    pub data: String,
    pub authenticated_as: Option<String>,
    pub over_tls: bool,
}

impl ReceivedMessage {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        let head = self.data.split("\r\n\r\n").next()?;
        head.lines().find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    pub fn body(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }
}

/// The server, stopped when dropped.
pub struct SmtpServer {
    pub address: SocketAddr,
    received: Arc<Mutex<Vec<ReceivedMessage>>>,
    task: JoinHandle<()>,
}

impl SmtpServer {
    pub async fn start(options: ServerOptions) -> Self {
        Self::start_on(0, options).await
    }

    /// On a given loopback port (0: any free one).
    pub async fn start_on(port: u16, options: ServerOptions) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let address = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let options = Arc::new(options);
        let recorder = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (options, recorder) = (options.clone(), recorder.clone());
                // A client that fails its handshake or hangs up only ends its own session.
                tokio::spawn(async move {
                    let _ = serve(stream, &options, &recorder).await;
                });
            }
        });
        Self {
            address,
            received,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn received(&self) -> Vec<ReceivedMessage> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server that accepts connections and never says a word; stopped when dropped.
pub struct SilentServer {
    pub address: SocketAddr,
    task: JoinHandle<()>,
}

impl SilentServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        Self { address, task }
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    stream: TcpStream,
    options: &ServerOptions,
    received: &Mutex<Vec<ReceivedMessage>>,
) -> std::io::Result<()> {
    match &options.tls {
        ServerTls::None => {
            Session::new(options, received, false)
                .run(stream, true)
                .await?;
        }
        ServerTls::Implicit(config) => {
            let stream = TlsAcceptor::from(config.clone()).accept(stream).await?;
            Session::new(options, received, true)
                .run(stream, true)
                .await?;
        }
        ServerTls::StartTls(config) => {
            let plain = Session::new(options, received, false);
            if let Some(stream) = plain.run(stream, true).await? {
                let stream = TlsAcceptor::from(config.clone()).accept(stream).await?;
                // RFC 3207: after the handshake the session starts over, without a greeting.
                Session::new(options, received, true)
                    .run(stream, false)
                    .await?;
            }
        }
    }
    Ok(())
}

struct Session<'a> {
    options: &'a ServerOptions,
    received: &'a Mutex<Vec<ReceivedMessage>>,
    over_tls: bool,
    authenticated_as: Option<String>,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
}

impl<'a> Session<'a> {
    fn new(
        options: &'a ServerOptions,
        received: &'a Mutex<Vec<ReceivedMessage>>,
        over_tls: bool,
    ) -> Self {
        Self {
            options,
            received,
            over_tls,
            authenticated_as: None,
            mail_from: None,
            rcpt_to: Vec::new(),
        }
    }

    fn offers_starttls(&self) -> bool {
        matches!(self.options.tls, ServerTls::StartTls(_)) && !self.over_tls
    }

    /// Runs the session; returns the stream when the client starts TLS.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        mut self,
        stream: S,
        greet: bool,
    ) -> std::io::Result<Option<S>> {
        let mut stream = BufReader::new(stream);
        if greet {
            reply(&mut stream, "220 localhost ESMTP Switchyard test server").await?;
        }
        while let Some(line) = read_line(&mut stream).await? {
            let (verb, argument) = line.split_once(' ').unwrap_or((&line, ""));
            let answer = match verb.to_ascii_uppercase().as_str() {
                "EHLO" => {
                    self.reset();
                    self.ehlo_reply(argument)
                }
                "HELO" => "250 localhost".to_owned(),
                "STARTTLS" if self.offers_starttls() => {
                    reply(&mut stream, "220 2.0.0 Ready to start TLS").await?;
                    return Ok(Some(stream.into_inner()));
                }
                "AUTH" if self.options.credentials.is_some() => {
                    self.authenticate(&mut stream, argument).await?
                }
                "MAIL" => self.mail(argument),
                "RCPT" => self.rcpt(argument),
                "DATA" if self.rcpt_to.is_empty() => {
                    "503 5.5.1 Error: need RCPT command".to_owned()
                }
                "DATA" => {
                    reply(&mut stream, "354 End data with <CR><LF>.<CR><LF>").await?;
                    let data = read_data(&mut stream).await?;
                    self.record(data);
                    if let Some(delay) = self.options.data_delay {
                        tokio::time::sleep(delay).await;
                    }
                    "250 2.0.0 Ok: queued as TEST1".to_owned()
                }
                "RSET" => {
                    self.reset();
                    "250 2.0.0 Ok".to_owned()
                }
                "NOOP" => "250 2.0.0 Ok".to_owned(),
                "QUIT" => {
                    reply(&mut stream, "221 2.0.0 Bye").await?;
                    return Ok(None);
                }
                _ => "502 5.5.2 Error: command not recognized".to_owned(),
            };
            reply(&mut stream, &answer).await?;
        }
        Ok(None)
    }

    fn ehlo_reply(&self, client: &str) -> String {
        let mut lines = vec![format!("localhost greets {client}"), "8BITMIME".to_owned()];
        if self.offers_starttls() {
            lines.push("STARTTLS".to_owned());
        }
        if self.options.credentials.is_some() {
            lines.push(format!("AUTH {}", self.options.auth_mechanisms));
        }
        let last = lines.len() - 1;
        let lines: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(index, line)| format!("250{}{line}", if index == last { ' ' } else { '-' }))
            .collect();
        lines.join("\r\n")
    }

    async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut BufReader<S>,
        argument: &str,
    ) -> std::io::Result<String> {
        let (mechanism, initial) = argument.split_once(' ').unwrap_or((argument, ""));
        let (username, password) = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => {
                let response = if initial.is_empty() {
                    challenge(stream, "").await?
                } else {
                    decode(initial)
                };
                // authorization identity, NUL, username, NUL, password
                let mut parts = response.splitn(3, '\0').skip(1);
                let username = parts.next().unwrap_or_default().to_owned();
                (username, parts.next().unwrap_or_default().to_owned())
            }
            "LOGIN" => (
                challenge(stream, "Username:").await?,
                challenge(stream, "Password:").await?,
            ),
            _ => return Ok("504 5.5.4 Unrecognized authentication type".to_owned()),
        };
        let expected = self
            .options
            .credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()));
        if expected == Some((username.as_str(), password.as_str())) {
            self.authenticated_as = Some(username);
            Ok("235 2.7.0 Authentication successful".to_owned())
        } else {
            Ok("535 5.7.8 Error: authentication failed: authentication failure".to_owned())
        }
    }

    fn mail(&mut self, argument: &str) -> String {
        if self.options.credentials.is_some() && self.authenticated_as.is_none() {
            return "530 5.7.0 Authentication required".to_owned();
        }
        match path(argument, "FROM:") {
            Some(sender) => {
                self.mail_from = Some(sender);
                "250 2.1.0 Ok".to_owned()
            }
            None => "501 5.5.4 Syntax: MAIL FROM:<address>".to_owned(),
        }
    }

    fn rcpt(&mut self, argument: &str) -> String {
        if self.mail_from.is_none() {
            return "503 5.5.1 Error: need MAIL command".to_owned();
        }
        match path(argument, "TO:") {
            Some(recipient) if self.options.refused_recipients.contains(&recipient) => {
                format!("550 5.1.1 <{recipient}>: Recipient address rejected: User unknown")
            }
            Some(recipient) => {
                self.rcpt_to.push(recipient);
                "250 2.1.5 Ok".to_owned()
            }
            None => "501 5.5.4 Syntax: RCPT TO:<address>".to_owned(),
        }
    }

    fn record(&mut self, data: String) {
        let message = ReceivedMessage {
            mail_from: self.mail_from.take().unwrap_or_default(),
            rcpt_to: std::mem::take(&mut self.rcpt_to),
            data,
            authenticated_as: self.authenticated_as.clone(),
            over_tls: self.over_tls,
        };
        self.received.lock().unwrap().push(message);
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }
}

/// The address in `FROM:<address> PARAMETERS`.
fn path(argument: &str, prefix: &str) -> Option<String> {
    let rest = argument
        .get(..prefix.len())?
        .eq_ignore_ascii_case(prefix)
        .then(|| &argument[prefix.len()..])?;
    let (address, _) = rest.trim_start().strip_prefix('<')?.split_once('>')?;
    Some(address.to_owned())
}

async fn reply<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    text: &str,
) -> std::io::Result<()> {
    let stream = stream.get_mut();
    stream.write_all(format!("{text}\r\n").as_bytes()).await?;
    stream.flush().await
}

/// A line without its CRLF; `None` when the client hung up.
async fn read_line<S: AsyncRead + Unpin>(
    stream: &mut BufReader<S>,
) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    if stream.read_until(b'\n', &mut line).await? == 0 {
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&line);
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()))
}

/// Sends a 334 challenge (base64 of `prompt`) and decodes the answer.
async fn challenge<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
    prompt: &str,
) -> std::io::Result<String> {
    reply(stream, &format!("334 {}", BASE64.encode(prompt))).await?;
    Ok(read_line(stream)
        .await?
        .map(|line| decode(&line))
        .unwrap_or_default())
}

fn decode(base64: &str) -> String {
    let bytes = BASE64.decode(base64.trim()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The message up to the line with a single dot, with each line's leading dot unstuffed.
async fn read_data<S: AsyncRead + Unpin>(stream: &mut BufReader<S>) -> std::io::Result<String> {
    let mut data = String::new();
    while let Some(line) = read_line(stream).await? {
        if line == "." {
            break;
        }
        data.push_str(line.strip_prefix('.').unwrap_or(&line));
        data.push_str("\r\n");
    }
    Ok(data)
}
