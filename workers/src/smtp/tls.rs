//! TLS for both implicit TLS and STARTTLS, with one configuration: certificates are always
//! verified against the public roots (webpki-roots), plus an optional private root.

use std::{io, sync::Arc, time::Duration};

use rustls::{
    CertificateError, ClientConfig, ProtocolVersion, RootCertStore,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::{
    failure::{Failure, FailureKind},
    within,
};

/// How to secure a connection to one host.
pub(super) struct TlsClient {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl TlsClient {
    /// `extra_root`: a PEM or DER certificate to trust besides the public roots.
    pub(super) fn new(host: &str, extra_root: Option<&[u8]>) -> Result<Self, Failure> {
        let server_name = ServerName::try_from(host.to_owned()).map_err(|_| {
            invalid(format!(
                "The SMTP host \"{host}\" is not a name or address a TLS certificate can be \
                 checked against: check the host"
            ))
        })?;
        let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for certificate in extra_root
            .map(parse_certificates)
            .transpose()?
            .unwrap_or_default()
        {
            roots.add(certificate).map_err(|error| {
                invalid(format!(
                    "The extra root certificate cannot be used: {error}"
                ))
            })?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| invalid(format!("TLS cannot be set up: {error}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// Runs the handshake; on success, says what was negotiated and verified.
    pub(super) async fn handshake(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> Result<(TlsStream<TcpStream>, String), Failure> {
        let stream = within(timeout, "during the TLS handshake", async {
            self.connector
                .connect(self.server_name.clone(), stream)
                .await
                .map_err(|error| handshake_failure(&error))
        })
        .await?;
        let description = self.describe(&stream);
        Ok((stream, description))
    }

    /// "TLS 1.3 (TLS13_AES_256_GCM_SHA384), certificate verified for smtp.example.com"
    fn describe(&self, stream: &TlsStream<TcpStream>) -> String {
        let (_, connection) = stream.get_ref();
        let version = match connection.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLS 1.3".to_owned(),
            Some(ProtocolVersion::TLSv1_2) => "TLS 1.2".to_owned(),
            other => format!("{other:?}"),
        };
        let suite = connection
            .negotiated_cipher_suite()
            .map(|suite| format!(" ({:?})", suite.suite()))
            .unwrap_or_default();
        let host = self.server_name.to_str();
        format!("{version}{suite}, certificate verified for {host}")
    }
}

fn parse_certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, Failure> {
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(vec![CertificateDer::from(bytes.to_vec())]);
    }
    CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            invalid(format!(
                "The extra root certificate is not a valid PEM certificate: {error}"
            ))
        })
}

fn invalid(message: String) -> Failure {
    Failure::new(FailureKind::InvalidSettings, message)
}

/// Says why the handshake failed, in words first and rustls's own after them.
fn handshake_failure(error: &io::Error) -> Failure {
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let detail = match rustls_error {
        Some(rustls::Error::InvalidCertificate(reason)) => {
            format!("{} ({error})", certificate_problem(reason))
        }
        Some(rustls::Error::InvalidMessage(_)) => format!(
            "the server did not answer in TLS; it may expect STARTTLS or plain SMTP on this \
             port ({error})"
        ),
        Some(_) => error.to_string(),
        None if error.kind() == io::ErrorKind::UnexpectedEof => {
            "the server closed the connection during the handshake".to_owned()
        }
        None => error.to_string(),
    };
    Failure::new(FailureKind::TlsHandshake, detail)
}

fn certificate_problem(reason: &CertificateError) -> &'static str {
    match reason {
        CertificateError::UnknownIssuer => {
            "the server's certificate is not signed by a trusted authority"
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "the server's certificate is for another host name"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "the server's certificate has expired"
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet (check the clocks)"
        }
        _ => "the server's certificate was not accepted",
    }
}
