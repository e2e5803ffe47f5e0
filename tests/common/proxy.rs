//! A reverse proxy on loopback, as a load balancer in front of the service would be: it
//! listens on 127.0.0.1, reaches the service from 127.0.0.2 (the address to trust), appends
//! the client's address to `X-Forwarded-For`, rewrites `Host` to the service's own address
//! and says that the client asked for `https://console.example.com`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::{
    Router,
    body::{Bytes, to_bytes},
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use tokio::net::TcpListener;

/// The address the proxy's connections to the service come from.
pub const PROXY_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// The public side of the proxy, as browsers see it.
pub const PUBLIC_HOST: &str = "console.example.com";

#[derive(Clone)]
struct Upstream {
    base: String,
    client: reqwest::Client,
}

/// Starts the proxy in front of the service at `upstream` (`http://host:port`); answers the
/// proxy's own base URL.
pub async fn start(upstream: &str) -> String {
    let upstream = Upstream {
        base: upstream.to_owned(),
        client: reqwest::Client::builder()
            .local_address(PROXY_ADDRESS)
            .build()
            .unwrap(),
    };
    let app = Router::new().fallback(forward).with_state(upstream);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    format!("http://{address}")
}

async fn forward(
    State(upstream): State<Upstream>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = to_bytes(body, usize::MAX).await.unwrap();
    let mut headers = parts.headers;
    headers.remove(header::HOST);
    let forwarded_for = match headers.get("x-forwarded-for") {
        Some(earlier) => format!("{}, {}", earlier.to_str().unwrap(), peer.ip()),
        None => peer.ip().to_string(),
    };
    headers.insert("x-forwarded-for", forwarded_for.parse().unwrap());
    headers.insert("x-forwarded-host", HeaderValue::from_static(PUBLIC_HOST));
    headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let answer = upstream
        .client
        .request(parts.method, format!("{}{path}", upstream.base))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let mut headers = answer.headers().clone();
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::CONNECTION);
    let body = answer.bytes().await.unwrap();
    (status, headers, body).into_response()
}

/// A client whose connections come from `address` (a loopback address of its own), so the
/// proxy sees each such client as a different one.
pub fn client_from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}
