//! The planner at scale: many filesystems with a few new snapshots each (a normal run), and one
//! filesystem with a very long history (a run after an outage). Sizes step by 10x so that the
//! figures show whether the cost grows linearly.
//!
//! Run: `cargo bench -p zferry-benches --bench planner`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use zferry_benches::{filesystem_pair, many_filesystems};
use zferry_core::plan::{PlanPolicy, plan};

fn many(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan_many_filesystems_x100_snapshots");
    group.sample_size(10);
    for n_filesystems in [1_000, 10_000] {
        let pairs = many_filesystems(n_filesystems, 100, 5);
        group.throughput(Throughput::Elements(n_filesystems as u64));
        group.bench_function(format!("{n_filesystems}"), |b| {
            b.iter(|| {
                let policy = PlanPolicy::default();
                let mut n_steps = 0;
                for pair in &pairs {
                    let planned = plan(&pair.sender, &pair.receiver, None, &policy);
                    n_steps += planned.map_or(0, |p| p.steps().len());
                }
                assert_eq!(n_steps, 5 * n_filesystems);
                black_box(n_steps)
            });
        });
    }
    group.finish();
}

fn long_history(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan_one_filesystem");
    group.sample_size(10);
    for n_snapshots in [10_000, 100_000] {
        let pair = filesystem_pair(7, n_snapshots, 5);
        group.throughput(Throughput::Elements(n_snapshots as u64));
        group.bench_function(format!("{n_snapshots}_snapshots"), |b| {
            b.iter_batched(
                PlanPolicy::default,
                |policy| black_box(plan(&pair.sender, &pair.receiver, None, &policy)),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, many, long_history);
criterion_main!(benches);
