//! Handshake refusals, hostile input and silent peers: each ends in a typed error and a closed
//! connection, never a panic, a hang or an unbounded allocation.
#![allow(clippy::unwrap_used)] // Test helpers may panic on broken fixtures.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Req, Resp, TestService, fast_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use zferry_transport::wire::{Direction, HELLO_LEN_BYTES, Header, encode_head, hello, hello_for};
use zferry_transport::{Client, TransportError, serve};

/// A raw peer that has sent its greeting and read ours.
async fn raw_peer(mut raw: DuplexStream, greeting: [u8; HELLO_LEN_BYTES]) -> DuplexStream {
    raw.write_all(&greeting).await.unwrap();
    let mut theirs = [0u8; HELLO_LEN_BYTES];
    raw.read_exact(&mut theirs).await.unwrap();
    raw
}

fn frame(header: &Header, payload: &[u8]) -> Vec<u8> {
    let mut out = encode_head(header, payload.len()).to_vec();
    out.extend_from_slice(payload);
    out
}

/// Sends `bytes` after the handshake to a server; checks its error and that it closed the
/// connection (the raw peer reads to EOF).
async fn check_server_refuses(bytes: Vec<u8>, expected: &str) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(serve(b, Arc::new(TestService::default()), fast_config()));
    let mut raw = raw_peer(a, hello()).await;
    raw.write_all(&bytes).await.unwrap();
    raw.shutdown().await.unwrap();
    let err = server.await.unwrap().unwrap_err();
    assert!(
        err.to_string().contains(expected),
        "expected `{expected}`, got: {err}"
    );
    // Whatever the server said last, it then closed.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut rest))
        .await
        .expect("the server did not close the connection")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn hostile_frames_close_the_connection() {
    let request = |id| Header::Request {
        id,
        upload: true,
        download: false,
    };
    let echo = postcard::to_stdvec(&Req::Echo("x".to_owned())).unwrap();
    // A handler that holds its upload without reading it.
    let sleep = postcard::to_stdvec(&Req::Sleep(60_000)).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // A declared length of 4 GiB: refused before anything is allocated for it.
        (
            vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3],
            "declared length exceeds",
        ),
        // Length 100, 10 bytes, then the end.
        (
            [&[0, 0, 0, 100][..], &[0u8; 10][..]].concat(),
            "truncated frame",
        ),
        // An unknown message type.
        (vec![0, 0, 0, 1, 200], "undecodable frame header"),
        // Garbage.
        (b"\0\0\0\x05hello".to_vec(), "undecodable frame header"),
        // A heartbeat with a payload.
        (frame(&Header::Heartbeat, b"junk"), "unexpected payload"),
        // A request whose body is not a request.
        (
            frame(
                &Header::Request {
                    id: 1,
                    upload: false,
                    download: false,
                },
                &[250, 250, 250],
            ),
            "undecodable message body",
        ),
        // A response sent to a server.
        (
            frame(
                &Header::Response {
                    id: 1,
                    download: false,
                },
                &[],
            ),
            "response 1 sent to a server",
        ),
        // The same request ID twice.
        (
            [frame(&request(1), &echo), frame(&request(1), &echo)].concat(),
            "request ID 1 is already in use",
        ),
        // More data than the credit granted (the fast config's window is 1 MiB).
        (
            [
                frame(&request(1), &sleep),
                (0..5)
                    .flat_map(|_| {
                        frame(
                            &Header::Data {
                                id: 1,
                                dir: Direction::Upload,
                            },
                            &[7u8; 256 << 10],
                        )
                    })
                    .collect(),
            ]
            .concat(),
            "exceed its remaining credit of 0 bytes",
        ),
        // Data flowing the wrong way.
        (
            frame(
                &Header::Data {
                    id: 1,
                    dir: Direction::Download,
                },
                b"x",
            ),
            "in the wrong direction",
        ),
    ];
    for (bytes, expected) in cases {
        check_server_refuses(bytes, expected).await;
    }
}

#[tokio::test(start_paused = true)]
async fn excessive_credit_closes_the_connection_at_the_client() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let client_side = tokio::spawn(async move {
        let client: Client<Req, Resp> = Client::connect(a, fast_config()).await.unwrap();
        let err = client
            .call_upload(&Req::Upload, common::Pattern::new(1 << 20, None))
            .await
            .unwrap_err();
        err.to_string()
    });
    let mut raw = raw_peer(b, hello()).await;
    let credit = frame(
        &Header::Credit {
            id: 1,
            dir: Direction::Upload,
            bytes: u32::MAX,
        },
        b"",
    );
    raw.write_all(&credit).await.unwrap();
    raw.write_all(&credit).await.unwrap();
    let err = client_side.await.unwrap();
    assert!(err.contains("credit for stream 1 exceeds"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_version_mismatch_is_explained_on_both_sides() {
    // This client against an old server.
    let (a, b) = tokio::io::duplex(1 << 16);
    let old_server = tokio::spawn(raw_peer(b, hello_for(0)));
    let err = Client::<Req, Resp>::connect(a, fast_config())
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Handshake(_)));
    assert!(
        err.to_string()
            .contains("this side speaks ZFERRY-TRANSPORT version 1, the peer version 0"),
        "{err}"
    );
    drop(old_server);

    // This server against a newer client.
    let (a, b) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(serve(b, Arc::new(TestService::default()), fast_config()));
    let _raw = raw_peer(a, hello_for(2)).await;
    let err = server.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("the peer version 2"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_is_not_zferry_is_named_as_such() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(serve(b, Arc::new(TestService::default()), fast_config()));
    let mut http = [b' '; HELLO_LEN_BYTES];
    http[..16].copy_from_slice(b"GET / HTTP/1.1\r\n");
    let _raw = raw_peer(a, http).await;
    let err = server.await.unwrap().unwrap_err();
    assert!(
        err.to_string().contains("not a zferry transport endpoint"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_greets_times_out() {
    let (a, _b) = tokio::io::duplex(1 << 16);
    let start = tokio::time::Instant::now();
    let err = Client::<Req, Resp>::connect(a, fast_config())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Timeout {
                what: "handshake",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(start.elapsed(), fast_config().handshake_timeout);
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_detected_within_the_peer_timeout() {
    let (a, b) = tokio::io::duplex(1 << 16);
    // The peer greets, then says nothing: no heartbeats, no answer.
    let _raw = tokio::spawn(async move {
        let raw = raw_peer(b, hello()).await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(raw);
    });
    let client: Client<Req, Resp> = Client::connect(a, fast_config()).await.unwrap();
    let start = tokio::time::Instant::now();
    let err = client
        .call(&Req::Echo("anyone?".to_owned()))
        .await
        .unwrap_err();
    let waited = start.elapsed();
    assert!(err.is_timeout(), "{err}");
    assert!(
        waited <= fast_config().peer_timeout + Duration::from_millis(10),
        "{waited:?}"
    );
    assert_eq!(
        zferry_core::error_class::Classify::class(&err),
        zferry_core::error_class::ErrorClass::CONNECTIVITY
    );
}
