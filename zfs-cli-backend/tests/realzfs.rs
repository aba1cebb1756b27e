//! Every backend method against real OpenZFS, in the realzfs QEMU guest, through `ssh`.
//!
//! Gated: runs only when `ZFERRY_REALZFS_SSH_ARGS` names a file with the ssh arguments, one
//! per line (what `vm.sh OUT ssh-args` prints). The guest must have a pool `tank` or none (the
//! test creates it). For example:
//!
//! ```sh
//! OUT=/var/cache/zferry/realzfs; VM=/work/shared/realzfs/vm.sh
//! $VM $OUT start && $VM $OUT ssh-args > /tmp/realzfs-ssh-args
//! ZFERRY_REALZFS_SSH_ARGS=/tmp/realzfs-ssh-args \
//!   cargo test -p zferry-zfs-cli --test realzfs -- --nocapture
//! $VM $OUT stop
//! ```
//!
//! Names have spaces on purpose, as in zrepl's platform tests.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use zferry_core::backend::{
    ByteStream, ObjectName, Operation, PlaceholderEncryption, PropertySource, ReceiveRequest,
    SendFlags, SendRequest, SendSource, VersionTypes, ZfsBackend, ZfsErrorKind,
};
use zferry_core::name::{Component, DatasetName, VersionName};
use zferry_core::version::Guid;
use zferry_zfs_cli::{CommandPrefix, ZfsCli, ZfsCliConfig};

const ROOT: &str = "tank/zferry it";

fn ssh_args() -> Option<Vec<String>> {
    let path = std::env::var_os("ZFERRY_REALZFS_SSH_ARGS")?;
    let text = std::fs::read_to_string(path).unwrap();
    Some(
        text.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

/// Runs a setup command in the guest (not through the backend).
fn guest(ssh: &[String], script: &str) -> String {
    let out = std::process::Command::new("ssh")
        .args(ssh)
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ds(s: &str) -> DatasetName {
    DatasetName::parse(&format!("{ROOT}/{s}")).unwrap()
}
fn v(s: &str) -> VersionName {
    VersionName::parse(&format!("{ROOT}/{s}")).unwrap()
}
fn c(s: &str) -> Component {
    Component::parse(s).unwrap()
}

/// A snapshot that still exists when the forced receive is tried.
fn s1_for_force() -> VersionName {
    v("src a@s 1")
}

fn full(to: &VersionName) -> SendRequest {
    SendRequest {
        source: SendSource::Full { to: to.clone() },
        flags: SendFlags::default(),
    }
}

fn recv_into(dataset: &DatasetName, to: &str, guid: Guid, resumable: bool) -> ReceiveRequest {
    ReceiveRequest {
        dataset: dataset.clone(),
        to: c(to),
        to_guid: guid,
        resumable,
        force: false,
        properties_override: BTreeMap::new(),
        properties_inherit: Vec::new(),
    }
}

async fn guid_of(zfs: &ZfsCli, snap: &VersionName) -> Guid {
    let listing = zfs
        .list_versions(std::slice::from_ref(snap.dataset()), VersionTypes::All)
        .await
        .unwrap();
    listing
        .versions(snap.dataset())
        .iter()
        .find(|x| x.is_snapshot() && &x.name == snap.short())
        .unwrap_or_else(|| panic!("{snap} not listed"))
        .guid
}

/// A stream that fails with `ConnectionReset` after `limit` bytes, like a dropped network.
struct BreakAfter {
    inner: ByteStream,
    left: usize,
}

impl AsyncRead for BreakAfter {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.left == 0 {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        let limit = self.left.min(buf.remaining());
        let mut small = vec![0u8; limit];
        let mut rb = ReadBuf::new(&mut small);
        match self.inner.as_mut().poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                buf.put_slice(rb.filled());
                self.left -= n;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_against_real_zfs() {
    let Some(ssh) = ssh_args() else {
        eprintln!("ZFERRY_REALZFS_SSH_ARGS is not set: skipping the real-ZFS test");
        return;
    };
    guest(
        &ssh,
        "zpool list tank >/dev/null 2>&1 || { truncate -s 2G /var/tmp/v && zpool create tank \
         /var/tmp/v; }; \
         zfs list -H -o name -t snapshot -r 'tank/zferry it' 2>/dev/null | while IFS= read -r s; \
         do zfs holds -H \"$s\" | cut -f2 | while IFS= read -r t; do zfs release \"$t\" \"$s\"; \
         done; done; zfs destroy -r 'tank/zferry it' 2>/dev/null; \
         zfs create -p 'tank/zferry it/src a' && zfs create 'tank/zferry it/other' && \
         head -c 4194304 /dev/urandom > '/tank/zferry it/src a/f'",
    );
    let zfs = ZfsCli::new(ZfsCliConfig {
        prefix: Some(CommandPrefix::RemoteShell(
            std::iter::once("ssh".to_owned())
                .chain(ssh.iter().cloned())
                .collect(),
        )),
        ..ZfsCliConfig::default()
    });

    // Features: four usage texts and one zpool call, then cached.
    let f = zfs.features("tank").await.unwrap();
    assert!(f.resumable_send && f.resumable_receive && f.encryption && f.batch_destroy);
    zfs.features("tank").await.unwrap();
    assert_eq!(zfs.launches()[&Operation::Features], 5);
    let e = zfs.features("nosuchpool").await.unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::DoesNotExist, "{e}");

    // Atomic snapshot of two datasets: one createtxg.
    let src = ds("src a");
    let other = ds("other");
    zfs.snapshot(&[v("src a@s 1"), v("other@s 1")])
        .await
        .unwrap();
    let listing = zfs
        .list_versions(&[src.clone(), other.clone()], VersionTypes::All)
        .await
        .unwrap();
    assert_eq!(
        listing.versions(&src)[0].createtxg,
        listing.versions(&other)[0].createtxg
    );
    let e = zfs.snapshot(&[v("src a@s 1")]).await.unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::AlreadyExists, "{e}");
    let e = zfs
        .list_versions(&[src.clone(), ds("missing")], VersionTypes::All)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::DoesNotExist);
    assert_eq!(e.object, format!("{ROOT}/missing"));

    let entries = zfs
        .list_datasets(
            Some(&DatasetName::parse(ROOT).unwrap()),
            &["zrepl:placeholder"],
        )
        .await
        .unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [ROOT, &format!("{ROOT}/other"), &format!("{ROOT}/src a")]
    );

    // Properties.
    zfs.set_property(&src, "zferry:note", "a b").await.unwrap();
    let props = zfs
        .get_properties(&ObjectName::Dataset(src.clone()), &["zferry:note", "guid"])
        .await
        .unwrap();
    assert_eq!(props["zferry:note"].value, "a b");
    assert_eq!(props["zferry:note"].source, PropertySource::Local);
    let e = zfs
        .get_properties(&ObjectName::Version(v("src a#nosuch")), &["guid"])
        .await
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::DoesNotExist, "{e}");

    // Bookmarks are idempotent by GUID.
    let s1 = v("src a@s 1");
    let b1 = v("src a#b 1");
    let made = zfs.bookmark(&s1, &b1).await.unwrap();
    assert_eq!(made, zfs.bookmark(&s1, &b1).await.unwrap());
    assert_eq!(made.guid, guid_of(&zfs, &s1).await);
    zfs.snapshot(&[v("src a@s 2")]).await.unwrap();
    let e = zfs.bookmark(&v("src a@s 2"), &b1).await.unwrap_err();
    assert!(
        matches!(e.kind, ZfsErrorKind::ExistsWithOtherGuid { existing } if existing == made.guid)
    );
    let e = zfs
        .bookmark(&v("src a@nosuch"), &v("src a#x"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::DoesNotExist);

    // Holds are idempotent both ways.
    let s2 = v("src a@s 2");
    let tag = "zferry keep";
    zfs.hold(tag, &[s1.clone(), s2.clone()]).await.unwrap();
    zfs.hold(tag, &[s1.clone(), s2.clone()]).await.unwrap();
    assert_eq!(zfs.holds(&s1).await.unwrap(), [tag]);
    zfs.release(tag, std::slice::from_ref(&s2)).await.unwrap();
    zfs.release(tag, std::slice::from_ref(&s2)).await.unwrap();
    assert!(zfs.holds(&s2).await.unwrap().is_empty());
    let e = zfs.hold(tag, &[v("src a@nosuch")]).await.unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::DoesNotExist);

    // Batched destroy with a held snapshot: one call, one retry without it.
    let e = zfs
        .snapshot(&[v("src a@s 3"), v("src a@s 4")])
        .await
        .unwrap_err();
    // "cannot create snapshots : multiple snapshots of same fs not allowed"
    assert_eq!(e.kind, ZfsErrorKind::InvalidArgument, "{e}");
    zfs.snapshot(&[v("src a@s 3")]).await.unwrap();
    zfs.snapshot(&[v("src a@s 4")]).await.unwrap();
    let before = zfs
        .launches()
        .get(&Operation::DestroySnapshots)
        .copied()
        .unwrap_or(0);
    let out = zfs
        .destroy_snapshots(&src, &[c("s 1"), c("s 3"), c("nosuch")])
        .await
        .unwrap();
    let got: Vec<(String, Result<(), ZfsErrorKind>)> = out
        .into_iter()
        .map(|o| (o.snapshot.to_string(), o.result))
        .collect();
    assert_eq!(
        got,
        [
            ("nosuch".to_owned(), Ok(())),
            ("s 1".to_owned(), Err(ZfsErrorKind::Busy)),
            ("s 3".to_owned(), Ok(())),
        ]
    );
    assert_eq!(zfs.launches()[&Operation::DestroySnapshots] - before, 2);
    let e = zfs
        .destroy_snapshots(&ds("missing"), &[c("a")])
        .await
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::DoesNotExist);
    zfs.release(tag, std::slice::from_ref(&s1)).await.unwrap();

    // Estimates.
    let s4 = v("src a@s 4");
    let size = zfs.send_estimate(&full(&s4)).await.unwrap().unwrap();
    assert!(size > 4_000_000, "{size}");
    let from_bookmark = SendRequest {
        source: SendSource::Incremental {
            from: b1.clone(),
            to: s4.clone(),
        },
        flags: SendFlags::default(),
    };
    let before = zfs.launches_total();
    assert_eq!(zfs.send_estimate(&from_bookmark).await.unwrap(), None);
    assert_eq!(zfs.launches_total(), before);

    // Full send and receive of @s 1, then an -I range up to @s 4.
    let dst = ds("dst");
    let stream = zfs.send(&full(&s1)).await.unwrap();
    let got = zfs
        .receive(&recv_into(&dst, "s 1", made.guid, true), stream)
        .await
        .unwrap();
    assert_eq!(got.to.guid, made.guid);
    let range = SendRequest {
        source: SendSource::IncrementalRange {
            from: s1.clone(),
            to: s4.clone(),
        },
        flags: SendFlags::default(),
    };
    let s4_guid = guid_of(&zfs, &s4).await;
    let stream = zfs.send(&range).await.unwrap();
    let got = zfs
        .receive(&recv_into(&dst, "s 4", s4_guid, true), stream)
        .await
        .unwrap();
    assert_eq!(got.to.guid, s4_guid);
    let names: Vec<String> = zfs
        .list_versions(std::slice::from_ref(&dst), VersionTypes::Snapshots)
        .await
        .unwrap()
        .versions(&dst)
        .iter()
        .map(|x| x.name.to_string())
        .collect();
    assert_eq!(names, ["s 1", "s 2", "s 4"]);

    // A wrong expected GUID is an error after the receive.
    zfs.snapshot(&[v("src a@s 5")]).await.unwrap();
    let inc = SendRequest {
        source: SendSource::Incremental {
            from: s4.clone(),
            to: v("src a@s 5"),
        },
        flags: SendFlags::default(),
    };
    let stream = zfs.send(&inc).await.unwrap();
    let e = zfs
        .receive(&recv_into(&dst, "s 5", Guid(1), false), stream)
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind, ZfsErrorKind::ExistsWithOtherGuid { .. }),
        "{e}"
    );

    // Receiving onto a modified target.
    zfs.snapshot(&[v("src a@s 6")]).await.unwrap();
    guest(&ssh, "echo x > '/tank/zferry it/dst/new' && sync");
    let stream = zfs
        .send(&SendRequest {
            source: SendSource::Incremental {
                from: v("src a@s 5"),
                to: v("src a@s 6"),
            },
            flags: SendFlags::default(),
        })
        .await
        .unwrap();
    let e = zfs
        .receive(&recv_into(&dst, "s 6", Guid(1), false), stream)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::ModifiedSinceSnapshot, "{e}");
    zfs.rollback(&v("dst@s 5")).await.unwrap();

    // A stream that breaks after 1 MiB: the feeder's error, then a resumable state.
    let part = ds("part");
    let s4_stream = zfs.send(&full(&s4)).await.unwrap();
    let broken: ByteStream = Box::pin(BreakAfter {
        inner: s4_stream,
        left: 1 << 20,
    });
    let e = zfs
        .receive(&recv_into(&part, "s 4", s4_guid, true), broken)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::StreamBroken, "{e}");
    let token = zfs.resume_token(&part).await.unwrap();
    eprintln!("resume token after a killed recv -s: {token:?}");
    if let Some(token) = token {
        let stream = zfs
            .send(&SendRequest {
                source: SendSource::Resume { token },
                flags: SendFlags::default(),
            })
            .await
            .unwrap();
        let got = zfs
            .receive(&recv_into(&part, "s 4", s4_guid, true), stream)
            .await
            .unwrap();
        assert_eq!(got.to.guid, s4_guid);
        assert_eq!(zfs.resume_token(&part).await.unwrap(), None);
    }
    zfs.abort_receive(&part).await.unwrap();
    let e = zfs.abort_receive(&ds("missing")).await.unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::DoesNotExist);

    // A send of a missing snapshot fails on read, with the kind.
    let mut stream = zfs.send(&full(&v("src a@nosuch"))).await.unwrap();
    let mut sink = Vec::new();
    let err = stream.read_to_end(&mut sink).await.unwrap_err();
    let e = zferry_core::backend::ZfsError::from_io(Operation::Receive, "x", &err);
    assert_eq!(e.kind, ZfsErrorKind::DoesNotExist, "{e}");
    assert_eq!(e.operation, Operation::Send);

    // Dropping a send stream early stops the sender.
    let mut stream = zfs.send(&full(&s4)).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    stream.read_exact(&mut buf).await.unwrap();
    drop(stream);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let left = guest(&ssh, "ps -eo pid,args | grep '[z]fs send' || true");
    assert!(left.trim().is_empty(), "zfs send still running: {left}");

    // A clone's origin cannot be destroyed; the rest of the batch is.
    guest(
        &ssh,
        "zfs clone 'tank/zferry it/src a@s 2' 'tank/zferry it/clone'",
    );
    let out = zfs
        .destroy_snapshots(&src, &[c("s 2"), c("s 5")])
        .await
        .unwrap();
    assert_eq!(out[0].result, Err(ZfsErrorKind::Busy));
    assert_eq!(out[1].result, Ok(()));
    zfs.destroy_dataset(&ds("clone"), false).await.unwrap();

    // Raw sends of an encrypted dataset, and a forced plain receive onto it.
    guest(
        &ssh,
        "head -c 32 /dev/urandom > /root/zferry-it.key && zfs create -o encryption=on \
         -o keyformat=raw -o keylocation=file:///root/zferry-it.key 'tank/zferry it/enc a' && \
         zfs snapshot 'tank/zferry it/enc a@e 1'",
    );
    let e1 = v("enc a@e 1");
    let e1_guid = guid_of(&zfs, &e1).await;
    let raw = SendRequest {
        source: SendSource::Full { to: e1.clone() },
        flags: SendFlags {
            raw: true,
            ..SendFlags::default()
        },
    };
    let stream = zfs.send(&raw).await.unwrap();
    zfs.receive(&recv_into(&ds("enc copy"), "e 1", e1_guid, true), stream)
        .await
        .unwrap();
    let props = zfs
        .get_properties(
            &ObjectName::Dataset(ds("enc copy")),
            &["encryption", "keystatus"],
        )
        .await
        .unwrap();
    assert_eq!(props["keystatus"].value, "unavailable");
    let stream = zfs.send(&full(&s1_for_force())).await.unwrap();
    let mut forced = recv_into(&ds("enc a"), "s 1", made.guid, false);
    forced.force = true;
    let e = zfs.receive(&forced, stream).await.unwrap_err();
    // -F without -R does not destroy snapshots: zrepl rolls back and destroys them first.
    assert_eq!(e.kind, ZfsErrorKind::AlreadyExists, "{e}");
    guest(
        &ssh,
        "zfs create -o encryption=on -o keyformat=raw \
         -o keylocation=file:///root/zferry-it.key 'tank/zferry it/enc b'",
    );
    let stream = zfs.send(&full(&s1_for_force())).await.unwrap();
    forced.dataset = ds("enc b");
    let e = zfs.receive(&forced, stream).await.unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::EncryptedOverwriteRefused, "{e}");

    // Placeholders.
    let ph = ds("ph/child");
    zfs.create_placeholder(&ds("ph"), PlaceholderEncryption::Off)
        .await
        .unwrap();
    zfs.create_placeholder(&ph, PlaceholderEncryption::Inherit)
        .await
        .unwrap();
    let props = zfs
        .get_properties(
            &ObjectName::Dataset(ph.clone()),
            &["zrepl:placeholder", "mountpoint"],
        )
        .await
        .unwrap();
    assert_eq!(props["zrepl:placeholder"].value, "on");
    assert_eq!(props["zrepl:placeholder"].source, PropertySource::Local);
    assert_eq!(props["mountpoint"].value, "none");
    let e = zfs
        .create_placeholder(&ph, PlaceholderEncryption::Inherit)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::AlreadyExists);
    assert!(
        zfs.create_placeholder(
            &DatasetName::parse("tank").unwrap(),
            PlaceholderEncryption::Off
        )
        .await
        .is_err()
    );

    // Destroys.
    zfs.destroy_bookmark(&b1).await.unwrap();
    let e = zfs.destroy_bookmark(&b1).await.unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::DoesNotExist);
    zfs.destroy_dataset(&ds("ph"), true).await.unwrap();
    let e = zfs.destroy_dataset(&ds("ph"), true).await.unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::DoesNotExist);

    eprintln!("launches: {:?}", zfs.launches());
}
