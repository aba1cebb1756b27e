//! The transport over turmoil's simulated TCP: the same code as on real sockets, and a
//! network partition detected by the heartbeat deadline rather than hanging the simulation.
#![allow(clippy::unwrap_used)] // Test helpers may panic on broken fixtures.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Req, Resp, TestService, fast_config};
use zferry_transport::{Client, serve};

const PORT: u16 = 9000;

fn sim() -> turmoil::Sim<'static> {
    let mut sim = turmoil::Builder::new()
        .rng_seed(7)
        .simulation_duration(Duration::from_secs(60))
        .tick_duration(Duration::from_millis(10))
        .build();
    sim.host("server", || async {
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            tokio::spawn(serve(
                stream,
                Arc::new(TestService::default()),
                fast_config(),
            ));
        }
    });
    sim
}

#[test]
fn calls_and_streams_run_over_simulated_tcp() {
    let mut sim = sim();
    sim.client("client", async {
        let stream = turmoil::net::TcpStream::connect(("server", PORT)).await?;
        let client: Client<Req, Resp> = Client::connect(stream, fast_config()).await?;
        let (_, reader) = client
            .call_download(&Req::Download {
                len: 300_000,
                fail_at: None,
            })
            .await?;
        let got = common::drain(&mut reader.unwrap(), u64::MAX).await?;
        assert_eq!(got, (300_000, common::pattern_sum(300_000)));
        let echo = client.call(&Req::Echo("sim".to_owned())).await?;
        assert_eq!(echo, Resp::Echo("sim".to_owned()));
        Ok(())
    });
    sim.run().unwrap();
}

#[test]
fn a_partition_is_a_timeout_within_the_peer_deadline() {
    let mut sim = sim();
    sim.client("client", async {
        let stream = turmoil::net::TcpStream::connect(("server", PORT)).await?;
        let client: Client<Req, Resp> = Client::connect(stream, fast_config()).await?;
        client.call(&Req::Echo("before".to_owned())).await?;
        turmoil::partition("client", "server");
        let start = tokio::time::Instant::now();
        let err = client.call(&Req::Sleep(1)).await.unwrap_err();
        let waited = start.elapsed();
        assert!(err.is_timeout(), "{err}");
        // Silence is noticed within the deadline (plus turmoil's tick).
        assert!(
            waited <= fast_config().peer_timeout + Duration::from_millis(100),
            "{waited:?}"
        );
        Ok(())
    });
    sim.run().unwrap();
}
