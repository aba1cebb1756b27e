//! The backend conformance suite: scenario tests written once against
//! [`ZfsBackend`] and run against every backend.
//!
//! The simulated ZFS (`zferry-sim`) must behave like OpenZFS wherever zferry depends on the
//! behaviour, or the simulation tests prove things about a ZFS that does not exist. So every
//! case here runs against the simulated ZFS in `cargo test` and against the real `zfs` CLI
//! backend on real OpenZFS (`scripts/real-zfs-test.sh`). Where the two disagree, OpenZFS is
//! right; `sim-tests/CONFORMANCE.md` records the known disagreements.
//!
//! A [`Harness`] supplies what the backend trait does not cover (creating datasets and pools,
//! writing data, unloading keys); a case is an async function over a harness; [`run`] runs the
//! cases, each in its own task with a deadline, so that a panic or a hang fails one case, not
//! the suite.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use zferry_core::backend::ZfsBackend;
use zferry_core::name::DatasetName;

mod cases_basic;
mod cases_destroy;
mod cases_recv;
mod cases_send;
pub mod check;
pub mod util;

pub use check::CaseFailure;

/// How long one case may take before it counts as hung, in wall (or, under a paused tokio
/// clock, virtual) time. Real cases write at most a few hundred MiB; two minutes is ample.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(120);

/// What kind of dataset [`Harness::create_dataset`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DatasetSpec {
    /// Natively encrypted, as its own encryption root, with the harness's key loaded.
    pub encrypted: bool,
    /// A volume of this many bytes instead of a filesystem.
    pub volume_size: Option<u64>,
}

impl DatasetSpec {
    /// A plain filesystem.
    pub const FILESYSTEM: Self = Self {
        encrypted: false,
        volume_size: None,
    };

    /// An encrypted filesystem (its own encryption root, key loaded).
    pub const ENCRYPTED: Self = Self {
        encrypted: true,
        volume_size: None,
    };

    /// A plain volume of `bytes` (a multiple of 1 MiB).
    pub const fn volume(bytes: u64) -> Self {
        Self {
            encrypted: false,
            volume_size: Some(bytes),
        }
    }
}

/// Test setup that the backend trait does not cover: the one place where the simulated and
/// the real instantiation differ.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The backend under test.
    fn backend(&self) -> &dyn ZfsBackend;

    /// The same backend as a shared handle, for code that keeps it (the sender and receiver
    /// endpoints of the replication suite).
    fn shared_backend(&self) -> Arc<dyn ZfsBackend>;

    /// A short description for the report ("simulated ZFS", "OpenZFS 2.3.2").
    fn label(&self) -> String;

    /// Creates an empty filesystem for one case, destroying any leftover of an earlier run.
    /// Its name contains a space, so that every case exercises names with spaces.
    async fn fresh_root(&self, case: &str) -> Result<DatasetName, CaseFailure>;

    /// Creates a filesystem or volume; the parent must exist.
    async fn create_dataset(
        &self,
        name: &DatasetName,
        spec: DatasetSpec,
    ) -> Result<(), CaseFailure>;

    /// Writes `n_bytes` of incompressible data into the dataset (a new file in a filesystem,
    /// the start of a volume), so that the next snapshot differs and streams have a size.
    async fn write(&self, dataset: &DatasetName, n_bytes: u64) -> Result<(), CaseFailure>;

    /// Creates a pool of `bytes` capacity named `name` (for out-of-space cases); returns the
    /// pool's name.
    async fn create_small_pool(&self, name: &str, bytes: u64) -> Result<String, CaseFailure>;

    /// Destroys a pool made by [`Harness::create_small_pool`].
    async fn destroy_pool(&self, pool: &str) -> Result<(), CaseFailure>;

    /// Unmounts an encrypted dataset and unloads its key.
    async fn unload_key(&self, dataset: &DatasetName) -> Result<(), CaseFailure>;
}

/// The future of one case.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = Result<(), CaseFailure>> + Send + 'a>>;

/// One scenario.
#[derive(Clone, Copy)]
pub struct Case {
    /// Its name, as filters match it and the report prints it.
    pub name: &'static str,
    /// The scenario.
    pub run: for<'a> fn(&'a dyn Harness) -> CaseFuture<'a>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish()
    }
}

/// Every case of the suite, in the order they run.
pub fn cases() -> Vec<Case> {
    let mut all = Vec::new();
    all.extend_from_slice(cases_basic::CASES);
    all.extend_from_slice(cases_destroy::CASES);
    all.extend_from_slice(cases_send::CASES);
    all.extend_from_slice(cases_recv::CASES);
    all
}

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseOutcome {
    /// The case.
    pub name: &'static str,
    /// `Err` with the failure message if it failed, panicked or hung.
    pub result: Result<(), String>,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// One entry per case that ran, in order.
    pub outcomes: Vec<CaseOutcome>,
}

impl Report {
    /// How many cases passed.
    pub fn n_passed(&self) -> usize {
        self.outcomes.iter().filter(|o| o.result.is_ok()).count()
    }

    /// How many cases failed.
    pub fn n_failed(&self) -> usize {
        self.outcomes.len() - self.n_passed()
    }

    /// The last line of a run: `N passed, N failed`.
    pub fn summary_line(&self) -> String {
        format!("{} passed, {} failed", self.n_passed(), self.n_failed())
    }

    /// The failures, one `name: message` line each, for an assertion message.
    pub fn failures(&self) -> String {
        self.outcomes
            .iter()
            .filter_map(|o| {
                o.result
                    .as_ref()
                    .err()
                    .map(|e| format!("{}: {e}\n", o.name))
            })
            .collect()
    }
}

/// The line the runner prints for one case.
pub fn outcome_line(outcome: &CaseOutcome) -> String {
    match &outcome.result {
        Ok(()) => format!("ok   {}", outcome.name),
        Err(message) => format!("FAIL {}: {message}", outcome.name),
    }
}

/// Runs the cases whose name contains `filter` (all without one), one at a time, each in its
/// own task under [`CASE_TIMEOUT`]; prints one line per case and then the summary line.
pub async fn run(harness: Arc<dyn Harness>, filter: Option<&str>) -> Report {
    run_suite("conformance", harness, &cases(), filter, 1, CASE_TIMEOUT).await
}

/// Runs a suite of cases as [`run`] does, at most `at_once` cases at the same time (each works
/// under its own root; on real ZFS most of a command's time is waiting for a txg, so cases
/// overlap well). Lines are printed in case order; `title` starts the first line
/// (`conformance: <harness label>`).
pub async fn run_suite(
    title: &str,
    harness: Arc<dyn Harness>,
    cases: &[Case],
    filter: Option<&str>,
    at_once: usize,
    case_timeout: Duration,
) -> Report {
    let mut report = Report::default();
    println!("{title}: {}", harness.label());
    let permits = Arc::new(tokio::sync::Semaphore::new(at_once.max(1)));
    let mut running = Vec::new();
    for &case in cases {
        if filter.is_some_and(|f| !case.name.contains(f)) {
            continue;
        }
        let harness = Arc::clone(&harness);
        let permits = Arc::clone(&permits);
        running.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let started = tokio::time::Instant::now();
            let result = run_one(harness, case, case_timeout).await;
            (case.name, result, started.elapsed())
        }));
    }
    for task in running {
        let (name, result, elapsed) = match task.await {
            Ok(done) => done,
            Err(e) => (
                "(runner)",
                Err(format!("the case runner failed: {e}")),
                Duration::ZERO,
            ),
        };
        let outcome = CaseOutcome { name, result };
        // Wall time on real ZFS, virtual time under the sim's paused clock.
        println!(
            "{} ({:.1} s)",
            outcome_line(&outcome),
            elapsed.as_secs_f64()
        );
        report.outcomes.push(outcome);
    }
    println!("{}", report.summary_line());
    report
}

/// Runs one case in a spawned task, turning a panic or a timeout into a failure.
async fn run_one(harness: Arc<dyn Harness>, case: Case, timeout: Duration) -> Result<(), String> {
    let task =
        tokio::spawn(async move { tokio::time::timeout(timeout, (case.run)(&*harness)).await });
    match task.await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(failure))) => Err(failure.to_string()),
        Ok(Err(_elapsed)) => Err(format!(
            "did not finish within {} s (hung?)",
            timeout.as_secs()
        )),
        Err(join) if join.is_panic() => {
            let payload = join.into_panic();
            let text = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_owned());
            Err(format!("panicked: {text}"))
        }
        Err(join) => Err(format!("task failed: {join}")),
    }
}

/// Builds a static case table from async functions `async fn name(h: &dyn Harness) ->
/// Result<(), CaseFailure>`; each case is named after its function.
macro_rules! case_table {
    ($($f:ident),* $(,)?) => {
        pub(super) static CASES: &[$crate::conformance::Case] = &[
            $(
                $crate::conformance::Case {
                    name: stringify!($f),
                    run: {
                        fn boxed(
                            h: &dyn $crate::conformance::Harness,
                        ) -> $crate::conformance::CaseFuture<'_> {
                            Box::pin($f(h))
                        }
                        boxed
                    },
                },
            )*
        ];
    };
}
pub(crate) use case_table;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_are_unique_and_there_are_enough() {
        let all = cases();
        let names: std::collections::BTreeSet<_> = all.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), all.len(), "duplicate case names");
        assert!(all.len() >= 40, "only {} cases", all.len());
    }

    #[test]
    fn summary_line_counts() {
        let report = Report {
            outcomes: vec![
                CaseOutcome {
                    name: "a",
                    result: Ok(()),
                },
                CaseOutcome {
                    name: "b",
                    result: Err("boom".into()),
                },
            ],
        };
        assert_eq!(report.summary_line(), "1 passed, 1 failed");
        assert_eq!(outcome_line(&report.outcomes[1]), "FAIL b: boom");
        assert_eq!(report.failures(), "b: boom\n");
    }
}
