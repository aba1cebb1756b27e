//! Random operation sequences from many seeds: nothing panics, the txg only grows, and every
//! snapshot that arrives on the receiver has the sender's content for its GUID (data identity).

mod common;

use std::collections::BTreeMap;

use common::*;
use zferry_core::backend::{SendFlags, SendRequest, SendSource, ZfsBackend};
use zferry_core::version::Guid;
use zferry_sim::{Action, Actor, Fault, SimZfs, StreamBreak};

/// Seeds per run; each runs `STEPS_PER_SEED` operations.
const SEEDS: u64 = 40;
const STEPS_PER_SEED: usize = 60;

/// A tiny generator for the test's own choices (the world has its own).
struct Choices(u64);

impl Choices {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

async fn step(sim: &SimZfs, c: &mut Choices, n_snaps: &mut u64) {
    let src = ds("src/my data");
    let dst = ds("dst/r");
    let src_snaps = sim.versions(&src);
    let pick_src = |c: &mut Choices| {
        let snaps: Vec<_> = src_snaps.iter().filter(|x| x.is_snapshot()).collect();
        (!snaps.is_empty()).then(|| snaps[c.next(snaps.len() as u64) as usize].clone())
    };
    match c.next(10) {
        0 | 1 => {
            let _ = sim.user().write(&src, (1 + c.next(4)) * MIB);
            *n_snaps += 1;
            let _ = sim
                .snapshot(&[v(&format!("src/my data@s {n_snaps}"))])
                .await;
        }
        2 => {
            if let Some(s) = pick_src(c) {
                let _ = sim
                    .bookmark(
                        &v(&format!("src/my data@{}", s.name)),
                        &v(&format!("src/my data#b {}", s.name)),
                    )
                    .await;
            }
        }
        3 => {
            if let Some(s) = pick_src(c) {
                let _ = sim
                    .user()
                    .destroy_snapshots(&src, std::slice::from_ref(&s.name));
            }
        }
        4 => {
            if let Some(s) = sim.versions(&dst).iter().find(|x| x.is_snapshot()) {
                let snap = v(&format!("dst/r@{}", s.name));
                if c.next(2) == 0 {
                    let _ = sim.hold("keep", std::slice::from_ref(&snap)).await;
                } else {
                    let _ = sim.release("keep", std::slice::from_ref(&snap)).await;
                }
            }
        }
        5 => {
            let _ = sim.user().abort_receive(&dst);
        }
        6 => {
            // A user writes on the receiver, and sometimes snapshots it: divergence.
            let _ = sim.user().write(&dst, MIB);
            if c.next(2) == 0 {
                *n_snaps += 1;
                let _ = sim.user().snapshot(&[v(&format!("dst/r@user {n_snaps}"))]);
            }
        }
        _ => {
            // Replicate: resume if there is a token, else incremental from the receiver's
            // newest snapshot that the sender has (snapshot or bookmark), else full.
            if c.next(3) == 0 {
                sim.inject(Fault::BreakSend {
                    after_bytes: c.next(6000),
                    how: if c.next(2) == 0 {
                        StreamBreak::Eof
                    } else {
                        StreamBreak::Error
                    },
                });
            }
            let Some(to) = src_snaps.iter().rev().find(|x| x.is_snapshot()).cloned() else {
                return;
            };
            let to_name = v(&format!("src/my data@{}", to.name));
            let token = sim.resume_token(&dst).await.ok().flatten();
            let source = if let Some(token) = token {
                SendSource::Resume { token }
            } else {
                // The newest receiver snapshot the sender still has (as either kind).
                let base = sim
                    .versions(&dst)
                    .into_iter()
                    .rev()
                    .filter(|x| x.is_snapshot())
                    .find_map(|n| src_snaps.iter().rev().find(|x| x.guid == n.guid).cloned());
                match base {
                    Some(b) if b.guid == to.guid => return,
                    Some(b) => SendSource::Incremental {
                        from: v(&format!("src/my data{}{}", b.kind.delimiter(), b.name)),
                        to: to_name,
                    },
                    None => SendSource::Full { to: to_name },
                }
            };
            let request = SendRequest {
                source,
                flags: SendFlags::default(),
            };
            let Ok(stream) = sim.send(&request).await else {
                return;
            };
            let mut recv_req = recv("dst/r", to.name.as_str(), to.guid);
            recv_req.force = c.next(4) == 0;
            // Refusals and broken streams are the point; the invariants are checked after.
            if let Ok(received) = sim.receive(&recv_req, stream).await {
                assert_eq!(received.to.guid, to.guid);
            }
        }
    }
}

fn check_invariants(sim: &SimZfs, seed: u64) {
    let mut last_txg = BTreeMap::new();
    for e in sim.events() {
        let prev = last_txg.insert(e.pool.clone(), e.txg);
        assert!(
            prev.is_none_or(|p| p <= e.txg),
            "seed {seed}: txg went back at {e:?}"
        );
    }
    let src_digests: BTreeMap<Guid, Option<u64>> = sim
        .versions(&ds("src/my data"))
        .iter()
        .map(|x| {
            let name = format!("src/my data{}{}", x.kind.delimiter(), x.name);
            (x.guid, sim.version_digest(&v(&name)))
        })
        .collect();
    for x in sim.versions(&ds("dst/r")) {
        if let Some(expected) = src_digests.get(&x.guid) {
            let got = sim.version_digest(&v(&format!("dst/r@{}", x.name)));
            assert_eq!(
                &got, expected,
                "seed {seed}: dst/r@{} differs from the sender's",
                x.name
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn random_operation_sequences_keep_the_invariants() {
    let mut n_received = 0;
    let mut n_partial = 0;
    let mut n_destroyed_by_force = 0;
    for seed in 0..SEEDS {
        let sim = world(seed);
        let mut c = Choices(seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut n_snaps = 0;
        for _ in 0..STEPS_PER_SEED {
            step(&sim, &mut c, &mut n_snaps).await;
            check_invariants(&sim, seed);
        }
        let events = sim.events();
        n_received += events
            .iter()
            .filter(|e| e.action == Action::Receive)
            .count();
        n_partial += events
            .iter()
            .filter(|e| e.action == Action::ReceivePartial)
            .count();
        n_destroyed_by_force += events
            .iter()
            .filter(|e| e.action == Action::DestroySnapshot && e.actor == Actor::Daemon)
            .count();
    }
    // The faults are not inert: streams broke, state was kept, and receives still completed.
    assert!(n_received > SEEDS as usize, "received: {n_received}");
    assert!(n_partial > 0, "no receive ever left resumable state");
    assert!(
        n_destroyed_by_force > 0,
        "no forced receive ever rolled back"
    );
}
