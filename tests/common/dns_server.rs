//! A DNS server on loopback that answers the names a test gives it and NXDOMAIN for every
//! other, so that tests resolve names without asking the machine's name server.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{
        RData, Record, RecordType,
        rdata::{A, AAAA},
    },
};
use tokio::net::UdpSocket;

pub struct DnsServer {
    /// What to give the service as its name server.
    pub address: SocketAddr,
    names: Arc<Mutex<HashMap<String, Vec<IpAddr>>>>,
}

impl DnsServer {
    pub async fn start() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let names = Arc::new(Mutex::new(HashMap::new()));
        let known = names.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0; 4096];
            while let Ok((length, client)) = socket.recv_from(&mut buffer).await {
                let Ok(query) = Message::from_vec(&buffer[..length]) else {
                    continue;
                };
                let answer = answer(&query, &known.lock().unwrap());
                let _ = socket.send_to(&answer.to_vec().unwrap(), client).await;
            }
        });
        Self { address, names }
    }

    /// From now on, `name` resolves to `addresses` (A and AAAA records), in that order.
    pub fn resolve(&self, name: &str, addresses: &[&str]) {
        let addresses = addresses.iter().map(|a| a.parse().unwrap()).collect();
        self.names
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), addresses);
    }
}

fn answer(query: &Message, names: &HashMap<String, Vec<IpAddr>>) -> Message {
    let mut answer = Message::new();
    answer
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true);
    for question in query.queries() {
        answer.add_query(question.clone());
        let name = question
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let Some(addresses) = names.get(&name) else {
            answer.set_response_code(ResponseCode::NXDomain);
            continue;
        };
        for address in addresses {
            let data = match (question.query_type(), address) {
                (RecordType::A, IpAddr::V4(v4)) => RData::A(A(*v4)),
                (RecordType::AAAA, IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
                _ => continue,
            };
            answer.add_answer(Record::from_rdata(question.name().clone(), 60, data));
        }
    }
    answer
}
