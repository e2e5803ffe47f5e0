//! Opening the TCP connection through the outbound policy, telling apart the failures a user
//! fixes differently: a wrong name, an address the service may not connect to, nothing
//! listening, or no answer at all.

use std::{io, net::SocketAddr, time::Duration};

use lettre::transport::smtp::extension::ClientId;
use tokio::net::TcpStream;

use super::failure::{Failure, FailureKind};
use crate::outbound::{Outbound, OutboundError};

/// Connects to the first of the host's allowed addresses that accepts, each step bounded by
/// `timeout`; returns the stream and the address it reached.
pub(super) async fn connect(
    outbound: &Outbound,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), Failure> {
    outbound
        .connect_tcp(host, port, timeout)
        .await
        .map_err(|error| match error {
            OutboundError::NotResolved { reason, .. } => {
                Failure::new(FailureKind::NameNotResolved, reason)
            }
            OutboundError::NotAllowed { .. } => {
                Failure::new(FailureKind::AddressNotAllowed, error.to_string())
            }
            OutboundError::TimedOut { .. } => Failure::new(FailureKind::Timeout, error.to_string()),
            OutboundError::Connect { address, error } => refused_or_failed(address, &error),
        })
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
