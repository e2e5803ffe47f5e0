//! A TCP listener that only counts the connections it gets: where a test proves that the
//! service did not connect.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::net::TcpListener;

pub struct CountingListener {
    pub address: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl CountingListener {
    /// Listens on `address` (port 0: any free port); closes each connection at once.
    pub async fn bind(address: &str) -> Self {
        let listener = TcpListener::bind(address).await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while listener.accept().await.is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        Self { address, accepted }
    }

    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}
