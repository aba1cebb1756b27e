//! Step-queue benchmark: ordering 100,000 mixed Ready/Retry entries, filling a queue with them,
//! and draining it through 8 slots.
//!
//! Run with `cargo bench -p zferry-benches --bench queue`.

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use zferry_benches::queue_fixtures::{QUEUE_BENCH_LEN, QUEUE_BENCH_SEED, queue_entries};
use zferry_core::queue::{QueueEntry, StepOutcome, StepQueue, sort_entries};

/// The slots of the drain benchmark.
const DRAIN_SLOTS: usize = 8;

/// Every this many completions, one fails (to exercise the error counters).
const DRAIN_FAILURE_EVERY: usize = 100;

fn filled_queue(entries: &[QueueEntry], concurrency: usize) -> StepQueue {
    let mut q = match StepQueue::new(concurrency) {
        Ok(q) => q,
        Err(e) => panic!("{e}"),
    };
    for entry in entries {
        if let Err(e) = q.enqueue(entry.filesystem.clone(), entry.item) {
            panic!("{e}");
        }
    }
    q
}

/// Takes and completes every item, keeping all slots busy and completing the oldest slot first.
/// Returns the number of items handed out.
fn drain(mut q: StepQueue) -> usize {
    let mut slots = VecDeque::with_capacity(DRAIN_SLOTS);
    let mut n_taken = 0;
    loop {
        while let Some(token) = q.take_next() {
            slots.push_back(token);
        }
        let Some(token) = slots.pop_front() else {
            break;
        };
        n_taken += 1;
        let outcome = if n_taken % DRAIN_FAILURE_EVERY == 0 {
            StepOutcome::Failed
        } else {
            StepOutcome::Succeeded
        };
        if let Err(e) = q.complete(token, outcome) {
            panic!("{e}");
        }
    }
    n_taken
}

fn queue(c: &mut Criterion) {
    let entries = queue_entries(QUEUE_BENCH_LEN, QUEUE_BENCH_SEED);
    let mut group = c.benchmark_group("queue");
    group.sample_size(20);

    group.bench_function("sort_100k_entries", |b| {
        b.iter_batched(
            || entries.clone(),
            |mut v| {
                sort_entries(&mut v);
                v
            },
            BatchSize::LargeInput,
        );
    });

    group.bench_function("enqueue_100k", |b| {
        b.iter_batched(
            || (),
            |()| filled_queue(black_box(&entries), DRAIN_SLOTS),
            BatchSize::LargeInput,
        );
    });

    group.bench_function("drain_100k_8_slots", |b| {
        b.iter_batched(
            || filled_queue(&entries, DRAIN_SLOTS),
            |q| {
                let n = drain(q);
                assert_eq!(n, QUEUE_BENCH_LEN);
                n
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, queue);
criterion_main!(benches);
