//! The periodic schedule: when to take the first round of snapshots after start (the sync-up),
//! and when to take the next one.
//!
//! Sync-up, as zrepl does it: for each filesystem, the newest snapshot whose name starts with
//! the prefix (by createtxg) plus the interval is that filesystem's ideal next snapshot time;
//! the earliest of those is the sync point. Filesystems without a prefix snapshot do not count.
//! If no filesystem has one, the first round is now. A prefix snapshot created after `now` is an
//! error for that filesystem (its clock or ours is wrong); the sync-up fails only if every
//! filesystem has an error. A sync point in the past means "snapshot now".
//!
//! After a round, the next one is `last_invocation + interval`, whatever the round's outcome:
//! zrepl has no shorter retry after an error.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

use crate::name::{Component, DatasetName};
use crate::version::Version;

use super::duration::Interval;

/// The result of a sync-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncUp {
    /// When to take the first round; at or before `now` means immediately.
    pub next: Timestamp,
    /// What decided `next`.
    pub reason: SyncUpReason,
    /// Filesystems whose newest prefix snapshot could not be used, in name order.
    pub errors: Vec<SyncUpFsError>,
}

/// What decided the sync point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncUpReason {
    /// No filesystem was given.
    NoFilesystems,
    /// No usable filesystem has a snapshot with the prefix: snapshot now.
    NoPrefixSnapshot,
    /// This filesystem's newest prefix snapshot plus the interval is the earliest.
    Newest {
        /// The filesystem.
        fs: DatasetName,
        /// Its newest snapshot with the prefix.
        snapshot: Component,
        /// That snapshot's creation.
        creation: Timestamp,
    },
}

/// Why one filesystem's newest prefix snapshot cannot set the sync point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncUpFsError {
    /// The snapshot was created after `now`.
    #[error(
        "snapshot `{fs}@{snapshot}` is from the future: created {creation}, now is {now}; check \
         the clocks of this host and of whoever created the snapshot"
    )]
    FromTheFuture {
        /// The filesystem.
        fs: DatasetName,
        /// The snapshot.
        snapshot: Component,
        /// Its creation.
        creation: Timestamp,
        /// The `now` of the sync-up.
        now: Timestamp,
    },
    /// The creation time, or it plus the interval, is outside the representable range.
    #[error(
        "snapshot `{fs}@{snapshot}` has a creation time ({creation_unix} Unix seconds) that \
         cannot be used to compute the next snapshot time"
    )]
    CreationOutOfRange {
        /// The filesystem.
        fs: DatasetName,
        /// The snapshot.
        snapshot: Component,
        /// The creation as listed.
        creation_unix: i64,
    },
}

/// The sync-up failed for every filesystem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot determine the first snapshot time: every one of the {} filesystems has an error \
     (first: {})",
    errors.len(),
    errors.first().map(ToString::to_string).unwrap_or_default()
)]
pub struct SyncUpError {
    /// One error per filesystem, in name order.
    pub errors: Vec<SyncUpFsError>,
}

/// zrepl's sync-up over the versions of every matched filesystem (snapshots and bookmarks; only
/// snapshots whose name starts with `prefix` count).
pub fn sync_up(
    now: Timestamp,
    interval: Interval,
    prefix: &str,
    filesystems: &BTreeMap<DatasetName, Vec<Version>>,
) -> Result<SyncUp, SyncUpError> {
    if filesystems.is_empty() {
        return Ok(SyncUp {
            next: now,
            reason: SyncUpReason::NoFilesystems,
            errors: Vec::new(),
        });
    }
    let mut best: Option<(Timestamp, SyncUpReason)> = None;
    let mut errors = Vec::new();
    for (fs, versions) in filesystems {
        let newest = versions
            .iter()
            .filter(|v| v.is_snapshot() && v.name.as_str().starts_with(prefix))
            .max_by(|a, b| a.cmp_by_createtxg(b));
        let Some(newest) = newest else {
            continue;
        };
        match fs_sync_point(now, interval.duration(), fs, newest) {
            Ok((point, creation)) => {
                // Ties keep the first filesystem in name order, so the result is deterministic.
                if best.as_ref().is_none_or(|(b, _)| point < *b) {
                    let reason = SyncUpReason::Newest {
                        fs: fs.clone(),
                        snapshot: newest.name.clone(),
                        creation,
                    };
                    best = Some((point, reason));
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.len() == filesystems.len() {
        return Err(SyncUpError { errors });
    }
    let (next, reason) = best.unwrap_or((now, SyncUpReason::NoPrefixSnapshot));
    Ok(SyncUp {
        next,
        reason,
        errors,
    })
}

/// The next periodic invocation: `last_invocation + interval`, always strictly later. Fails
/// only beyond the year 9999.
pub fn next_after(
    last_invocation: Timestamp,
    interval: Interval,
) -> Result<Timestamp, ScheduleOverflow> {
    last_invocation
        .checked_add(interval.duration())
        .map_err(|_| ScheduleOverflow {
            after: last_invocation,
            interval,
        })
}

/// The next time is beyond what a timestamp can hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no snapshot time after {after} plus {interval} fits before the year 10000")]
pub struct ScheduleOverflow {
    /// The instant.
    pub after: Timestamp,
    /// The interval.
    pub interval: Interval,
}

fn fs_sync_point(
    now: Timestamp,
    interval: SignedDuration,
    fs: &DatasetName,
    newest: &Version,
) -> Result<(Timestamp, Timestamp), SyncUpFsError> {
    let out_of_range = || SyncUpFsError::CreationOutOfRange {
        fs: fs.clone(),
        snapshot: newest.name.clone(),
        creation_unix: newest.creation_unix,
    };
    let creation = Timestamp::from_second(newest.creation_unix).map_err(|_| out_of_range())?;
    if creation > now {
        return Err(SyncUpFsError::FromTheFuture {
            fs: fs.clone(),
            snapshot: newest.name.clone(),
            creation,
            now,
        });
    }
    let point = creation.checked_add(interval).map_err(|_| out_of_range())?;
    Ok((point, creation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{Guid, Txg};
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000;

    /// Fixture: one line per filesystem, `fs: name@txg@creation_offset ...` where the offset is
    /// seconds relative to NOW and `#name` is a bookmark. Expected: `next=<offset> by fs@snap`,
    /// `next=<offset> none`, or `error`, then `errors=fs,fs`.
    fn check(fixture: &str, expected: &str) {
        let mut filesystems = BTreeMap::new();
        for line in fixture.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (fs, versions) = line.split_once(':').unwrap();
            let versions = versions
                .split_whitespace()
                .enumerate()
                .map(|(i, v)| {
                    let (name, rest) = v.split_once('@').unwrap();
                    let (txg, offset) = rest.split_once('@').unwrap();
                    let guid = Guid(i as u64 + 1);
                    let txg = Txg(txg.parse().unwrap());
                    let creation = NOW + offset.parse::<i64>().unwrap();
                    match name.strip_prefix('#') {
                        Some(b) => {
                            Version::bookmark(Component::parse(b).unwrap(), guid, txg, creation)
                        }
                        None => {
                            Version::snapshot(Component::parse(name).unwrap(), guid, txg, creation)
                        }
                    }
                })
                .collect();
            filesystems.insert(DatasetName::parse(fs.trim()).unwrap(), versions);
        }
        let now = Timestamp::from_second(NOW).unwrap();
        let interval = Interval::parse("10m").unwrap();
        let got = match sync_up(now, interval, "zrepl_", &filesystems) {
            Ok(s) => {
                let next = s.next.as_second() - NOW;
                let by = match s.reason {
                    SyncUpReason::NoFilesystems => "no-filesystems".to_owned(),
                    SyncUpReason::NoPrefixSnapshot => "none".to_owned(),
                    SyncUpReason::Newest { fs, snapshot, .. } => format!("by {fs}@{snapshot}"),
                };
                let errors: Vec<String> = s.errors.iter().map(error_fs).collect();
                format!("next={next} {by} errors={}", errors.join(","))
            }
            Err(e) => {
                let errors: Vec<String> = e.errors.iter().map(error_fs).collect();
                format!("error errors={}", errors.join(","))
            }
        };
        assert_eq!(got, expected, "fixture:\n{fixture}");
    }

    fn error_fs(e: &SyncUpFsError) -> String {
        match e {
            SyncUpFsError::FromTheFuture { fs, .. } => format!("{fs}:future"),
            SyncUpFsError::CreationOutOfRange { fs, .. } => format!("{fs}:range"),
        }
    }

    #[test]
    fn no_filesystems_means_now() {
        check("", "next=0 no-filesystems errors=");
    }

    #[test]
    fn no_prefix_snapshot_means_now() {
        check("p/a: other_1@5@-100 #zrepl_b@6@-50", "next=0 none errors=");
    }

    #[test]
    fn newest_by_createtxg_not_by_creation() {
        // zrepl_old has the later creation but the older createtxg: createtxg decides.
        check(
            "p/a: zrepl_new@20@-300 zrepl_old@10@-60",
            "next=300 by p/a@zrepl_new errors=",
        );
    }

    #[test]
    fn earliest_across_filesystems_and_others_ignored() {
        check(
            "p/a: zrepl_1@10@-60
             p/b: zrepl_2@10@-500 other@11@-1
             p/c: manual@3@-9000",
            "next=100 by p/b@zrepl_2 errors=",
        );
    }

    #[test]
    fn overdue_sync_point_is_in_the_past() {
        check("p/a: zrepl_1@10@-3600", "next=-3000 by p/a@zrepl_1 errors=");
    }

    #[test]
    fn future_snapshot_is_a_per_fs_error() {
        check(
            "p/a: zrepl_1@10@30
             p/b: zrepl_2@10@-60",
            "next=540 by p/b@zrepl_2 errors=p/a:future",
        );
        check(
            "p/a: zrepl_1@10@30
             p/b: other@10@-60",
            "next=0 none errors=p/a:future",
        );
    }

    #[test]
    fn every_fs_failing_fails_the_sync_up() {
        check(
            "p/a: zrepl_1@10@30
             p/b: zrepl_1@10@1",
            "error errors=p/a:future,p/b:future",
        );
    }

    #[test]
    fn future_error_message_names_the_snapshot() {
        let e = SyncUpFsError::FromTheFuture {
            fs: DatasetName::parse("p/a").unwrap(),
            snapshot: Component::parse("zrepl_1").unwrap(),
            creation: Timestamp::from_second(NOW + 30).unwrap(),
            now: Timestamp::from_second(NOW).unwrap(),
        };
        assert!(
            e.to_string().contains("`p/a@zrepl_1` is from the future"),
            "{e}"
        );
    }

    #[test]
    fn next_after_adds_the_interval() {
        let last = Timestamp::from_second(NOW).unwrap();
        let next = next_after(last, Interval::parse("1d").unwrap()).unwrap();
        assert_eq!(next.as_second() - NOW, 86_400);
        assert!(next_after(Timestamp::MAX, Interval::parse("1s").unwrap()).is_err());
    }

    proptest! {
        #[test]
        fn next_after_is_strictly_later(
            unix in -300_000_000_000i64..200_000_000_000,
            interval_secs in 1i64..10_000_000,
        ) {
            let last = Timestamp::from_second(unix).unwrap();
            let interval = Interval::new(SignedDuration::from_secs(interval_secs)).unwrap();
            let next = next_after(last, interval).unwrap();
            prop_assert!(next > last);
        }
    }
}
