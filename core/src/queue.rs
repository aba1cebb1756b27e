//! The step queue: which filesystem works next, and how many work at once.
//!
//! Every filesystem of a replication attempt waits here for its next unit of work (planning or
//! one step) and holds one of `concurrency` slots while it works. The queue is a plain data
//! structure: the engine wraps it in whatever async machinery it likes and feeds it events.
//!
//! # The order
//!
//! 1. Every [`Item::Ready`] goes before every [`Item::Retry`]: a filesystem that failed waits
//!    until the healthy ones have had their turn.
//! 2. Ready items go by [`StepDate`], oldest first. The date is the creation time of the oldest
//!    `to` snapshot of the filesystem's next step, so with snapshots taken at the same time on
//!    all filesystems, every filesystem reaches T1 before any reaches T2. Planning gets
//!    [`StepDate::PLANNING`] (the Unix epoch) and thus goes before any step, as in zrepl.
//! 3. Retry items go by error count, fewest first, so one filesystem that keeps failing cannot
//!    starve the others (zrepl's reason: don't get stuck with one filesystem until the watchdog
//!    hits).
//! 4. Ties go by filesystem name. The order is total: it never depends on insertion order, hash
//!    order or timing, so a simulation replays the same schedule from the same inputs.
//!
//! # Slots
//!
//! [`StepQueue::take_next`] hands out the best waiting item together with a [`SlotToken`] when a
//! slot is free. The token is neither `Clone` nor `Copy`: the only way to free the slot is to give
//! the token back to [`StepQueue::complete`] with the step's [`StepOutcome`]. A filesystem holds at
//! most one slot and, while it holds one, cannot be queued again: two steps on one filesystem at
//! once would race two `zfs recv` into the same dataset.
//!
//! # Error counters
//!
//! [`ErrorCounters`] counts the consecutive failures of each filesystem. The queue keeps one for
//! replication; the pruner keeps its own and orders its work with [`prune_order`]: stop at a
//! filesystem's first error, record it, and try that filesystem last next time.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::name::DatasetName;

/// The most filesystems that may wait in one queue. Far above any real job (zrepl users report
/// tens of thousands of filesystems), low enough that a runaway producer fails with an error
/// instead of exhausting memory.
pub const STEP_QUEUE_LEN_MAX: usize = 1 << 20;

/// The most slots a queue may have (`concurrency.steps`). Each slot is a `zfs send | zfs recv`
/// pipeline or a planning round trip; more than this saturates any pool or link.
pub const STEP_SLOTS_MAX: usize = 256;

/// The most filesystems one [`ErrorCounters`] tracks at once; the same bound as the queue, since
/// every counted filesystem was queued (or pruned) at some point.
pub const ERROR_COUNTERS_LEN_MAX: usize = STEP_QUEUE_LEN_MAX;

/// When a filesystem's next unit of work is due: the creation time of the oldest `to` snapshot of
/// its next step, in Unix seconds (the `creation` property).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepDate(i64);

impl StepDate {
    /// The date of planning work: the Unix epoch, so that planning goes before every step (a
    /// snapshot created at the epoch itself ties with planning and is ordered by name).
    pub const PLANNING: StepDate = StepDate(0);

    /// The date of a step whose oldest `to` snapshot was created at `creation_unix`.
    pub const fn from_unix(creation_unix: i64) -> Self {
        Self(creation_unix)
    }

    /// The date in Unix seconds.
    pub const fn unix(self) -> i64 {
        self.0
    }
}

impl fmt::Display for StepDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}", self.0)
    }
}

impl fmt::Debug for StepDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StepDate({})", self.0)
    }
}

/// What a filesystem waits for. The declaration order of the variants is the priority: the
/// derived `Ord` compares the variant first (Ready before Retry), then its field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    /// The filesystem has work to do: planning, or a step.
    Ready {
        /// When the work is due; oldest first.
        next_step_date: StepDate,
    },
    /// The filesystem failed and waits for another try.
    Retry {
        /// How many times in a row it failed; fewest first.
        n_errors: u32,
    },
}

impl Item {
    /// Planning work, due before any step.
    pub const PLANNING: Item = Item::Ready {
        next_step_date: StepDate::PLANNING,
    };
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Ready { next_step_date } => write!(f, "ready {}", next_step_date.unix()),
            Item::Retry { n_errors } => write!(f, "retry after {n_errors} errors"),
        }
    }
}

/// One filesystem and what it waits for, ordered as the queue hands them out (see the module
/// doc): by item, then by filesystem name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueEntry {
    /// What the filesystem waits for; compared first.
    pub item: Item,
    /// The filesystem; breaks ties.
    pub filesystem: DatasetName,
}

/// Sorts entries into the order the queue hands them out.
pub fn sort_entries(entries: &mut [QueueEntry]) {
    entries.sort_unstable();
}

/// How a step (or planning) that held a slot ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepOutcome {
    /// It worked; the filesystem's error counter goes back to zero.
    Succeeded,
    /// It failed; the filesystem's error counter goes up by one.
    Failed,
    /// It worked but proves nothing about the failure that made the filesystem retry (e.g.
    /// planning again before the step that failed): the counter stays as it is, so that a
    /// filesystem whose step keeps failing still reaches its error limit.
    Neutral,
}

/// Proof that a filesystem holds a slot. Give it back to [`StepQueue::complete`] to free the slot.
#[must_use = "a slot stays taken until its token is given back to `StepQueue::complete`"]
#[derive(Debug, PartialEq, Eq)]
pub struct SlotToken {
    id: u64,
    filesystem: DatasetName,
    item: Item,
}

impl SlotToken {
    /// The filesystem that holds the slot.
    pub fn filesystem(&self) -> &DatasetName {
        &self.filesystem
    }

    /// What the filesystem was waiting for when it got the slot.
    pub fn item(&self) -> Item {
        self.item
    }
}

/// What [`StepQueue::complete`] reports about the filesystem whose slot was freed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// The filesystem.
    pub filesystem: DatasetName,
    /// Its consecutive errors after this outcome (0 after a success).
    pub n_errors: u32,
}

/// Why the queue refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// `concurrency` is 0 or above [`STEP_SLOTS_MAX`].
    #[error(
        "step concurrency {requested} is out of range: it must be between 1 and {max}; \
         fix `concurrency.steps` in the job's configuration"
    )]
    ConcurrencyOutOfRange {
        /// The concurrency asked for.
        requested: usize,
        /// The largest allowed ([`STEP_SLOTS_MAX`]).
        max: usize,
    },
    /// The queue already holds [`STEP_QUEUE_LEN_MAX`] filesystems.
    #[error(
        "cannot queue `{filesystem}`: the step queue already holds {len_max} filesystems; \
         split the job so that each replicates fewer filesystems"
    )]
    Full {
        /// The filesystem that did not fit.
        filesystem: DatasetName,
        /// The bound ([`STEP_QUEUE_LEN_MAX`]).
        len_max: usize,
    },
    /// The filesystem holds a slot, so its next work cannot be queued yet.
    #[error(
        "cannot queue `{filesystem}`: it is still working in a slot; complete its current step \
         before queueing the next (this is a bug in zferry's engine)"
    )]
    InFlight {
        /// The filesystem.
        filesystem: DatasetName,
    },
    /// The token does not match any slot of this queue.
    #[error(
        "slot token #{id} of `{filesystem}` does not belong to any taken slot of this queue \
         (this is a bug in zferry's engine)"
    )]
    UnknownToken {
        /// The token's filesystem.
        filesystem: DatasetName,
        /// The token's id.
        id: u64,
    },
    /// The error counters are full.
    #[error(transparent)]
    Counters(#[from] CountersFull),
}

/// The error counters already track [`ERROR_COUNTERS_LEN_MAX`] filesystems.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error(
    "cannot count the error of `{filesystem}`: {len_max} filesystems already have errors \
     counted; split the job so that each handles fewer filesystems"
)]
pub struct CountersFull {
    /// The filesystem whose error could not be counted.
    pub filesystem: DatasetName,
    /// The bound ([`ERROR_COUNTERS_LEN_MAX`]).
    pub len_max: usize,
}

/// Consecutive errors per filesystem: raised on each failure, reset on success. Shared in kind
/// (not in instance) by the step queue and the pruner's back-off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorCounters {
    /// Only filesystems with at least one error are present.
    counts: BTreeMap<DatasetName, u32>,
}

impl ErrorCounters {
    /// Counters with no errors.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one more error of `filesystem` and returns its new count (saturating at
    /// `u32::MAX`, which only orders it last).
    pub fn record_error(&mut self, filesystem: &DatasetName) -> Result<u32, CountersFull> {
        if let Some(count) = self.counts.get_mut(filesystem) {
            *count = count.saturating_add(1);
            return Ok(*count);
        }
        if self.counts.len() >= ERROR_COUNTERS_LEN_MAX {
            return Err(CountersFull {
                filesystem: filesystem.clone(),
                len_max: ERROR_COUNTERS_LEN_MAX,
            });
        }
        self.counts.insert(filesystem.clone(), 1);
        Ok(1)
    }

    /// The consecutive errors of `filesystem`; 0 if it never failed or succeeded since.
    pub fn count(&self, filesystem: &DatasetName) -> u32 {
        self.counts.get(filesystem).copied().unwrap_or(0)
    }

    /// Forgets the errors of `filesystem`, after a success (or when it is gone).
    pub fn reset(&mut self, filesystem: &DatasetName) {
        self.counts.remove(filesystem);
    }

    /// How many filesystems have at least one error.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether no filesystem has an error.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The filesystems with errors and their counts, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&DatasetName, u32)> {
        self.counts.iter().map(|(fs, n)| (fs, *n))
    }

    /// Fewest errors first, then by name: the back-off order of the pruner, usable on any
    /// per-filesystem record through [`slice::sort_by`].
    pub fn cmp_fewest_errors_first(&self, a: &DatasetName, b: &DatasetName) -> Ordering {
        self.count(a).cmp(&self.count(b)).then_with(|| a.cmp(b))
    }
}

/// Sorts the filesystems the pruner is about to work on: fewest errors first, ties by name. A
/// filesystem whose pruning failed last time goes after all that did not, so one failing
/// filesystem cannot hold up the rest.
pub fn prune_order(filesystems: &mut [DatasetName], counters: &ErrorCounters) {
    filesystems.sort_by_cached_key(|fs| (counters.count(fs), fs.clone()));
}

/// The queue of filesystems' next work with a bounded number of slots; see the module doc.
#[derive(Debug, Clone)]
pub struct StepQueue {
    concurrency: usize,
    /// Waiting filesystems in hand-out order.
    waiting: BTreeSet<QueueEntry>,
    /// The item of each waiting filesystem, to find its entry on update or removal.
    items: BTreeMap<DatasetName, Item>,
    /// The filesystems that hold a slot, with their token's id.
    in_flight: BTreeMap<DatasetName, u64>,
    next_token_id: u64,
    counters: ErrorCounters,
}

impl StepQueue {
    /// An empty queue with `concurrency` slots (1 to [`STEP_SLOTS_MAX`]).
    pub fn new(concurrency: usize) -> Result<Self, QueueError> {
        Self::with_counters(concurrency, ErrorCounters::new())
    }

    /// An empty queue with `concurrency` slots that continues counting errors from `counters`.
    pub fn with_counters(concurrency: usize, counters: ErrorCounters) -> Result<Self, QueueError> {
        if concurrency == 0 || concurrency > STEP_SLOTS_MAX {
            return Err(QueueError::ConcurrencyOutOfRange {
                requested: concurrency,
                max: STEP_SLOTS_MAX,
            });
        }
        Ok(Self {
            concurrency,
            waiting: BTreeSet::new(),
            items: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            next_token_id: 0,
            counters,
        })
    }

    /// Queues `filesystem` with `item`, or replaces the item it waits with. Returns the replaced
    /// item, if any.
    pub fn enqueue(
        &mut self,
        filesystem: DatasetName,
        item: Item,
    ) -> Result<Option<Item>, QueueError> {
        if self.in_flight.contains_key(&filesystem) {
            return Err(QueueError::InFlight { filesystem });
        }
        let previous = self.items.get(&filesystem).copied();
        match previous {
            Some(previous) => {
                let mut entry = QueueEntry {
                    item: previous,
                    filesystem,
                };
                self.waiting.remove(&entry);
                entry.item = item;
                self.items.insert(entry.filesystem.clone(), item);
                self.waiting.insert(entry);
            }
            None => {
                if self.waiting.len() >= STEP_QUEUE_LEN_MAX {
                    return Err(QueueError::Full {
                        filesystem,
                        len_max: STEP_QUEUE_LEN_MAX,
                    });
                }
                self.items.insert(filesystem.clone(), item);
                self.waiting.insert(QueueEntry { item, filesystem });
            }
        }
        debug_assert_eq!(self.items.len(), self.waiting.len());
        Ok(previous)
    }

    /// Queues `filesystem` for another try, ranked by its current error count.
    pub fn enqueue_retry(&mut self, filesystem: DatasetName) -> Result<Option<Item>, QueueError> {
        let n_errors = self.counters.count(&filesystem);
        self.enqueue(filesystem, Item::Retry { n_errors })
    }

    /// Takes `filesystem` out of the queue (it is done, or stopped for good). Returns the item it
    /// waited with; `None` if it was not waiting. A filesystem in a slot is not affected.
    pub fn remove(&mut self, filesystem: &DatasetName) -> Option<Item> {
        let item = self.items.remove(filesystem)?;
        self.waiting.remove(&QueueEntry {
            item,
            filesystem: filesystem.clone(),
        });
        Some(item)
    }

    /// Hands out the first waiting filesystem in queue order together with a slot, if a slot is
    /// free and anything waits; `None` otherwise.
    pub fn take_next(&mut self) -> Option<SlotToken> {
        if self.in_flight.len() >= self.concurrency {
            return None;
        }
        let entry = self.waiting.pop_first()?;
        self.items.remove(&entry.filesystem);
        let id = self.next_token_id;
        // 2^64 slots will not be taken in the lifetime of a process; wrapping keeps this total.
        self.next_token_id = self.next_token_id.wrapping_add(1);
        self.in_flight.insert(entry.filesystem.clone(), id);
        debug_assert!(self.in_flight.len() <= self.concurrency);
        Some(SlotToken {
            id,
            filesystem: entry.filesystem,
            item: entry.item,
        })
    }

    /// Frees the slot of `token` and records the outcome in the error counters. The filesystem is
    /// not queued again: queue its next step with [`enqueue`](Self::enqueue) or a retry with
    /// [`enqueue_retry`](Self::enqueue_retry). If counting the error fails, the slot is freed all
    /// the same.
    pub fn complete(
        &mut self,
        token: SlotToken,
        outcome: StepOutcome,
    ) -> Result<Completed, QueueError> {
        let SlotToken {
            id,
            filesystem,
            item: _,
        } = token;
        if self.in_flight.get(&filesystem) != Some(&id) {
            return Err(QueueError::UnknownToken { filesystem, id });
        }
        self.in_flight.remove(&filesystem);
        let n_errors = match outcome {
            StepOutcome::Succeeded => {
                self.counters.reset(&filesystem);
                0
            }
            StepOutcome::Failed => self.counters.record_error(&filesystem)?,
            StepOutcome::Neutral => self.counters.count(&filesystem),
        };
        Ok(Completed {
            filesystem,
            n_errors,
        })
    }

    /// The number of slots.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// How many filesystems wait.
    pub fn n_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// How many slots are taken.
    pub fn n_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether nothing waits and no slot is taken: the attempt has no more work.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.in_flight.is_empty()
    }

    /// The waiting filesystems in the order they will be handed out (for status).
    pub fn waiting(&self) -> impl Iterator<Item = &QueueEntry> {
        self.waiting.iter()
    }

    /// The filesystems that hold a slot, by name (for status).
    pub fn in_flight(&self) -> impl Iterator<Item = &DatasetName> {
        self.in_flight.keys()
    }

    /// The error counters.
    pub fn counters(&self) -> &ErrorCounters {
        &self.counters
    }

    /// The error counters, to carry them into the next attempt's queue.
    pub fn into_counters(self) -> ErrorCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fs(name: &str) -> DatasetName {
        DatasetName::parse(name).unwrap()
    }

    /// Parses fixture lines `pool/a ready 100` or `pool/b retry 2`.
    fn parse_fixture(fixture: &str) -> Vec<(DatasetName, Item)> {
        fixture
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                let [name, kind, n] = words[..] else {
                    panic!("bad fixture line {line:?}")
                };
                let item = match kind {
                    "ready" => Item::Ready {
                        next_step_date: StepDate::from_unix(n.parse().unwrap()),
                    },
                    "retry" => Item::Retry {
                        n_errors: n.parse().unwrap(),
                    },
                    "plan" => Item::PLANNING,
                    _ => panic!("bad kind in {line:?}"),
                };
                (fs(name), item)
            })
            .collect()
    }

    /// Drains the fixture with `concurrency` slots, completing every taken slot with success
    /// after each round of takes, and renders the rounds as `a b | c` (names without the pool).
    fn drain_rounds(concurrency: usize, fixture: &str) -> String {
        let mut q = StepQueue::new(concurrency).unwrap();
        for (name, item) in parse_fixture(fixture) {
            q.enqueue(name, item).unwrap();
        }
        let mut rounds = Vec::new();
        while !q.is_idle() {
            let mut tokens = Vec::new();
            while let Some(token) = q.take_next() {
                tokens.push(token);
            }
            assert!(tokens.len() <= concurrency);
            let names: Vec<String> = tokens
                .iter()
                .map(|t| {
                    t.filesystem()
                        .as_str()
                        .trim_start_matches("pool/")
                        .to_owned()
                })
                .collect();
            rounds.push(names.join(" "));
            for token in tokens {
                q.complete(token, StepOutcome::Succeeded).unwrap();
            }
        }
        rounds.join(" | ")
    }

    fn check(concurrency: usize, fixture: &str, expected: &str) {
        assert_eq!(
            drain_rounds(concurrency, fixture),
            expected,
            "fixture:\n{fixture}"
        );
    }

    #[test]
    fn ready_before_retry_then_by_date_and_errors() {
        check(
            1,
            "pool/a retry 0
             pool/b ready 300
             pool/c ready 100
             pool/d retry 2
             pool/e retry 1
             pool/f plan 0",
            "f | c | b | a | e | d",
        );
    }

    #[test]
    fn ties_go_by_name() {
        check(
            1,
            "pool/z ready 5\npool/a ready 5\npool/m ready 5",
            "a | m | z",
        );
        check(1, "pool/z retry 1\npool/a retry 1", "a | z");
        // A snapshot at the epoch ties with planning; the name decides.
        check(1, "pool/b plan 0\npool/a ready 0", "a | b");
    }

    #[test]
    fn slots_bound_each_round() {
        check(
            2,
            "pool/a ready 1\npool/b ready 2\npool/c ready 3\npool/d retry 0\npool/e plan 0",
            "e a | b c | d",
        );
        check(8, "pool/a ready 1\npool/b ready 2", "a b");
    }

    #[test]
    fn all_filesystems_reach_t1_before_any_reaches_t2() {
        // Three filesystems with snapshots at T1=100 and T2=200: each completed step re-queues the
        // filesystem with its next step's date.
        let mut q = StepQueue::new(1).unwrap();
        for name in ["pool/c", "pool/a", "pool/b"] {
            q.enqueue(
                fs(name),
                Item::Ready {
                    next_step_date: StepDate::from_unix(100),
                },
            )
            .unwrap();
        }
        let mut order = Vec::new();
        while let Some(token) = q.take_next() {
            let date = match token.item() {
                Item::Ready { next_step_date } => next_step_date.unix(),
                Item::Retry { .. } => unreachable!("nothing failed"),
            };
            order.push(format!("{}@{date}", token.filesystem()));
            let done = q.complete(token, StepOutcome::Succeeded).unwrap();
            if date == 100 {
                let next = Item::Ready {
                    next_step_date: StepDate::from_unix(200),
                };
                q.enqueue(done.filesystem, next).unwrap();
            }
        }
        assert_eq!(
            order,
            [
                "pool/a@100",
                "pool/b@100",
                "pool/c@100",
                "pool/a@200",
                "pool/b@200",
                "pool/c@200"
            ]
        );
    }

    #[test]
    fn a_failing_filesystem_cannot_starve_the_others() {
        // `pool/a` fails every time and is retried; `pool/b` and `pool/c` fail once. Retries go
        // fewest errors first, so b and c get their second try before a gets its third.
        let mut q = StepQueue::new(1).unwrap();
        for name in ["pool/a", "pool/b", "pool/c"] {
            q.enqueue(fs(name), Item::PLANNING).unwrap();
        }
        let mut log = Vec::new();
        let mut failed_once = BTreeSet::new();
        while let Some(token) = q.take_next() {
            let name = token.filesystem().clone();
            let fail = name.as_str() == "pool/a" || failed_once.insert(name.clone());
            let outcome = if fail {
                StepOutcome::Failed
            } else {
                StepOutcome::Succeeded
            };
            let done = q.complete(token, outcome).unwrap();
            log.push(format!("{} {}", name, done.n_errors));
            if fail && done.n_errors < 3 {
                q.enqueue_retry(name).unwrap();
            }
        }
        assert_eq!(
            log,
            [
                "pool/a 1", "pool/b 1", "pool/c 1", "pool/a 2", "pool/b 0", "pool/c 0", "pool/a 3"
            ]
        );
    }

    #[test]
    fn update_replaces_the_item() {
        let mut q = StepQueue::new(1).unwrap();
        assert_eq!(
            q.enqueue(fs("pool/a"), Item::Retry { n_errors: 4 })
                .unwrap(),
            None
        );
        q.enqueue(fs("pool/b"), Item::Retry { n_errors: 1 })
            .unwrap();
        let previous = q.enqueue(fs("pool/a"), Item::PLANNING).unwrap();
        assert_eq!(previous, Some(Item::Retry { n_errors: 4 }));
        assert_eq!(q.n_waiting(), 2);
        let order: Vec<&str> = q.waiting().map(|e| e.filesystem.as_str()).collect();
        assert_eq!(order, ["pool/a", "pool/b"]);
        assert_eq!(q.remove(&fs("pool/a")), Some(Item::PLANNING));
        assert_eq!(q.remove(&fs("pool/a")), None);
        assert_eq!(q.take_next().unwrap().filesystem().as_str(), "pool/b");
    }

    #[test]
    fn a_filesystem_in_a_slot_cannot_be_queued_again() {
        let mut q = StepQueue::new(2).unwrap();
        q.enqueue(fs("pool/a b"), Item::PLANNING).unwrap();
        let token = q.take_next().unwrap();
        let e = q.enqueue(fs("pool/a b"), Item::PLANNING).unwrap_err();
        assert_eq!(
            e,
            QueueError::InFlight {
                filesystem: fs("pool/a b")
            }
        );
        assert!(
            e.to_string()
                .contains("cannot queue `pool/a b`: it is still working in a slot"),
            "{e}"
        );
        assert_eq!(q.in_flight().collect::<Vec<_>>(), [&fs("pool/a b")]);
        q.complete(token, StepOutcome::Succeeded).unwrap();
        q.enqueue(fs("pool/a b"), Item::PLANNING).unwrap();
    }

    #[test]
    fn tokens_of_another_queue_are_refused() {
        let mut q1 = StepQueue::new(1).unwrap();
        let mut q2 = StepQueue::new(1).unwrap();
        q1.enqueue(fs("pool/a"), Item::PLANNING).unwrap();
        q2.enqueue(fs("pool/b"), Item::PLANNING).unwrap();
        let t1 = q1.take_next().unwrap();
        let t2 = q2.take_next().unwrap();
        let e = q1.complete(t2, StepOutcome::Succeeded).unwrap_err();
        assert_eq!(
            e,
            QueueError::UnknownToken {
                filesystem: fs("pool/b"),
                id: 0
            }
        );
        assert_eq!(q1.n_in_flight(), 1);
        q1.complete(t1, StepOutcome::Succeeded).unwrap();
        assert_eq!(q1.n_in_flight(), 0);
        assert_eq!(q2.n_in_flight(), 1);
    }

    #[test]
    fn concurrency_bounds() {
        for bad in [0, STEP_SLOTS_MAX + 1] {
            let e = StepQueue::new(bad).unwrap_err();
            assert_eq!(
                e,
                QueueError::ConcurrencyOutOfRange {
                    requested: bad,
                    max: STEP_SLOTS_MAX
                }
            );
            assert!(e.to_string().contains("concurrency.steps"), "{e}");
        }
        assert_eq!(
            StepQueue::new(STEP_SLOTS_MAX).unwrap().concurrency(),
            STEP_SLOTS_MAX
        );
        assert_eq!(StepQueue::new(1).unwrap().concurrency(), 1);
    }

    #[test]
    fn queue_length_is_bounded() {
        let mut q = StepQueue::new(1).unwrap();
        let root = fs("pool");
        for i in 0..STEP_QUEUE_LEN_MAX {
            let date = StepDate::from_unix(i as i64);
            q.enqueue(
                root.join(&format!("{i}")).unwrap(),
                Item::Ready {
                    next_step_date: date,
                },
            )
            .unwrap();
        }
        let one_more = fs("pool/one more");
        let e = q.enqueue(one_more.clone(), Item::PLANNING).unwrap_err();
        assert_eq!(
            e,
            QueueError::Full {
                filesystem: one_more,
                len_max: STEP_QUEUE_LEN_MAX
            }
        );
        // Updating a filesystem that already waits is still allowed when full.
        assert!(q.enqueue(fs("pool/7"), Item::PLANNING).unwrap().is_some());
        assert_eq!(q.n_waiting(), STEP_QUEUE_LEN_MAX);
    }

    #[test]
    fn counters_count_reset_and_carry_over() {
        let mut q = StepQueue::new(1).unwrap();
        q.enqueue(fs("pool/a"), Item::PLANNING).unwrap();
        let t = q.take_next().unwrap();
        assert_eq!(q.complete(t, StepOutcome::Failed).unwrap().n_errors, 1);
        assert_eq!(q.enqueue_retry(fs("pool/a")).unwrap(), None);
        assert_eq!(
            q.waiting().next().unwrap().item,
            Item::Retry { n_errors: 1 }
        );
        let t = q.take_next().unwrap();
        assert_eq!(t.item(), Item::Retry { n_errors: 1 });
        assert_eq!(q.complete(t, StepOutcome::Failed).unwrap().n_errors, 2);
        let counters = q.into_counters();
        assert_eq!(counters.count(&fs("pool/a")), 2);
        let mut q = StepQueue::with_counters(1, counters).unwrap();
        q.enqueue_retry(fs("pool/a")).unwrap();
        let t = q.take_next().unwrap();
        assert_eq!(t.item(), Item::Retry { n_errors: 2 });
        let done = q.complete(t, StepOutcome::Succeeded).unwrap();
        assert_eq!(
            done,
            Completed {
                filesystem: fs("pool/a"),
                n_errors: 0
            }
        );
        assert!(q.counters().is_empty());
    }

    #[test]
    fn error_counters() {
        let mut c = ErrorCounters::new();
        let a = fs("pool/a");
        assert_eq!(c.count(&a), 0);
        assert_eq!(c.record_error(&a).unwrap(), 1);
        assert_eq!(c.record_error(&a).unwrap(), 2);
        assert_eq!(c.record_error(&fs("pool/b")).unwrap(), 1);
        assert_eq!(
            c.iter()
                .map(|(f, n)| format!("{f}={n}"))
                .collect::<Vec<_>>(),
            ["pool/a=2", "pool/b=1"]
        );
        c.reset(&a);
        assert_eq!(c.count(&a), 0);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn error_counters_are_bounded() {
        let mut c = ErrorCounters::new();
        let root = fs("pool");
        for i in 0..ERROR_COUNTERS_LEN_MAX {
            c.record_error(&root.join(&format!("{i}")).unwrap())
                .unwrap();
        }
        let extra = fs("pool/extra");
        let e = c.record_error(&extra).unwrap_err();
        assert_eq!(
            e,
            CountersFull {
                filesystem: extra,
                len_max: ERROR_COUNTERS_LEN_MAX
            }
        );
        // A filesystem that is already counted can still fail again.
        assert_eq!(c.record_error(&fs("pool/3")).unwrap(), 2);
    }

    /// Checks `prune_order` on `names` (space-separated, with `:n` errors) against `expected`.
    fn check_prune(names: &str, expected: &str) {
        let mut counters = ErrorCounters::new();
        let mut filesystems = Vec::new();
        for word in names.split_whitespace() {
            let (name, n) = word.split_once(':').unwrap_or((word, "0"));
            let name = fs(&format!("pool/{name}"));
            for _ in 0..n.parse::<u32>().unwrap() {
                counters.record_error(&name).unwrap();
            }
            filesystems.push(name);
        }
        prune_order(&mut filesystems, &counters);
        let got: Vec<&str> = filesystems
            .iter()
            .map(|f| f.as_str().trim_start_matches("pool/"))
            .collect();
        assert_eq!(got.join(" "), expected, "input {names}");
    }

    #[test]
    fn prune_order_fewest_errors_first_then_by_name() {
        check_prune("", "");
        check_prune("c b a", "a b c");
        check_prune("a:2 b c:1", "b c a");
        check_prune("z:1 y:1 x", "x y z");
        check_prune("a:3 b:3 c:3 d:0", "d a b c");
    }

    #[test]
    fn pruner_back_off_tries_a_failed_filesystem_last() {
        // Run 1: the pruner stops at b's first error and records it on b.
        let mut counters = ErrorCounters::new();
        let mut order = vec![fs("pool/a"), fs("pool/b"), fs("pool/c")];
        prune_order(&mut order, &counters);
        assert_eq!(order[1], fs("pool/b"));
        counters.record_error(&fs("pool/b")).unwrap();
        // Run 2: b goes last; it succeeds this time and the counter resets.
        prune_order(&mut order, &counters);
        assert_eq!(order, [fs("pool/a"), fs("pool/c"), fs("pool/b")]);
        counters.reset(&fs("pool/b"));
        prune_order(&mut order, &counters);
        assert_eq!(order, [fs("pool/a"), fs("pool/b"), fs("pool/c")]);
        // The comparator agrees with prune_order for callers sorting their own records.
        assert_eq!(
            counters.cmp_fewest_errors_first(&fs("pool/a"), &fs("pool/b")),
            Ordering::Less
        );
    }

    #[test]
    fn sort_entries_matches_the_queue() {
        let mut entries: Vec<QueueEntry> = parse_fixture(
            "pool/a retry 1\npool/b ready 9\npool/c plan 0\npool/d retry 0\npool/e ready 9",
        )
        .into_iter()
        .map(|(filesystem, item)| QueueEntry { item, filesystem })
        .collect();
        sort_entries(&mut entries);
        let got: Vec<&str> = entries.iter().map(|e| e.filesystem.as_str()).collect();
        assert_eq!(got, ["pool/c", "pool/b", "pool/e", "pool/d", "pool/a"]);
    }

    // Property tests. The reference order below is written out by hand, independently of the
    // derived `Ord` the queue uses, so that a wrong variant order or field order would show.

    fn reference_less(a: &(String, Item), b: &(String, Item)) -> bool {
        let rank = |item: &Item| match *item {
            Item::Ready { next_step_date } => (0u8, next_step_date.unix()),
            Item::Retry { n_errors } => (1u8, i64::from(n_errors)),
        };
        (rank(&a.1), &a.0) < (rank(&b.1), &b.0)
    }

    fn reference_min(waiting: &BTreeMap<String, Item>) -> Option<String> {
        let mut best: Option<(String, Item)> = None;
        for (name, item) in waiting {
            let candidate = (name.clone(), *item);
            if best.as_ref().is_none_or(|b| reference_less(&candidate, b)) {
                best = Some(candidate);
            }
        }
        best.map(|(name, _)| name)
    }

    fn item_strategy() -> impl Strategy<Value = Item> {
        prop_oneof![
            (-2i64..6).prop_map(|d| Item::Ready {
                next_step_date: StepDate::from_unix(d)
            }),
            (0u32..5).prop_map(|n| Item::Retry { n_errors: n }),
        ]
    }

    const NAMES: [&str; 8] = [
        "pool/a", "pool/b", "pool/a/b", "pool/c d", "pool/e", "pool/aa", "pool/A", "pool/f",
    ];

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue(usize, Item),
        Retry(usize),
        Remove(usize),
        Take,
        Complete(usize, StepOutcome),
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        let outcome = prop_oneof![
            Just(StepOutcome::Succeeded),
            Just(StepOutcome::Failed),
            Just(StepOutcome::Neutral)
        ];
        prop_oneof![
            3 => (0..NAMES.len(), item_strategy()).prop_map(|(i, item)| Op::Enqueue(i, item)),
            1 => (0..NAMES.len()).prop_map(Op::Retry),
            1 => (0..NAMES.len()).prop_map(Op::Remove),
            3 => Just(Op::Take),
            2 => (0..8usize, outcome).prop_map(|(i, o)| Op::Complete(i, o)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Against a model: the handed-out item is the reference minimum, at most `concurrency`
        /// slots are ever taken, and updates, removals and counters behave as specified.
        #[test]
        fn take_next_hands_out_the_minimum_within_the_slot_bound(
            concurrency in 1usize..4,
            ops in proptest::collection::vec(op_strategy(), 0..80),
        ) {
            let mut q = StepQueue::new(concurrency).unwrap();
            let mut waiting: BTreeMap<String, Item> = BTreeMap::new();
            let mut counts: BTreeMap<String, u32> = BTreeMap::new();
            let mut tokens: Vec<SlotToken> = Vec::new();
            for op in ops {
                match op {
                    Op::Enqueue(i, item) => {
                        let name = NAMES[i];
                        let got = q.enqueue(fs(name), item);
                        if tokens.iter().any(|t| t.filesystem().as_str() == name) {
                            prop_assert_eq!(got, Err(QueueError::InFlight { filesystem: fs(name) }));
                        } else {
                            prop_assert_eq!(got, Ok(waiting.insert(name.to_owned(), item)));
                        }
                    }
                    Op::Retry(i) => {
                        let name = NAMES[i];
                        let in_flight = tokens.iter().any(|t| t.filesystem().as_str() == name);
                        let got = q.enqueue_retry(fs(name));
                        prop_assert_eq!(got.is_ok(), !in_flight);
                        if !in_flight {
                            let n_errors = counts.get(name).copied().unwrap_or(0);
                            waiting.insert(name.to_owned(), Item::Retry { n_errors });
                        }
                    }
                    Op::Remove(i) => {
                        let name = NAMES[i];
                        prop_assert_eq!(q.remove(&fs(name)), waiting.remove(name));
                    }
                    Op::Take => {
                        let expected = if tokens.len() < concurrency {
                            reference_min(&waiting)
                        } else {
                            None
                        };
                        let got = q.take_next();
                        prop_assert_eq!(
                            got.as_ref().map(|t| t.filesystem().as_str().to_owned()),
                            expected.clone()
                        );
                        if let Some(token) = got {
                            let item = waiting.remove(token.filesystem().as_str());
                            prop_assert_eq!(Some(token.item()), item);
                            tokens.push(token);
                        }
                    }
                    Op::Complete(i, outcome) => {
                        if tokens.is_empty() {
                            continue;
                        }
                        let token = tokens.remove(i % tokens.len());
                        let name = token.filesystem().as_str().to_owned();
                        let expected = match outcome {
                            StepOutcome::Succeeded => {
                                counts.remove(&name);
                                0
                            }
                            StepOutcome::Failed => {
                                let n = counts.entry(name.clone()).or_insert(0);
                                *n += 1;
                                *n
                            }
                            StepOutcome::Neutral => counts.get(&name).copied().unwrap_or(0),
                        };
                        let done = q.complete(token, outcome).unwrap();
                        prop_assert_eq!(done.n_errors, expected);
                        prop_assert_eq!(done.filesystem.as_str(), name.as_str());
                    }
                }
                prop_assert!(q.n_in_flight() <= concurrency);
                prop_assert_eq!(q.n_in_flight(), tokens.len());
                prop_assert_eq!(q.n_waiting(), waiting.len());
            }
        }

        /// Any insertion order of the same items gives the same drain order, which is the
        /// reference sort.
        #[test]
        fn drain_order_does_not_depend_on_insertion_order(
            items in proptest::collection::btree_map(0..NAMES.len(), item_strategy(), 0..8),
            concurrency in 1usize..4,
            seed in any::<u64>(),
        ) {
            let items: Vec<(String, Item)> =
                items.into_iter().map(|(i, item)| (NAMES[i].to_owned(), item)).collect();
            let mut shuffled = items.clone();
            // A seeded Fisher-Yates shuffle (splitmix64 steps), reproducible from `seed`.
            let mut state = seed;
            for i in (1..shuffled.len()).rev() {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                let j = ((z ^ (z >> 31)) % (i as u64 + 1)) as usize;
                shuffled.swap(i, j);
            }
            let drain = |input: &[(String, Item)]| {
                let mut q = StepQueue::new(concurrency).unwrap();
                for (name, item) in input {
                    q.enqueue(fs(name), *item).unwrap();
                }
                let mut order = Vec::new();
                while !q.is_idle() {
                    let mut tokens = Vec::new();
                    while let Some(t) = q.take_next() {
                        order.push(t.filesystem().as_str().to_owned());
                        tokens.push(t);
                    }
                    for t in tokens {
                        q.complete(t, StepOutcome::Succeeded).unwrap();
                    }
                }
                order
            };
            let mut reference = items.clone();
            reference.sort_by(|a, b| {
                if reference_less(a, b) {
                    Ordering::Less
                } else if reference_less(b, a) {
                    Ordering::Greater
                } else {
                    Ordering::Equal
                }
            });
            let reference: Vec<String> = reference.into_iter().map(|(name, _)| name).collect();
            prop_assert_eq!(drain(&items), reference.clone());
            prop_assert_eq!(drain(&shuffled), reference);
        }

        /// `prune_order` yields the same order from any permutation, fewest errors first.
        #[test]
        fn prune_order_is_a_total_order(
            errors in proptest::collection::btree_map(0..NAMES.len(), 0u32..4, 0..8),
            reverse in any::<bool>(),
        ) {
            let mut counters = ErrorCounters::new();
            let mut filesystems = Vec::new();
            for (i, n) in &errors {
                let name = fs(NAMES[*i]);
                for _ in 0..*n {
                    counters.record_error(&name).unwrap();
                }
                filesystems.push(name);
            }
            if reverse {
                filesystems.reverse();
            }
            let mut sorted = filesystems.clone();
            prune_order(&mut sorted, &counters);
            let mut other = filesystems;
            let mid = other.len() / 2;
            other.rotate_left(mid);
            prune_order(&mut other, &counters);
            prop_assert_eq!(&sorted, &other);
            for pair in sorted.windows(2) {
                let (a, b) = (counters.count(&pair[0]), counters.count(&pair[1]));
                prop_assert!(a < b || (a == b && pair[0] < pair[1]));
            }
        }
    }
}
