//! The TCP transport on loopback, with real sockets and real time (each test takes
//! milliseconds).
#![allow(clippy::unwrap_used)] // Test helpers may panic on broken fixtures.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Req, Resp, TestService, fast_config};
use zferry_transport::tcp::{AcceptError, ClientMap, TcpServer, connect};
use zferry_transport::{Client, TransportError, serve};

fn clients(entries: &[(&str, &str)]) -> ClientMap {
    let map: BTreeMap<String, String> = entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ClientMap::parse(&map).unwrap()
}

#[tokio::test]
async fn a_mapped_client_is_named_and_served() {
    let server = TcpServer::bind("127.0.0.1:0", clients(&[("127.0.0.0/8", "local-*")]))
        .await
        .unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let serving = tokio::spawn(async move {
        let (stream, identity) = server.accept().await.unwrap();
        assert_eq!(identity.as_str(), "local-127.0.0.1");
        serve(stream, Arc::new(TestService::default()), fast_config()).await
    });
    let stream = connect(&addr, Duration::from_secs(5)).await.unwrap();
    let client: Client<Req, Resp> = Client::connect(stream, fast_config()).await.unwrap();
    let len = 3_000_000;
    let (_, reader) = client
        .call_download(&Req::Download { len, fail_at: None })
        .await
        .unwrap();
    let got = common::drain(&mut reader.unwrap(), u64::MAX).await.unwrap();
    assert_eq!(got, (len, common::pattern_sum(len)));
    drop(client);
    assert_eq!(serving.await.unwrap(), Ok(()));
}

#[tokio::test]
async fn an_unmapped_client_is_refused() {
    let server = TcpServer::bind("127.0.0.1:0", clients(&[("10.0.0.1", "elsewhere")]))
        .await
        .unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let accepting = tokio::spawn(async move { server.accept().await.map(|(_, id)| id) });
    let stream = connect(&addr, Duration::from_secs(5)).await.unwrap();
    let refused = accepting.await.unwrap().unwrap_err();
    assert!(matches!(refused, AcceptError::Refused(_)), "{refused}");
    assert!(
        refused.to_string().contains("127.0.0.1 refused"),
        "{refused}"
    );
    // The client sees the connection close during the handshake.
    let err = Client::<Req, Resp>::connect(stream, fast_config())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::ConnectionClosed | TransportError::Io { .. }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn dialing_a_closed_port_fails_with_the_address() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let err = connect(&addr, Duration::from_secs(5)).await.unwrap_err();
    assert!(
        matches!(err, TransportError::Io { op: "dial", .. }),
        "{err}"
    );
}
