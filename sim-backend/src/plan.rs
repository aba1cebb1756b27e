//! Seeded fault plans: a list of [`Fault`]s drawn from a seed, so that a simulation run can be
//! replayed from its seed (swarm testing: each seed enables a different mix of faults).

use std::time::Duration;

use zferry_core::backend::{Operation, ZfsErrorKind};

use crate::world::SplitMix64;
use crate::{Fault, StreamBreak};

/// The most faults one plan holds.
pub const PLAN_FAULTS_MAX: usize = 10_000;
/// The most consecutive calls one `Fail` or `Delay` fault of a plan hits.
const PLAN_CALLS_PER_FAULT_MAX: u64 = 3;

/// What a seeded plan may contain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// How many faults to draw (at most [`PLAN_FAULTS_MAX`]).
    pub n_faults: usize,
    /// The operations that may fail or be delayed; empty means all.
    pub operations: Vec<Operation>,
    /// The longest delay.
    pub delay_max: Duration,
    /// The latest byte after which a stream may break.
    pub stream_bytes_max: u64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            n_faults: 8,
            operations: Vec::new(),
            delay_max: Duration::from_secs(60),
            stream_bytes_max: 64 * 1024,
        }
    }
}

/// Every operation, in the order plans draw from.
const OPERATIONS_ALL: [Operation; 19] = [
    Operation::ListDatasets,
    Operation::ListVersions,
    Operation::GetProperties,
    Operation::SetProperty,
    Operation::Snapshot,
    Operation::Bookmark,
    Operation::Hold,
    Operation::Release,
    Operation::ListHolds,
    Operation::DestroySnapshots,
    Operation::DestroyBookmark,
    Operation::DestroyDataset,
    Operation::SendEstimate,
    Operation::Send,
    Operation::Receive,
    Operation::AbortReceive,
    Operation::CreatePlaceholder,
    Operation::Rollback,
    Operation::Features,
];

/// Draws a plan from `seed`: the same seed and options give the same faults.
pub fn seeded_plan(seed: u64, options: &PlanOptions) -> Vec<Fault> {
    let mut rng = SplitMix64::new(seed);
    let operations: &[Operation] = if options.operations.is_empty() {
        &OPERATIONS_ALL
    } else {
        &options.operations
    };
    let mut pick = |n: u64| if n == 0 { 0 } else { rng.next_u64() % n };
    let mut plan = Vec::new();
    for _ in 0..options.n_faults.min(PLAN_FAULTS_MAX) {
        let operation = operations[pick(operations.len() as u64) as usize];
        let fault = match pick(4) {
            0 => {
                let kinds = plausible_kinds(operation);
                Fault::Fail {
                    operation,
                    n_calls: 1 + pick(PLAN_CALLS_PER_FAULT_MAX) as u32,
                    kind: kinds[pick(kinds.len() as u64) as usize].clone(),
                }
            }
            1 => Fault::Delay {
                operation,
                n_calls: 1 + pick(PLAN_CALLS_PER_FAULT_MAX) as u32,
                duration: Duration::from_millis(
                    1 + pick(options.delay_max.as_millis().min(u128::from(u64::MAX)) as u64),
                ),
            },
            2 => Fault::BreakSend {
                after_bytes: pick(options.stream_bytes_max + 1),
                how: if pick(2) == 0 {
                    StreamBreak::Eof
                } else {
                    StreamBreak::Error
                },
            },
            _ => Fault::BreakReceive {
                after_bytes: pick(options.stream_bytes_max + 1),
            },
        };
        plan.push(fault);
    }
    plan
}

/// Errors real ZFS gives for each operation, for plans to choose from.
fn plausible_kinds(operation: Operation) -> Vec<ZfsErrorKind> {
    use ZfsErrorKind as K;
    let other = K::Other {
        detail: "injected failure".to_owned(),
    };
    match operation {
        Operation::DestroySnapshots
        | Operation::DestroyBookmark
        | Operation::DestroyDataset
        | Operation::Rollback => vec![K::Busy, K::DoesNotExist, other],
        Operation::Send | Operation::SendEstimate => vec![K::DoesNotExist, K::StreamBroken, other],
        Operation::Receive => vec![K::NoSpace, K::Busy, K::StreamBroken, other],
        Operation::Snapshot | Operation::Bookmark | Operation::Hold | Operation::Release => {
            vec![K::Busy, K::NoSpace, K::DoesNotExist, other]
        }
        _ => vec![K::DoesNotExist, other],
    }
}
