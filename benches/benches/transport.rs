//! Transport throughput and latency on loopback.
//!
//! - `copy_*`: one send stream of `ZFERRY_BENCH_TRANSPORT_BYTES` (default 2 GiB) from memory
//!   to a reader that discards it, through the transport (`call_download`, as `zfs send` data
//!   travels) and, for comparison in the same run, as a plain tokio copy of the same bytes over
//!   a bare socket; both over TCP and over TLS.
//! - `echo_*`: the latency of a small request on an idle connection and while a large stream
//!   runs on the same connection.
//!
//! - `paired`: plain and transport copies alternated round by round, printed as medians and
//!   ratios (robust against the load of a shared machine changing between benchmarks).
//!
//! Run with `cargo bench -p zferry-benches --bench transport`; for a quick run set
//! `ZFERRY_BENCH_TRANSPORT_BYTES=268435456` (256 MiB) and `ZFERRY_BENCH_TRANSPORT_ROUNDS=3`;
//! `ZFERRY_BENCH_TRANSPORT_PAIRED=0` skips the paired comparison.
#![allow(clippy::unwrap_used)] // A benchmark that cannot set up should stop loudly.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use zferry_transport::tls::{Pem, TlsClient, TlsServer};
use zferry_transport::{ByteReader, Client, Config, Reply, Service, serve};

/// The default stream size.
const STREAM_BYTES_DEFAULT: u64 = 2 << 30;

/// The buffer of the plain copy's reads and writes, and of every reader (the transport's data
/// chunk size, so that both sides of the comparison move the same chunk sizes).
const COPY_BUFFER_BYTES: usize = 256 << 10;

/// Samples per throughput benchmark (criterion's minimum).
const THROUGHPUT_SAMPLES: usize = 10;

/// Rounds of the paired comparison (`ZFERRY_BENCH_TRANSPORT_ROUNDS`).
const PAIRED_ROUNDS_DEFAULT: usize = 7;

#[derive(Debug, Serialize, Deserialize)]
enum Req {
    Stream(u64),
    Echo(u32),
}

#[derive(Debug, Serialize, Deserialize)]
enum Resp {
    Stream,
    Echo(u32),
}

struct Bench;

impl Service for Bench {
    type Request = Req;
    type Response = Resp;

    async fn call(&self, request: Req, _upload: Option<ByteReader>) -> Reply<Resp> {
        match request {
            Req::Stream(len) => Reply::with_download(Resp::Stream, Box::pin(Source::new(len))),
            Req::Echo(n) => Reply::new(Resp::Echo(n)),
        }
    }
}

/// `len` bytes copied out of a fixed block: a source that costs about what `zfs send`'s pipe
/// costs to read (one memcpy).
struct Source {
    left: u64,
    block: Arc<[u8]>,
}

impl Source {
    fn new(len: u64) -> Self {
        let block: Vec<u8> = (0..COPY_BUFFER_BYTES).map(|i| (i % 251) as u8).collect();
        Self {
            left: len,
            block: block.into(),
        }
    }
}

impl AsyncRead for Source {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64)
            .min(self.left)
            .min(self.block.len() as u64) as usize;
        buf.put_slice(&self.block[..n]);
        self.left -= n as u64;
        Poll::Ready(Ok(()))
    }
}

fn stream_bytes() -> u64 {
    std::env::var("ZFERRY_BENCH_TRANSPORT_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(STREAM_BYTES_DEFAULT)
}

async fn discard<R: AsyncRead + Unpin>(mut r: R) -> u64 {
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    let mut n_total = 0;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return n_total;
        }
        n_total += n as u64;
    }
}

/// Copies `len` bytes into `w` and shuts it down; the caller keeps the stream open until the
/// reader is done (closing with unread TLS tickets would reset the connection).
async fn plain_copy<W: AsyncWrite + Unpin>(w: &mut W, len: u64) {
    let mut source = Source::new(len);
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    loop {
        let n = source.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).await.unwrap();
    }
    w.shutdown().await.unwrap();
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (a, (b, _)) = (a.unwrap(), b.unwrap());
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    (a, b)
}

struct Tls {
    server: TlsServer,
    client: TlsClient,
}

fn tls() -> Tls {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "bench CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |cn: &str| {
        let mut params = CertificateParams::new(vec![cn.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        (
            params.signed_by(&key, &issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    };
    let (server_cert, server_key) = leaf("server");
    let (client_cert, client_key) = leaf("client");
    let server = TlsServer::new(
        Pem::Inline {
            ca: ca_pem.as_bytes(),
            cert: server_cert.as_bytes(),
            key: server_key.as_bytes(),
        },
        &["client".to_owned()],
    )
    .unwrap();
    let client = TlsClient::new(
        Pem::Inline {
            ca: ca_pem.as_bytes(),
            cert: client_cert.as_bytes(),
            key: client_key.as_bytes(),
        },
        "server",
    )
    .unwrap();
    Tls { server, client }
}

/// A transport client over loopback TCP (with TLS if given), served by `Bench`.
async fn transport_client(tls: Option<&Tls>) -> Client<Req, Resp> {
    let (a, b) = tcp_pair().await;
    let config = Config::default();
    match tls {
        None => {
            tokio::spawn(serve(b, Arc::new(Bench), config));
            Client::connect(a, config).await.unwrap()
        }
        Some(tls) => {
            let server = tls.server.clone();
            tokio::spawn(async move {
                let (s, _) = server.accept(b).await.unwrap();
                serve(s, Arc::new(Bench), config).await
            });
            let c = tls.client.connect(a).await.unwrap();
            Client::connect(c, config).await.unwrap()
        }
    }
}

async fn transport_copy(client: &Client<Req, Resp>, len: u64) {
    let (_, reader) = client.call_download(&Req::Stream(len)).await.unwrap();
    // As `zfs receive` gets it: each chunk written on as it arrived (here into a sink).
    let n = reader
        .unwrap()
        .copy_to(&mut tokio::io::sink())
        .await
        .unwrap();
    assert_eq!(n, len);
}

async fn plain_tcp_copy(len: u64) {
    let (a, b) = tcp_pair().await;
    let mut a = a;
    let reader = tokio::spawn(discard(b));
    plain_copy(&mut a, len).await;
    assert_eq!(reader.await.unwrap(), len);
}

async fn plain_tls_copy(tls: &Tls, len: u64) {
    let (a, b) = tcp_pair().await;
    let server = tls.server.clone();
    let reader = tokio::spawn(async move {
        let (s, _) = server.accept(b).await.unwrap();
        discard(s).await
    });
    let mut c = tls.client.connect(a).await.unwrap();
    plain_copy(&mut c, len).await;
    assert_eq!(reader.await.unwrap(), len);
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let len = stream_bytes();
    let tls = tls();
    let mut group = c.benchmark_group("transport");
    group.sample_size(THROUGHPUT_SAMPLES);
    // One copy per sample: a 2 GiB copy is long enough to time on its own.
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Bytes(len));
    group.warm_up_time(Duration::from_millis(100));

    let tcp_client = rt.block_on(transport_client(None));
    let tls_client = rt.block_on(transport_client(Some(&tls)));
    group.bench_function("copy_plain_tcp", |b| {
        b.iter(|| rt.block_on(plain_tcp_copy(len)));
    });
    group.bench_function("copy_transport_tcp", |b| {
        b.iter(|| rt.block_on(transport_copy(&tcp_client, len)));
    });
    group.bench_function("copy_plain_tls", |b| {
        b.iter(|| rt.block_on(plain_tls_copy(&tls, len)));
    });
    group.bench_function("copy_transport_tls", |b| {
        b.iter(|| rt.block_on(transport_copy(&tls_client, len)));
    });
    group.finish();
}

fn latency(c: &mut Criterion) {
    let rt = runtime();
    let client = rt.block_on(transport_client(None));
    let mut group = c.benchmark_group("transport");
    group.sample_size(50);
    group.bench_function("echo_idle", |b| {
        b.iter(|| rt.block_on(client.call(&Req::Echo(1))).unwrap());
    });
    // A stream that outlasts the measurement, read as fast as it comes.
    let background = {
        let client = client.clone();
        rt.spawn(async move {
            let (_, reader) = client.call_download(&Req::Stream(u64::MAX)).await.unwrap();
            discard(reader.unwrap()).await
        })
    };
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await });
    group.bench_function("echo_during_stream", |b| {
        b.iter(|| rt.block_on(client.call(&Req::Echo(1))).unwrap());
    });
    background.abort();
    group.finish();
}

/// Criterion measures each benchmark on its own, minutes apart; on a shared machine the load
/// changes in between. This alternates plain copy and transport copy round by round and
/// reports the median of each and their ratio, which the load affects far less.
fn paired(_c: &mut Criterion) {
    if std::env::var("ZFERRY_BENCH_TRANSPORT_PAIRED").as_deref() == Ok("0") {
        return;
    }
    let rounds: usize = std::env::var("ZFERRY_BENCH_TRANSPORT_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(PAIRED_ROUNDS_DEFAULT);
    let rt = runtime();
    let len = stream_bytes();
    let tls = tls();
    let tcp_client = rt.block_on(transport_client(None));
    let tls_client = rt.block_on(transport_client(Some(&tls)));
    let mib_per_s = |elapsed: Duration| len as f64 / (1 << 20) as f64 / elapsed.as_secs_f64();
    let mut samples: [Vec<f64>; 4] = Default::default();
    for _ in 0..rounds {
        rt.block_on(async {
            let timed = tokio::time::Instant::now();
            plain_tcp_copy(len).await;
            samples[0].push(mib_per_s(timed.elapsed()));
            let timed = tokio::time::Instant::now();
            transport_copy(&tcp_client, len).await;
            samples[1].push(mib_per_s(timed.elapsed()));
            let timed = tokio::time::Instant::now();
            plain_tls_copy(&tls, len).await;
            samples[2].push(mib_per_s(timed.elapsed()));
            let timed = tokio::time::Instant::now();
            transport_copy(&tls_client, len).await;
            samples[3].push(mib_per_s(timed.elapsed()));
        });
    }
    let [plain_tcp, transport_tcp, plain_tls, transport_tls] = samples.map(median);
    println!(
        "paired, {rounds} rounds of {len} bytes (median MiB/s): plain TCP {plain_tcp:.0}, \
         transport TCP {transport_tcp:.0} ({:.0} % of plain TCP); plain TLS {plain_tls:.0}, \
         transport TLS {transport_tls:.0} ({:.0} % of plain TLS, {:.0} % of plain TCP)",
        100.0 * transport_tcp / plain_tcp,
        100.0 * transport_tls / plain_tls,
        100.0 * transport_tls / plain_tcp,
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

criterion_group!(benches, throughput, latency, paired);
criterion_main!(benches);
