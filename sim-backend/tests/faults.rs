//! Fault injection, old ZFS features, busy snapshots under a send, call counts, determinism.

mod common;

use std::time::Duration;

use common::*;
use zferry_core::backend::{Features, Operation, ZfsBackend, ZfsErrorKind};
use zferry_sim::{Fault, SimZfs};

#[tokio::test(start_paused = true)]
async fn failures_hit_the_next_calls_of_one_operation_and_are_counted() {
    let sim = world(41);
    sim.inject(Fault::Fail {
        operation: Operation::Snapshot,
        n_calls: 2,
        kind: ZfsErrorKind::NoSpace,
    });
    assert_eq!(
        kind(sim.snapshot(&[v("src/my data@1")]).await),
        ZfsErrorKind::NoSpace
    );
    sim.hold("t", &[]).await.unwrap();
    assert_eq!(
        kind(sim.snapshot(&[v("src/my data@1")]).await),
        ZfsErrorKind::NoSpace
    );
    sim.snapshot(&[v("src/my data@1")]).await.unwrap();
    assert_eq!(sim.op_count(Operation::Snapshot), 3);
    assert_eq!(sim.op_count(Operation::Hold), 1);
    assert!(sim.version(&v("src/my data@1")).is_some());
}

#[tokio::test(start_paused = true)]
async fn failures_on_one_dataset_spare_the_others_and_fail_a_batch_with_it() {
    let sim = world(43);
    sim.setup().create_dataset(&ds("src/other")).unwrap();
    sim.inject(Fault::FailOn {
        operation: Operation::Snapshot,
        dataset: ds("src/my data"),
        n_calls: 2,
        kind: ZfsErrorKind::NoSpace,
    });
    // A batch naming the dataset fails as a whole, with the dataset as the object.
    let e = sim
        .snapshot(&[v("src/other@1"), v("src/my data@1")])
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind, e.object.as_str()),
        (ZfsErrorKind::NoSpace, "src/my data")
    );
    assert!(sim.version(&v("src/other@1")).is_none());
    // Calls about other datasets are untouched and do not consume the fault.
    sim.snapshot(&[v("src/other@1")]).await.unwrap();
    assert_eq!(
        kind(sim.snapshot(&[v("src/my data@1")]).await),
        ZfsErrorKind::NoSpace
    );
    sim.snapshot(&[v("src/my data@1")]).await.unwrap();
    assert!(sim.pending_faults().is_empty());
}

#[tokio::test(start_paused = true)]
async fn delays_pass_in_virtual_time() {
    let sim = world(42);
    sim.inject(Fault::Delay {
        operation: Operation::ListDatasets,
        n_calls: 1,
        duration: Duration::from_secs(3600),
    });
    let start = tokio::time::Instant::now();
    sim.list_datasets(None, &[]).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(3600));
    let again = tokio::time::Instant::now();
    sim.list_datasets(None, &[]).await.unwrap();
    assert_eq!(again.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn random_failures_are_drawn_from_the_seed() {
    let outcomes = |seed| async move {
        let sim = world(seed);
        sim.inject(Fault::FailRandomly {
            operation: Operation::ListDatasets,
            per_mille: 500,
            kind: ZfsErrorKind::Busy,
        });
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(sim.list_datasets(None, &[]).await.is_ok());
        }
        out
    };
    let a = outcomes(7).await;
    assert_eq!(a, outcomes(7).await);
    assert!(a.iter().any(|ok| *ok) && a.iter().any(|ok| !*ok), "{a:?}");
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_being_sent_is_busy_until_the_stream_is_done() {
    let sim = world(43);
    write_and_snap(&sim, "src/my data@1", 1);
    let stream = sim.send(&full("src/my data@1")).await.unwrap();
    let out = sim
        .user()
        .destroy_snapshots(&ds("src/my data"), &[c("1")])
        .unwrap();
    assert_eq!(out[0].result, Err(ZfsErrorKind::Busy));
    drop(stream);
    let out = sim
        .user()
        .destroy_snapshots(&ds("src/my data"), &[c("1")])
        .unwrap();
    assert_eq!(out[0].result, Ok(()));
}

#[tokio::test(start_paused = true)]
async fn an_old_zfs_cannot_resume() {
    let sim = world(44);
    let old = Features {
        resumable_send: false,
        resumable_receive: false,
        encryption: false,
        batch_destroy: false,
    };
    sim.set_features("dst", old).unwrap();
    sim.set_features("src", old).unwrap();
    assert_eq!(sim.features("dst").await.unwrap(), old);
    assert_eq!(
        kind(sim.features("nosuchpool").await),
        ZfsErrorKind::DoesNotExist
    );
    write_and_snap(&sim, "src/my data@1", 1);
    let g = guid(&sim, "src/my data@1");
    let e = transfer(&sim, &full("src/my data@1"), &recv("dst/r", "1", g))
        .await
        .unwrap_err();
    assert!(matches!(e.kind, ZfsErrorKind::NotSupported { .. }), "{e:?}");
    assert!(matches!(
        kind(sim.abort_receive(&ds("dst")).await),
        ZfsErrorKind::NotSupported { .. }
    ));
    let mut plain = recv("dst/r", "1", g);
    plain.resumable = false;
    transfer(&sim, &full("src/my data@1"), &plain)
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn aborting_without_partial_state_succeeds() {
    let sim = world(45);
    sim.abort_receive(&ds("src/my data")).await.unwrap();
    assert_eq!(
        kind(sim.abort_receive(&ds("src/none")).await),
        ZfsErrorKind::DoesNotExist
    );
}

/// One scenario of every kind of change, for the determinism check.
async fn scenario(seed: u64) -> (SimZfs, Vec<zferry_sim::Event>) {
    let sim = world(seed);
    for (i, s) in ["a", "b", "c"].iter().enumerate() {
        write_and_snap(&sim, &format!("src/my data@{s}"), i as u64 + 1);
    }
    let gb = guid(&sim, "src/my data@b");
    transfer(&sim, &full("src/my data@b"), &recv("dst/r", "b", gb))
        .await
        .expect("scenario step");
    sim.bookmark(&v("src/my data@b"), &v("src/my data#b"))
        .await
        .expect("scenario step");
    sim.hold("keep", &[v("dst/r@b")])
        .await
        .expect("scenario step");
    sim.inject(Fault::BreakReceive { after_bytes: 500 });
    let gc = guid(&sim, "src/my data@c");
    let _ = transfer(
        &sim,
        &incremental("src/my data#b", "src/my data@c"),
        &recv("dst/r", "c", gc),
    )
    .await;
    sim.user()
        .abort_receive(&ds("dst/r"))
        .expect("scenario step");
    let events = sim.events();
    (sim, events)
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_event_log() {
    let (sim_a, a) = scenario(99).await;
    let (sim_b, b) = scenario(99).await;
    assert_eq!(a, b);
    assert_eq!(
        format!("{:?}", sim_a.dump("dst")),
        format!("{:?}", sim_b.dump("dst"))
    );
    assert!(
        a.iter()
            .any(|e| e.action == zferry_sim::Action::ReceivePartial)
    );
    let (_, other) = scenario(100).await;
    assert_ne!(a, other, "another seed, other GUIDs");
}

#[tokio::test(start_paused = true)]
async fn seeded_plans_replay_and_stay_within_their_options() {
    let options = zferry_sim::PlanOptions {
        n_faults: 50,
        operations: vec![Operation::Send, Operation::Receive],
        delay_max: Duration::from_secs(5),
        stream_bytes_max: 1000,
    };
    let plan = zferry_sim::seeded_plan(5, &options);
    assert_eq!(plan, zferry_sim::seeded_plan(5, &options));
    assert_ne!(plan, zferry_sim::seeded_plan(6, &options));
    assert_eq!(plan.len(), 50);
    for f in &plan {
        match f {
            Fault::Fail { operation, .. } | Fault::Delay { operation, .. } => {
                assert!(
                    matches!(operation, Operation::Send | Operation::Receive),
                    "{f:?}"
                );
            }
            Fault::BreakSend { after_bytes, .. } | Fault::BreakReceive { after_bytes } => {
                assert!(*after_bytes <= 1000);
            }
            Fault::FailRandomly { .. } => panic!("plans draw no random failures: {f:?}"),
            Fault::FailOn { .. } => panic!("plans name no dataset: {f:?}"),
        }
        if let Fault::Delay { duration, .. } = f {
            assert!(*duration <= Duration::from_secs(5));
        }
    }
    let sim = world(46);
    sim.inject_all(plan.clone());
    assert_eq!(sim.pending_faults(), plan);
    sim.clear_faults();
    assert!(sim.pending_faults().is_empty());
}

#[tokio::test(start_paused = true)]
async fn pools_outlive_the_daemon_handle_that_used_them() {
    fn assert_backend<T: ZfsBackend + Clone + Send + Sync + 'static>() {}
    assert_backend::<SimZfs>();
    let sim = world(47);
    let daemon: std::sync::Arc<dyn ZfsBackend> = std::sync::Arc::new(sim.clone());
    daemon
        .snapshot(&[v("src/my data@before crash")])
        .await
        .unwrap();
    drop(daemon);
    let restarted: Box<dyn ZfsBackend> = Box::new(sim.clone());
    let listing = restarted
        .list_versions(
            &[ds("src/my data")],
            zferry_core::backend::VersionTypes::All,
        )
        .await
        .unwrap();
    assert_eq!(listing.versions(&ds("src/my data")).len(), 1);
    let old = Features {
        resumable_send: false,
        resumable_receive: false,
        encryption: true,
        batch_destroy: true,
    };
    sim.set_features_everywhere(old);
    sim.setup().create_pool("later", TIB).unwrap();
    assert_eq!(sim.features("later").await.unwrap(), old);
    assert_eq!(sim.features("src").await.unwrap(), old);
}
