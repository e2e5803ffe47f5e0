//! Reading and showing SMTP replies.

use lettre::transport::smtp::response::Response;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

use super::failure::{Failure, FailureKind};
use crate::outbound::excerpt;

/// The most a reply may take, as lettre allows (Postfix's `smtp_response_limit`): a server
/// cannot fill our memory.
const MAX_REPLY_BYTES: usize = 100_000;

/// Reads one reply, all its lines, appending the bytes as received to `raw`.
pub(super) async fn read_reply<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    raw: &mut Vec<u8>,
) -> Result<Response, Failure> {
    let start = raw.len();
    loop {
        let budget = MAX_REPLY_BYTES.saturating_sub(raw.len() - start);
        if budget == 0 {
            return Err(Failure::new(
                FailureKind::ProtocolError,
                "the server's reply is too long",
            ));
        }
        let line_start = raw.len();
        let read = (&mut *reader)
            .take(budget as u64)
            .read_until(b'\n', raw)
            .await
            .map_err(|error| Failure::io(&error))?;
        if read == 0 {
            return Err(Failure::closed());
        }
        // Every line but the last has a dash after its code ("250-STARTTLS"); an unfinished
        // line (over the budget) is read on.
        let line = &raw[line_start..];
        if line.ends_with(b"\n") && line.get(3) != Some(&b'-') {
            let text = String::from_utf8_lossy(&raw[start..]);
            return text.parse().map_err(|_| {
                Failure::new(
                    FailureKind::ProtocolError,
                    format!("unexpected reply: {}", excerpt(&text)),
                )
            });
        }
    }
}

/// "250 2.1.0 Ok": the code and the text, lines joined by spaces, as an [`excerpt`].
pub(super) fn reply_text(reply: &Response) -> String {
    let text: Vec<&str> = reply.message().collect();
    excerpt(&format!("{} {}", reply.code(), text.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> Result<(String, Vec<u8>), Failure> {
        let mut raw = Vec::new();
        let reply = read_reply(&mut &bytes[..], &mut raw).await?;
        Ok((reply_text(&reply), raw))
    }

    #[tokio::test]
    async fn reads_every_line_of_a_reply_and_no_further() {
        let (text, raw) = read(b"250-mail.example.com\r\n250 STARTTLS\r\n220 next\r\n")
            .await
            .unwrap();
        assert_eq!(text, "250 mail.example.com STARTTLS");
        assert_eq!(raw, b"250-mail.example.com\r\n250 STARTTLS\r\n");
    }

    #[tokio::test]
    async fn a_closed_connection_or_a_foreign_protocol_is_a_failure() {
        let closed = read(b"220-still greeting\r\n").await.unwrap_err();
        assert_eq!(closed.kind, FailureKind::ConnectionFailed);
        let http = read(b"HTTP/1.1 400 Bad Request\r\n").await.unwrap_err();
        assert_eq!(http.kind, FailureKind::ProtocolError);
        assert_eq!(http.detail, "unexpected reply: HTTP/1.1 400 Bad Request");
    }
}
