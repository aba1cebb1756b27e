//! The sender endpoint (`zferry_core::endpoint::sender`) over the simulated ZFS: what it leaves
//! on the pool before a send and after the receiver confirmed it, under each guarantee; which
//! stale holds and bookmarks it cleans up (only its own job's); what it refuses before a single
//! byte is sent; and that its streams arrive in a receive on a second pool.
//!
//! Pool state is asserted exactly with [`check`]: one line per version in createtxg order,
//! `@snap [hold tags]` or `#bookmark`, where a GUID inside a bookmark name is shown as the name
//! of its snapshot (`#zrepl_CURSOR_G_<s1>_J_push`).
#![allow(clippy::unwrap_used)] // Test helpers may panic on broken fixtures.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use zferry_core::abstraction::Abstraction;
use zferry_core::backend::{
    ByteStream, DestroyOutcome, Features, ObjectName, Operation, PlaceholderEncryption, Property,
    ReceiveRequest, Received, SendRequest, VersionTypes, ZfsBackend, ZfsError, ZfsErrorKind,
};
use zferry_core::endpoint::sender::{
    SendOptions, SenderConfig, SenderEndpoint, SenderError, SenderNote, TokenRefusal,
    is_resume_token_refusal,
};
use zferry_core::endpoint::{
    Endpoint, EndpointError, Guarantee, Protection, PruneCursors, PruneReq, SendReq, Sender,
};
use zferry_core::engine::pruner::FilesystemOutcome;
use zferry_core::filter::Filter;
use zferry_core::job_id::JobId;
use zferry_core::name::{Component, DatasetName, VersionName};
use zferry_core::prune::{KeepRule, KeepRules, LastNRule, ReplicationCursor};
use zferry_core::resume_token::{ResumeToken, ResumeTokenContents, ResumeTokenMismatch};
use zferry_core::version::{Guid, Version};
use zferry_sim::{Actor, DatasetOptions, Fault, SimZfs};

/// The sending pool.
const POOL: &str = "tank";
/// The receiving pool.
const BACKUP: &str = "backup";
/// Pool capacity, far above what the tests write.
const POOL_BYTES: u64 = 1 << 30;
/// The seed of the simulated world's GUIDs.
const SEED: u64 = 0x5e4d_e4e0;
/// The sending job.
const JOB: &str = "push";
/// Data written before each snapshot: 4 KiB of stream at the default payload scale.
const WRITE_BYTES: u64 = 4 << 20;

use Guarantee::GuaranteeResumability as Resumability;
use Guarantee::{GuaranteeIncremental as Incremental, GuaranteeNothing as Nothing};

// ---------------------------------------------------------------------------------------------
// Fixtures

fn ds(name: &str) -> DatasetName {
    DatasetName::parse(name).unwrap_or_else(|e| panic!("dataset {name:?}: {e}"))
}

fn vn(name: &str) -> VersionName {
    VersionName::parse(name).unwrap_or_else(|e| panic!("version {name:?}: {e}"))
}

fn job(name: &str) -> JobId {
    JobId::parse(name).unwrap()
}

/// A world with the sending and the receiving pool, and the names of every snapshot taken
/// through it by GUID (to render bookmark names after the snapshot is gone).
struct World {
    sim: SimZfs,
    names: Mutex<BTreeMap<String, String>>,
}

impl World {
    fn new() -> Self {
        let now = Arc::new(AtomicI64::new(1_763_700_000));
        let sim = SimZfs::new(SEED, move || now.fetch_add(60, Ordering::SeqCst));
        sim.setup().create_pool(POOL, POOL_BYTES).unwrap();
        sim.setup().create_pool(BACKUP, POOL_BYTES).unwrap();
        Self {
            sim,
            names: Mutex::new(BTreeMap::new()),
        }
    }

    /// Creates `fs` (encrypted if asked) with snapshots `names`, each after a write.
    fn filesystem(&self, fs: &str, encrypted: bool, names: &[&str]) {
        let options = DatasetOptions {
            encrypted,
            ..DatasetOptions::default()
        };
        self.sim
            .setup()
            .create_dataset_with(&ds(fs), &options)
            .unwrap();
        for name in names {
            self.snapshot(fs, name);
        }
    }

    fn snapshot(&self, fs: &str, name: &str) {
        self.sim.setup().write(&ds(fs), WRITE_BYTES).unwrap();
        let full = vn(&format!("{fs}@{name}"));
        self.sim
            .setup()
            .snapshot(std::slice::from_ref(&full))
            .unwrap();
        self.names.lock().unwrap().insert(
            self.version(&full.to_string()).guid.hex16(),
            name.to_owned(),
        );
    }

    fn version(&self, full: &str) -> Version {
        self.sim
            .version(&vn(full))
            .unwrap_or_else(|| panic!("{full} does not exist"))
    }

    fn guid(&self, full: &str) -> Guid {
        self.version(full).guid
    }

    /// Bookmarks `fs@snapshot` as `abstraction(guid)`, by test setup.
    fn abstraction(&self, fs: &str, snapshot: &str, make: impl Fn(Guid) -> Abstraction) {
        let source = format!("{fs}@{snapshot}");
        let name = make(self.guid(&source))
            .bookmark_name(&ds(fs))
            .unwrap()
            .unwrap();
        self.sim.setup().bookmark(&vn(&source), &name).unwrap();
    }

    fn hold(&self, tag: &str, full: &str) {
        self.sim.setup().hold(tag, &[vn(full)]).unwrap();
    }

    /// The pool state of `fs` (see the module doc).
    async fn state(&self, fs: &str) -> String {
        let names = self.names.lock().unwrap().clone();
        let mut lines = Vec::new();
        for v in self.sim.versions(&ds(fs)) {
            if v.is_snapshot() {
                let holds = self
                    .sim
                    .holds(&vn(&format!("{fs}@{}", v.name)))
                    .await
                    .unwrap();
                lines.push(
                    format!("@{} {}", v.name, holds.join(" "))
                        .trim_end()
                        .to_owned(),
                );
            } else {
                let mut name = v.name.to_string();
                for (hex, snapshot) in &names {
                    name = name.replace(hex, &format!("<{snapshot}>"));
                }
                lines.push(format!("#{name}"));
            }
        }
        lines.join("\n")
    }

    /// Asserts the pool state of `fs`.
    async fn check(&self, fs: &str, expected: &str, when: &str) {
        assert_eq!(self.state(fs).await, lines(expected), "{fs} {when}");
    }

    /// The daemon's changes so far, as `action object` lines.
    fn daemon_changes(&self) -> Vec<String> {
        self.sim
            .events()
            .into_iter()
            .filter(|e| e.actor == Actor::Daemon)
            .map(|e| format!("{:?} {}", e.action, e.object))
            .collect()
    }

    fn endpoint(&self, filter: &[(&str, bool)], send: SendOptions) -> SenderEndpoint {
        let config = SenderConfig {
            job: job(JOB),
            filter: Filter::from_entries(filter.iter().copied()).unwrap(),
            send,
        };
        SenderEndpoint::new(Arc::new(self.sim.clone()), config)
    }

    /// A sender of job `push` serving every filesystem of `tank` with plain sends.
    fn plain_endpoint(&self) -> SenderEndpoint {
        self.endpoint(&[("tank<", true)], SendOptions::default())
    }

    /// A send request; `from` is a full name with `@` or `#`, `to` a snapshot's full name.
    fn request(&self, from: Option<&str>, to: &str, guarantee: Guarantee) -> SendReq {
        let filesystem = vn(to).dataset().clone();
        SendReq {
            filesystem,
            from: from.map(|f| self.version(f)),
            to: self.version(to),
            include_intermediates: false,
            resume_token: None,
            protection: Protection {
                initial: guarantee,
                incremental: guarantee,
            },
        }
    }
}

fn lines(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn read_all(mut stream: ByteStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.unwrap();
    bytes
}

fn stream_of(bytes: Vec<u8>) -> ByteStream {
    Box::pin(std::io::Cursor::new(bytes))
}

fn receive_request(dataset: &str, to: &str, to_guid: Guid) -> ReceiveRequest {
    ReceiveRequest {
        dataset: ds(dataset),
        to: Component::parse(to).unwrap(),
        to_guid,
        resumable: true,
        force: false,
        properties_override: BTreeMap::new(),
        properties_inherit: Vec::new(),
    }
}

/// Sends `request` through `sender` into `backup/a` and checks that `to` arrived.
async fn replicate(world: &World, sender: &SenderEndpoint, request: &SendReq) {
    let (res, stream) = sender.send(request).await.unwrap();
    assert!(!res.used_resume_token);
    let received = world
        .sim
        .receive(
            &receive_request("backup/a", request.to.name.as_str(), request.to.guid),
            stream,
        )
        .await
        .unwrap();
    assert_eq!(received.to.guid, request.to.guid, "the bytes arrived");
}

fn sender_error(result: Result<impl std::fmt::Debug, EndpointError>) -> SenderError {
    match result {
        Err(EndpointError::Sender(e)) => e,
        other => panic!("expected a sender error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Listing

#[tokio::test]
async fn lists_the_filtered_filesystems_with_local_placeholders_only() {
    let world = World::new();
    world.filesystem("tank/b", false, &["s1"]);
    world.filesystem("tank/a", false, &["s2", "s1"]);
    world
        .sim
        .setup()
        .create_placeholder(&ds("tank/ph"), PlaceholderEncryption::Inherit)
        .unwrap();
    world.filesystem("tank/ph/child", false, &[]);
    world.filesystem("tank/x", false, &["s1"]);
    world.filesystem("backup/y", false, &[]);
    let sender = world.endpoint(
        &[("tank<", true), ("tank/x", false)],
        SendOptions::default(),
    );

    let listed: Vec<String> = sender
        .list_filesystems()
        .await
        .unwrap()
        .into_iter()
        .map(|f| {
            assert_eq!(f.resume_token, None);
            format!(
                "{}{}",
                f.path,
                if f.is_placeholder { " placeholder" } else { "" }
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            "tank",
            "tank/a",
            "tank/b",
            "tank/ph placeholder",
            "tank/ph/child"
        ]
    );
    assert_eq!(world.sim.op_count(Operation::ListDatasets), 1);
    assert_eq!(
        world.sim.op_count(Operation::GetProperties),
        2,
        "only the two datasets whose value is `on` are asked for the source"
    );

    // Versions in createtxg order, not name order.
    let versions: Vec<String> = sender
        .list_versions(&ds("tank/a"))
        .await
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(versions, ["@s2", "@s1"]);
    let refused = sender_error(sender.list_versions(&ds("tank/x")).await);
    assert_eq!(
        refused.to_string(),
        "the sender does not serve `tank/x`: the job's `filesystems` filter does not include \
         it; add it to the filter if it should be replicated"
    );
}

// ---------------------------------------------------------------------------------------------
// Protection strategies

#[tokio::test]
async fn guarantee_resumability_holds_from_and_to_then_moves_the_cursor() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1", "s2", "s3"]);
    let sender = world.plain_endpoint();

    let full = world.request(None, "tank/a@s1", Resumability);
    let (res, stream) = sender.send(&full).await.unwrap();
    world
        .check(
            "tank/a",
            "@s1 zrepl_STEP_J_push\n@s2\n@s3",
            "before the full send",
        )
        .await;
    world
        .sim
        .receive(&receive_request("backup/a", "s1", full.to.guid), stream)
        .await
        .unwrap();
    assert!(!res.used_resume_token);
    assert_eq!(world.guid("backup/a@s1"), full.to.guid, "the bytes arrived");
    sender.send_completed(&full).await.unwrap();
    world
        .check(
            "tank/a",
            "#zrepl_CURSOR_G_<s1>_J_push\n@s1\n@s2\n@s3",
            "after the full send was confirmed",
        )
        .await;

    let incremental = world.request(Some("tank/a@s1"), "tank/a@s2", Resumability);
    let (_, stream) = sender.send(&incremental).await.unwrap();
    world
        .check(
            "tank/a",
            "#zrepl_CURSOR_G_<s1>_J_push
             @s1 zrepl_STEP_J_push
             @s2 zrepl_STEP_J_push
             @s3",
            "before the incremental send",
        )
        .await;
    world
        .sim
        .receive(
            &receive_request("backup/a", "s2", incremental.to.guid),
            stream,
        )
        .await
        .unwrap();
    sender.send_completed(&incremental).await.unwrap();
    world
        .check(
            "tank/a",
            "@s1\n#zrepl_CURSOR_G_<s2>_J_push\n@s2\n@s3",
            "after the incremental send was confirmed",
        )
        .await;
    assert_eq!(
        sender.replication_cursors(&[ds("tank/a")]).await.unwrap(),
        BTreeMap::from([(ds("tank/a"), ReplicationCursor::At(incremental.to.guid))])
    );
    // Confirming again is idempotent.
    sender.send_completed(&incremental).await.unwrap();
    world
        .check(
            "tank/a",
            "@s1\n#zrepl_CURSOR_G_<s2>_J_push\n@s2\n@s3",
            "confirmed twice",
        )
        .await;
    assert_eq!(sender.take_notes(), Vec::new());
}

#[tokio::test]
async fn guarantee_incremental_uses_tentative_cursors_instead_of_holds() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1", "s2"]);
    let sender = world.plain_endpoint();

    let full = world.request(None, "tank/a@s1", Incremental);
    let (_, stream) = sender.send(&full).await.unwrap();
    world
        .check(
            "tank/a",
            "#zrepl_CURSORTENTATIVE__G_<s1>_J_push\n@s1\n@s2",
            "before the full send",
        )
        .await;
    drop(stream);
    // The stream was dropped: the step is not confirmed; the next send does it again.
    replicate(&world, &sender, &full).await;
    sender.send_completed(&full).await.unwrap();
    world
        .check(
            "tank/a",
            "#zrepl_CURSOR_G_<s1>_J_push\n@s1\n@s2",
            "after the full send",
        )
        .await;

    let incremental = world.request(Some("tank/a@s1"), "tank/a@s2", Incremental);
    let (_, stream) = sender.send(&incremental).await.unwrap();
    world
        .check(
            "tank/a",
            "#zrepl_CURSORTENTATIVE__G_<s1>_J_push
             #zrepl_CURSOR_G_<s1>_J_push
             @s1
             #zrepl_CURSORTENTATIVE__G_<s2>_J_push
             @s2",
            "before the incremental send",
        )
        .await;
    world
        .sim
        .receive(
            &receive_request("backup/a", "s2", incremental.to.guid),
            stream,
        )
        .await
        .unwrap();
    sender.send_completed(&incremental).await.unwrap();
    world
        .check(
            "tank/a",
            "@s1\n#zrepl_CURSOR_G_<s2>_J_push\n@s2",
            "after confirmation",
        )
        .await;
}

/// zrepl's behaviour, kept on purpose (issue #682): `guarantee_nothing` creates nothing and, on
/// confirmation, destroys every cursor of the job on the filesystem, so sender-side pruning has
/// no cursor afterwards. Another job's cursor stays.
#[tokio::test]
async fn guarantee_nothing_leaves_nothing_and_destroys_the_jobs_cursors() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1", "s2"]);
    let push = |guid| Abstraction::ReplicationCursor {
        job: job(JOB),
        guid,
    };
    let other = |guid| Abstraction::ReplicationCursor {
        job: job("other"),
        guid,
    };
    world.abstraction("tank/a", "s1", push);
    world.abstraction("tank/a", "s1", other);
    world.hold("zrepl_STEP_J_push", "tank/a@s1");
    let sender = world.plain_endpoint();

    let full = world.request(None, "tank/a@s1", Nothing);
    replicate(&world, &sender, &full).await;
    world
        .check(
            "tank/a",
            "#zrepl_CURSOR_G_<s1>_J_other\n#zrepl_CURSOR_G_<s1>_J_push\n@s1\n@s2",
            "after the send: the stale step hold is gone, nothing new",
        )
        .await;
    let incremental = world.request(Some("tank/a@s1"), "tank/a@s2", Nothing);
    replicate(&world, &sender, &incremental).await;
    sender.send_completed(&incremental).await.unwrap();
    world
        .check(
            "tank/a",
            "#zrepl_CURSOR_G_<s1>_J_other\n@s1\n@s2",
            "after confirmation: push's cursor is destroyed",
        )
        .await;
    assert_eq!(
        sender.replication_cursors(&[ds("tank/a")]).await.unwrap(),
        BTreeMap::from([(ds("tank/a"), ReplicationCursor::Missing)])
    );
}

// ---------------------------------------------------------------------------------------------
// Stale cleanup

#[tokio::test]
async fn send_cleans_only_this_jobs_stale_step_holds_and_tentative_cursors() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1", "s2", "s3"]);
    let tentative = |name: &'static str| {
        move |guid| Abstraction::TentativeCursor {
            job: job(name),
            guid,
        }
    };
    // Left over from interrupted steps of push and of another job, and a user's own things.
    world.hold("zrepl_STEP_J_push", "tank/a@s1");
    world.hold("zrepl_STEP_J_other", "tank/a@s1");
    world.hold("keep", "tank/a@s1");
    world.hold("zrepl_STEP_J_push", "tank/a@s2");
    world.abstraction("tank/a", "s1", tentative(JOB));
    world.abstraction("tank/a", "s1", tentative("other"));
    world.abstraction("tank/a", "s2", |guid| Abstraction::ReplicationCursor {
        job: job(JOB),
        guid,
    });
    world
        .sim
        .setup()
        .bookmark(&vn("tank/a@s1"), &vn("tank/a#mine"))
        .unwrap();
    // Looks like push's tentative cursor of s2 but bookmarks s1: tinkered, never touched.
    let tinkered = format!(
        "tank/a#zrepl_CURSORTENTATIVE__G_{}_J_push",
        world.guid("tank/a@s2").hex16()
    );
    world
        .sim
        .setup()
        .bookmark(&vn("tank/a@s1"), &vn(&tinkered))
        .unwrap();
    let before = "
        #mine
        #zrepl_CURSORTENTATIVE__G_<s1>_J_other
        #zrepl_CURSORTENTATIVE__G_<s1>_J_push
        #zrepl_CURSORTENTATIVE__G_<s2>_J_push
        @s1 keep zrepl_STEP_J_other zrepl_STEP_J_push
        #zrepl_CURSOR_G_<s2>_J_push
        @s2 zrepl_STEP_J_push
        @s3";
    world.check("tank/a", before, "before").await;

    let sender = world.plain_endpoint();
    let request = world.request(Some("tank/a@s2"), "tank/a@s3", Resumability);
    let (_, _stream) = sender.send(&request).await.unwrap();
    world
        .check(
            "tank/a",
            "#mine
             #zrepl_CURSORTENTATIVE__G_<s1>_J_other
             #zrepl_CURSORTENTATIVE__G_<s2>_J_push
             @s1 keep zrepl_STEP_J_other
             #zrepl_CURSOR_G_<s2>_J_push
             @s2 zrepl_STEP_J_push
             @s3 zrepl_STEP_J_push",
            "after the send started",
        )
        .await;
    assert_eq!(
        world.daemon_changes(),
        [
            // @s2 already had the tag: holding it again is no change.
            "Hold { tag: \"zrepl_STEP_J_push\" } tank/a@s3",
            "Release { tag: \"zrepl_STEP_J_push\" } tank/a@s1",
            "DestroyBookmark tank/a#zrepl_CURSORTENTATIVE__G_0000000000000000_J_push"
                .replace("0000000000000000", &world.guid("tank/a@s1").hex16())
                .as_str(),
        ]
    );
}

/// zrepl `ReplicationIncrementalHandlesFromVersionEqTentativeCursorCorrectly`: when the only
/// common version is push's own tentative cursor, it is the `from` and the cleanup keeps it.
#[tokio::test]
async fn a_tentative_cursor_as_from_survives_the_cleanup() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1", "s2"]);
    let sender = world.plain_endpoint();
    // The full send was received, its confirmation lost; then a user destroyed @s1.
    replicate(
        &world,
        &sender,
        &world.request(None, "tank/a@s1", Incremental),
    )
    .await;
    world
        .sim
        .user()
        .destroy_snapshots(&ds("tank/a"), &[Component::parse("s1").unwrap()])
        .unwrap();
    let from = format!(
        "tank/a#zrepl_CURSORTENTATIVE__G_{}_J_push",
        world.version("backup/a@s1").guid.hex16()
    );
    world
        .check(
            "tank/a",
            "#zrepl_CURSORTENTATIVE__G_<s1>_J_push\n@s2",
            "before",
        )
        .await;

    let request = world.request(Some(&from), "tank/a@s2", Resumability);
    replicate(&world, &sender, &request).await;
    world
        .check(
            "tank/a",
            "#zrepl_CURSORTENTATIVE__G_<s1>_J_push\n@s2 zrepl_STEP_J_push",
            "after the send: the `from` bookmark stays although it is a tentative cursor",
        )
        .await;
    sender.send_completed(&request).await.unwrap();
    world
        .check(
            "tank/a",
            "#zrepl_CURSOR_G_<s2>_J_push\n@s2",
            "after confirmation",
        )
        .await;
}

/// zrepl `ReplicationStepCompletedLostBehavior__GuaranteeResumability`: the confirmation of a
/// step is lost; its holds keep protecting `from` and `to`, and the next step still works and
/// cleans them up.
#[tokio::test]
async fn a_lost_confirmation_keeps_the_holds_and_the_next_step_works() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1", "s2", "s3"]);
    let sender = world.plain_endpoint();
    let full = world.request(None, "tank/a@s1", Resumability);
    replicate(&world, &sender, &full).await;
    sender.send_completed(&full).await.unwrap();
    replicate(
        &world,
        &sender,
        &world.request(Some("tank/a@s1"), "tank/a@s2", Resumability),
    )
    .await;
    // No send_completed.
    world
        .check(
            "tank/a",
            "#zrepl_CURSOR_G_<s1>_J_push
             @s1 zrepl_STEP_J_push
             @s2 zrepl_STEP_J_push
             @s3",
            "after the lost confirmation",
        )
        .await;
    let outcomes = world
        .sim
        .user()
        .destroy_snapshots(
            &ds("tank/a"),
            &[
                Component::parse("s1").unwrap(),
                Component::parse("s2").unwrap(),
            ],
        )
        .unwrap();
    assert!(
        outcomes.iter().all(|o| o.result == Err(ZfsErrorKind::Busy)),
        "the holds protect the step: {outcomes:?}"
    );

    let next = world.request(Some("tank/a@s2"), "tank/a@s3", Resumability);
    let (_, stream) = sender.send(&next).await.unwrap();
    world
        .check(
            "tank/a",
            "#zrepl_CURSOR_G_<s1>_J_push
             @s1
             @s2 zrepl_STEP_J_push
             @s3 zrepl_STEP_J_push",
            "the next send released the stale hold on @s1 only",
        )
        .await;
    world
        .sim
        .receive(&receive_request("backup/a", "s3", next.to.guid), stream)
        .await
        .unwrap();
    sender.send_completed(&next).await.unwrap();
    world
        .check(
            "tank/a",
            "@s1\n@s2\n#zrepl_CURSOR_G_<s3>_J_push\n@s3",
            "after the next step",
        )
        .await;
}

/// The same under `guarantee_incremental`: tentative cursors protect the incremental base but
/// not the snapshots, and the next step still works.
#[tokio::test]
async fn a_lost_confirmation_under_guarantee_incremental() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1", "s2", "s3"]);
    let sender = world.plain_endpoint();
    let full = world.request(None, "tank/a@s1", Incremental);
    replicate(&world, &sender, &full).await;
    sender.send_completed(&full).await.unwrap();
    replicate(
        &world,
        &sender,
        &world.request(Some("tank/a@s1"), "tank/a@s2", Incremental),
    )
    .await;
    world
        .sim
        .user()
        .destroy_snapshots(&ds("tank/a"), &[Component::parse("s2").unwrap()])
        .unwrap();
    world
        .check(
            "tank/a",
            "#zrepl_CURSORTENTATIVE__G_<s1>_J_push
             #zrepl_CURSOR_G_<s1>_J_push
             @s1
             #zrepl_CURSORTENTATIVE__G_<s2>_J_push
             @s3",
            "the user could destroy @s2",
        )
        .await;
    let from = format!(
        "tank/a#zrepl_CURSORTENTATIVE__G_{}_J_push",
        world.guid("backup/a@s2").hex16()
    );
    let next = world.request(Some(&from), "tank/a@s3", Incremental);
    replicate(&world, &sender, &next).await;
    sender.send_completed(&next).await.unwrap();
    world
        .check(
            "tank/a",
            "@s1\n#zrepl_CURSOR_G_<s3>_J_push\n@s3",
            "after the next step",
        )
        .await;
}

// ---------------------------------------------------------------------------------------------
// Validation

/// A token for `toname` as OpenZFS would write it.
fn token(toname: &str, from: Option<Guid>, to: Guid, rawok: bool) -> String {
    ResumeToken::encode(ResumeTokenContents {
        fromguid: from,
        toguid: to,
        toname: vn(toname),
        object: 2,
        offset: 0,
        bytes: Some(0),
        rawok,
        compressok: rawok,
        embedok: false,
        largeblockok: false,
        savedok: false,
    })
    .as_str()
    .to_owned()
}

#[tokio::test]
async fn refusals_happen_before_anything_is_sent_or_changed() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1", "s2"]);
    world.filesystem("tank/b", false, &["s1"]);
    world.filesystem("tank/enc", true, &["s1"]);
    world.filesystem("tank/x", false, &["s1"]);
    world
        .sim
        .setup()
        .bookmark(&vn("tank/a@s1"), &vn("tank/a#b1"))
        .unwrap();
    let filter = [("tank<", true), ("tank/x", false)];
    let plain = world.endpoint(&filter, SendOptions::default());
    let encrypted = world.endpoint(
        &filter,
        SendOptions {
            encrypted: true,
            ..SendOptions::default()
        },
    );
    let raw = world.endpoint(
        &filter,
        SendOptions {
            raw: true,
            ..SendOptions::default()
        },
    );
    let (a1, a2) = (world.guid("tank/a@s1"), world.guid("tank/a@s2"));
    let e1 = world.guid("tank/enc@s1");

    let base = world.request(Some("tank/a@s1"), "tank/a@s2", Resumability);
    let with = |f: &dyn Fn(&mut SendReq)| {
        let mut r = base.clone();
        f(&mut r);
        r
    };
    let enc_full = world.request(None, "tank/enc@s1", Resumability);
    let enc_with_token = |t: String| SendReq {
        resume_token: Some(t),
        ..enc_full.clone()
    };

    // (endpoint, request, expected message start, whether it is a resume token refusal)
    let cases: Vec<(&SenderEndpoint, SendReq, String, bool)> = vec![
        (
            &plain,
            with(&|r| r.filesystem = ds("tank/x")),
            "the sender does not serve `tank/x`".into(),
            false,
        ),
        (
            &plain,
            with(&|r| r.to.guid = Guid(7)),
            format!("`to` `tank/a@s2` has guid {a2} on the sender, but the request claims guid 7"),
            false,
        ),
        (
            &plain,
            with(&|r| r.from.as_mut().unwrap().guid = Guid(7)),
            format!(
                "`from` `tank/a@s1` has guid {a1} on the sender, but the request claims guid 7"
            ),
            false,
        ),
        (
            &plain,
            with(&|r| r.to.name = Component::parse("gone").unwrap()),
            format!("`to` `tank/a@gone` (guid {a2}) does not exist on the sender any more"),
            false,
        ),
        (
            &plain,
            with(&|r| r.to = world.version("tank/a#b1")),
            "cannot send `tank/a#b1`: `to` must be a snapshot".into(),
            false,
        ),
        (
            &plain,
            with(&|r| {
                r.from = Some(world.version("tank/a#b1"));
                r.include_intermediates = true;
            }),
            "cannot send `tank/a` with intermediate snapshots from `tank/a#b1`".into(),
            false,
        ),
        (
            &encrypted,
            base.clone(),
            "encrypted send mandated by policy, but filesystem `tank/a` is not encrypted".into(),
            false,
        ),
        (
            &raw,
            enc_full.clone(),
            "policy mandates raw+unencrypted sends, but filesystem `tank/enc` is encrypted".into(),
            false,
        ),
        (
            &plain,
            with(&|r| r.resume_token = Some(token("tank/b@s1", Some(a1), a2, false))),
            "the sender refuses to resume the send of `tank/a` with the receiver's resume token: \
             resume token is for filesystem `tank/b`"
                .into(),
            true,
        ),
        (
            &plain,
            with(&|r| r.resume_token = Some(token("tank/a@s2", Some(a1), Guid(9), false))),
            "the sender refuses to resume the send of `tank/a` with the receiver's resume token: \
             resume token `toguid` is 9"
                .into(),
            true,
        ),
        (
            &plain,
            enc_with_token(token("tank/enc@s1", None, e1, true)),
            "the sender refuses to resume the send of `tank/enc` with the receiver's resume \
             token: resume token has rawok=true which would result in encrypted send"
                .into(),
            true,
        ),
        (
            &encrypted,
            enc_with_token(token("tank/enc@s1", None, e1, false)),
            "the sender refuses to resume the send of `tank/enc` with the receiver's resume \
             token: resume token does not have rawok=true"
                .into(),
            true,
        ),
        (
            &plain,
            with(&|r| r.resume_token = Some("1-0-0-zz".to_owned())),
            "the sender refuses to resume the send of `tank/a` with the receiver's resume token: \
             it cannot be decoded"
                .into(),
            true,
        ),
    ];
    let snapshot_before = world.daemon_changes();
    assert_eq!(snapshot_before, Vec::<String>::new());
    for (sender, request, expected, token_refusal) in &cases {
        for (what, result) in [
            ("send_dry", sender.send_dry(request).await.map(|_| ())),
            ("send", sender.send(request).await.map(|_| ())),
        ] {
            let error = result.expect_err(what);
            assert!(
                error.to_string().starts_with(expected.as_str()),
                "{what}: {error}\nexpected: {expected}"
            );
            assert_eq!(is_resume_token_refusal(&error), *token_refusal, "{error}");
        }
    }
    assert_eq!(world.sim.op_count(Operation::Send), 0, "no send started");
    assert_eq!(
        world.sim.op_count(Operation::SendEstimate),
        0,
        "no estimate either"
    );
    assert_eq!(
        world.daemon_changes(),
        Vec::<String>::new(),
        "nothing changed"
    );

    // send_completed checks the filter and the versions again before touching anything.
    for request in [
        with(&|r| r.filesystem = ds("tank/x")),
        with(&|r| r.to.guid = Guid(7)),
        with(&|r| r.from.as_mut().unwrap().guid = Guid(7)),
    ] {
        sender_error(plain.send_completed(&request).await);
    }
    assert_eq!(
        world.daemon_changes(),
        Vec::<String>::new(),
        "nothing changed"
    );

    // A token typed as such: the driver discards the receiver's state on it.
    let mismatch = sender_error(
        plain
            .send_dry(&with(&|r| {
                r.resume_token = Some(token("tank/b@s1", Some(a1), a2, false))
            }))
            .await,
    );
    assert!(matches!(
        mismatch,
        SenderError::ResumeTokenRefused {
            reason: TokenRefusal::Mismatch(ResumeTokenMismatch::Filesystem { .. }),
            ..
        }
    ));
}

/// zrepl `SendArgsValidationEE_EncryptionAndRaw` on the simulated pool: which combinations of
/// filesystem encryption, `send.encrypted` and `send.raw` are sent, and that the accepted ones
/// arrive (encrypted where the policy says so).
#[tokio::test]
async fn the_encryption_matrix_on_the_pool() {
    let world = World::new();
    world.filesystem("tank/plain", false, &["s1"]);
    world.filesystem("tank/enc", true, &["s1"]);
    let mut verdicts = Vec::new();
    for (fs, encrypted_fs) in [("tank/plain", false), ("tank/enc", true)] {
        for encrypted in [false, true] {
            for raw in [false, true] {
                let sender = world.endpoint(
                    &[("tank<", true)],
                    SendOptions {
                        encrypted,
                        raw,
                        ..SendOptions::default()
                    },
                );
                let request = world.request(None, &format!("{fs}@s1"), Nothing);
                let estimates = world.sim.op_count(Operation::SendEstimate);
                let verdict = match sender.send_dry(&request).await {
                    Ok(_) => {
                        let target = format!(
                            "backup/{}-{encrypted}-{raw}",
                            if encrypted_fs { "enc" } else { "plain" }
                        );
                        let (_, stream) = sender.send(&request).await.unwrap();
                        world
                            .sim
                            .receive(&receive_request(&target, "s1", request.to.guid), stream)
                            .await
                            .unwrap();
                        let arrived_encrypted = world
                            .sim
                            .get_properties(&ds(&target).into(), &["encryption"])
                            .await
                            .unwrap()["encryption"]
                            .value
                            != "off";
                        if arrived_encrypted {
                            "sent encrypted"
                        } else {
                            "sent plain"
                        }
                        .to_owned()
                    }
                    Err(e) => {
                        assert_eq!(
                            world.sim.op_count(Operation::SendEstimate),
                            estimates,
                            "refused before estimating"
                        );
                        let refusal = sender_error(Err::<(), _>(e));
                        assert!(
                            matches!(
                                refusal,
                                SenderError::EncryptedSendOfUnencryptedFilesystem { .. }
                                    | SenderError::RawSendOfEncryptedFilesystem { .. }
                            ),
                            "{refusal}"
                        );
                        "refused".to_owned()
                    }
                };
                verdicts.push(format!("{fs} encrypted={encrypted} raw={raw}: {verdict}"));
            }
        }
    }
    assert_eq!(
        verdicts.join("\n"),
        lines(
            "tank/plain encrypted=false raw=false: sent plain
             tank/plain encrypted=false raw=true: sent plain
             tank/plain encrypted=true raw=false: refused
             tank/plain encrypted=true raw=true: refused
             tank/enc encrypted=false raw=false: sent plain
             tank/enc encrypted=false raw=true: refused
             tank/enc encrypted=true raw=false: sent encrypted
             tank/enc encrypted=true raw=true: sent encrypted"
        )
    );
}

// ---------------------------------------------------------------------------------------------
// Resume tokens

#[tokio::test]
async fn resumes_an_interrupted_receive_with_its_token() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1"]);
    let sender = world.plain_endpoint();
    let full = world.request(None, "tank/a@s1", Resumability);
    let (_, stream) = sender.send(&full).await.unwrap();
    let bytes = read_all(stream).await;
    let half = bytes[..bytes.len() / 2].to_vec();
    let error = world
        .sim
        .receive(
            &receive_request("backup/a", "s1", full.to.guid),
            stream_of(half),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error.kind, ZfsErrorKind::ReceiveInterrupted { .. }),
        "{error}"
    );
    let token = world
        .sim
        .resume_token(&ds("backup/a"))
        .await
        .unwrap()
        .unwrap();

    let resume = SendReq {
        resume_token: Some(token),
        ..full.clone()
    };
    let dry = sender.send_dry(&resume).await.unwrap();
    assert!(dry.used_resume_token);
    let (res, stream) = sender.send(&resume).await.unwrap();
    assert!(res.used_resume_token);
    world
        .check("tank/a", "@s1 zrepl_STEP_J_push", "while resuming")
        .await;
    let received = world
        .sim
        .receive(&receive_request("backup/a", "s1", full.to.guid), stream)
        .await
        .unwrap();
    assert_eq!(received.to.guid, full.to.guid);
    sender.send_completed(&full).await.unwrap();
    world
        .check(
            "tank/a",
            "#zrepl_CURSOR_G_<s1>_J_push\n@s1",
            "after confirmation",
        )
        .await;
}

#[tokio::test]
async fn a_token_zfs_rejects_is_a_refusal() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1"]);
    let sender = world.plain_endpoint();
    let guid = world.guid("tank/a@s1");
    let request = SendReq {
        resume_token: Some(token("tank/a@s1", None, guid, false)),
        ..world.request(None, "tank/a@s1", Resumability)
    };
    for operation in [Operation::SendEstimate, Operation::Send] {
        world.sim.inject(Fault::Fail {
            operation,
            n_calls: 1,
            kind: ZfsErrorKind::ResumeTokenInvalid,
        });
    }
    let dry = sender_error(sender.send_dry(&request).await);
    assert!(
        matches!(
            &dry,
            SenderError::ResumeTokenRefused {
                reason: TokenRefusal::RejectedByZfs(_),
                ..
            }
        ),
        "{dry}"
    );
    let send = sender.send(&request).await.map(|_| ()).unwrap_err();
    assert!(is_resume_token_refusal(&send), "{send}");
}

// ---------------------------------------------------------------------------------------------
// Cursors, destroy, prune

#[tokio::test]
async fn replication_cursors_are_the_jobs_newest_per_filesystem() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1", "s2"]);
    world.filesystem("tank/b", false, &["s1"]);
    world.filesystem("tank/x", false, &["s1"]);
    let push = |guid| Abstraction::ReplicationCursor {
        job: job(JOB),
        guid,
    };
    world.abstraction("tank/a", "s1", push);
    world.abstraction("tank/a", "s2", push);
    world.abstraction("tank/b", "s1", |guid| Abstraction::ReplicationCursor {
        job: job("other"),
        guid,
    });
    let sender = world.endpoint(
        &[("tank<", true), ("tank/x", false)],
        SendOptions::default(),
    );
    let cursors = sender
        .replication_cursors(&[ds("tank/b"), ds("tank/a"), ds("tank/gone")])
        .await
        .unwrap();
    assert_eq!(
        cursors,
        BTreeMap::from([
            (ds("tank/a"), ReplicationCursor::At(world.guid("tank/a@s2"))),
            (ds("tank/b"), ReplicationCursor::Missing),
            (ds("tank/gone"), ReplicationCursor::Missing),
        ])
    );
    sender_error(sender.replication_cursors(&[ds("tank/x")]).await);
}

#[tokio::test]
async fn destroy_snapshots_destroys_only_what_still_has_the_guid() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1", "s2", "s3"]);
    world.filesystem("tank/x", false, &["s1"]);
    let sender = world.endpoint(
        &[("tank<", true), ("tank/x", false)],
        SendOptions::default(),
    );
    let (s1, s2) = (world.guid("tank/a@s1"), world.guid("tank/a@s2"));
    let name = |s: &str| Component::parse(s).unwrap();
    let outcomes = sender
        .destroy_snapshots(
            &ds("tank/a"),
            &[
                (name("s2"), Guid(5)),
                (name("s1"), s1),
                (name("gone"), Guid(6)),
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
            format!("s2 Err(ExistsWithOtherGuid {{ existing: {s2:?} }})"),
            "s1 Ok(())".to_owned(),
            "gone Ok(())".to_owned(),
        ]
    );
    world.check("tank/a", "@s2\n@s3", "after destroy").await;
    assert_eq!(world.daemon_changes(), ["DestroySnapshot tank/a@s1"]);
    sender_error(
        sender
            .destroy_snapshots(&ds("tank/x"), &[(name("s1"), world.guid("tank/x@s1"))])
            .await,
    );
    world.check("tank/x", "@s1", "outside the filter").await;
}

fn last_n(count: u32) -> KeepRules {
    KeepRules::new(vec![KeepRule::LastN(LastNRule {
        count: NonZeroU32::new(count).unwrap(),
        regex: None,
    })])
    .unwrap()
}

#[tokio::test]
async fn prune_uses_the_jobs_cursors_and_backs_off_across_calls() {
    let world = World::new();
    // tank/a has no cursor (pruning it fails), tank/b has one at s3.
    world.filesystem("tank/a", false, &["s1", "s2"]);
    world.filesystem("tank/b", false, &["s1", "s2", "s3", "s4"]);
    world.filesystem("tank/x", false, &["s1"]);
    world.abstraction("tank/b", "s3", |guid| Abstraction::ReplicationCursor {
        job: job(JOB),
        guid,
    });
    let sender = world.endpoint(
        &[("tank<", true), ("tank/x", false)],
        SendOptions::default(),
    );
    let request = PruneReq {
        filesystems: vec![ds("tank/a"), ds("tank/b")],
        rules: last_n(1),
        cursors: PruneCursors::Own,
        protected: Vec::new(),
    };
    let order = |report: &zferry_core::engine::pruner::PruneReport| -> Vec<String> {
        report
            .filesystems
            .iter()
            .map(|f| {
                let outcome = match &f.outcome {
                    FilesystemOutcome::Done { destroyed, of } => format!("done {destroyed}/{of}"),
                    FilesystemOutcome::Error { .. } => "error".to_owned(),
                    other => format!("{other:?}"),
                };
                format!("{} {outcome}", f.filesystem)
            })
            .collect()
    };
    let first = sender.prune(&request).await.unwrap();
    assert_eq!(order(&first), ["tank/a error", "tank/b done 2/2"]);
    world
        .check(
            "tank/b",
            "#zrepl_CURSOR_G_<s3>_J_push\n@s3\n@s4",
            "after pruning",
        )
        .await;
    let second = sender.prune(&request).await.unwrap();
    assert_eq!(
        order(&second),
        ["tank/b done 0/0", "tank/a error"],
        "the failing filesystem goes last the next time"
    );

    let outside = PruneReq {
        filesystems: vec![ds("tank/x")],
        ..request.clone()
    };
    sender_error(sender.prune(&outside).await);
    let given = PruneReq {
        cursors: PruneCursors::Given(BTreeMap::new()),
        ..request
    };
    assert_eq!(
        sender_error(sender.prune(&given).await),
        SenderError::PruneCursorsGiven
    );
    world.check("tank/x", "@s1", "outside the filter").await;
}

// ---------------------------------------------------------------------------------------------
// Failures that do not fail the step, and one that does

#[tokio::test]
async fn a_cleanup_that_fails_is_noted_and_done_by_the_next_step() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1", "s2", "s3"]);
    world.hold("zrepl_STEP_J_push", "tank/a@s1");
    let sender = world.plain_endpoint();
    world.sim.inject(Fault::Fail {
        operation: Operation::ListHolds,
        n_calls: 1,
        kind: ZfsErrorKind::Other {
            detail: "injected".to_owned(),
        },
    });
    let first = world.request(Some("tank/a@s1"), "tank/a@s2", Resumability);
    let (_, stream) = sender.send(&first).await.unwrap();
    drop(stream);
    let notes: Vec<String> = sender
        .take_notes()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].starts_with("`tank/a`: cannot list this job's holds and bookmarks to clean up"),
        "{}",
        notes[0]
    );

    // The next attempt (another `to`) releases what the first left: its hold on @s2 and the
    // stale one on @s1 are not this step's.
    world.sim.inject(Fault::Fail {
        operation: Operation::Release,
        n_calls: 1,
        kind: ZfsErrorKind::Busy,
    });
    let second = world.request(Some("tank/a@s2"), "tank/a@s3", Resumability);
    let (_, stream) = sender.send(&second).await.unwrap();
    drop(stream);
    let notes: Vec<String> = sender
        .take_notes()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        notes,
        [
            "`tank/a`: cannot clean up step hold `zrepl_STEP_J_push` on 1 snapshot(s): zfs \
          release `tank/a@s1`: is busy (held or in use) (zfs said: injected fault: is \
          busy (held or in use)); the next step tries again"
        ]
    );
    world
        .check(
            "tank/a",
            "@s1 zrepl_STEP_J_push\n@s2 zrepl_STEP_J_push\n@s3 zrepl_STEP_J_push",
            "after the failed release",
        )
        .await;
    replicate(
        &world,
        &sender,
        &world.request(None, "tank/a@s2", Resumability),
    )
    .await;
    world
        .check(
            "tank/a",
            "@s1\n@s2 zrepl_STEP_J_push\n@s3",
            "a later step cleaned up",
        )
        .await;
    assert_eq!(sender.take_notes(), Vec::new());
}

/// zrepl: under `guarantee_incremental`, a bookmark `from` that this ZFS cannot copy is logged
/// and the step goes on.
#[tokio::test]
async fn a_bookmark_from_that_cannot_be_copied_is_noted() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1", "s2"]);
    world
        .sim
        .setup()
        .bookmark(&vn("tank/a@s1"), &vn("tank/a#b1"))
        .unwrap();
    let sender = world.plain_endpoint();
    world.sim.inject(Fault::Fail {
        operation: Operation::Bookmark,
        n_calls: 1,
        kind: ZfsErrorKind::NotSupported {
            feature: "bookmark copying".to_owned(),
        },
    });
    let request = world.request(Some("tank/a#b1"), "tank/a@s2", Incremental);
    let (_, _stream) = sender.send(&request).await.unwrap();
    world
        .check(
            "tank/a",
            "#b1\n@s1\n#zrepl_CURSORTENTATIVE__G_<s2>_J_push\n@s2",
            "only `to` has a tentative cursor",
        )
        .await;
    let notes = sender.take_notes();
    assert!(
        matches!(notes.as_slice(), [SenderNote::FromNotBookmarked { from, .. }] if from == &vn("tank/a#b1")),
        "{notes:?}"
    );
}

#[tokio::test]
async fn a_cursor_that_cannot_be_made_keeps_the_step_protected() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1"]);
    let sender = world.plain_endpoint();
    let full = world.request(None, "tank/a@s1", Resumability);
    replicate(&world, &sender, &full).await;
    world.sim.inject(Fault::Fail {
        operation: Operation::Bookmark,
        n_calls: 1,
        kind: ZfsErrorKind::NoSpace,
    });
    let error = sender_error(sender.send_completed(&full).await);
    assert!(
        error.to_string().starts_with(
            "cannot move the replication cursor of `tank/a` to \
             `tank/a#zrepl_CURSOR_G_"
        ),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .ends_with("the step's holds and tentative cursors stay until it succeeds"),
        "{error}"
    );
    world
        .check("tank/a", "@s1 zrepl_STEP_J_push", "the hold stays")
        .await;
    sender.send_completed(&full).await.unwrap();
    world
        .check(
            "tank/a",
            "#zrepl_CURSOR_G_<s1>_J_push\n@s1",
            "after the retry",
        )
        .await;
}

/// A ZFS whose listings do not show replication cursors: a cursor that was "created" but is
/// not there when listed again.
#[derive(Debug)]
struct HidingCursors(SimZfs);

#[async_trait::async_trait]
impl ZfsBackend for HidingCursors {
    async fn list_datasets(
        &self,
        root: Option<&DatasetName>,
        properties: &[&str],
    ) -> Result<Vec<zferry_core::listing::DatasetEntry>, ZfsError> {
        self.0.list_datasets(root, properties).await
    }
    async fn list_versions(
        &self,
        datasets: &[DatasetName],
        types: VersionTypes,
    ) -> Result<zferry_core::listing::VersionListing, ZfsError> {
        let mut listing = self.0.list_versions(datasets, types).await?;
        for versions in listing.datasets.values_mut() {
            versions.retain(|v| v.is_snapshot() || !v.name.as_str().starts_with("zrepl_CURSOR_G_"));
        }
        Ok(listing)
    }
    async fn get_properties(
        &self,
        object: &ObjectName,
        properties: &[&str],
    ) -> Result<BTreeMap<String, Property>, ZfsError> {
        self.0.get_properties(object, properties).await
    }
    async fn set_property(&self, d: &DatasetName, p: &str, v: &str) -> Result<(), ZfsError> {
        self.0.set_property(d, p, v).await
    }
    async fn snapshot(&self, snapshots: &[VersionName]) -> Result<(), ZfsError> {
        self.0.snapshot(snapshots).await
    }
    async fn bookmark(&self, s: &VersionName, b: &VersionName) -> Result<Version, ZfsError> {
        self.0.bookmark(s, b).await
    }
    async fn hold(&self, tag: &str, snapshots: &[VersionName]) -> Result<(), ZfsError> {
        self.0.hold(tag, snapshots).await
    }
    async fn release(&self, tag: &str, snapshots: &[VersionName]) -> Result<(), ZfsError> {
        self.0.release(tag, snapshots).await
    }
    async fn holds(&self, snapshot: &VersionName) -> Result<Vec<String>, ZfsError> {
        self.0.holds(snapshot).await
    }
    async fn destroy_snapshots(
        &self,
        d: &DatasetName,
        s: &[Component],
    ) -> Result<Vec<DestroyOutcome>, ZfsError> {
        self.0.destroy_snapshots(d, s).await
    }
    async fn destroy_bookmark(&self, bookmark: &VersionName) -> Result<(), ZfsError> {
        self.0.destroy_bookmark(bookmark).await
    }
    async fn destroy_dataset(&self, d: &DatasetName, recursive: bool) -> Result<(), ZfsError> {
        self.0.destroy_dataset(d, recursive).await
    }
    async fn send_estimate(&self, request: &SendRequest) -> Result<Option<u64>, ZfsError> {
        self.0.send_estimate(request).await
    }
    async fn send(&self, request: &SendRequest) -> Result<ByteStream, ZfsError> {
        self.0.send(request).await
    }
    async fn receive(&self, r: &ReceiveRequest, s: ByteStream) -> Result<Received, ZfsError> {
        self.0.receive(r, s).await
    }
    async fn abort_receive(&self, d: &DatasetName) -> Result<(), ZfsError> {
        self.0.abort_receive(d).await
    }
    async fn resume_token(&self, d: &DatasetName) -> Result<Option<String>, ZfsError> {
        self.0.resume_token(d).await
    }
    async fn create_placeholder(
        &self,
        d: &DatasetName,
        e: PlaceholderEncryption,
    ) -> Result<(), ZfsError> {
        self.0.create_placeholder(d, e).await
    }
    async fn rollback(&self, snapshot: &VersionName) -> Result<(), ZfsError> {
        self.0.rollback(snapshot).await
    }
    async fn features(&self, pool: &str) -> Result<Features, ZfsError> {
        self.0.features(pool).await
    }
}

#[tokio::test]
async fn nothing_is_released_before_the_new_cursor_is_seen() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1", "s2"]);
    world.hold("zrepl_STEP_J_push", "tank/a@s1");
    let config = SenderConfig {
        job: job(JOB),
        filter: Filter::from_entries([("tank<", true)]).unwrap(),
        send: SendOptions::default(),
    };
    let sender = SenderEndpoint::new(Arc::new(HidingCursors(world.sim.clone())), config);
    let request = world.request(Some("tank/a@s1"), "tank/a@s2", Resumability);
    replicate(
        &world,
        &sender,
        &world.request(None, "tank/a@s1", Resumability),
    )
    .await;
    replicate(&world, &sender, &request).await;
    let error = sender_error(sender.send_completed(&request).await);
    assert_eq!(
        error.to_string(),
        format!(
            "the replication cursor `tank/a#zrepl_CURSOR_G_{}_J_push` is not listed right after \
             it was created; nothing of `tank/a` was released or destroyed, the next step tries \
             again",
            request.to.guid.hex16()
        )
    );
    world
        .check(
            "tank/a",
            "@s1 zrepl_STEP_J_push\n#zrepl_CURSOR_G_<s2>_J_push\n@s2 zrepl_STEP_J_push",
            "the holds stay",
        )
        .await;
}

/// The bookmarks a guarantee needs must fit ZFS's name length; a filesystem too deep for them
/// is refused at planning, before anything is held or sent.
#[tokio::test]
async fn bookmark_names_that_do_not_fit_are_refused_at_planning() {
    let world = World::new();
    // 210 bytes: a cursor name (39 bytes with `#`) fits, a tentative cursor's (49) does not.
    let fs = format!("tank/{}", "d".repeat(205));
    world.filesystem(&fs, false, &["s1"]);
    let sender = world.plain_endpoint();
    let to = format!("{fs}@s1");
    sender
        .send_dry(&world.request(None, &to, Resumability))
        .await
        .unwrap();
    let error = sender_error(
        sender
            .send_dry(&world.request(None, &to, Incremental))
            .await,
    );
    assert!(matches!(error, SenderError::BookmarkName { .. }), "{error}");
    assert!(
        error
            .to_string()
            .ends_with("use a shorter job name, or replicate a less deeply nested dataset, or choose `guarantee_nothing` (no bookmarks)"),
        "{error}"
    );
    let error = sender_error(
        sender
            .send(&world.request(None, &to, Incremental))
            .await
            .map(|(res, _)| res),
    );
    assert!(matches!(error, SenderError::BookmarkName { .. }), "{error}");
    assert_eq!(world.daemon_changes(), Vec::<String>::new());
    assert_eq!(world.sim.op_count(Operation::Send), 0);
}

/// zrepl `ReplicationIncrementalDestroysStepHoldsIffIncrementalStepHoldsAreDisabledButStepHoldsExist`:
/// a step interrupted under `guarantee_resumability` left step holds on `from` and `to`; sent
/// again under `guarantee_incremental`, the holds go (tentative cursors replace them) and the
/// confirmation leaves exactly one cursor.
#[tokio::test]
async fn switching_to_guarantee_incremental_releases_the_old_step_holds() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1", "s2"]);
    let sender = world.plain_endpoint();
    let full = world.request(None, "tank/a@s1", Resumability);
    replicate(&world, &sender, &full).await;
    sender.send_completed(&full).await.unwrap();
    let interrupted = world.request(Some("tank/a@s1"), "tank/a@s2", Resumability);
    let (_, stream) = sender.send(&interrupted).await.unwrap();
    drop(stream);
    world
        .check(
            "tank/a",
            "#zrepl_CURSOR_G_<s1>_J_push\n@s1 zrepl_STEP_J_push\n@s2 zrepl_STEP_J_push",
            "after the interrupted step",
        )
        .await;

    let again = world.request(Some("tank/a@s1"), "tank/a@s2", Incremental);
    let (_, stream) = sender.send(&again).await.unwrap();
    world
        .check(
            "tank/a",
            "#zrepl_CURSORTENTATIVE__G_<s1>_J_push
             #zrepl_CURSOR_G_<s1>_J_push
             @s1
             #zrepl_CURSORTENTATIVE__G_<s2>_J_push
             @s2",
            "sent again under guarantee_incremental",
        )
        .await;
    world
        .sim
        .receive(&receive_request("backup/a", "s2", again.to.guid), stream)
        .await
        .unwrap();
    sender.send_completed(&again).await.unwrap();
    world
        .check(
            "tank/a",
            "@s1\n#zrepl_CURSOR_G_<s2>_J_push\n@s2",
            "after confirmation",
        )
        .await;
}

#[tokio::test]
async fn include_intermediates_sends_every_snapshot_between() {
    let world = World::new();
    world.filesystem("tank/a", false, &["s1", "s2", "s3"]);
    let sender = world.plain_endpoint();
    let full = world.request(None, "tank/a@s1", Resumability);
    replicate(&world, &sender, &full).await;
    sender.send_completed(&full).await.unwrap();
    let range = SendReq {
        include_intermediates: true,
        ..world.request(Some("tank/a@s1"), "tank/a@s3", Resumability)
    };
    let dry = sender.send_dry(&range).await.unwrap();
    assert!(dry.expected_size.is_some_and(|n| n > 0), "{dry:?}");
    let (_, stream) = sender.send(&range).await.unwrap();
    world
        .check(
            "tank/a",
            "#zrepl_CURSOR_G_<s1>_J_push
             @s1 zrepl_STEP_J_push
             @s2
             @s3 zrepl_STEP_J_push",
            "only `from` and `to` are held",
        )
        .await;
    world
        .sim
        .receive(&receive_request("backup/a", "s3", range.to.guid), stream)
        .await
        .unwrap();
    assert_eq!(world.guid("backup/a@s2"), world.guid("tank/a@s2"));
    sender.send_completed(&range).await.unwrap();
    world
        .check(
            "tank/a",
            "@s1\n@s2\n#zrepl_CURSOR_G_<s3>_J_push\n@s3",
            "confirmed",
        )
        .await;
}
