//! Push→sink and pull→source across real loopback connections (TCP and TLS) on the simulated
//! ZFS: the same end state as in one process (sim-tests/tests/jobs.rs), client identities that
//! confine a sink's clients, and a connection cut mid-stream that the next attempt resumes.
//! Real sockets need real time: heartbeats and deadlines are short, snapshots small.
#![allow(clippy::unwrap_used)] // Test helpers may panic on broken fixtures.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use zferry_core::backend::{VersionTypes, ZfsBackend};
use zferry_core::clock::{Clock, TokioClock};
use zferry_core::endpoint::receiver::{
    PlaceholderEncryptionConfig, ReceiverConfig, ReceiverEndpoint,
};
use zferry_core::endpoint::sender::{SendOptions, SenderConfig, SenderEndpoint};
use zferry_core::endpoint::{Endpoint, EndpointError, Receiver, Sender};
use zferry_core::engine::replication::DriverConfig;
use zferry_core::engine::replication::report::RunState;
use zferry_core::error_class::{Classify, Persistence};
use zferry_core::filter::Filter;
use zferry_core::job::active::{ActiveJob, ActiveJobConfig, PhaseOutcome, PruneMode};
use zferry_core::job::local::Listener;
use zferry_core::job::passive::SinkJob;
use zferry_core::job_id::JobId;
use zferry_core::name::{Component, DatasetName, VersionName};
use zferry_core::prune::{KeepRule, KeepRules, LastNRule};
use zferry_core::version::Version;
use zferry_sim::{Action, Actor, SimZfs};
use zferry_transport::endpoint_rpc::{
    Dial, EndpointClient, RemotePull, RemotePush, RemoteReceiver, ServerEvent, TcpDial, TlsDial,
    serve_tcp, serve_tls,
};
use zferry_transport::tcp::{ClientMap, TcpServer};
use zferry_transport::tls::{Pem, TlsClient, TlsServer};
use zferry_transport::{Client, Config, TransportError};

const SEED: u64 = 0x0e_d90_1e7;
const POOL_BYTES: u64 = 1 << 40;

fn ds(name: &str) -> DatasetName {
    DatasetName::parse(name).unwrap()
}

fn job(name: &str) -> JobId {
    JobId::parse(name).unwrap()
}

fn last_n(count: u32) -> KeepRules {
    KeepRules::new(vec![KeepRule::LastN(LastNRule {
        count: NonZeroU32::new(count).unwrap(),
        regex: None,
    })])
    .unwrap()
}

/// Short heartbeats and deadlines, so that a dead peer is found within a fraction of a second.
fn fast_config() -> Config {
    Config {
        heartbeat_interval: Duration::from_millis(50),
        peer_timeout: Duration::from_millis(400),
        handshake_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// The driver retries and reconnects within milliseconds.
fn driver() -> DriverConfig {
    DriverConfig {
        reconnect_interval: Duration::from_millis(20),
        reconnect_timeout: Duration::from_secs(2),
        retry_backoff_base: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(100),
        ..DriverConfig::default()
    }
}

/// Pools `src` (with `src/data`, `src/data/a b`, `src/data/a b/c`) and `dst` (with
/// `dst/sink`), on a clock that follows tokio's time.
struct World {
    sim: SimZfs,
    clock: Arc<TokioClock>,
    replicated: Vec<DatasetName>,
    round: u32,
}

impl World {
    fn new() -> Self {
        let start: jiff::Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
        let clock = Arc::new(TokioClock::starting_at(start));
        let c = Arc::clone(&clock);
        let sim = SimZfs::new(SEED, move || c.now().as_second());
        sim.setup().create_pool("src", POOL_BYTES).unwrap();
        sim.setup().create_pool("dst", POOL_BYTES).unwrap();
        let replicated = vec![ds("src/data"), ds("src/data/a b"), ds("src/data/a b/c")];
        for fs in replicated.iter().chain([&ds("dst/sink")]) {
            sim.setup().create_dataset(fs).unwrap();
        }
        Self {
            sim,
            clock,
            replicated,
            round: 0,
        }
    }

    fn backend(&self) -> Arc<dyn ZfsBackend> {
        Arc::new(self.sim.clone())
    }

    fn sender(&self, name: &str) -> Arc<SenderEndpoint> {
        Arc::new(SenderEndpoint::new(
            self.backend(),
            SenderConfig {
                job: job(name),
                filter: Filter::from_entries([("src/data<", true)]).unwrap(),
                send: SendOptions::default(),
            },
        ))
    }

    fn receiver_config(name: &str, root: &str, identity: Option<&str>) -> ReceiverConfig {
        ReceiverConfig {
            job: job(name),
            root_fs: ds(root),
            client_identity: identity.map(|i| Component::parse(i).unwrap()),
            placeholder_encryption: PlaceholderEncryptionConfig::Inherit,
            properties_override: BTreeMap::new(),
            properties_inherit: Vec::new(),
        }
    }

    fn sink(&self) -> Listener {
        Arc::new(SinkJob::new(
            self.backend(),
            Self::receiver_config("sink", "dst/sink", None),
        ))
        .listener()
    }

    /// Writes `n_bytes` to every replicated filesystem and snapshots them all at once.
    fn snapshot_round(&mut self, n_bytes: u64) -> String {
        self.round += 1;
        let name = format!("zferry_{:04}", self.round);
        let snaps: Vec<VersionName> = self
            .replicated
            .iter()
            .map(|fs| {
                self.sim.setup().write(fs, n_bytes).unwrap();
                VersionName::parse(&format!("{fs}@{name}")).unwrap()
            })
            .collect();
        self.sim.setup().snapshot(&snaps).unwrap();
        name
    }

    fn snapshots(&self, fs: &DatasetName) -> Vec<Version> {
        self.sim
            .versions(fs)
            .into_iter()
            .filter(Version::is_snapshot)
            .collect()
    }

    fn newest(&self, fs: &DatasetName) -> Version {
        self.snapshots(fs).last().cloned().unwrap()
    }

    /// Every bookmark (`#name`) and every hold (`@snap:tag`) of `fs`, sorted.
    async fn abstractions(&self, fs: &DatasetName) -> Vec<String> {
        let listing = self
            .sim
            .list_versions(std::slice::from_ref(fs), VersionTypes::All)
            .await
            .unwrap();
        let mut out = Vec::new();
        for v in listing.versions(fs) {
            if v.is_snapshot() {
                let name = VersionName::parse(&format!("{fs}@{}", v.name)).unwrap();
                for tag in self.sim.holds(&name).await.unwrap() {
                    out.push(format!("@{}:{tag}", v.name));
                }
            } else {
                out.push(format!("#{}", v.name));
            }
        }
        out.sort();
        out
    }

    fn cursor(&self, fs: &DatasetName, job: &str) -> String {
        format!("#zrepl_CURSOR_G_{}_J_{job}", self.newest(fs).guid.hex16())
    }

    fn count(&self, wanted: Action) -> usize {
        self.sim
            .events()
            .iter()
            .filter(|e| e.actor == Actor::Daemon && e.action == wanted)
            .count()
    }

    /// Sender and receiver hold exactly zrepl's abstractions: the sending job's cursor on the
    /// newest snapshot, and the receiving job's last-received hold on the received copy.
    async fn assert_converged(
        &self,
        to: impl Fn(&DatasetName) -> DatasetName,
        sending: &str,
        receiving: &str,
    ) {
        for fs in &self.replicated {
            let target = to(fs);
            let newest = self.newest(fs);
            assert_eq!(self.newest(&target).guid, newest.guid, "{fs}");
            assert_eq!(
                self.abstractions(fs).await,
                vec![self.cursor(fs, sending)],
                "{fs}"
            );
            assert_eq!(
                self.abstractions(&target).await,
                vec![format!(
                    "@{}:zrepl_last_received_J_{receiving}",
                    newest.name
                )],
                "{target}"
            );
        }
    }
}

/// A running server and what it reported.
struct Served {
    addr: String,
    shutdown: watch::Sender<bool>,
    events: Arc<Mutex<Vec<ServerEvent>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    async fn stop(self) -> Vec<ServerEvent> {
        self.shutdown.send_replace(true);
        self.task.await.unwrap();
        let events = self.events.lock().unwrap();
        events.clone()
    }
}

fn recorder() -> (
    Arc<Mutex<Vec<ServerEvent>>>,
    zferry_transport::endpoint_rpc::ServerEvents,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    (
        events,
        Arc::new(move |e: ServerEvent| sink.lock().unwrap().push(e)),
    )
}

async fn serve_tcp_on(listener: Listener, clients: &[(&str, &str)]) -> Served {
    let map: BTreeMap<String, String> = clients
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let server = TcpServer::bind("127.0.0.1:0", ClientMap::parse(&map).unwrap())
        .await
        .unwrap();
    let addr = server.local_addr().unwrap().to_string();
    let (shutdown, stop) = watch::channel(false);
    let (events, report) = recorder();
    let task = tokio::spawn(serve_tcp(server, listener, fast_config(), stop, report));
    Served {
        addr,
        shutdown,
        events,
        task,
    }
}

async fn serve_tls_on(listener: Listener, tls: TlsServer) -> Served {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap().to_string();
    let (shutdown, stop) = watch::channel(false);
    let (events, report) = recorder();
    let task = tokio::spawn(serve_tls(tcp, tls, listener, fast_config(), stop, report));
    Served {
        addr,
        shutdown,
        events,
        task,
    }
}

fn tcp_dial(addr: &str) -> Arc<dyn Dial> {
    Arc::new(TcpDial {
        address: addr.to_owned(),
        dial_timeout: Duration::from_secs(5),
        config: fast_config(),
    })
}

/// Dials from a chosen loopback source address, so that one host can be several clients.
#[derive(Debug)]
struct TcpDialFrom {
    local: &'static str,
    address: String,
}

#[async_trait]
impl Dial for TcpDialFrom {
    async fn dial(&self) -> Result<EndpointClient, TransportError> {
        let socket = TcpSocket::new_v4().unwrap();
        socket
            .bind(format!("{}:0", self.local).parse().unwrap())
            .unwrap();
        let stream = socket
            .connect(self.address.parse().unwrap())
            .await
            .map_err(|e| TransportError::io("dial", &e))?;
        Client::connect(stream, fast_config()).await
    }

    fn describe(&self) -> String {
        format!("tcp {} from {}", self.address, self.local)
    }
}

fn push_job(world: &World, dial: Arc<dyn Dial>, keep_sender: u32, keep_receiver: u32) -> ActiveJob {
    let sender: Arc<dyn Sender> = world.sender("push");
    let mut config = ActiveJobConfig::new(job("push"), last_n(keep_sender), last_n(keep_receiver));
    config.driver = driver();
    // Concurrent pruning of a first replication races its first cursor in real time (the
    // sender's pruning finds no cursor yet and reports it); the order is not what is tested.
    config.prune_mode = PruneMode::Sequential;
    ActiveJob::new(
        config,
        Arc::new(RemotePush { sender, dial }),
        world.clock.clone(),
    )
}

fn assert_done(job: &ActiveJob, what: &str) {
    let status = job.status();
    let last = status.invocations.last().unwrap();
    assert_eq!(last.connect_error, None, "{what}");
    assert_eq!(
        last.replication,
        PhaseOutcome::Done,
        "{what}: {}",
        status.replication
    );
    assert_eq!(last.prune_sender, PhaseOutcome::Done, "{what}: {last:?}");
    assert_eq!(last.prune_receiver, PhaseOutcome::Done, "{what}: {last:?}");
}

/// Four rounds of push over TCP with pruning on both sides (keep 2 on the sender, 3 on the
/// receiver): the snapshots arrive, pruning crosses the wire both ways, and the pools end
/// exactly as in one process.
async fn push_rounds(world: &mut World, push: &ActiveJob, host: &str) {
    for n in 1..=4 {
        world.snapshot_round(64 << 10);
        push.invocation(n).await;
        assert_done(push, &format!("round {n}"));
    }
    let to = |fs: &DatasetName| ds(&format!("dst/sink/{host}/{fs}"));
    for fs in &world.replicated {
        let sent = world.snapshots(fs);
        let received = world.snapshots(&to(fs));
        assert_eq!(sent.len(), 2, "{fs}");
        assert_eq!(received.len(), 3, "{fs}");
        assert_eq!(
            received[1..].iter().map(|v| v.guid).collect::<Vec<_>>(),
            sent.iter().map(|v| v.guid).collect::<Vec<_>>(),
            "{fs}"
        );
    }
    world.assert_converged(to, "push", "sink").await;
    let status = push.status();
    let last = status.invocations.last().unwrap();
    assert_eq!(
        last.prune_receiver_report.as_ref().unwrap().n_destroyed(),
        3,
        "{last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_a_sink_over_tcp() {
    let mut world = World::new();
    let served = serve_tcp_on(world.sink(), &[("127.0.0.1", "host1")]).await;
    let push = push_job(&world, tcp_dial(&served.addr), 2, 3);
    push_rounds(&mut world, &push, "host1").await;
    drop(push);
    assert_eq!(served.stop().await, vec![]);
}

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A certificate with CN (and SAN) `cn` signed by `ca`: (cert PEM, key PEM).
fn leaf(ca: &Ca, cn: &str) -> (String, String) {
    let mut params = CertificateParams::new(vec![cn.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn tls_server(ca: &Ca, client_cns: &[&str]) -> TlsServer {
    let (cert, key) = leaf(ca, "sink.example");
    let cns: Vec<String> = client_cns.iter().map(|s| s.to_string()).collect();
    TlsServer::new(
        Pem::Inline {
            ca: ca.pem.as_bytes(),
            cert: cert.as_bytes(),
            key: key.as_bytes(),
        },
        &cns,
    )
    .unwrap()
}

fn tls_dial(ca: &Ca, cn: &str, addr: &str) -> Arc<dyn Dial> {
    let (cert, key) = leaf(ca, cn);
    let tls = TlsClient::new(
        Pem::Inline {
            ca: ca.pem.as_bytes(),
            cert: cert.as_bytes(),
            key: key.as_bytes(),
        },
        "sink.example",
    )
    .unwrap();
    Arc::new(TlsDial {
        address: addr.to_owned(),
        dial_timeout: Duration::from_secs(5),
        tls,
        config: fast_config(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_a_sink_over_tls() {
    let mut world = World::new();
    let ca = ca("zferry test CA");
    let served = serve_tls_on(world.sink(), tls_server(&ca, &["host1", "host2"])).await;
    let push = push_job(&world, tls_dial(&ca, "host1", &served.addr), 2, 3);
    push_rounds(&mut world, &push, "host1").await;
    drop(push);
    assert_eq!(served.stop().await, vec![]);
}

/// Pull from a source over TCP: three invocations, the snapshots arrive below the pull job's
/// root, the source keeps its cursor and the pull job its last-received hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_from_a_source_over_tcp() {
    let mut world = World::new();
    let source: Arc<dyn Sender> = world.sender("source");
    let served = serve_tcp_on(Listener::Source(source), &[("127.0.0.1", "puller")]).await;
    let dial = tcp_dial(&served.addr);
    pull_rounds(&mut world, dial).await;
    assert_eq!(served.stop().await, vec![]);
}

/// The same over TLS, the source knowing the puller by its certificate's CN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_from_a_source_over_tls() {
    let mut world = World::new();
    let ca = ca("zferry test CA");
    let source: Arc<dyn Sender> = world.sender("source");
    let served = serve_tls_on(Listener::Source(source), tls_server(&ca, &["puller"])).await;
    let dial = tls_dial(&ca, "puller", &served.addr);
    pull_rounds(&mut world, dial).await;
    assert_eq!(served.stop().await, vec![]);
}

/// Four pull invocations through `dial`, then the end state of every filesystem.
async fn pull_rounds(world: &mut World, dial: Arc<dyn Dial>) {
    let receiver: Arc<dyn Receiver> = Arc::new(
        ReceiverEndpoint::new(
            world.backend(),
            World::receiver_config("pull", "dst/sink", None),
        )
        .unwrap(),
    );
    let mut config = ActiveJobConfig::new(job("pull"), last_n(2), last_n(3));
    config.driver = driver();
    config.prune_mode = PruneMode::Sequential;
    let pull = ActiveJob::new(
        config,
        Arc::new(RemotePull { dial, receiver }),
        world.clock.clone(),
    );
    for n in 1..=4 {
        world.snapshot_round(64 << 10);
        pull.invocation(n).await;
        assert_done(&pull, &format!("round {n}"));
    }
    let to = |fs: &DatasetName| ds(&format!("dst/sink/{fs}"));
    for fs in &world.replicated {
        assert_eq!(world.snapshots(fs).len(), 2, "{fs}");
        assert_eq!(world.snapshots(&to(fs)).len(), 3, "{fs}");
    }
    world.assert_converged(to, "source", "pull").await;
}

/// Two clients of one sink, named by their source address: each lands below its own identity,
/// sees only its own filesystems, and cannot destroy the other's snapshots; an address without
/// an entry is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_confines_each_client_to_its_identity() {
    let mut world = World::new();
    let served = serve_tcp_on(
        world.sink(),
        &[("127.0.0.1", "host1"), ("127.0.0.2", "host2")],
    )
    .await;
    let dial = |local| -> Arc<dyn Dial> {
        Arc::new(TcpDialFrom {
            local,
            address: served.addr.clone(),
        })
    };
    world.snapshot_round(64 << 10);
    let push1 = push_job(&world, dial("127.0.0.1"), 10, 10);
    push1.invocation(1).await;
    assert_done(&push1, "host1");
    let host1 = |fs: &DatasetName| ds(&format!("dst/sink/host1/{fs}"));
    world.assert_converged(host1, "push", "sink").await;
    assert!(!world.sim.exists(&ds("dst/sink/host2")));

    // host2 sees nothing of host1's, and destroying host1's snapshot by name through host2's
    // connection only reaches host2's namespace (where it does not exist).
    let host2 = RemoteReceiver::connect(dial("127.0.0.2")).await.unwrap();
    assert_eq!(host2.list_filesystems().await.unwrap(), vec![]);
    let fs = &world.replicated[0];
    let newest = world.newest(fs);
    let _ = host2
        .destroy_snapshots(fs, &[(newest.name.clone(), newest.guid)])
        .await;
    assert_eq!(world.snapshots(&host1(fs)).len(), 1);
    drop(host2);

    // host1 lists exactly its own filesystems, by their sender-side paths.
    let host1_remote = RemoteReceiver::connect(dial("127.0.0.1")).await.unwrap();
    let listed: Vec<DatasetName> = host1_remote
        .list_filesystems()
        .await
        .unwrap()
        .into_iter()
        .filter(|f| !f.is_placeholder)
        .map(|f| f.path)
        .collect();
    assert_eq!(listed, world.replicated);
    drop(host1_remote);

    // An address that no entry names is refused: the invocation fails to connect.
    let push3 = push_job(&world, dial("127.0.0.3"), 10, 10);
    push3.invocation(1).await;
    let status = push3.status();
    assert_ne!(
        status.replication.state,
        RunState::Done,
        "{}",
        status.replication
    );
    drop((push1, push3));
    let events = served.stop().await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ServerEvent::Refused { reason } if reason.contains("127.0.0.3"))),
        "{events:?}"
    );
}

/// The same over TLS: the CN is the identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_sink_names_clients_by_their_cn() {
    let mut world = World::new();
    let ca = ca("zferry test CA");
    let served = serve_tls_on(world.sink(), tls_server(&ca, &["host1", "host2"])).await;
    world.snapshot_round(64 << 10);
    let push = push_job(&world, tls_dial(&ca, "host2", &served.addr), 10, 10);
    push.invocation(1).await;
    assert_done(&push, "host2");
    world
        .assert_converged(|fs| ds(&format!("dst/sink/host2/{fs}")), "push", "sink")
        .await;
    assert!(!world.sim.exists(&ds("dst/sink/host1")));
    // A certificate whose CN is not in client_cns is refused in the TLS handshake.
    let stranger = RemoteReceiver::connect(tls_dial(&ca, "host3", &served.addr))
        .await
        .unwrap();
    let e = stranger.ping().await.unwrap_err();
    assert_eq!(e.class().persistence, Persistence::Temporary, "{e}");
    drop((push, stranger));
    let events = served.stop().await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ServerEvent::Refused { reason } if reason.contains("host3"))),
        "{events:?}"
    );
}

/// How the proxy breaks a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    /// Close both sides.
    Close,
    /// Stop forwarding in both directions and keep both sockets open.
    Stall,
}

#[derive(Debug)]
struct Armed {
    /// Counts the bytes the client sends (true) or receives (false).
    to_server: bool,
    remaining: u64,
    how: Break,
}

/// A TCP proxy that forwards until it is armed, then breaks the connection that carries the
/// armed number of bytes in the armed direction.
#[derive(Clone)]
struct Proxy {
    addr: String,
    armed: Arc<Mutex<Option<Armed>>>,
    fired_at: Arc<Mutex<Option<Instant>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap().to_string(),
            armed: Arc::new(Mutex::new(None)),
            fired_at: Arc::new(Mutex::new(None)),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let server = TcpStream::connect(&upstream).await.unwrap();
                tokio::spawn(p.clone().forward(client, server));
            }
        });
        proxy
    }

    fn arm(&self, to_server: bool, after_bytes: u64, how: Break) {
        *self.armed.lock().unwrap() = Some(Armed {
            to_server,
            remaining: after_bytes,
            how,
        });
    }

    fn fired_at(&self) -> Option<Instant> {
        *self.fired_at.lock().unwrap()
    }

    async fn forward(self, client: TcpStream, server: TcpStream) {
        let (client_r, client_w) = client.into_split();
        let (server_r, server_w) = server.into_split();
        let (kill, _) = watch::channel(None::<Break>);
        let kill = Arc::new(kill);
        tokio::join!(
            self.pump(client_r, server_w, true, Arc::clone(&kill)),
            self.pump(server_r, client_w, false, Arc::clone(&kill)),
        );
    }

    async fn pump(
        &self,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        to_server: bool,
        kill: Arc<watch::Sender<Option<Break>>>,
    ) {
        let mut broken = kill.subscribe();
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = tokio::select! {
                biased;
                _ = broken.wait_for(Option::is_some) => break,
                n = from.read(&mut buf) => n,
            };
            let n = match n {
                Ok(0) | Err(_) => {
                    kill.send_replace(Some(Break::Close));
                    return;
                }
                Ok(n) => n,
            };
            let (forward, fire) = {
                let mut armed = self.armed.lock().unwrap();
                match armed.as_mut() {
                    Some(a) if a.to_server == to_server && a.remaining <= n as u64 => {
                        let forward = a.remaining as usize;
                        let how = a.how;
                        *armed = None;
                        (forward, Some(how))
                    }
                    Some(a) if a.to_server == to_server => {
                        a.remaining -= n as u64;
                        (n, None)
                    }
                    _ => (n, None),
                }
            };
            if to.write_all(&buf[..forward]).await.is_err() {
                kill.send_replace(Some(Break::Close));
                return;
            }
            if let Some(how) = fire {
                *self.fired_at.lock().unwrap() = Some(Instant::now());
                kill.send_replace(Some(how));
                break;
            }
        }
        if *kill.borrow() == Some(Break::Stall) {
            // Keep both sockets open and silent.
            std::future::pending::<()>().await;
        }
    }
}

/// The events of the sim's receives: (resumable partial receives, aborted partial receives).
fn partials(world: &World) -> (usize, usize) {
    (
        world.count(Action::ReceivePartial),
        world.count(Action::AbortReceive),
    )
}

/// A push whose connection is broken by `how` after 1.5 MiB of a 2 MiB stream: the attempt
/// fails with a temporary connectivity error, the driver reconnects, and the next attempt
/// resumes the partial receive (it is continued, never discarded). Returns how long after the
/// break the first attempt had failed.
async fn cut_and_resume(how: Break) -> Duration {
    let mut world = World::new();
    world.sim.set_payload_scale(1);
    let served = serve_tcp_on(world.sink(), &[("127.0.0.1", "host1")]).await;
    let proxy = Proxy::start(served.addr.clone()).await;
    let push = push_job(&world, tcp_dial(&proxy.addr), 10, 10);
    world.snapshot_round(64 << 10);
    push.invocation(1).await;
    assert_done(&push, "first round");

    world.snapshot_round(2 << 20);
    // Data goes in frames of up to 1 MiB: break inside the second, after a whole first one.
    proxy.arm(true, 1536 << 10, how);
    let watch_first_error = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = push.status();
            if let Some(e) = status
                .replication
                .attempts
                .first()
                .and_then(|a| a.error.clone())
            {
                return (Instant::now(), e);
            }
            assert!(Instant::now() < deadline, "{}", status.replication);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let ((), (failed_at, first_error)) = tokio::join!(push.invocation(2), watch_first_error);
    let fired_at = proxy.fired_at().expect("the proxy broke the connection");
    let status = push.status();
    assert_done(&push, &format!("{how:?}"));
    assert_eq!(
        status.replication.attempts.len(),
        2,
        "{}",
        status.replication
    );
    assert!(
        first_error.contains("connection to the receiver"),
        "{first_error}"
    );
    if how == Break::Stall {
        assert!(first_error.contains("timed out"), "{first_error}");
    }
    assert_eq!(partials(&world), (1, 0), "{:#?}", world.sim.events());
    world
        .assert_converged(|fs| ds(&format!("dst/sink/host1/{fs}")), "push", "sink")
        .await;
    drop(push);
    served.stop().await;
    failed_at.saturating_duration_since(fired_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_mid_stream_is_resumed() {
    let detected = cut_and_resume(Break::Close).await;
    assert!(detected < Duration::from_secs(1), "{detected:?}");
}

/// A link that goes silent is found by the heartbeat deadline (400 ms here), not by TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_detected_within_the_heartbeat_bound_and_resumed() {
    let detected = cut_and_resume(Break::Stall).await;
    let bound = fast_config().peer_timeout + fast_config().heartbeat_interval;
    assert!(detected >= fast_config().peer_timeout / 2, "{detected:?}");
    assert!(
        detected < bound + Duration::from_millis(300),
        "{detected:?}"
    );
    eprintln!("silent link detected after {detected:?} (peer_timeout 400 ms)");
}

/// Errors of the remote endpoint cross as they are: a sink asked to send refuses with a message
/// that says what to fix, classified permanent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_error_keeps_its_message_and_class() {
    let world = World::new();
    let served = serve_tcp_on(world.sink(), &[("127.0.0.1", "host1")]).await;
    let sender = zferry_transport::endpoint_rpc::RemoteSender::connect(tcp_dial(&served.addr))
        .await
        .unwrap();
    let e = sender
        .replication_cursors(&[ds("src/data")])
        .await
        .unwrap_err();
    assert!(matches!(e, EndpointError::Remote { .. }), "{e:?}");
    assert!(e.to_string().contains("source job"), "{e}");
    assert_eq!(e.class().persistence, Persistence::Permanent, "{e}");
    drop(sender);
    served.stop().await;
}

/// Pull whose download (the source's `zfs send` stream) is cut mid-stream: the next attempt
/// resumes the pull job's partial receive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_cut_mid_download_is_resumed() {
    let mut world = World::new();
    world.sim.set_payload_scale(1);
    let source: Arc<dyn Sender> = world.sender("source");
    let served = serve_tcp_on(Listener::Source(source), &[("127.0.0.1", "puller")]).await;
    let proxy = Proxy::start(served.addr.clone()).await;
    let receiver: Arc<dyn Receiver> = Arc::new(
        ReceiverEndpoint::new(
            world.backend(),
            World::receiver_config("pull", "dst/sink", None),
        )
        .unwrap(),
    );
    let mut config = ActiveJobConfig::new(job("pull"), last_n(10), last_n(10));
    config.driver = driver();
    config.prune_mode = PruneMode::Sequential;
    let pull = ActiveJob::new(
        config,
        Arc::new(RemotePull {
            dial: tcp_dial(&proxy.addr),
            receiver,
        }),
        world.clock.clone(),
    );
    world.snapshot_round(64 << 10);
    pull.invocation(1).await;
    assert_done(&pull, "first round");
    world.snapshot_round(2 << 20);
    proxy.arm(false, 1536 << 10, Break::Close);
    pull.invocation(2).await;
    assert!(proxy.fired_at().is_some());
    assert_done(&pull, "cut round");
    let status = pull.status();
    assert_eq!(
        status.replication.attempts.len(),
        2,
        "{}",
        status.replication
    );
    assert_eq!(partials(&world), (1, 0), "{:#?}", world.sim.events());
    world
        .assert_converged(|fs| ds(&format!("dst/sink/{fs}")), "source", "pull")
        .await;
    drop(pull);
    served.stop().await;
}
