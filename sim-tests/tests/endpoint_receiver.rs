//! The receiver endpoint (`zferry_core::endpoint::receiver`) over the simulated ZFS: streams
//! made by the sim's own `send` from a sender pool `src` are fed to the endpoint's `receive`,
//! and the tests assert the exact state of the receiving pool `backup` afterwards: placeholders
//! and their properties, the last-received holds, resume tokens, what is listed, what is
//! destroyed, and what is refused.
#![allow(clippy::unwrap_used)] // Test helpers may panic on broken fixtures.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use zferry_core::backend::{
    ByteStream, ObjectName, PropertySource, SendFlags, SendRequest, SendSource, ZfsBackend,
    ZfsErrorKind,
};
use zferry_core::endpoint::receiver::{
    PlaceholderEncryptionConfig, ReceiverConfig, ReceiverEndpoint, ReceiverError,
};
use zferry_core::endpoint::{
    Endpoint, EndpointError, Filesystem, Guarantee, Protection, PruneCursors, PruneReq, ReceiveReq,
    Receiver,
};
use zferry_core::engine::pruner::FilesystemOutcome;
use zferry_core::job_id::JobId;
use zferry_core::name::{Component, DatasetName, VersionName};
use zferry_core::prune::{KeepRule, KeepRules, LastNRule, ReplicationCursor};
use zferry_core::version::{Guid, Version};
use zferry_sim::{Action, Actor, DatasetOptions, Fault, SimZfs, StreamBreak};

/// The seed of the simulated world's GUIDs.
const SEED: u64 = 0x0dec_e1fe;

/// Pool capacity, far above what the tests write.
const POOL_BYTES: u64 = 1 << 32;

/// One MiB of data (1 KiB of sim stream).
const MIB: u64 = 1 << 20;

/// The receiving job.
const JOB: &str = "sink";

/// Another receiving job sharing the pool.
const OTHER_JOB: &str = "other";

// ---------------------------------------------------------------------------------------------
// Fixtures

fn ds(name: &str) -> DatasetName {
    DatasetName::parse(name).unwrap_or_else(|e| panic!("dataset {name:?}: {e}"))
}

fn v(name: &str) -> VersionName {
    VersionName::parse(name).unwrap_or_else(|e| panic!("version {name:?}: {e}"))
}

fn tag(job: &str) -> String {
    format!("zrepl_last_received_J_{job}")
}

/// Pools `src` (sender) and `backup` (receiver) with `backup/sink`; the clock advances a minute
/// per reading.
fn world() -> SimZfs {
    let now = Arc::new(AtomicI64::new(1_763_700_000));
    let sim = SimZfs::new(SEED, move || now.fetch_add(60, Ordering::SeqCst));
    sim.setup().create_pool("src", POOL_BYTES).unwrap();
    sim.setup().create_pool("backup", POOL_BYTES).unwrap();
    sim.setup().create_dataset(&ds("backup/sink")).unwrap();
    sim
}

/// Creates the sender dataset `fs` (parents must exist) with snapshots, `mib` MiB before each.
fn sender_fs(sim: &SimZfs, fs: &str, snaps: &[&str], mib: u64) {
    let name = ds(fs);
    if !sim.exists(&name) {
        sim.setup().create_dataset(&name).unwrap();
    }
    for s in snaps {
        sim.setup().write(&name, mib * MIB).unwrap();
        sim.setup().snapshot(&[v(&format!("{fs}@{s}"))]).unwrap();
    }
}

fn version(sim: &SimZfs, name: &str) -> Version {
    sim.version(&v(name))
        .unwrap_or_else(|| panic!("{name} does not exist"))
}

fn config(identity: Option<&str>, encryption: PlaceholderEncryptionConfig) -> ReceiverConfig {
    ReceiverConfig {
        job: JobId::parse(JOB).unwrap(),
        root_fs: ds("backup/sink"),
        client_identity: identity.map(|i| Component::parse(i).unwrap()),
        placeholder_encryption: encryption,
        properties_override: BTreeMap::new(),
        properties_inherit: Vec::new(),
    }
}

fn endpoint(sim: &SimZfs, config: ReceiverConfig) -> ReceiverEndpoint {
    ReceiverEndpoint::new(Arc::new(sim.clone()), config).unwrap()
}

/// A sink for client `host1` that creates placeholders by inheriting.
fn sink(sim: &SimZfs) -> ReceiverEndpoint {
    endpoint(
        sim,
        config(Some("host1"), PlaceholderEncryptionConfig::Inherit),
    )
}

fn protection(initial: Guarantee, incremental: Guarantee) -> Protection {
    Protection {
        initial,
        incremental,
    }
}

const RESUMABLE: Protection = Protection {
    initial: Guarantee::GuaranteeResumability,
    incremental: Guarantee::GuaranteeResumability,
};

async fn stream(sim: &SimZfs, source: SendSource, properties: bool) -> ByteStream {
    let flags = SendFlags {
        properties,
        ..SendFlags::default()
    };
    sim.send(&SendRequest { source, flags }).await.unwrap()
}

async fn full_stream(sim: &SimZfs, to: &str) -> ByteStream {
    stream(sim, SendSource::Full { to: v(to) }, false).await
}

async fn incremental_stream(sim: &SimZfs, from: &str, to: &str) -> ByteStream {
    let source = SendSource::Incremental {
        from: v(from),
        to: v(to),
    };
    stream(sim, source, false).await
}

/// The receive request for sender snapshot `to` (`fs@name`).
fn request(sim: &SimZfs, to: &str, incremental: bool, protection: Protection) -> ReceiveReq {
    let to_version = version(sim, to);
    ReceiveReq {
        filesystem: v(to).dataset().clone(),
        to: to_version,
        clear_resume_token: false,
        protection,
        incremental,
    }
}

/// Receives sender snapshot `to` in full.
async fn receive_full(
    sim: &SimZfs,
    endpoint: &ReceiverEndpoint,
    to: &str,
) -> Result<Version, EndpointError> {
    let req = request(sim, to, false, RESUMABLE);
    let s = full_stream(sim, to).await;
    endpoint.receive(&req, s).await.map(|r| r.received)
}

/// Receives `from` -> `to` incrementally under `protection`.
async fn receive_incremental(
    sim: &SimZfs,
    endpoint: &ReceiverEndpoint,
    from: &str,
    to: &str,
    protection: Protection,
) -> Result<Version, EndpointError> {
    let req = request(sim, to, true, protection);
    let s = incremental_stream(sim, from, to).await;
    endpoint.receive(&req, s).await.map(|r| r.received)
}

/// `name=value(source)` of each property, space-separated.
async fn props(sim: &SimZfs, dataset: &str, names: &[&str]) -> String {
    let got = sim
        .get_properties(&ObjectName::Dataset(ds(dataset)), names)
        .await
        .unwrap();
    names
        .iter()
        .map(|n| {
            let p = &got[*n];
            let source = match &p.source {
                PropertySource::Local => "local".to_owned(),
                PropertySource::Default => "default".to_owned(),
                PropertySource::Inherited { from } => format!("inherited from {from}"),
                PropertySource::Received => "received".to_owned(),
                PropertySource::Temporary => "temporary".to_owned(),
                PropertySource::None => "-".to_owned(),
            };
            format!("{n}={}({source})", p.value)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The datasets of pool `backup`, one per line, with `*` marking local placeholders.
async fn datasets(sim: &SimZfs) -> String {
    let entries = sim
        .list_datasets(Some(&ds("backup")), &["zrepl:placeholder"])
        .await
        .unwrap();
    let mut out = Vec::new();
    for e in entries {
        let local_on = sim
            .get_properties(&ObjectName::Dataset(e.name.clone()), &["zrepl:placeholder"])
            .await
            .unwrap()
            .get("zrepl:placeholder")
            .is_some_and(|p| p.value == "on" && p.source == PropertySource::Local);
        out.push(format!("{}{}", e.name, if local_on { " *" } else { "" }));
    }
    out.join("\n")
}

/// The snapshots of a receiver dataset with their holds: `s1[tag,tag] s2[]`.
async fn snapshots_with_holds(sim: &SimZfs, dataset: &str) -> String {
    let mut out = Vec::new();
    for version in sim.versions(&ds(dataset)) {
        if !version.is_snapshot() {
            continue;
        }
        let holds = sim
            .holds(&v(&format!("{dataset}@{}", version.name)))
            .await
            .unwrap();
        out.push(format!("{}[{}]", version.name, holds.join(",")));
    }
    out.join(" ")
}

/// `path flags token?` per listed filesystem.
fn listing(filesystems: &[Filesystem]) -> String {
    filesystems
        .iter()
        .map(|f| {
            format!(
                "{}{}{}",
                f.path,
                if f.is_placeholder { " placeholder" } else { "" },
                if f.resume_token.is_some() {
                    " token"
                } else {
                    ""
                }
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn receiver_error(e: EndpointError) -> ReceiverError {
    match e {
        EndpointError::Receiver(r) => r,
        other => panic!("expected a receiver error, got {other:?}"),
    }
}

fn zfs_kind(e: EndpointError) -> ZfsErrorKind {
    match e {
        EndpointError::Zfs(z) => z.kind,
        other => panic!("expected a zfs error, got {other:?}"),
    }
}

/// Every change the daemon made, as `action object`.
fn daemon_events(sim: &SimZfs) -> Vec<String> {
    sim.events()
        .into_iter()
        .filter(|e| e.actor == Actor::Daemon)
        .map(|e| format!("{:?} {}", e.action, e.object))
        .collect()
}

fn lines(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// Placeholders

/// zrepl `ReplicationPlaceholderEncryption__UnspecifiedIsOkForClientIdentityPlaceholder`: with
/// `unspecified`, the sink's client-identity dataset may be created (it inherits); a sender pool
/// root needs no other placeholder.
#[tokio::test(start_paused = true)]
async fn unspecified_is_ok_for_the_client_identity_placeholder() {
    let sim = world();
    sender_fs(&sim, "src", &["s1"], 1);
    let ep = endpoint(
        &sim,
        config(Some("host1"), PlaceholderEncryptionConfig::Unspecified),
    );
    let received = receive_full(&sim, &ep, "src@s1").await.unwrap();
    assert_eq!(received.guid, version(&sim, "src@s1").guid);
    assert_eq!(received.userrefs, Some(1), "the last-received hold");
    assert_eq!(
        datasets(&sim).await,
        lines(
            "backup
             backup/sink
             backup/sink/host1 *
             backup/sink/host1/src"
        )
    );
    assert_eq!(
        props(
            &sim,
            "backup/sink/host1",
            &["zrepl:placeholder", "mountpoint"]
        )
        .await,
        "zrepl:placeholder=on(local) mountpoint=none(local)"
    );
    assert_eq!(
        listing(&ep.list_filesystems().await.unwrap()),
        "src",
        "the client root itself is not listed"
    );
}

/// zrepl `ReplicationPlaceholderEncryption__UnspecifiedLeadsToFailureAtRuntimeWhenCreating
/// Placeholders`, with nothing created when the refusal comes.
#[tokio::test(start_paused = true)]
async fn unspecified_refuses_other_placeholders_and_creates_nothing() {
    let sim = world();
    sender_fs(&sim, "src/a", &["s1"], 1);
    let ep = endpoint(
        &sim,
        config(Some("host1"), PlaceholderEncryptionConfig::Unspecified),
    );
    let before = sim.events().len();
    let err = receiver_error(receive_full(&sim, &ep, "src/a@s1").await.unwrap_err());
    assert!(
        matches!(err, ReceiverError::PlaceholderEncryptionUnspecified { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(
            "cannot create placeholder filesystem `backup/sink/host1/src`: placeholder \
             filesystem encryption handling is unspecified in receiver config; set \
             recv.placeholder.encryption to"
        ),
        "{message}"
    );
    assert_eq!(sim.events().len(), before, "{:?}", daemon_events(&sim));
    assert!(!sim.exists(&ds("backup/sink/host1")));
    // A pull job has no identity: even its first level is refused.
    let pull = endpoint(&sim, config(None, PlaceholderEncryptionConfig::Unspecified));
    let err = receiver_error(receive_full(&sim, &pull, "src/a@s1").await.unwrap_err());
    assert!(
        err.to_string()
            .contains("placeholder filesystem `backup/sink/src`"),
        "{err}"
    );
}

/// zrepl `ReplicationPlaceholderEncryption__EncryptOnReceiverUseCase__WorksIfConfiguredWith
/// Inherit`: below an encrypted root, `inherit` placeholders and the plain-sent leaf all have
/// the root as their encryption root; `off` placeholders are unencrypted, and so is a plain
/// stream received below them.
#[tokio::test(start_paused = true)]
async fn placeholder_encryption_follows_the_config_below_an_encrypted_root() {
    let sim = world();
    let encrypted = DatasetOptions {
        encrypted: true,
        ..DatasetOptions::default()
    };
    sim.setup()
        .create_dataset_with(&ds("backup/enc"), &encrypted)
        .unwrap();
    sender_fs(&sim, "src/a", &["s1"], 1);
    sender_fs(&sim, "src/a/b", &["s1"], 1);

    let mut inherit = config(Some("host1"), PlaceholderEncryptionConfig::Inherit);
    inherit.root_fs = ds("backup/enc");
    let ep = endpoint(&sim, inherit);
    receive_full(&sim, &ep, "src/a/b@s1").await.unwrap();
    for dataset in [
        "backup/enc/host1",
        "backup/enc/host1/src",
        "backup/enc/host1/src/a",
        "backup/enc/host1/src/a/b",
    ] {
        assert_eq!(
            props(&sim, dataset, &["encryptionroot"]).await,
            "encryptionroot=backup/enc(-)",
            "{dataset}"
        );
    }

    let mut off = config(Some("host2"), PlaceholderEncryptionConfig::Off);
    off.root_fs = ds("backup/enc");
    let ep = endpoint(&sim, off);
    receive_full(&sim, &ep, "src/a/b@s1").await.unwrap();
    // The identity placeholder follows the config too (only `unspecified` makes it inherit).
    for dataset in [
        "backup/enc/host2",
        "backup/enc/host2/src",
        "backup/enc/host2/src/a",
        "backup/enc/host2/src/a/b",
    ] {
        assert_eq!(
            props(&sim, dataset, &["encryption"]).await,
            "encryption=off(default)",
            "{dataset}"
        );
    }
    assert_eq!(
        props(
            &sim,
            "backup/enc/host2/src/a",
            &["zrepl:placeholder", "mountpoint"]
        )
        .await,
        "zrepl:placeholder=on(local) mountpoint=none(local)"
    );
}

/// A full stream into a placeholder replaces it: `off`, the user's snapshots on it rolled back
/// and destroyed, `recv -F`; the children stay.
#[tokio::test(start_paused = true)]
async fn a_full_receive_replaces_a_placeholder() {
    let sim = world();
    sender_fs(&sim, "src/a", &["s1"], 1);
    sender_fs(&sim, "src/a/b", &["s1"], 1);
    let ep = sink(&sim);
    receive_full(&sim, &ep, "src/a/b@s1").await.unwrap();
    assert_eq!(
        listing(&ep.list_filesystems().await.unwrap()),
        lines(
            "src placeholder
             src/a placeholder
             src/a/b"
        )
    );
    // Someone snapshotted the placeholder twice.
    sim.user()
        .snapshot(&[v("backup/sink/host1/src/a@u1")])
        .unwrap();
    sim.user()
        .snapshot(&[v("backup/sink/host1/src/a@u2")])
        .unwrap();

    let received = receive_full(&sim, &ep, "src/a@s1").await.unwrap();
    assert_eq!(received.guid, version(&sim, "src/a@s1").guid);
    assert_eq!(
        props(&sim, "backup/sink/host1/src/a", &["zrepl:placeholder"]).await,
        "zrepl:placeholder=off(local)"
    );
    assert_eq!(
        snapshots_with_holds(&sim, "backup/sink/host1/src/a").await,
        format!("s1[{}]", tag(JOB))
    );
    assert_eq!(
        sim.version_digest(&v("backup/sink/host1/src/a@s1")),
        sim.version_digest(&v("src/a@s1"))
    );
    assert_eq!(
        listing(&ep.list_filesystems().await.unwrap()),
        lines(
            "src placeholder
             src/a
             src/a/b"
        )
    );
    let destroyed: Vec<String> = daemon_events(&sim)
        .into_iter()
        .filter(|e| e.starts_with("DestroySnapshot") || e.starts_with("Rollback"))
        .collect();
    assert_eq!(
        destroyed,
        [
            "DestroySnapshot backup/sink/host1/src/a@u2",
            "Rollback backup/sink/host1/src/a@u1",
            "DestroySnapshot backup/sink/host1/src/a@u1",
        ]
    );
}

/// A receive into a placeholder that fails without resumable state turns the property back on;
/// one that leaves resumable state leaves it off, reports the token, and a later receive that
/// clears the token replaces the placeholder after all.
#[tokio::test(start_paused = true)]
async fn a_failed_receive_into_a_placeholder_restores_it_unless_state_was_left() {
    let sim = world();
    sender_fs(&sim, "src/a", &["s1"], 8);
    sender_fs(&sim, "src/a/b", &["s1"], 1);
    let ep = sink(&sim);
    receive_full(&sim, &ep, "src/a/b@s1").await.unwrap();
    let placeholder = "backup/sink/host1/src/a";

    sim.inject(Fault::Fail {
        operation: zferry_core::backend::Operation::Receive,
        n_calls: 1,
        kind: ZfsErrorKind::NoSpace,
    });
    let err = receive_full(&sim, &ep, "src/a@s1").await.unwrap_err();
    assert_eq!(zfs_kind(err), ZfsErrorKind::NoSpace);
    assert_eq!(
        props(&sim, placeholder, &["zrepl:placeholder"]).await,
        "zrepl:placeholder=on(local)"
    );

    sim.inject(Fault::BreakSend {
        after_bytes: 3000,
        how: StreamBreak::Eof,
    });
    let err = receive_full(&sim, &ep, "src/a@s1").await.unwrap_err();
    assert!(
        matches!(zfs_kind(err), ZfsErrorKind::ReceiveInterrupted { .. }),
        "the interrupted receive"
    );
    assert_eq!(
        props(&sim, placeholder, &["zrepl:placeholder"]).await,
        "zrepl:placeholder=off(local)"
    );
    assert_eq!(
        listing(&ep.list_filesystems().await.unwrap()),
        lines(
            "src placeholder
             src/a token
             src/a/b"
        )
    );

    // The sender cannot continue the token: the active side asks to clear it.
    let mut req = request(&sim, "src/a@s1", false, RESUMABLE);
    req.clear_resume_token = true;
    let s = full_stream(&sim, "src/a@s1").await;
    ep.receive(&req, s).await.unwrap();
    assert_eq!(
        snapshots_with_holds(&sim, placeholder).await,
        format!("s1[{}]", tag(JOB))
    );
    assert_eq!(
        listing(&ep.list_filesystems().await.unwrap()),
        lines(
            "src placeholder
             src/a
             src/a/b"
        )
    );
}

// ---------------------------------------------------------------------------------------------
// The last-received hold

/// Exactly one last-received hold of the job, on the newest received snapshot, after every
/// step; another job's hold is never touched; `guarantee_nothing` releases the job's holds.
#[tokio::test(start_paused = true)]
async fn the_last_received_hold_moves_forward_and_guarantee_nothing_releases_it() {
    let sim = world();
    sender_fs(&sim, "src/a", &["s1", "s2", "s3", "s4"], 1);
    let ep = sink(&sim);
    let fs = "backup/sink/host1/src/a";

    receive_full(&sim, &ep, "src/a@s1").await.unwrap();
    assert_eq!(
        snapshots_with_holds(&sim, fs).await,
        format!("s1[{}]", tag(JOB))
    );
    // Another job holds s1 too (a second sink receiving into the same datasets).
    sim.user()
        .hold(&tag(OTHER_JOB), &[v(&format!("{fs}@s1"))])
        .unwrap();

    let received = receive_incremental(&sim, &ep, "src/a@s1", "src/a@s2", RESUMABLE)
        .await
        .unwrap();
    assert_eq!(received.userrefs, Some(1));
    assert_eq!(
        snapshots_with_holds(&sim, fs).await,
        format!("s1[{}] s2[{}]", tag(OTHER_JOB), tag(JOB))
    );

    let incremental = protection(
        Guarantee::GuaranteeResumability,
        Guarantee::GuaranteeIncremental,
    );
    receive_incremental(&sim, &ep, "src/a@s2", "src/a@s3", incremental)
        .await
        .unwrap();
    assert_eq!(
        snapshots_with_holds(&sim, fs).await,
        format!("s1[{}] s2[] s3[{}]", tag(OTHER_JOB), tag(JOB))
    );

    let nothing = protection(
        Guarantee::GuaranteeResumability,
        Guarantee::GuaranteeNothing,
    );
    let received = receive_incremental(&sim, &ep, "src/a@s3", "src/a@s4", nothing)
        .await
        .unwrap();
    assert_eq!(received.userrefs, Some(0));
    assert_eq!(
        snapshots_with_holds(&sim, fs).await,
        format!("s1[{}] s2[] s3[] s4[]", tag(OTHER_JOB))
    );
    // Only this job's tag was ever released.
    let released: Vec<String> = sim
        .events()
        .into_iter()
        .filter_map(|e| match e.action {
            Action::Release { tag } => Some(format!("{tag} {}", e.object)),
            _ => None,
        })
        .collect();
    assert_eq!(
        released,
        [
            format!("{} {fs}@s1", tag(JOB)),
            format!("{} {fs}@s2", tag(JOB)),
            format!("{} {fs}@s3", tag(JOB)),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Resume tokens

/// An interrupted incremental receive leaves a token that `list_filesystems` reports (equal to
/// the one in the error); a resumed stream completes it; `clear_resume_token` discards it.
#[tokio::test(start_paused = true)]
async fn an_interrupted_receive_reports_its_token_until_resumed_or_cleared() {
    let sim = world();
    sender_fs(&sim, "src/a", &["s1"], 1);
    sender_fs(&sim, "src/a", &["s2", "s3"], 8);
    let ep = sink(&sim);
    receive_full(&sim, &ep, "src/a@s1").await.unwrap();

    // Broken on the receiving side.
    sim.inject(Fault::BreakReceive { after_bytes: 3000 });
    let err = receive_incremental(&sim, &ep, "src/a@s1", "src/a@s2", RESUMABLE)
        .await
        .unwrap_err();
    let ZfsErrorKind::ReceiveInterrupted { token: Some(token) } = zfs_kind(err) else {
        panic!("no token");
    };
    let listed = ep.list_filesystems().await.unwrap();
    assert_eq!(listed[1].path, ds("src/a"));
    assert_eq!(listed[1].resume_token.as_deref(), Some(token.as_str()));
    // The hold stays where the last complete receive put it.
    assert_eq!(
        snapshots_with_holds(&sim, "backup/sink/host1/src/a").await,
        format!("s1[{}]", tag(JOB))
    );

    // Resumed.
    let req = request(&sim, "src/a@s2", true, RESUMABLE);
    let s = stream(&sim, SendSource::Resume { token }, false).await;
    ep.receive(&req, s).await.unwrap();
    assert_eq!(
        listing(&ep.list_filesystems().await.unwrap()),
        lines(
            "src placeholder
             src/a"
        )
    );

    // Broken on the sending side, then cleared and sent afresh.
    sim.inject(Fault::BreakSend {
        after_bytes: 3000,
        how: StreamBreak::Error,
    });
    let err = receive_incremental(&sim, &ep, "src/a@s2", "src/a@s3", RESUMABLE)
        .await
        .unwrap_err();
    assert!(
        matches!(zfs_kind(err), ZfsErrorKind::ReceiveInterrupted { .. }),
        "interrupted"
    );
    assert!(
        ep.list_filesystems().await.unwrap()[1]
            .resume_token
            .is_some()
    );
    let mut req = request(&sim, "src/a@s3", true, RESUMABLE);
    req.clear_resume_token = true;
    let s = incremental_stream(&sim, "src/a@s2", "src/a@s3").await;
    ep.receive(&req, s).await.unwrap();
    assert_eq!(
        snapshots_with_holds(&sim, "backup/sink/host1/src/a").await,
        format!("s1[] s2[] s3[{}]", tag(JOB))
    );
    assert!(
        daemon_events(&sim)
            .iter()
            .any(|e| e == "AbortReceive backup/sink/host1/src/a"),
        "{:?}",
        daemon_events(&sim)
    );
    assert_eq!(
        listing(&ep.list_filesystems().await.unwrap()),
        lines(
            "src placeholder
             src/a"
        )
    );
}

/// An interrupted full receive into a new filesystem leaves an inconsistent dataset with a
/// token; clearing it destroys the dataset and the fresh full stream creates it again.
#[tokio::test(start_paused = true)]
async fn clearing_an_interrupted_full_receive_starts_over() {
    let sim = world();
    sender_fs(&sim, "src/a", &["s1"], 8);
    let ep = sink(&sim);
    sim.inject(Fault::BreakReceive { after_bytes: 3000 });
    receive_full(&sim, &ep, "src/a@s1").await.unwrap_err();
    assert_eq!(
        listing(&ep.list_filesystems().await.unwrap()),
        lines(
            "src placeholder
             src/a token"
        )
    );
    let mut req = request(&sim, "src/a@s1", false, RESUMABLE);
    req.clear_resume_token = true;
    let s = full_stream(&sim, "src/a@s1").await;
    ep.receive(&req, s).await.unwrap();
    assert_eq!(
        snapshots_with_holds(&sim, "backup/sink/host1/src/a").await,
        format!("s1[{}]", tag(JOB))
    );
    assert_eq!(
        listing(&ep.list_filesystems().await.unwrap()),
        lines(
            "src placeholder
             src/a"
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Properties

/// zrepl `ReplicationPropertyReplicationWorks`: with a `-p` stream, a `-x` property is absent on
/// the receiver, an ordinary one is `received`, an `-o` one is `local` with the override value.
#[tokio::test(start_paused = true)]
async fn receive_properties_are_overridden_and_inherited_as_configured() {
    let sim = world();
    let mut properties = BTreeMap::new();
    properties.insert("com.example:keep".to_owned(), "k".to_owned());
    properties.insert("com.example:drop".to_owned(), "d".to_owned());
    properties.insert("com.example:over".to_owned(), "sender".to_owned());
    sim.setup()
        .create_dataset_with(
            &ds("src/a"),
            &DatasetOptions {
                properties,
                ..DatasetOptions::default()
            },
        )
        .unwrap();
    sender_fs(&sim, "src/a", &["s1"], 1);
    let mut cfg = config(Some("host1"), PlaceholderEncryptionConfig::Inherit);
    cfg.properties_override
        .insert("com.example:over".to_owned(), "receiver".to_owned());
    cfg.properties_inherit.push("com.example:drop".to_owned());
    let ep = endpoint(&sim, cfg);
    let req = request(&sim, "src/a@s1", false, RESUMABLE);
    let s = stream(&sim, SendSource::Full { to: v("src/a@s1") }, true).await;
    ep.receive(&req, s).await.unwrap();
    assert_eq!(
        props(
            &sim,
            "backup/sink/host1/src/a",
            &["com.example:keep", "com.example:drop", "com.example:over"]
        )
        .await,
        "com.example:keep=k(received) com.example:drop=-(-) com.example:over=receiver(local)"
    );
}

// ---------------------------------------------------------------------------------------------
// Listing

/// A sink lists only its own client's datasets, mapped back to sender paths; a pull job lists
/// everything below its root; a missing client root is an empty list, a missing root_fs an
/// error that says what to do.
#[tokio::test(start_paused = true)]
async fn list_filesystems_maps_paths_for_sink_and_pull() {
    let sim = world();
    sender_fs(&sim, "src/a", &["s1"], 1);
    let host1 = sink(&sim);
    assert_eq!(listing(&host1.list_filesystems().await.unwrap()), "");
    receive_full(&sim, &host1, "src/a@s1").await.unwrap();
    let host2 = endpoint(
        &sim,
        config(Some("host2"), PlaceholderEncryptionConfig::Inherit),
    );
    assert_eq!(listing(&host2.list_filesystems().await.unwrap()), "");
    receive_full(&sim, &host2, "src/a@s1").await.unwrap();
    // A dataset no sender path can name (`9x` is no pool name) is not listed.
    sim.user()
        .create_dataset(&ds("backup/sink/host1/9x"))
        .unwrap();
    assert_eq!(
        listing(&host1.list_filesystems().await.unwrap()),
        lines(
            "src placeholder
             src/a"
        )
    );

    let mut pull_cfg = config(None, PlaceholderEncryptionConfig::Inherit);
    pull_cfg.root_fs = ds("backup/pull");
    sim.setup().create_dataset(&ds("backup/pull")).unwrap();
    let pull = endpoint(&sim, pull_cfg.clone());
    receive_full(&sim, &pull, "src/a@s1").await.unwrap();
    assert_eq!(
        listing(&pull.list_filesystems().await.unwrap()),
        lines(
            "src placeholder
             src/a"
        )
    );
    assert_eq!(
        pull.list_versions(&ds("src/a"))
            .await
            .unwrap()
            .iter()
            .map(|v| (v.name.to_string(), v.guid))
            .collect::<Vec<_>>(),
        [("s1".to_owned(), version(&sim, "src/a@s1").guid)]
    );

    pull_cfg.root_fs = ds("backup/missing");
    let missing = endpoint(&sim, pull_cfg.clone());
    let err = receiver_error(missing.list_filesystems().await.unwrap_err());
    assert_eq!(
        err.to_string(),
        "root_fs `backup/missing` does not exist on the receiver; create it (`zfs create -p \
         backup/missing`) or correct root_fs in the receiving job's configuration"
    );
    let err = receiver_error(receive_full(&sim, &missing, "src/a@s1").await.unwrap_err());
    assert!(matches!(err, ReceiverError::RootMissing { .. }), "{err:?}");
    pull_cfg.root_fs = ds("nopool/x");
    let no_pool = endpoint(&sim, pull_cfg);
    let err = receiver_error(no_pool.list_filesystems().await.unwrap_err());
    assert!(matches!(err, ReceiverError::PoolMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("zpool import nopool"), "{err}");
    // The sink whose root_fs is missing says so too, not "empty".
    let mut sink_cfg = config(Some("host1"), PlaceholderEncryptionConfig::Inherit);
    sink_cfg.root_fs = ds("backup/missing");
    let err = receiver_error(
        endpoint(&sim, sink_cfg)
            .list_filesystems()
            .await
            .unwrap_err(),
    );
    assert!(matches!(err, ReceiverError::RootMissing { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Confinement

/// Requests that would reach outside the client root, or cannot be mapped into it, are refused
/// before anything changes on the pool.
#[tokio::test(start_paused = true)]
async fn hostile_requests_are_refused_without_touching_the_pool() {
    let sim = world();
    sender_fs(&sim, "src/a", &["s1"], 1);
    let ep = sink(&sim);
    receive_full(&sim, &ep, "src/a@s1").await.unwrap();
    // host2's data, which host1's requests must never reach.
    let host2 = endpoint(
        &sim,
        config(Some("host2"), PlaceholderEncryptionConfig::Inherit),
    );
    receive_full(&sim, &host2, "src/a@s1").await.unwrap();

    // `..` and absolute paths cannot even be expressed as a filesystem.
    for hostile in ["../host2/src/a", "src/../../host2", "/backup/sink", ""] {
        assert!(DatasetName::parse(hostile).is_err(), "{hostile:?}");
    }
    // The root's own name is just another sender path: it maps below the root, where nothing
    // of that name exists, and the root's snapshot is untouched.
    sim.user().snapshot(&[v("backup/sink@keep")]).unwrap();
    let n_events = sim.events().len();
    let keep = version(&sim, "backup/sink@keep");
    for root_name in ["backup/sink", "backup/sink/host1"] {
        let err = ep
            .destroy_snapshots(&ds(root_name), &[(keep.name.clone(), keep.guid)])
            .await
            .unwrap_err();
        assert_eq!(zfs_kind(err), ZfsErrorKind::DoesNotExist, "{root_name}");
    }
    // A path that fits on the sender but not below the root.
    let long = ds(&format!("src/{}", "x".repeat(240)));
    let s = full_stream(&sim, "src/a@s1").await;
    let mut req = request(&sim, "src/a@s1", false, RESUMABLE);
    req.filesystem = long.clone();
    let err = receiver_error(ep.receive(&req, s).await.unwrap_err());
    assert!(matches!(err, ReceiverError::Unmappable { .. }), "{err:?}");
    let err = receiver_error(
        ep.destroy_snapshots(&long, &[(Component::parse("s1").unwrap(), Guid(1))])
            .await
            .unwrap_err(),
    );
    assert!(matches!(err, ReceiverError::Unmappable { .. }), "{err:?}");
    let err = receiver_error(ep.list_versions(&long).await.unwrap_err());
    assert!(matches!(err, ReceiverError::Unmappable { .. }), "{err:?}");

    // `to` must be a snapshot.
    let mut req = request(&sim, "src/a@s1", false, RESUMABLE);
    req.to = Version::bookmark(req.to.name.clone(), req.to.guid, req.to.createtxg, 0);
    let s = full_stream(&sim, "src/a@s1").await;
    let err = receiver_error(ep.receive(&req, s).await.unwrap_err());
    assert!(
        matches!(err, ReceiverError::ToNotSnapshot { .. }),
        "{err:?}"
    );

    // A receiver has no cursors of its own.
    let prune = PruneReq {
        filesystems: vec![ds("src/a")],
        rules: KeepRules::new(Vec::new()).unwrap(),
        cursors: PruneCursors::Own,
        protected: Vec::new(),
    };
    let err = receiver_error(ep.prune(&prune).await.unwrap_err());
    assert!(matches!(err, ReceiverError::OwnCursorsRefused), "{err:?}");

    assert_eq!(sim.events().len(), n_events, "{:?}", daemon_events(&sim));
    assert!(sim.version(&v("backup/sink@keep")).is_some());
    assert_eq!(
        snapshots_with_holds(&sim, "backup/sink/host2/src/a").await,
        format!("s1[{}]", tag(JOB))
    );
}

// ---------------------------------------------------------------------------------------------
// Destroying and pruning

/// Only snapshots whose GUID is still the one asked for are destroyed; one per name, in request
/// order; a missing one counts as destroyed.
#[tokio::test(start_paused = true)]
async fn destroy_snapshots_checks_each_guid() {
    let sim = world();
    sender_fs(&sim, "src/a", &["s1", "s2", "s3"], 1);
    let ep = sink(&sim);
    receive_full(&sim, &ep, "src/a@s1").await.unwrap();
    receive_incremental(&sim, &ep, "src/a@s1", "src/a@s2", RESUMABLE)
        .await
        .unwrap();
    receive_incremental(&sim, &ep, "src/a@s2", "src/a@s3", RESUMABLE)
        .await
        .unwrap();
    let g1 = version(&sim, "src/a@s1").guid;
    let g2 = version(&sim, "src/a@s2").guid;
    let g3 = version(&sim, "src/a@s3").guid;
    let c = |s: &str| Component::parse(s).unwrap();
    let outcomes = ep
        .destroy_snapshots(
            &ds("src/a"),
            &[
                (c("s2"), Guid(g2.0 ^ 1)),
                (c("s1"), g1),
                (c("s9"), Guid(9)),
                (c("s1"), g1),
                (c("s3"), g3),
            ],
        )
        .await
        .unwrap();
    let rendered: Vec<String> = outcomes
        .iter()
        .map(|o| format!("{} {:?}", o.snapshot, o.result))
        .collect();
    assert_eq!(
        rendered,
        [
            format!("s2 Err(ExistsWithOtherGuid {{ existing: Guid({}) }})", g2.0),
            "s1 Ok(())".to_owned(),
            "s9 Ok(())".to_owned(),
            "s3 Err(Busy)".to_owned(),
        ]
    );
    assert_eq!(
        snapshots_with_holds(&sim, "backup/sink/host1/src/a").await,
        format!("s2[] s3[{}]", tag(JOB))
    );
}

/// Pruning maps the request's paths, cursors and protected snapshots into the root, reports by
/// sender path, and never destroys the cursor's snapshot, a protected one or the newest.
#[tokio::test(start_paused = true)]
async fn prune_maps_paths_cursors_and_protected_snapshots() {
    let sim = world();
    sender_fs(&sim, "src/a", &["s1", "s2", "s3", "s4", "s5", "s6"], 1);
    sender_fs(&sim, "src/b", &["s1"], 1);
    let ep = sink(&sim);
    receive_full(&sim, &ep, "src/a@s1").await.unwrap();
    for (from, to) in [
        ("s1", "s2"),
        ("s2", "s3"),
        ("s3", "s4"),
        ("s4", "s5"),
        ("s5", "s6"),
    ] {
        receive_incremental(
            &sim,
            &ep,
            &format!("src/a@{from}"),
            &format!("src/a@{to}"),
            RESUMABLE,
        )
        .await
        .unwrap();
    }
    receive_full(&sim, &ep, "src/b@s1").await.unwrap();
    let keep_one = KeepRules::new(vec![KeepRule::LastN(LastNRule {
        count: NonZeroU32::new(1).unwrap(),
        regex: None,
    })])
    .unwrap();
    let mut cursors = BTreeMap::new();
    cursors.insert(
        ds("src/a"),
        ReplicationCursor::At(version(&sim, "src/a@s4").guid),
    );
    let request = PruneReq {
        filesystems: vec![ds("src/a"), ds("src/b"), ds("src/gone")],
        rules: keep_one,
        cursors: PruneCursors::Given(cursors),
        protected: vec![(ds("src/a"), version(&sim, "src/a@s2").guid)],
    };
    let report = ep.prune(&request).await.unwrap();
    let outcomes: Vec<String> = report
        .filesystems
        .iter()
        .map(|f| match &f.outcome {
            FilesystemOutcome::Done { destroyed, of } => {
                format!("{} done {destroyed}/{of}", f.filesystem)
            }
            FilesystemOutcome::Skipped { reason } => format!("{} skipped: {reason}", f.filesystem),
            other => format!("{} {other:?}", f.filesystem),
        })
        .collect();
    assert_eq!(
        outcomes.join("\n"),
        lines(
            "src/a done 3/3
             src/b skipped: filesystem has no correspondence on sender
             src/gone skipped: filesystem has no correspondence on sender"
        )
    );
    assert_eq!(
        snapshots_with_holds(&sim, "backup/sink/host1/src/a").await,
        format!("s2[] s4[] s6[{}]", tag(JOB))
    );
}

// ---------------------------------------------------------------------------------------------
// More placeholder cases

/// ZFS refuses `recv -F` over an encrypted dataset: a placeholder that inherited encryption
/// cannot be replaced. The error says what to do, and the placeholder stays as it was.
#[tokio::test(start_paused = true)]
async fn an_encrypted_placeholder_is_not_replaced_and_says_what_to_do() {
    let sim = world();
    let encrypted = DatasetOptions {
        encrypted: true,
        ..DatasetOptions::default()
    };
    sim.setup()
        .create_dataset_with(&ds("backup/enc"), &encrypted)
        .unwrap();
    sender_fs(&sim, "src/a", &["s1"], 1);
    sender_fs(&sim, "src/a/b", &["s1"], 1);
    let mut cfg = config(Some("host1"), PlaceholderEncryptionConfig::Inherit);
    cfg.root_fs = ds("backup/enc");
    let ep = endpoint(&sim, cfg);
    receive_full(&sim, &ep, "src/a/b@s1").await.unwrap();
    let err = receiver_error(receive_full(&sim, &ep, "src/a@s1").await.unwrap_err());
    assert!(
        matches!(err, ReceiverError::EncryptedPlaceholder { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("move its children aside"),
        "the error says what to do: {message}"
    );
    assert_eq!(
        props(&sim, "backup/enc/host1/src/a", &["zrepl:placeholder"]).await,
        "zrepl:placeholder=on(local)"
    );
    assert_eq!(
        snapshots_with_holds(&sim, "backup/enc/host1/src/a").await,
        ""
    );
}

/// An incremental stream never replaces a placeholder: its snapshots stay, the property stays.
#[tokio::test(start_paused = true)]
async fn an_incremental_stream_into_a_placeholder_destroys_nothing() {
    let sim = world();
    sender_fs(&sim, "src/a", &["s1", "s2"], 1);
    sender_fs(&sim, "src/a/b", &["s1"], 1);
    let ep = sink(&sim);
    receive_full(&sim, &ep, "src/a/b@s1").await.unwrap();
    sim.user()
        .snapshot(&[v("backup/sink/host1/src/a@u1")])
        .unwrap();
    let err = receive_incremental(&sim, &ep, "src/a@s1", "src/a@s2", RESUMABLE)
        .await
        .unwrap_err();
    assert_eq!(zfs_kind(err), ZfsErrorKind::IncrementalSourceMismatch);
    assert_eq!(
        snapshots_with_holds(&sim, "backup/sink/host1/src/a").await,
        "u1[]"
    );
    assert_eq!(
        props(&sim, "backup/sink/host1/src/a", &["zrepl:placeholder"]).await,
        "zrepl:placeholder=on(local)"
    );
}

/// An interrupted full receive into a placeholder is resumed without `-F`, and completes.
#[tokio::test(start_paused = true)]
async fn an_interrupted_placeholder_replacement_resumes() {
    let sim = world();
    sender_fs(&sim, "src/a", &["s1"], 8);
    sender_fs(&sim, "src/a/b", &["s1"], 1);
    let ep = sink(&sim);
    receive_full(&sim, &ep, "src/a/b@s1").await.unwrap();
    sim.inject(Fault::BreakReceive { after_bytes: 3000 });
    let err = receive_full(&sim, &ep, "src/a@s1").await.unwrap_err();
    let ZfsErrorKind::ReceiveInterrupted { token: Some(token) } = zfs_kind(err) else {
        panic!("no token");
    };
    let req = request(&sim, "src/a@s1", false, RESUMABLE);
    let s = stream(&sim, SendSource::Resume { token }, false).await;
    ep.receive(&req, s).await.unwrap();
    assert_eq!(
        snapshots_with_holds(&sim, "backup/sink/host1/src/a").await,
        format!("s1[{}]", tag(JOB))
    );
    assert_eq!(
        sim.version_digest(&v("backup/sink/host1/src/a@s1")),
        sim.version_digest(&v("src/a@s1"))
    );
    assert_eq!(
        listing(&ep.list_filesystems().await.unwrap()),
        lines(
            "src placeholder
             src/a
             src/a/b"
        )
    );
}

/// Two receives that need the same placeholders create each once: the mutex serialises them.
#[tokio::test(start_paused = true)]
async fn concurrent_receives_create_each_placeholder_once() {
    let sim = world();
    sender_fs(&sim, "src/a", &[], 1);
    sender_fs(&sim, "src/a/x", &["s1"], 1);
    sender_fs(&sim, "src/a/y", &["s1"], 1);
    let ep = sink(&sim);
    // Each creation takes a while, so that the second receive arrives while the first creates.
    sim.inject(Fault::Delay {
        operation: zferry_core::backend::Operation::CreatePlaceholder,
        n_calls: 6,
        duration: std::time::Duration::from_secs(1),
    });
    let (x, y) = tokio::join!(
        receive_full(&sim, &ep, "src/a/x@s1"),
        receive_full(&sim, &ep, "src/a/y@s1")
    );
    x.unwrap();
    y.unwrap();
    assert_eq!(
        sim.op_count(zferry_core::backend::Operation::CreatePlaceholder),
        3
    );
    assert_eq!(
        datasets(&sim).await,
        lines(
            "backup
             backup/sink
             backup/sink/host1 *
             backup/sink/host1/src *
             backup/sink/host1/src/a *
             backup/sink/host1/src/a/x
             backup/sink/host1/src/a/y"
        )
    );
}

// ---------------------------------------------------------------------------------------------
// More hold and feature cases

/// When the new hold cannot be placed, the job's older hold stays: the next incremental step
/// keeps its base.
#[tokio::test(start_paused = true)]
async fn a_failed_hold_keeps_the_older_hold() {
    let sim = world();
    sender_fs(&sim, "src/a", &["s1", "s2"], 1);
    let ep = sink(&sim);
    receive_full(&sim, &ep, "src/a@s1").await.unwrap();
    sim.inject(Fault::Fail {
        operation: zferry_core::backend::Operation::Hold,
        n_calls: 1,
        kind: ZfsErrorKind::Busy,
    });
    let err = receive_incremental(&sim, &ep, "src/a@s1", "src/a@s2", RESUMABLE)
        .await
        .unwrap_err();
    assert_eq!(zfs_kind(err), ZfsErrorKind::Busy);
    assert_eq!(
        snapshots_with_holds(&sim, "backup/sink/host1/src/a").await,
        format!("s1[{}] s2[]", tag(JOB))
    );
    assert_eq!(
        sim.op_count(zferry_core::backend::Operation::Release),
        0,
        "nothing released"
    );
}

/// Without resumable receive (an old ZFS), no token is asked for or reported, receives are not
/// resumable, and no partial state is ever aborted.
#[tokio::test(start_paused = true)]
async fn without_resumable_receive_there_are_no_tokens() {
    let sim = world();
    let old = zferry_core::backend::Features {
        resumable_send: false,
        resumable_receive: false,
        encryption: true,
        batch_destroy: true,
    };
    sim.set_features("backup", old).unwrap();
    sender_fs(&sim, "src/a", &["s1"], 1);
    sender_fs(&sim, "src/a", &["s2"], 8);
    let ep = sink(&sim);
    receive_full(&sim, &ep, "src/a@s1").await.unwrap();
    sim.inject(Fault::BreakReceive { after_bytes: 3000 });
    let err = receive_incremental(&sim, &ep, "src/a@s1", "src/a@s2", RESUMABLE)
        .await
        .unwrap_err();
    assert_eq!(zfs_kind(err), ZfsErrorKind::StreamBroken);
    assert_eq!(
        listing(&ep.list_filesystems().await.unwrap()),
        lines(
            "src placeholder
             src/a"
        )
    );
    let mut req = request(&sim, "src/a@s2", true, RESUMABLE);
    req.clear_resume_token = true;
    let s = incremental_stream(&sim, "src/a@s1", "src/a@s2").await;
    ep.receive(&req, s).await.unwrap();
    assert_eq!(
        sim.op_count(zferry_core::backend::Operation::AbortReceive),
        0
    );
    assert_eq!(
        snapshots_with_holds(&sim, "backup/sink/host1/src/a").await,
        format!("s1[] s2[{}]", tag(JOB))
    );
}

/// What an incremental step into an existing filesystem costs, in backend calls (the module
/// doc's list): no placeholder work, one hold, one listing, one release.
#[tokio::test(start_paused = true)]
async fn an_incremental_receive_costs_what_the_doc_says() {
    let sim = world();
    sender_fs(&sim, "src/a", &["s1", "s2"], 1);
    let ep = sink(&sim);
    receive_full(&sim, &ep, "src/a@s1").await.unwrap();
    let before = sim.op_counts();
    let s = incremental_stream(&sim, "src/a@s1", "src/a@s2").await;
    let req = request(&sim, "src/a@s2", true, RESUMABLE);
    ep.receive(&req, s).await.unwrap();
    let calls: Vec<String> = sim
        .op_counts()
        .into_iter()
        .filter_map(|(op, n)| {
            let d = n - before.get(&op).copied().unwrap_or(0);
            (d > 0).then(|| format!("{} {d}", op.command()))
        })
        .collect();
    assert_eq!(
        calls,
        [
            "zfs list -t snapshot,bookmark 1",
            "zfs get 2",
            "zfs hold 1",
            "zfs release 1",
            "zfs holds 2",
            "zfs send 1",
            "zfs receive 1",
            "zfs/zpool feature probe 1",
        ]
    );
}

/// The pruner's back-off lives in the endpoint across prune requests: a filesystem that failed
/// goes after the others next time.
#[tokio::test(start_paused = true)]
async fn prune_remembers_failing_filesystems_across_requests() {
    let sim = world();
    sender_fs(&sim, "src/a", &["s1"], 1);
    sender_fs(&sim, "src/b", &["s1"], 1);
    let ep = sink(&sim);
    receive_full(&sim, &ep, "src/a@s1").await.unwrap();
    receive_full(&sim, &ep, "src/b@s1").await.unwrap();
    let mut cursors = BTreeMap::new();
    // `src/a`'s cursor names a snapshot the receiver does not have: its pruning fails.
    cursors.insert(ds("src/a"), ReplicationCursor::At(Guid(0xbad)));
    cursors.insert(
        ds("src/b"),
        ReplicationCursor::At(version(&sim, "src/b@s1").guid),
    );
    let request = PruneReq {
        filesystems: vec![ds("src/a"), ds("src/b")],
        rules: KeepRules::new(Vec::new()).unwrap(),
        cursors: PruneCursors::Given(cursors),
        protected: Vec::new(),
    };
    let order = |report: &zferry_core::engine::pruner::PruneReport| {
        report
            .filesystems
            .iter()
            .map(|f| {
                let ok = matches!(f.outcome, FilesystemOutcome::Done { .. });
                format!("{}{}", f.filesystem, if ok { "" } else { " failed" })
            })
            .collect::<Vec<_>>()
    };
    let first = ep.prune(&request).await.unwrap();
    assert_eq!(order(&first), ["src/a failed", "src/b"]);
    let second = ep.prune(&request).await.unwrap();
    assert_eq!(order(&second), ["src/b", "src/a failed"]);
}

/// A pull job with `unspecified` needs no placeholder for a sender pool's root dataset: it is
/// received directly below root_fs, which must exist.
#[tokio::test(start_paused = true)]
async fn a_pull_job_receives_a_pool_root_without_placeholders() {
    let sim = world();
    sender_fs(&sim, "src", &["s1"], 1);
    let ep = endpoint(&sim, config(None, PlaceholderEncryptionConfig::Unspecified));
    receive_full(&sim, &ep, "src@s1").await.unwrap();
    assert_eq!(
        sim.op_count(zferry_core::backend::Operation::CreatePlaceholder),
        0
    );
    assert_eq!(
        snapshots_with_holds(&sim, "backup/sink/src").await,
        format!("s1[{}]", tag(JOB))
    );
    assert_eq!(listing(&ep.list_filesystems().await.unwrap()), "src");
}

/// A stream that, when first read, injects a fault into the sim and then breaks: the fault
/// lands after everything the receiver did before reading the stream.
struct Sabotage {
    sim: SimZfs,
    fault: Option<Fault>,
}

impl tokio::io::AsyncRead for Sabotage {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(fault) = self.fault.take() {
            self.sim.inject(fault);
        }
        std::task::Poll::Ready(Err(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )))
    }
}

/// When the placeholder cannot be turned back on after a failed receive, the error says so and
/// gives the command that repairs it.
#[tokio::test(start_paused = true)]
async fn a_failed_restore_of_the_placeholder_says_how_to_repair_it() {
    let sim = world();
    sender_fs(&sim, "src/a", &["s1"], 1);
    sender_fs(&sim, "src/a/b", &["s1"], 1);
    let ep = sink(&sim);
    receive_full(&sim, &ep, "src/a/b@s1").await.unwrap();
    let sabotage = Sabotage {
        sim: sim.clone(),
        fault: Some(Fault::Fail {
            operation: zferry_core::backend::Operation::SetProperty,
            n_calls: 1,
            kind: ZfsErrorKind::Other {
                detail: "permission denied".to_owned(),
            },
        }),
    };
    let req = request(&sim, "src/a@s1", false, RESUMABLE);
    let err = receiver_error(ep.receive(&req, Box::pin(sabotage)).await.unwrap_err());
    let ReceiverError::RestorePlaceholder {
        receive, restore, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(receive.kind, ZfsErrorKind::StreamBroken);
    assert!(
        matches!(restore.kind, ZfsErrorKind::Other { .. }),
        "{restore:?}"
    );
    assert!(
        err.to_string()
            .contains("run `zfs set zrepl:placeholder=on backup/sink/host1/src/a` by hand"),
        "{err}"
    );
    assert_eq!(
        props(&sim, "backup/sink/host1/src/a", &["zrepl:placeholder"]).await,
        "zrepl:placeholder=off(local)"
    );
}
