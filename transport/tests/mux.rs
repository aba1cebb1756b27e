//! Requests and streams multiplexed over one connection, on an in-memory pipe.
#![allow(clippy::unwrap_used)] // Test helpers may panic on broken fixtures.

mod common;

use std::time::Duration;

use common::{Pattern, Req, Resp, drain, fast_config, pair, pattern_sum};
use tokio::io::AsyncReadExt;
use zferry_transport::{Side, TransportError};

#[tokio::test(start_paused = true)]
async fn many_concurrent_calls_each_get_their_answer() {
    let (client, _server, _) = pair(fast_config()).await;
    let calls = (0..100).map(|i| {
        let client = client.clone();
        async move {
            // Later calls answer sooner: answers arrive out of order.
            let slept = client.call(&Req::Sleep(100 - i)).await.unwrap();
            let echo = client.call(&Req::Echo(format!("call {i}"))).await.unwrap();
            (slept, echo)
        }
    });
    let results = futures_join_all(calls).await;
    for (i, (slept, echo)) in results.into_iter().enumerate() {
        assert_eq!(slept, Resp::Slept);
        assert_eq!(echo, Resp::Echo(format!("call {i}")));
    }
}

#[tokio::test(start_paused = true)]
async fn download_and_upload_streams_arrive_intact() {
    let (client, _server, _) = pair(fast_config()).await;
    let len = 5_000_000;
    let (resp, reader) = client
        .call_download(&Req::Download { len, fail_at: None })
        .await
        .unwrap();
    assert_eq!(resp, Resp::Download);
    let (got_len, got_sum) = drain(&mut reader.unwrap(), u64::MAX).await.unwrap();
    assert_eq!((got_len, got_sum), (len, pattern_sum(len)));

    let resp = client
        .call_upload(&Req::Upload, Pattern::new(len, None))
        .await
        .unwrap();
    assert_eq!(
        resp,
        Resp::Uploaded {
            len,
            sum: pattern_sum(len)
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_stream_does_not_block_other_requests() {
    let (client, _server, _) = pair(fast_config()).await;
    // Nobody reads this stream: its window fills and the server's pump waits for credit.
    let (_, stalled) = client
        .call_download(&Req::Download {
            len: 1 << 30,
            fail_at: None,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    for i in 0..10 {
        let echo = client.call(&Req::Echo(format!("{i}"))).await.unwrap();
        assert_eq!(echo, Resp::Echo(format!("{i}")));
    }
    // The connection stayed up for the 30 s thanks to heartbeats.
    assert_eq!(client.closed(), None);
    drop(stalled);
}

#[tokio::test(start_paused = true)]
async fn a_download_source_failing_midway_is_a_typed_error_at_the_client() {
    let (client, _server, _) = pair(fast_config()).await;
    let (_, reader) = client
        .call_download(&Req::Download {
            len: 1 << 20,
            fail_at: Some(300_000),
        })
        .await
        .unwrap();
    let err = drain(&mut reader.unwrap(), u64::MAX).await.unwrap_err();
    match TransportError::from_io(&err) {
        Some(TransportError::StreamReset {
            by: Side::Peer,
            reason,
        }) => assert!(reason.contains("zfs send exited with status 1"), "{reason}"),
        other => panic!("expected a reset by the peer, got {other:?} ({err})"),
    }
    // The connection survives a broken stream.
    assert_eq!(
        client.call(&Req::Echo("ok".to_owned())).await.unwrap(),
        Resp::Echo("ok".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn an_upload_source_failing_midway_is_a_typed_error_on_both_sides() {
    let (client, _server, service) = pair(fast_config()).await;
    let err = client
        .call_upload(&Req::Upload, Pattern::new(1 << 20, Some(500_000)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, TransportError::StreamReset { by: Side::Local, reason } if reason.contains("exited with status 1")),
        "{err:?}"
    );
    // The server's handler saw the reset as a typed error.
    for _ in 0..100 {
        if !service.upload_errors.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = service.upload_errors.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].starts_with("StreamReset { by: Peer"), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn a_server_that_stops_reading_answers_and_the_upload_stops() {
    let (client, _server, _) = pair(fast_config()).await;
    let resp = client
        .call_upload(&Req::UploadPrefix(1000), Pattern::new(1 << 30, None))
        .await
        .unwrap();
    assert!(matches!(resp, Resp::Uploaded { len: 1000, .. }), "{resp:?}");
    assert_eq!(
        client.call(&Req::Echo("after".to_owned())).await.unwrap(),
        Resp::Echo("after".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_download_reader_and_a_cancelled_call_leave_the_connection_usable() {
    let (client, _server, _) = pair(fast_config()).await;
    let (_, reader) = client
        .call_download(&Req::Download {
            len: 1 << 30,
            fail_at: None,
        })
        .await
        .unwrap();
    let mut reader = reader.unwrap();
    let mut buf = [0u8; 1000];
    reader.read_exact(&mut buf).await.unwrap();
    drop(reader);
    let cancelled = tokio::time::timeout(Duration::from_millis(10), client.call(&Req::Sleep(1000)));
    assert!(cancelled.await.is_err());
    assert_eq!(
        client.call(&Req::Echo("still".to_owned())).await.unwrap(),
        Resp::Echo("still".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn the_server_returns_ok_when_the_client_closes() {
    let (client, server, _) = pair(fast_config()).await;
    client.call(&Req::Echo("x".to_owned())).await.unwrap();
    drop(client);
    assert_eq!(server.await.unwrap(), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_server_going_away_fails_the_stream_in_flight() {
    let (a, b) = tokio::io::duplex(1 << 20);
    let service = std::sync::Arc::new(common::TestService::default());
    let server = tokio::spawn(zferry_transport::serve(b, service, fast_config()));
    let client: zferry_transport::Client<Req, Resp> =
        zferry_transport::Client::connect(a, fast_config())
            .await
            .unwrap();
    let (_, reader) = client
        .call_download(&Req::Download {
            len: 1 << 30,
            fail_at: None,
        })
        .await
        .unwrap();
    let mut reader = reader.unwrap();
    let mut buf = [0u8; 4096];
    reader.read_exact(&mut buf).await.unwrap();
    server.abort();
    let err = drain(&mut reader, u64::MAX).await.unwrap_err();
    assert!(TransportError::from_io(&err).is_some(), "untyped: {err}");
    let err = client.call(&Req::Echo("x".to_owned())).await.unwrap_err();
    assert!(client.closed().is_some(), "{err}");
}

async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let handles: Vec<_> = futures.map(Box::pin).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn copy_to_passes_chunks_on_and_reports_a_broken_stream() {
    let (client, _server, _) = pair(fast_config()).await;
    let len = 3_000_000;
    let (_, reader) = client
        .call_download(&Req::Download { len, fail_at: None })
        .await
        .unwrap();
    let mut got = Vec::new();
    let n = reader.unwrap().copy_to(&mut got).await.unwrap();
    assert_eq!(n, len);
    assert_eq!(
        drain(&mut &got[..], u64::MAX).await.unwrap(),
        (len, pattern_sum(len))
    );

    let (_, reader) = client
        .call_download(&Req::Download {
            len,
            fail_at: Some(1_000_000),
        })
        .await
        .unwrap();
    let err = reader
        .unwrap()
        .copy_to(&mut tokio::io::sink())
        .await
        .unwrap_err();
    assert!(
        matches!(
            TransportError::from_io(&err),
            Some(TransportError::StreamReset { by: Side::Peer, .. })
        ),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn streams_in_both_directions_share_one_connection() {
    let (client, _server, _) = pair(fast_config()).await;
    let len = 2_500_000;
    let downloads = (0..4u64).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            let (_, reader) = client
                .call_download(&Req::Download {
                    len: len + i,
                    fail_at: None,
                })
                .await
                .unwrap();
            drain(&mut reader.unwrap(), u64::MAX).await.unwrap()
        })
    });
    let downloads: Vec<_> = downloads.collect();
    let uploads: Vec<_> = (0..2u64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .call_upload(&Req::Upload, Pattern::new(len + i, None))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for (i, d) in downloads.into_iter().enumerate() {
        let n = len + i as u64;
        assert_eq!(d.await.unwrap(), (n, pattern_sum(n)));
    }
    for (i, u) in uploads.into_iter().enumerate() {
        let n = len + i as u64;
        assert_eq!(
            u.await.unwrap(),
            Resp::Uploaded {
                len: n,
                sum: pattern_sum(n)
            }
        );
    }
}
