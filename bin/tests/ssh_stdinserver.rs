//! `ssh+stdinserver` end to end: a real OpenSSH server on loopback whose `authorized_keys`
//! forces the built `zferry stdinserver`, the ssh client transport, and a transport server on
//! the daemon's stdinserver socket. Takes about a second.
//!
//! It needs `/usr/sbin/sshd` (Debian's `openssh-server`); if it is missing the test tries to
//! install it with apt-get and FAILS if it cannot. `ZFERRY_SKIP_SSH_TEST=1` skips it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A broken fixture is a test failure.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use zferry_transport::ssh::{SshConnect, SshError, connect, connect_client};
use zferry_transport::stdinserver::StdinserverListener;
use zferry_transport::{ByteReader, Client, Config, Reply, Service, serve};

const SSHD: &str = "/usr/sbin/sshd";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Req {
    Echo(String),
    Download(u64),
    Upload,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Resp {
    Echo(String),
    Download,
    Uploaded(u64, u64),
}

struct Svc;

impl Service for Svc {
    type Request = Req;
    type Response = Resp;

    async fn call(&self, request: Req, upload: Option<ByteReader>) -> Reply<Resp> {
        match request {
            Req::Echo(s) => Reply::new(Resp::Echo(s)),
            Req::Download(len) => {
                Reply::with_download(Resp::Download, Box::pin(tokio::io::repeat(0xab).take(len)))
            }
            Req::Upload => {
                let (len, n_bad) = count(&mut upload.unwrap(), 0xcd).await;
                Reply::new(Resp::Uploaded(len, n_bad))
            }
        }
    }
}

/// Reads to the end; returns the length and how many bytes differ from `expected`.
async fn count<R: AsyncRead + Unpin>(r: &mut R, expected: u8) -> (u64, u64) {
    let mut buf = vec![0u8; 64 << 10];
    let (mut len, mut n_bad) = (0u64, 0u64);
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return (len, n_bad);
        }
        len += n as u64;
        n_bad += buf[..n].iter().filter(|b| **b != expected).count() as u64;
    }
}

fn config() -> Config {
    Config {
        heartbeat_interval: Duration::from_millis(500),
        peer_timeout: Duration::from_secs(3),
        handshake_timeout: Duration::from_secs(3),
        ..Config::default()
    }
}

/// sshd, killed when dropped.
struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ensure_sshd() {
    if Path::new(SSHD).exists() {
        return;
    }
    eprintln!("{SSHD} is missing: installing openssh-server with apt-get");
    let installed = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "openssh-server"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} is missing and `apt-get install openssh-server` failed ({installed:?}); install \
         it, or set ZFERRY_SKIP_SSH_TEST=1 to skip this test"
    );
}

fn keygen(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "zferry-test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen (OpenSSH's client) must be installed");
    assert!(out.status.success(), "{out:?}");
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

struct Fixture {
    _dir: tempfile::TempDir,
    _sshd: Sshd,
    socket: PathBuf,
    base: SshConnect,
    good_key: PathBuf,
    unknown_key: PathBuf,
    no_daemon_key: PathBuf,
}

async fn start() -> Fixture {
    ensure_sshd();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
    let host_pub = keygen(&d.join("host_key"));
    let good_pub = keygen(&d.join("good key"));
    let no_daemon_pub = keygen(&d.join("no_daemon_key"));
    keygen(&d.join("unknown_key"));
    let socket = d.join("stdinserver.sock");
    let zferry = env!("CARGO_BIN_EXE_zferry");
    std::fs::write(
        d.join("authorized_keys"),
        format!(
            "command=\"{zferry} stdinserver --socket {} host1\",restrict {good_pub}\n\
             command=\"{zferry} stdinserver --socket {} host2\",restrict {no_daemon_pub}\n",
            socket.display(),
            d.join("nothing-here.sock").display(),
        ),
    )
    .unwrap();
    let port = free_port();
    std::fs::write(
        d.join("sshd_config"),
        format!(
            "ListenAddress 127.0.0.1:{port}\n\
             HostKey {d}/host_key\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             PidFile {d}/sshd.pid\n\
             UsePAM no\n\
             StrictModes no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             LogLevel ERROR\n",
            d = d.display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("known_hosts"),
        format!("[127.0.0.1]:{port} {host_pub}\n"),
    )
    .unwrap();
    // Debian's sshd refuses to start without its privilege-separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let mut sshd = Sshd(
        Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = sshd.0.try_wait().unwrap() {
            panic!("sshd exited with {status} (its stderr is above)");
        }
        assert!(Instant::now() < deadline, "sshd did not listen within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut base = SshConnect::new("127.0.0.1", &user(), Path::new("/unset"));
    base.port = port;
    base.dial_timeout = Duration::from_secs(5);
    base.options = vec![
        format!("UserKnownHostsFile={}/known_hosts", d.display()),
        "GlobalKnownHostsFile=/dev/null".to_owned(),
        "StrictHostKeyChecking=yes".to_owned(),
    ];
    Fixture {
        socket,
        base,
        good_key: d.join("good key"),
        unknown_key: d.join("unknown_key"),
        no_daemon_key: d.join("no_daemon_key"),
        _sshd: sshd,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_and_streams_reach_the_daemon_through_sshd() {
    if std::env::var("ZFERRY_SKIP_SSH_TEST").as_deref() == Ok("1") {
        eprintln!("skipped: ZFERRY_SKIP_SSH_TEST=1");
        return;
    }
    let started = Instant::now();
    let fx = start().await;
    let listener = StdinserverListener::bind(&fx.socket).await.unwrap();
    // Two sessions, one after the other: the stream API, then `connect_client`.
    let server = tokio::spawn(async move {
        for _ in 0..2 {
            let (stream, identity) = listener.accept().await.unwrap();
            assert_eq!(identity.as_str(), "host1");
            serve(stream, Arc::new(Svc), config()).await?;
        }
        Ok::<(), zferry_transport::TransportError>(())
    });

    let mut good = fx.base.clone();
    good.identity_file = fx.good_key.clone();
    let stream = connect(&good).await.unwrap();
    let stderr = stream.stderr_handle();
    let client: Client<Req, Resp> = match Client::connect(stream, config()).await {
        Ok(c) => c,
        Err(e) => panic!(
            "handshake over ssh: {e}; ssh's stderr: {}; server: {:?}",
            stderr.text(),
            server.await
        ),
    };
    let echoed = match client.call(&Req::Echo("über ssh".to_owned())).await {
        Ok(r) => r,
        Err(e) => panic!(
            "call over ssh: {e}; ssh's stderr: {}; server: {:?}",
            stderr.text(),
            server.await
        ),
    };
    assert_eq!(echoed, Resp::Echo("über ssh".to_owned()));

    let len = 8 << 20;
    let (resp, reader) = client.call_download(&Req::Download(len)).await.unwrap();
    assert_eq!(resp, Resp::Download);
    assert_eq!(count(&mut reader.unwrap(), 0xab).await, (len, 0));

    let up = 5_000_003;
    let resp = client
        .call_upload(&Req::Upload, tokio::io::repeat(0xcd).take(up))
        .await
        .unwrap();
    assert_eq!(resp, Resp::Uploaded(up, 0));

    drop(client);
    let client: Client<Req, Resp> = connect_client(&good, config()).await.unwrap();
    let echoed = client.call(&Req::Echo("again".to_owned())).await.unwrap();
    assert_eq!(echoed, Resp::Echo("again".to_owned()));
    drop(client);
    server.await.unwrap().unwrap();

    // A key the server does not know: ssh's own message reaches the user.
    let mut unknown = fx.base.clone();
    unknown.identity_file = fx.unknown_key.clone();
    let err = connect(&unknown).await.unwrap_err();
    assert!(matches!(err, SshError::Exited { .. }), "{err}");
    assert!(
        err.to_string().contains("Permission denied (publickey)"),
        "{err}"
    );

    // A known key whose forced command finds no daemon: the command's stderr reaches the user.
    let mut no_daemon = fx.base.clone();
    no_daemon.identity_file = fx.no_daemon_key.clone();
    let err = connect(&no_daemon).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot connect to the zferry daemon"),
        "{err}"
    );
    eprintln!("ssh end-to-end test took {:?}", started.elapsed());
}

/// A push job replicates to a sink through sshd: the push job's remote receiver dials with
/// `ssh`, the forced `zferry stdinserver host1` hands the connection to the sink's stdinserver
/// socket, and the sink serves its receiver for identity `host1`. Three snapshot rounds on the
/// simulated ZFS arrive below `root_fs/host1`, with zrepl's cursor and last-received hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_a_sink_through_sshd() {
    replicate_through_sshd(Direction::Push).await;
}

/// The same with a pull job: the source serves its sender behind sshd, the pull job receives
/// locally below its `root_fs` (no identity level).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_from_a_source_through_sshd() {
    replicate_through_sshd(Direction::Pull).await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Push,
    Pull,
}

async fn replicate_through_sshd(direction: Direction) {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicI64, Ordering};
    use zferry_core::backend::ZfsBackend;
    use zferry_core::clock::TokioClock;
    use zferry_core::endpoint::receiver::ReceiverEndpoint;
    use zferry_core::endpoint::receiver::{PlaceholderEncryptionConfig, ReceiverConfig};
    use zferry_core::endpoint::sender::{SendOptions, SenderConfig, SenderEndpoint};
    use zferry_core::filter::Filter;
    use zferry_core::job::active::Connect;
    use zferry_core::job::active::{ActiveJob, ActiveJobConfig, PhaseOutcome, PruneMode};
    use zferry_core::job::passive::{SinkJob, SourceJob};
    use zferry_core::job_id::JobId;
    use zferry_core::name::{DatasetName, VersionName};
    use zferry_core::prune::KeepRules;
    use zferry_sim::SimZfs;
    use zferry_transport::endpoint_rpc::{EndpointService, RemotePull, RemotePush, SshDial};

    if std::env::var("ZFERRY_SKIP_SSH_TEST").as_deref() == Ok("1") {
        eprintln!("skipped: ZFERRY_SKIP_SSH_TEST=1");
        return;
    }
    let fx = start().await;
    let listener = StdinserverListener::bind(&fx.socket).await.unwrap();
    let ds = |s: &str| DatasetName::parse(s).unwrap();
    let job = |s: &str| JobId::parse(s).unwrap();

    let now = Arc::new(AtomicI64::new(1_767_225_600));
    let sim = SimZfs::new(11, move || now.fetch_add(60, Ordering::SeqCst));
    sim.setup().create_pool("src", 1 << 40).unwrap();
    sim.setup().create_pool("dst", 1 << 40).unwrap();
    let filesystems = [ds("src/data"), ds("src/data/a b")];
    for fs in filesystems.iter().chain([&ds("dst/sink")]) {
        sim.setup().create_dataset(fs).unwrap();
    }
    let backend: Arc<dyn ZfsBackend> = Arc::new(sim.clone());
    let (sending_job, receiving_job, copy_root) = match direction {
        Direction::Push => ("push", "sink", "dst/sink/host1"),
        Direction::Pull => ("source", "pull", "dst/sink"),
    };
    let receiver_config = ReceiverConfig {
        job: job(receiving_job),
        root_fs: ds("dst/sink"),
        client_identity: None,
        placeholder_encryption: PlaceholderEncryptionConfig::Inherit,
        properties_override: BTreeMap::new(),
        properties_inherit: Vec::new(),
    };
    let sender = Arc::new(SenderEndpoint::new(
        Arc::clone(&backend),
        SenderConfig {
            job: job(sending_job),
            filter: Filter::from_entries([("src/data<", true)]).unwrap(),
            send: SendOptions::default(),
        },
    ));
    let served = match direction {
        Direction::Push => {
            Arc::new(SinkJob::new(Arc::clone(&backend), receiver_config.clone())).listener()
        }
        Direction::Pull => SourceJob::new(Arc::clone(&sender), None).listener(),
    };
    let sink_listener = served;
    let server = tokio::spawn(async move {
        loop {
            let (stream, identity) = listener.accept().await.unwrap();
            assert_eq!(identity.as_str(), "host1");
            let service = EndpointService::for_client(&sink_listener, &identity);
            tokio::spawn(serve(stream, Arc::new(service), config()));
        }
    });

    let mut good = fx.base.clone();
    good.identity_file = fx.good_key.clone();
    let mut config_ = ActiveJobConfig::new(
        job(if direction == Direction::Push {
            "push"
        } else {
            "pull"
        }),
        KeepRules::default(),
        KeepRules::default(),
    );
    config_.prune_mode = PruneMode::Sequential;
    let dial = Arc::new(SshDial {
        ssh: good,
        config: config(),
    });
    let connect: Arc<dyn Connect> = match direction {
        Direction::Push => Arc::new(RemotePush { sender, dial }),
        Direction::Pull => Arc::new(RemotePull {
            dial,
            receiver: Arc::new(
                ReceiverEndpoint::new(Arc::clone(&backend), receiver_config).unwrap(),
            ),
        }),
    };
    let clock = Arc::new(TokioClock::starting_at(
        jiff::Timestamp::from_second(1_767_225_600).unwrap(),
    ));
    let push = ActiveJob::new(config_, connect, clock);
    for round in 1..=3 {
        let snaps: Vec<VersionName> = filesystems
            .iter()
            .map(|fs| {
                sim.setup().write(fs, 1 << 20).unwrap();
                VersionName::parse(&format!("{fs}@r{round}")).unwrap()
            })
            .collect();
        sim.setup().snapshot(&snaps).unwrap();
        push.invocation(round).await;
        let status = push.status();
        let last = status.invocations.last().unwrap();
        assert_eq!(
            last.replication,
            PhaseOutcome::Done,
            "round {round}: {last:?}\n{}",
            status.replication
        );
    }
    server.abort();
    for fs in &filesystems {
        let copy = ds(&format!("{copy_root}/{fs}"));
        let names: Vec<String> = sim
            .versions(&copy)
            .into_iter()
            .filter(|v| v.is_snapshot())
            .map(|v| v.name.to_string())
            .collect();
        assert_eq!(names, ["r1", "r2", "r3"], "{copy}");
        let r3 = sim
            .version(&VersionName::parse(&format!("{fs}@r3")).unwrap())
            .unwrap();
        let bookmarks: Vec<String> = sim
            .versions(fs)
            .into_iter()
            .filter(|v| !v.is_snapshot())
            .map(|v| v.name.to_string())
            .collect();
        assert_eq!(
            bookmarks,
            [format!(
                "zrepl_CURSOR_G_{}_J_{sending_job}",
                r3.guid.hex16()
            )],
            "{fs}"
        );
        let holds = sim
            .holds(&VersionName::parse(&format!("{copy}@r3")).unwrap())
            .await
            .unwrap();
        assert_eq!(
            holds,
            [format!("zrepl_last_received_J_{receiving_job}")],
            "{copy}"
        );
    }
}
