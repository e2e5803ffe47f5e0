//! A mail server that accepts every message and keeps only a count: just enough SMTP for the
//! send path to deliver to, so `bench jobs` measures the jobs and not a mail server.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// A client line longer than this ends the session: nothing the send path says comes close.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Listens on a loopback port until dropped.
pub struct SmtpSink {
    address: SocketAddr,
    received: Arc<AtomicUsize>,
    acceptor: JoinHandle<()>,
}

impl SmtpSink {
    /// The address it listens on (a port is chosen at start).
    pub const ADDRESS: &str = "127.0.0.1";

    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind((Self::ADDRESS, 0)).await?;
        let address = listener.local_addr()?;
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        let acceptor = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    if let Err(error) = session(stream, &counter).await {
                        tracing::warn!(%error, "bench SMTP sink: session ended abnormally");
                    }
                });
            }
        });
        Ok(Self {
            address,
            received,
            acceptor,
        })
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Messages accepted so far (each answered 250 after its final ".").
    pub fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn session(stream: TcpStream, received: &AtomicUsize) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    reply(&mut stream, "220 localhost ESMTP bench sink").await?;
    let mut line = Vec::new();
    while read_line(&mut stream, &mut line).await? {
        let verb = line.split(|&byte| byte == b' ').next().unwrap_or_default();
        let answer = match verb.to_ascii_uppercase().as_slice() {
            b"EHLO" => "250-localhost\r\n250 8BITMIME",
            b"HELO" => "250 localhost",
            b"MAIL" | b"RCPT" | b"RSET" | b"NOOP" => "250 2.0.0 Ok",
            b"DATA" => {
                reply(&mut stream, "354 End data with <CR><LF>.<CR><LF>").await?;
                loop {
                    if !read_line(&mut stream, &mut line).await? {
                        return Ok(());
                    }
                    if line == b"." {
                        break;
                    }
                }
                received.fetch_add(1, Ordering::SeqCst);
                "250 2.0.0 Ok: queued"
            }
            b"QUIT" => {
                reply(&mut stream, "221 2.0.0 Bye").await?;
                return Ok(());
            }
            _ => "502 5.5.2 Command not recognized",
        };
        reply(&mut stream, answer).await?;
    }
    Ok(())
}

/// Reads one line into `line` without its line ending; false at the end of the stream.
async fn read_line(stream: &mut BufReader<TcpStream>, line: &mut Vec<u8>) -> std::io::Result<bool> {
    line.clear();
    let read = (&mut *stream)
        .take(MAX_LINE_BYTES as u64)
        .read_until(b'\n', line)
        .await?;
    if read == MAX_LINE_BYTES && line.last() != Some(&b'\n') {
        return Err(std::io::Error::other("line too long"));
    }
    while matches!(line.last(), Some(b'\r' | b'\n')) {
        line.pop();
    }
    Ok(read > 0)
}

async fn reply(stream: &mut (impl AsyncWrite + Unpin), text: &str) -> std::io::Result<()> {
    stream.write_all(format!("{text}\r\n").as_bytes()).await?;
    stream.flush().await
}
