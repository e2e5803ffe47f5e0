//! Opening the session up to the point lettre takes over: the greeting and, for STARTTLS, the
//! plaintext EHLO, STARTTLS and the handshake. lettre's `AsyncSmtpConnection` reads the greeting
//! and the STARTTLS reply without returning them, so these are read here to be reported; lettre
//! then gets the connection with the greeting replayed, and goes on with its EHLO.

use std::{
    fmt::Debug,
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use lettre::transport::smtp::{
    client::{AsyncSmtpConnection, AsyncTokioStream},
    commands::{Ehlo, Starttls},
    extension::{ClientId, Extension, ServerInfo},
    response::Response,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::client::TlsStream;

use super::{
    StageName,
    failure::{Failure, FailureKind},
    reply::{read_reply, reply_text},
    tls::TlsClient,
    within,
};

/// A connection on which the server's greeting has been read.
pub(super) struct Greeted<S> {
    reader: BufReader<S>,
    peer: SocketAddr,
    /// The name we give in EHLO.
    hello: ClientId,
    /// The greeting as received, for lettre to read again.
    raw_greeting: Vec<u8>,
    /// "220 mail.example.com ESMTP"
    pub(super) greeting: String,
}

/// Reads the greeting; a server that refuses the session says so here (554, 421).
pub(super) async fn read_greeting<S: AsyncRead + Unpin>(
    stream: S,
    peer: SocketAddr,
    hello: ClientId,
    timeout: Duration,
) -> Result<Greeted<S>, Failure> {
    let mut reader = BufReader::new(stream);
    let mut raw_greeting = Vec::new();
    let greeting = within(
        timeout,
        "waiting for the server's greeting",
        read_reply(&mut reader, &mut raw_greeting),
    )
    .await?;
    Ok(Greeted {
        reader,
        peer,
        hello,
        raw_greeting,
        greeting: positive(greeting)?,
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin> Greeted<S> {
    /// Sends one command we speak ourselves, and reads its reply.
    async fn exchange(
        &mut self,
        command: impl ToString,
        waiting_for: &str,
        timeout: Duration,
    ) -> Result<Response, Failure> {
        within(timeout, waiting_for, async {
            let stream = self.reader.get_mut();
            stream
                .write_all(command.to_string().as_bytes())
                .await
                .map_err(|error| Failure::io(&error))?;
            stream.flush().await.map_err(|error| Failure::io(&error))?;
            read_reply(&mut self.reader, &mut Vec::new()).await
        })
        .await
    }
}

impl<S> Greeted<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + Debug + 'static,
{
    /// Hands the connection to lettre, which reads the greeting again and says EHLO.
    pub(super) async fn into_session(
        self,
        timeout: Duration,
    ) -> Result<AsyncSmtpConnection, Failure> {
        let mut replay = self.raw_greeting;
        replay.extend_from_slice(self.reader.buffer());
        let stream = Rewound {
            replay,
            replayed: 0,
            inner: self.reader.into_inner(),
            peer: self.peer,
        };
        within(timeout, "to EHLO", async {
            AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                .await
                .map_err(|error| Failure::smtp(StageName::Connect, &error))
        })
        .await
    }
}

impl Greeted<TcpStream> {
    /// EHLO, STARTTLS and the handshake. Returns the secured connection and what the server and
    /// the handshake said.
    pub(super) async fn start_tls(
        mut self,
        tls: &TlsClient,
        timeout: Duration,
    ) -> Result<(Greeted<TlsStream<TcpStream>>, String), Failure> {
        let ehlo = self
            .exchange(Ehlo::new(self.hello.clone()), "to EHLO", timeout)
            .await?;
        let offers_starttls = ServerInfo::from_response(&ehlo)
            .is_ok_and(|info| info.supports_feature(Extension::StartTls));
        let ehlo_text = positive(ehlo)?;
        if !offers_starttls {
            return Err(Failure::new(
                FailureKind::TlsNotOffered,
                format!("STARTTLS is not among the server's extensions: {ehlo_text}"),
            ));
        }
        let ready = self
            .exchange(Starttls, "to STARTTLS", timeout)
            .await
            .and_then(positive)?;
        // Bytes already waiting were sent in the clear, perhaps injected by a man in the
        // middle, and would be read as if they came over TLS: refuse them.
        if !self.reader.buffer().is_empty() {
            return Err(Failure::new(
                FailureKind::ProtocolError,
                "the server sent data after accepting STARTTLS",
            ));
        }
        let (stream, handshake) = tls.handshake(self.reader.into_inner(), timeout).await?;
        // After STARTTLS the server sends no new greeting (RFC 3207 §4.2), but lettre reads one
        // before its EHLO: it gets the one from the start of the connection again.
        let secured = Greeted {
            reader: BufReader::new(stream),
            peer: self.peer,
            hello: self.hello,
            raw_greeting: self.raw_greeting,
            greeting: self.greeting,
        };
        Ok((secured, format!("{ready}; {handshake}")))
    }
}

/// The reply's text when it is positive, else the refusal.
fn positive(reply: Response) -> Result<String, Failure> {
    let text = reply_text(&reply);
    if reply.is_positive() {
        Ok(text)
    } else {
        Err(Failure::refused(
            StageName::Connect,
            reply.code().into(),
            text,
        ))
    }
}

/// The connection as lettre gets it: `replay` (the greeting) is read first, then the stream.
#[derive(Debug)]
struct Rewound<S> {
    replay: Vec<u8>,
    replayed: usize,
    inner: S,
    peer: SocketAddr,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let rest = &this.replay[this.replayed..];
        if rest.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let count = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..count]);
        this.replayed += count;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S> AsyncTokioStream for Rewound<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + Sync + Debug,
{
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}
