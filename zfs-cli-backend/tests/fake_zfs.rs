//! Process handling against a fake `zfs` (a shell script per test): send streams that are
//! dropped or fail, receives whose stream breaks or whose `zfs recv` fails first, batched
//! destroy retries, idempotent holds and bookmarks, and the launch counts. The outputs the
//! fakes print are real OpenZFS messages (see `tests/fixtures/`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use zferry_core::backend::{
    ByteStream, Operation, ReceiveRequest, SendFlags, SendRequest, SendSource, ZfsBackend,
    ZfsError, ZfsErrorKind,
};
use zferry_core::name::{Component, DatasetName, VersionName};
use zferry_core::version::Guid;
use zferry_zfs_cli::{CommandPrefix, ZfsCli, ZfsCliConfig};

/// Answers the feature probes (usage texts) the way OpenZFS 2.3 does, logs every call.
const PRELUDE: &str = r#"#!/bin/sh
D=$(dirname "$0")
echo "$*" >> "$D/calls"
if [ $# -eq 1 ]; then
  case "$1" in
    send) printf 'usage:\n\tsend [-nVvPe] -t <receive_resume_token>\n' >&2; exit 2 ;;
    receive) printf 'usage:\n\treceive -A <filesystem|volume>\n' >&2; exit 2 ;;
    load-key) printf 'usage:\n\tload-key [-rn] [-L <keylocation>] <-a | filesystem|volume>\n' >&2; exit 2 ;;
    destroy) printf 'usage:\n\tdestroy [-dnpRrv] <filesystem|volume>@<snap>[%%<snap>][,...]\n' >&2; exit 2 ;;
  esac
fi
"#;

/// Runs the fake through `sh SCRIPT ARGS` instead of executing the script file.
///
/// Executing a file that some process holds open for writing fails with ETXTBSY, and in a
/// multi-threaded test binary a child forked by another test inherits the descriptor that wrote
/// this test's script until it execs. `sh` only reads the script, which that cannot block. The
/// prefix's `env LC_ALL=C` words are dropped: the fakes print fixed English text anyway.
fn run_with_sh() -> Option<CommandPrefix> {
    let words = ["/bin/sh", "-c", "shift 2; exec /bin/sh \"$@\"", "sh"];
    Some(CommandPrefix::Exec(words.map(str::to_owned).to_vec()))
}

struct Fake {
    dir: PathBuf,
    zfs: ZfsCli,
}

impl Fake {
    /// A fake whose behaviour is the `case "$1" in ... esac` arms in `arms`.
    fn new(name: &str, arms: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("zferry-fake-zfs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("zfs");
        std::fs::write(
            &script,
            format!(
                "{PRELUDE}case \"$1\" in\n{arms}\n*) echo \"fake: $*\" >&2; exit 99 ;;\nesac\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let zfs = ZfsCli::new(ZfsCliConfig {
            zfs: script.to_string_lossy().into_owned(),
            prefix: run_with_sh(),
            ..ZfsCliConfig::default()
        });
        Self { dir, zfs }
    }

    fn pid(&self) -> u32 {
        self.pid_if_started().unwrap()
    }

    /// The pid the fake wrote, if it got that far before being killed.
    fn pid_if_started(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.dir.join("pid")).ok()?;
        Some(text.trim().parse().unwrap())
    }

    fn launches(&self, op: Operation) -> u64 {
        self.zfs.launches().get(&op).copied().unwrap_or(0)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until the process is gone from /proc (killed AND reaped: a zombie stays listed).
async fn wait_gone(pid: u32) -> bool {
    for _ in 0..100 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn v(s: &str) -> VersionName {
    VersionName::parse(s).unwrap()
}
fn c(s: &str) -> Component {
    Component::parse(s).unwrap()
}

fn full(to: &str) -> SendRequest {
    SendRequest {
        source: SendSource::Full { to: v(to) },
        flags: SendFlags::default(),
    }
}

fn recv(dataset: &str, to: &str, guid: u64) -> ReceiveRequest {
    ReceiveRequest {
        dataset: DatasetName::parse(dataset).unwrap(),
        to: c(to),
        to_guid: Guid(guid),
        resumable: true,
        force: false,
        properties_override: BTreeMap::new(),
        properties_inherit: Vec::new(),
    }
}

/// Yields `bytes`, then fails with `error` (made fresh per read).
struct Failing {
    bytes: Vec<u8>,
    error: fn() -> io::Error,
}

impl AsyncRead for Failing {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.bytes.is_empty() {
            return Poll::Ready(Err((self.error)()));
        }
        let n = self.bytes.len().min(buf.remaining());
        let rest = self.bytes.split_off(n);
        buf.put_slice(&self.bytes);
        self.bytes = rest;
        Poll::Ready(Ok(()))
    }
}

const TIMEOUT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn dropping_a_send_stream_kills_and_reaps_the_sender() {
    // `yes` blocks on the full pipe, as `zfs send` does when the reader stops.
    let fake = Fake::new("drop", r#"send) echo $$ > "$D/pid"; exec yes zferry ;;"#);
    let mut stream = fake.zfs.send(&full("p/a b@s 1")).await.unwrap();
    let mut buf = [0u8; 100];
    stream.read_exact(&mut buf).await.unwrap();
    let pid = fake.pid();
    drop(stream);
    assert!(wait_gone(pid).await, "the sender {pid} is still there");
    assert_eq!(fake.launches(Operation::Send), 1);
}

#[tokio::test]
async fn a_sender_failing_after_output_is_a_read_error_with_its_kind() {
    let fake = Fake::new(
        "sendfail",
        r#"send) printf 'some bytes'; echo "cannot open 'p/a@x': dataset does not exist" >&2; exit 1 ;;"#,
    );
    let mut stream = fake.zfs.send(&full("p/a@x")).await.unwrap();
    let mut got = Vec::new();
    let err = stream.read_to_end(&mut got).await.unwrap_err();
    assert_eq!(got, b"some bytes");
    let e = ZfsError::from_io(Operation::Receive, "p/b", &err);
    assert_eq!(e.operation, Operation::Send);
    assert_eq!(e.object, "p/a@x");
    assert_eq!(e.kind, ZfsErrorKind::DoesNotExist);
    assert!(e.stderr_tail.unwrap().contains("dataset does not exist"));
    // The error stays: a later read does not pretend the stream ended well.
    let again = stream.read(&mut [0u8; 8]).await.unwrap_err();
    assert_eq!(
        ZfsError::from_io(Operation::Receive, "p/b", &again).kind,
        ZfsErrorKind::DoesNotExist
    );
}

#[tokio::test]
async fn a_successful_send_ends_in_eof_after_all_bytes() {
    let fake = Fake::new("sendok", "send) head -c 3000000 /dev/zero ;;");
    let mut stream = fake.zfs.send(&full("p/a@x")).await.unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), 3_000_000);
    assert_eq!(stream.read(&mut [0u8; 8]).await.unwrap(), 0);
}

#[tokio::test]
async fn a_broken_stream_kills_recv_and_reports_the_streams_error() {
    let fake = Fake::new(
        "recvbroken",
        r#"recv) echo $$ > "$D/pid"; exec cat > /dev/null ;;"#,
    );
    let network: ByteStream = Box::pin(Failing {
        bytes: vec![7; 100_000],
        error: || io::ErrorKind::ConnectionReset.into(),
    });
    let e = tokio::time::timeout(TIMEOUT, fake.zfs.receive(&recv("p/b", "s", 1), network))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::StreamBroken, "{e}");
    assert_eq!(e.operation, Operation::Receive);
    // Killed and reaped (it may even have been killed before it wrote its pid).
    if let Some(pid) = fake.pid_if_started() {
        assert!(wait_gone(pid).await);
    }
    // A sender's error travels through the stream unchanged.
    let sender: ByteStream = Box::pin(Failing {
        bytes: vec![7; 10],
        error: || {
            ZfsError::new(Operation::Send, "p/a@s", ZfsErrorKind::DoesNotExist)
                .with_stderr("cannot open 'p/a@s': dataset does not exist\n")
                .into_io()
        },
    });
    let e = tokio::time::timeout(TIMEOUT, fake.zfs.receive(&recv("p/b", "s", 1), sender))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.operation, Operation::Send);
    assert_eq!(e.kind, ZfsErrorKind::DoesNotExist);
}

#[tokio::test]
async fn recv_failing_first_is_reported_without_deadlock() {
    // zfs recv gives up without reading; the stream is endless: the feeder's writes fail and
    // recv's own reason is reported.
    let fake = Fake::new(
        "recvfirst",
        "recv) printf 'cannot receive incremental stream: destination p/b has been modified\\n\
         since most recent snapshot\\n' >&2; exit 1 ;;",
    );
    let endless: ByteStream = Box::pin(tokio::io::repeat(0));
    let e = tokio::time::timeout(TIMEOUT, fake.zfs.receive(&recv("p/b", "s", 1), endless))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::ModifiedSinceSnapshot, "{e}");
    assert_eq!(e.object, "p/b");
}

#[tokio::test]
async fn a_receive_is_checked_by_guid() {
    let fake = Fake::new(
        "recvguid",
        "recv) cat > \"$D/received\" ;;\n\
         list) printf 'p/b c@s 1\\t42\\t10\\t1700000000\\t0\\n' ;;",
    );
    let stream: ByteStream = Box::pin(&b"stream bytes"[..]);
    let got = fake
        .zfs
        .receive(&recv("p/b c", "s 1", 42), stream)
        .await
        .unwrap();
    assert_eq!(got.to.guid, Guid(42));
    assert_eq!(
        std::fs::read(fake.dir.join("received")).unwrap(),
        b"stream bytes"
    );
    let stream: ByteStream = Box::pin(&b"x"[..]);
    let e = fake
        .zfs
        .receive(&recv("p/b c", "s 1", 7), stream)
        .await
        .unwrap_err();
    assert_eq!(
        e.kind,
        ZfsErrorKind::ExistsWithOtherGuid { existing: Guid(42) }
    );
    assert_eq!(e.object, "p/b c@s 1");
    // Two launches per receive: recv, then the list that checks the GUID.
    assert_eq!(fake.launches(Operation::Receive), 4);
    let calls = std::fs::read_to_string(fake.dir.join("calls")).unwrap();
    assert!(calls.contains("recv -s p/b c\n"), "{calls}");
}

#[tokio::test]
async fn a_batched_destroy_is_retried_without_the_held_snapshot() {
    let fake = Fake::new(
        "destroyheld",
        r#"destroy) case "$2" in
  'p/x@a,b,c') echo "cannot destroy snapshot p/x@b: it's being held. Run 'zfs holds -r p/x@b' to see holders." >&2; exit 1 ;;
  'p/x@a,c') exit 0 ;;
esac; exit 9 ;;"#,
    );
    let p = DatasetName::parse("p/x").unwrap();
    let out = fake
        .zfs
        .destroy_snapshots(&p, &[c("c"), c("a"), c("b"), c("a")])
        .await
        .unwrap();
    let got: Vec<(&str, &Result<(), ZfsErrorKind>)> = out
        .iter()
        .map(|o| (o.snapshot.as_str(), &o.result))
        .collect();
    assert_eq!(
        got,
        [
            ("a", &Ok(())),
            ("b", &Err(ZfsErrorKind::Busy)),
            ("c", &Ok(()))
        ]
    );
    assert_eq!(fake.launches(Operation::DestroySnapshots), 2);
    assert_eq!(fake.launches(Operation::Features), 4);
}

#[tokio::test]
async fn an_unexplained_batch_failure_falls_back_to_one_by_one() {
    let fake = Fake::new(
        "destroyodd",
        r#"destroy) case "$2" in
  *,*) echo "something new" >&2; exit 1 ;;
  'p/x@b') echo "something new about b" >&2; exit 1 ;;
  *) exit 0 ;;
esac ;;"#,
    );
    let p = DatasetName::parse("p/x").unwrap();
    let out = fake
        .zfs
        .destroy_snapshots(&p, &[c("a"), c("b"), c("c")])
        .await
        .unwrap();
    assert_eq!(out[0].result, Ok(()));
    assert_eq!(
        out[1].result,
        Err(ZfsErrorKind::Other {
            detail: "exit status 1".into()
        })
    );
    assert_eq!(out[2].result, Ok(()));
    assert_eq!(fake.launches(Operation::DestroySnapshots), 4);
    // A missing dataset fails the call itself.
    let fake = Fake::new(
        "destroynods",
        r#"destroy) echo "cannot open 'p/x': dataset does not exist" >&2; exit 1 ;;"#,
    );
    let e = fake.zfs.destroy_snapshots(&p, &[c("a")]).await.unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::DoesNotExist);
    assert_eq!(e.object, "p/x");
}

#[tokio::test]
async fn holds_releases_aborts_and_bookmarks_are_idempotent() {
    let fake = Fake::new(
        "idem",
        r#"hold) echo "cannot hold snapshot 'p/x@a': tag already exists on this dataset" >&2; exit 1 ;;
release) echo "cannot release hold from snapshot 'p/x@a': no such tag on this dataset" >&2
  echo "cannot release hold from snapshot 'p/x@b': dataset does not exist" >&2; exit 1 ;;
recv) echo "'p/x' does not have any resumable receive state to abort" >&2; exit 1 ;;
bookmark) echo "cannot create bookmark 'p/x#m': bookmark exists" >&2; exit 1 ;;
get) printf 'p/x@s\tguid\t5\t-\np/x@s\tcreatetxg\t9\t-\np/x@s\tcreation\t100\t-\n'
  printf 'p/x#m\tguid\t5\t-\np/x#m\tcreatetxg\t9\t-\np/x#m\tcreation\t100\t-\n' ;;"#,
    );
    fake.zfs.hold("t", &[v("p/x@a")]).await.unwrap();
    let e = fake
        .zfs
        .release("t", &[v("p/x@a"), v("p/x@b")])
        .await
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::DoesNotExist);
    assert_eq!(e.object, "p/x@b");
    fake.zfs
        .abort_receive(&DatasetName::parse("p/x").unwrap())
        .await
        .unwrap();
    let made = fake.zfs.bookmark(&v("p/x@s"), &v("p/x#m")).await.unwrap();
    assert_eq!(made.guid, Guid(5));
    assert_eq!(made.createtxg.0, 9);
    assert_eq!(made.creation_unix, 100);
    assert_eq!(fake.launches(Operation::Bookmark), 2);
}

#[tokio::test]
async fn features_come_from_usage_texts_and_a_missing_text_is_not_cached() {
    let fake = Fake::new("features", "get) printf 'enabled\\n' ;;");
    // `zpool` is the fake too: `zpool get` answers `enabled`.
    let fake_zpool = ZfsCli::new(ZfsCliConfig {
        zfs: fake.dir.join("zfs").to_string_lossy().into_owned(),
        zpool: fake.dir.join("zfs").to_string_lossy().into_owned(),
        prefix: run_with_sh(),
    });
    let f = fake_zpool.features("p").await.unwrap();
    assert!(f.resumable_send && f.resumable_receive && f.encryption && f.batch_destroy);
    fake_zpool.features("p").await.unwrap();
    assert_eq!(fake_zpool.launches()[&Operation::Features], 5);
    // Something that prints no usage text (a failing ssh, say).
    let broken = ZfsCli::new(ZfsCliConfig {
        zfs: "false".into(),
        ..ZfsCliConfig::default()
    });
    let e = broken.features("p").await.unwrap_err();
    assert!(e.to_string().contains("printed no usage text"), "{e}");
    broken.features("p").await.unwrap_err();
    assert_eq!(broken.launches()[&Operation::Features], 2);
}
