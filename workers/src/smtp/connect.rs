//! Resolving the host and opening the TCP connection, telling apart the failures a user fixes
//! differently: a wrong name, nothing listening, or no answer at all.

use std::{io, net::SocketAddr, time::Duration};

use lettre::transport::smtp::extension::ClientId;
use tokio::net::{TcpStream, lookup_host};

use super::{
    failure::{Failure, FailureKind},
    within,
};

/// Connects to the first of the host's addresses that accepts, each attempt bounded by
/// `timeout`; returns the stream and the address it reached.
pub(super) async fn connect(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), Failure> {
    let addresses: Vec<SocketAddr> = within(timeout, "while resolving the host name", async {
        lookup_host((host, port))
            .await
            .map(Iterator::collect)
            .map_err(|error| Failure::new(FailureKind::NameNotResolved, error.to_string()))
    })
    .await?;
    let mut last_failure = Failure::new(FailureKind::NameNotResolved, "the name has no address");
    for address in addresses {
        let attempt = within(timeout, "while connecting", async {
            TcpStream::connect(address)
                .await
                .map_err(|error| refused_or_failed(address, &error))
        })
        .await;
        match attempt {
            Ok(stream) => return Ok((stream, address)),
            Err(failure) => last_failure = failure,
        }
    }
    Err(last_failure)
}

fn refused_or_failed(address: SocketAddr, error: &io::Error) -> Failure {
    let kind = match error.kind() {
        io::ErrorKind::ConnectionRefused => FailureKind::ConnectionRefused,
        _ => FailureKind::ConnectionFailed,
    };
    Failure::new(kind, format!("connecting to {address}: {error}"))
}

/// The name we give in EHLO: our address on this connection, as an address literal. RFC 5321
/// §4.1.4 asks for it when the client has no meaningful host name, which is the usual case for
/// a service in a container (and a bare container name can be refused as not fully qualified).
pub(super) fn hello_name(stream: &TcpStream) -> ClientId {
    match stream.local_addr().map(|address| address.ip()) {
        Ok(std::net::IpAddr::V4(ip)) => ClientId::Ipv4(ip),
        Ok(std::net::IpAddr::V6(ip)) => ClientId::Ipv6(ip),
        Err(_) => ClientId::default(),
    }
}
