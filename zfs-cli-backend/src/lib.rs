//! The ZFS backend of zferry over the real `zfs` and `zpool` commands.
//!
//! [`ZfsCli`] implements [`ZfsBackend`] by launching `zfs`/`zpool` (directly, or through a
//! prefix such as `ssh root@host`), parsing their output and classifying their stderr into
//! typed errors. The argument vectors are pure functions in [`argv`], the parsers in [`parse`]
//! and [`classify`](mod@classify); [`process`] and [`stream`] hold the process handling.
//!
//! This is the only crate that spawns processes and reads the clock for them (tokio's, which
//! the simulation can replace).
//!
//! What it never does: decide anything. Which snapshot to send, hold or destroy is decided in
//! `zferry-core`; this crate only carries out one operation at a time and reports what
//! happened.
#![deny(missing_docs)]

pub mod argv;
pub mod classify;
#[cfg(test)]
mod fixtures;
pub mod hooks;
pub mod parse;
pub mod process;
pub mod stream;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::OnceCell;
use tokio::time::Instant;
use zferry_core::backend::{
    ByteStream, DestroyOutcome, Features, ObjectName, Operation, PlaceholderEncryption, Property,
    ReceiveRequest, Received, SendRequest, SendSource, VersionTypes, ZfsBackend, ZfsError,
    ZfsErrorKind,
};
use zferry_core::listing::{DatasetEntry, VersionListing, parse_datasets, parse_versions};
use zferry_core::name::{Component, DatasetName, VersionKind, VersionName};
use zferry_core::version::{Guid, Txg, Version};

use crate::argv::ArgvError;
use crate::classify::{classify, fold_whitespace, nothing_to_abort};
use crate::parse::{CliFeatures, parse_hold_lines, parse_undestroyed};
pub use crate::process::CommandPrefix;
use crate::process::{Finished, Launcher, Program, is_too_long, shell_quote};
use crate::stream::{FeedError, SendStream, exit_error};

/// The most bytes of arguments one command gets. Linux refuses a single argument over 128 KiB
/// (MAX_ARG_STRLEN), and through `ssh` the whole command line is one argument of the remote
/// shell; batches of names are cut to stay below this.
pub const ARGV_BYTES_MAX: usize = 96 * 1024;

/// The most snapshots one `zfs destroy fs@a,b,c` names.
pub const DESTROY_BATCH_MAX: usize = 1024;

/// How long a pool's "no resumable receive" answer is trusted before it is asked again.
pub const POOL_FEATURE_RECHECK: Duration = Duration::from_secs(30);

/// How `zfs` and `zpool` are run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZfsCliConfig {
    /// The `zfs` program (a name looked up in `PATH`, or a path).
    pub zfs: String,
    /// The `zpool` program.
    pub zpool: String,
    /// A prefix to run them through, e.g. `ssh root@host` or `sudo -n`.
    pub prefix: Option<CommandPrefix>,
}

impl Default for ZfsCliConfig {
    fn default() -> Self {
        Self {
            zfs: "zfs".into(),
            zpool: "zpool".into(),
            prefix: None,
        }
    }
}

/// [`ZfsBackend`] over the `zfs` and `zpool` commands.
///
/// Launches per method: one each, except `bookmark` (two: create, then read back both GUIDs),
/// `receive` (two: receive, then list the received snapshot), `destroy_snapshots` (one per
/// batch, plus one per retry when some snapshots are held), `list_versions`, `hold` and
/// `release` (one per [`ARGV_BYTES_MAX`] of names), `send_estimate` from a bookmark (none), and
/// the feature probes (four `zfs` usage texts once per process, one `zpool get` per pool).
#[derive(Debug)]
pub struct ZfsCli {
    launcher: Launcher,
    cli_features: OnceCell<CliFeatures>,
    /// Per pool: whether resumable receive is usable, and when that was read.
    pool_features: Mutex<BTreeMap<String, (bool, Instant)>>,
}

impl ZfsCli {
    /// A backend running the commands as `config` says.
    pub fn new(config: ZfsCliConfig) -> Self {
        Self {
            launcher: Launcher::new(config.zfs, config.zpool, config.prefix),
            cli_features: OnceCell::new(),
            pool_features: Mutex::new(BTreeMap::new()),
        }
    }

    /// How many processes were launched so far, per operation (for metrics and tests).
    pub fn launches(&self) -> BTreeMap<Operation, u64> {
        self.launcher.launches()
    }

    /// How many processes were launched so far, in all.
    pub fn launches_total(&self) -> u64 {
        self.launcher.launches().values().sum()
    }

    /// The command line that runs `zfs args` (program first), for logs.
    pub fn zfs_command_line(&self, args: &[String]) -> Vec<String> {
        self.launcher.command_line(Program::Zfs, args)
    }

    async fn run(
        &self,
        operation: Operation,
        object: &str,
        args: &[String],
    ) -> Result<Finished, ZfsError> {
        self.launcher
            .run(operation, object, Program::Zfs, args)
            .await
    }

    /// Runs and turns an unsuccessful exit into an error about `object`.
    async fn run_ok(
        &self,
        operation: Operation,
        object: &str,
        args: &[String],
    ) -> Result<Finished, ZfsError> {
        let done = self.run(operation, object, args).await?;
        if done.status.success() {
            Ok(done)
        } else {
            Err(exit_error(operation, object, done.status, &done.stderr))
        }
    }

    async fn cli_features(&self) -> Result<CliFeatures, ZfsError> {
        self.cli_features
            .get_or_try_init(|| async {
                let mut texts = Vec::new();
                for sub in ["send", "receive", "load-key", "destroy"] {
                    // Usage texts come with exit status 2; the text is what counts. No usage
                    // text at all (ssh failed, a wrapper refused) is an error, not "no
                    // features": the answer is cached for the life of the process.
                    let done = self
                        .run(Operation::Features, sub, &argv::usage(sub))
                        .await?;
                    let text = format!("{}{}", done.stdout, done.stderr);
                    if !text.contains("usage:") {
                        let detail = format!(
                            "`zfs {sub}` printed no usage text ({})",
                            stream::describe_status(done.status)
                        );
                        return Err(ZfsError::new(
                            Operation::Features,
                            sub,
                            ZfsErrorKind::Other { detail },
                        )
                        .with_stderr(&done.stderr));
                    }
                    texts.push(text);
                }
                Ok(parse::parse_usage(
                    &texts[0], &texts[1], &texts[2], &texts[3],
                ))
            })
            .await
            .copied()
    }

    async fn pool_resumable(&self, pool: &str) -> Result<bool, ZfsError> {
        let cached = self.pool_features_lock().get(pool).copied();
        match cached {
            Some((true, _)) => return Ok(true),
            Some((false, at)) if at.elapsed() < POOL_FEATURE_RECHECK => return Ok(false),
            _ => {}
        }
        let args = argv::zpool_feature(pool, argv::FEATURE_EXTENSIBLE_DATASET);
        let done = self
            .launcher
            .run(Operation::Features, pool, Program::Zpool, &args)
            .await?;
        if !done.status.success() {
            return Err(exit_error(
                Operation::Features,
                pool,
                done.status,
                &done.stderr,
            ));
        }
        let usable = parse::parse_pool_feature(&done.stdout)
            .map_err(|e| output_error(Operation::Features, pool, &e, &done))?;
        self.pool_features_lock()
            .insert(pool.to_owned(), (usable, Instant::now()));
        Ok(usable)
    }

    fn pool_features_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (bool, Instant)>> {
        self.pool_features
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One `zfs destroy fs@a,b,c`.
    async fn destroy_once(
        &self,
        dataset: &DatasetName,
        batch: &[Component],
    ) -> Result<BatchResult, ZfsError> {
        let op = Operation::DestroySnapshots;
        let args = argv::destroy_snapshots(dataset, batch);
        let object = args[1].clone();
        let done = match self.run(op, &object, &args).await {
            Err(e) if is_too_long(&e) => return Ok(BatchResult::TooLong),
            r => r?,
        };
        if done.status.success() {
            return Ok(BatchResult::Destroyed);
        }
        let text = fold_whitespace(&done.stderr);
        // Through a remote shell, E2BIG is the shell's message rather than a spawn error.
        if text.contains("Argument list too long") {
            return Ok(BatchResult::TooLong);
        }
        // None of the named snapshots exist: they are all gone, which counts as destroyed.
        if text.contains("could not find any snapshots to destroy") {
            return Ok(BatchResult::Destroyed);
        }
        let undestroyed = parse_undestroyed(&done.stderr, dataset.as_str(), batch);
        if !undestroyed.is_empty() {
            return Ok(BatchResult::Undestroyable(undestroyed));
        }
        let err = exit_error(op, &object, done.status, &done.stderr);
        if err.kind == ZfsErrorKind::DoesNotExist
            && text.contains(&format!("cannot open '{dataset}'"))
        {
            return Ok(BatchResult::DatasetMissing(ZfsError {
                object: dataset.to_string(),
                ..err
            }));
        }
        Ok(BatchResult::Failed(err))
    }

    async fn hold_or_release(
        &self,
        operation: Operation,
        tag: &str,
        snapshots: &[VersionName],
        ignorable: &str,
    ) -> Result<(), ZfsError> {
        let names_bytes_max = ARGV_BYTES_MAX.saturating_sub(shell_quote(tag).len());
        for chunk in chunks_by_bytes(snapshots, names_bytes_max, usize::MAX) {
            let args = if operation == Operation::Hold {
                argv::hold(tag, chunk)
            } else {
                argv::release(tag, chunk)
            }
            .map_err(|e| refused(operation, &chunk[0].to_string(), &e))?;
            let object = chunk[0].to_string();
            let done = self.run(operation, &object, &args).await?;
            if done.status.success() {
                continue;
            }
            // ZFS handles each snapshot on its own and prints one line per failure.
            let (lines, rest) = parse_hold_lines(&done.stderr);
            for line in &lines {
                if line.reason.contains(ignorable) {
                    continue;
                }
                let kind = classify(&line.reason).unwrap_or_else(|| ZfsErrorKind::Other {
                    detail: fold_whitespace(&line.reason),
                });
                return Err(
                    ZfsError::new(operation, &line.snapshot, kind).with_stderr(&done.stderr)
                );
            }
            if lines.is_empty() || !rest.is_empty() {
                let object = parse::first_quoted(&done.stderr).unwrap_or(&object);
                return Err(exit_error(operation, object, done.status, &done.stderr));
            }
        }
        Ok(())
    }

    /// Reads back versions by full name (`zfs list` of exactly them).
    async fn list_exact(
        &self,
        operation: Operation,
        names: &[&VersionName],
    ) -> Result<BTreeMap<VersionName, Version>, ZfsError> {
        let object = names.first().map(ToString::to_string).unwrap_or_default();
        let done = self
            .run_ok(operation, &object, &argv::list_exact(names))
            .await?;
        let listing = parse_versions(&done.stdout)
            .map_err(|e| output_error(operation, &object, &e, &done))?;
        let mut out = BTreeMap::new();
        for (dataset, versions) in listing.datasets {
            for v in versions {
                if let Ok(name) = VersionName::new(dataset.clone(), v.kind, v.name.clone()) {
                    out.insert(name, v);
                }
            }
        }
        Ok(out)
    }
}

/// The outcome of one batched destroy.
enum BatchResult {
    /// Every named snapshot is gone.
    Destroyed,
    /// ZFS destroyed none (it is all or nothing) because of these.
    Undestroyable(Vec<parse::UndestroyedSnapshot>),
    /// The dataset does not exist.
    DatasetMissing(ZfsError),
    /// The argument list was too long for the kernel.
    TooLong,
    /// Something else.
    Failed(ZfsError),
}

#[async_trait]
impl ZfsBackend for ZfsCli {
    async fn list_datasets(
        &self,
        root: Option<&DatasetName>,
        properties: &[&str],
    ) -> Result<Vec<DatasetEntry>, ZfsError> {
        let op = Operation::ListDatasets;
        let object = root.map_or_else(|| "all pools".to_owned(), ToString::to_string);
        let done = self
            .run_ok(op, &object, &argv::list_datasets(root, properties))
            .await?;
        parse_datasets(&done.stdout, properties).map_err(|e| output_error(op, &object, &e, &done))
    }

    async fn list_versions(
        &self,
        datasets: &[DatasetName],
        types: VersionTypes,
    ) -> Result<VersionListing, ZfsError> {
        let op = Operation::ListVersions;
        // Listing one dataset twice would list its versions twice.
        let unique: Vec<DatasetName> = datasets
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut listing = VersionListing::default();
        for d in &unique {
            listing.datasets.insert(d.clone(), Vec::new());
        }
        for chunk in chunks_by_bytes(&unique, ARGV_BYTES_MAX, usize::MAX) {
            let object = chunk[0].to_string();
            let done = self
                .run(op, &object, &argv::list_versions(chunk, types))
                .await?;
            if !done.status.success() {
                // With several datasets, `zfs list` names the missing one and lists the rest.
                let object = parse::first_quoted(&done.stderr).unwrap_or(&object);
                return Err(exit_error(op, object, done.status, &done.stderr));
            }
            let parsed =
                parse_versions(&done.stdout).map_err(|e| output_error(op, &object, &e, &done))?;
            for (dataset, versions) in parsed.datasets {
                let Some(slot) = listing.datasets.get_mut(&dataset) else {
                    let detail = format!("zfs list printed versions of `{dataset}`, not asked for");
                    return Err(ZfsError::new(op, &object, ZfsErrorKind::Other { detail }));
                };
                *slot = versions;
            }
        }
        Ok(listing)
    }

    async fn get_properties(
        &self,
        object: &ObjectName,
        properties: &[&str],
    ) -> Result<BTreeMap<String, Property>, ZfsError> {
        let op = Operation::GetProperties;
        let name = object.to_string();
        let unique: Vec<&str> = properties
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if unique.is_empty() {
            return Ok(BTreeMap::new());
        }
        let args = argv::get_properties(&[object], &unique).map_err(|e| refused(op, &name, &e))?;
        let done = self.run_ok(op, &name, &args).await?;
        let mut got = parse::parse_properties(&done.stdout, &[&name], &unique)
            .map_err(|e| output_error(op, &name, &e, &done))?;
        Ok(got.remove(&name).unwrap_or_default())
    }

    async fn set_property(
        &self,
        dataset: &DatasetName,
        property: &str,
        value: &str,
    ) -> Result<(), ZfsError> {
        let op = Operation::SetProperty;
        let name = dataset.to_string();
        let args =
            argv::set_property(dataset, property, value).map_err(|e| refused(op, &name, &e))?;
        self.run_ok(op, &name, &args).await.map(drop)
    }

    async fn snapshot(&self, snapshots: &[VersionName]) -> Result<(), ZfsError> {
        let op = Operation::Snapshot;
        let Some(first) = snapshots.first() else {
            return Ok(());
        };
        let object = first.to_string();
        // One call, never split: ZFS takes the snapshots of one call in one transaction group.
        // OpenZFS refuses two snapshots of one dataset in a call ("multiple snapshots of same
        // fs not allowed", InvalidArgument) and then creates none.
        let args = argv::snapshot(snapshots).map_err(|e| refused(op, &object, &e))?;
        let done = self.run(op, &object, &args).await?;
        if !done.status.success() {
            let object = parse::first_quoted(&done.stderr).unwrap_or(&object);
            return Err(exit_error(op, object, done.status, &done.stderr));
        }
        Ok(())
    }

    async fn bookmark(
        &self,
        source: &VersionName,
        bookmark: &VersionName,
    ) -> Result<Version, ZfsError> {
        let op = Operation::Bookmark;
        let object = bookmark.to_string();
        let args = argv::bookmark(source, bookmark).map_err(|e| refused(op, &object, &e))?;
        let done = self.run(op, &object, &args).await?;
        if !done.status.success() {
            let err = exit_error(op, &object, done.status, &done.stderr);
            // "bookmark exists": fine if it is a bookmark of the same snapshot (idempotency).
            let exists = fold_whitespace(&done.stderr).contains("bookmark exists");
            if !exists {
                return Err(err);
            }
        }
        // Read back both, in one call: the bookmark's identity and the source's GUID.
        let objects = [
            ObjectName::Version(source.clone()),
            ObjectName::Version(bookmark.clone()),
        ];
        let props = ["guid", "createtxg", "creation"];
        let args = argv::get_properties(&[&objects[0], &objects[1]], &props)
            .map_err(|e| refused(op, &object, &e))?;
        let read = self.run_ok(op, &object, &args).await?;
        let source_name = source.to_string();
        let got = parse::parse_properties(&read.stdout, &[&source_name, &object], &props)
            .map_err(|e| output_error(op, &object, &e, &read))?;
        let number = |name: &str, prop: &str| -> Result<u64, ZfsError> {
            let value = got
                .get(name)
                .and_then(|p| p.get(prop))
                .map_or("", |p| p.value.as_str());
            value.parse::<u64>().map_err(|_| {
                let detail = format!("`{prop}` of `{name}` is `{value}`, not a number");
                ZfsError::new(op, name, ZfsErrorKind::Other { detail })
            })
        };
        let source_guid = Guid(number(&source_name, "guid")?);
        let guid = Guid(number(&object, "guid")?);
        if guid != source_guid {
            return Err(ZfsError::new(
                op,
                &object,
                ZfsErrorKind::ExistsWithOtherGuid { existing: guid },
            )
            .with_stderr(&done.stderr));
        }
        let creation = number(&object, "creation")?;
        Ok(Version::bookmark(
            bookmark.short().clone(),
            guid,
            Txg(number(&object, "createtxg")?),
            i64::try_from(creation).unwrap_or(i64::MAX),
        ))
    }

    async fn hold(&self, tag: &str, snapshots: &[VersionName]) -> Result<(), ZfsError> {
        self.hold_or_release(
            Operation::Hold,
            tag,
            snapshots,
            "tag already exists on this dataset",
        )
        .await
    }

    async fn release(&self, tag: &str, snapshots: &[VersionName]) -> Result<(), ZfsError> {
        self.hold_or_release(
            Operation::Release,
            tag,
            snapshots,
            "no such tag on this dataset",
        )
        .await
    }

    async fn holds(&self, snapshot: &VersionName) -> Result<Vec<String>, ZfsError> {
        let op = Operation::ListHolds;
        let object = snapshot.to_string();
        let args = argv::holds(snapshot).map_err(|e| refused(op, &object, &e))?;
        let done = self.run_ok(op, &object, &args).await?;
        parse::parse_holds(&done.stdout, &object).map_err(|e| output_error(op, &object, &e, &done))
    }

    async fn destroy_snapshots(
        &self,
        dataset: &DatasetName,
        snapshots: &[Component],
    ) -> Result<Vec<DestroyOutcome>, ZfsError> {
        let wanted: Vec<Component> = snapshots
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let batch_max = if self.cli_features().await?.batch_destroy {
            DESTROY_BATCH_MAX
        } else {
            1
        };
        let prefix_bytes = dataset.as_str().len() + 1;
        let mut work: Vec<Vec<Component>> =
            chunks_by_bytes(&wanted, ARGV_BYTES_MAX - prefix_bytes, batch_max)
                .into_iter()
                .rev()
                .map(<[Component]>::to_vec)
                .collect();
        let mut outcomes: BTreeMap<Component, Result<(), ZfsErrorKind>> = BTreeMap::new();
        // Every round settles at least one snapshot or splits a batch, so 3 rounds per snapshot
        // bound the loop; running past that is a bug, reported per snapshot, never a hang.
        let rounds_max = 3 * wanted.len() + 1;
        let mut rounds = 0;
        while let Some(batch) = work.pop() {
            rounds += 1;
            if rounds > rounds_max {
                debug_assert!(false, "destroy_snapshots did not converge");
                let detail = format!("gave up after {rounds_max} zfs destroy calls");
                for s in work.into_iter().flatten().chain(batch) {
                    outcomes.insert(
                        s,
                        Err(ZfsErrorKind::Other {
                            detail: detail.clone(),
                        }),
                    );
                }
                break;
            }
            match self.destroy_once(dataset, &batch).await? {
                BatchResult::Destroyed => {
                    for s in batch {
                        outcomes.insert(s, Ok(()));
                    }
                }
                BatchResult::DatasetMissing(err) => {
                    if outcomes.is_empty() {
                        return Err(err);
                    }
                    // The dataset vanished since: its snapshots are gone with it.
                    for s in batch {
                        outcomes.insert(s, Ok(()));
                    }
                }
                BatchResult::TooLong if batch.len() > 1 => {
                    let (a, b) = batch.split_at(batch.len() / 2);
                    work.push(b.to_vec());
                    work.push(a.to_vec());
                }
                BatchResult::Undestroyable(failed) => {
                    // ZFS destroyed nothing of the batch: retry without the undestroyable.
                    let rest: Vec<Component> = batch
                        .into_iter()
                        .filter(|s| !failed.iter().any(|f| &f.snapshot == s))
                        .collect();
                    for f in failed {
                        outcomes.insert(f.snapshot, Err(f.kind));
                    }
                    if !rest.is_empty() {
                        work.push(rest);
                    }
                }
                BatchResult::Failed(err) if batch.len() > 1 => {
                    // Nothing to tell which snapshot failed: go one by one.
                    let _ = err;
                    work.extend(batch.into_iter().rev().map(|s| vec![s]));
                }
                BatchResult::Failed(err) => {
                    for s in batch {
                        outcomes.insert(s, Err(err.kind.clone()));
                    }
                }
                BatchResult::TooLong => {
                    let detail = "the argument list is too long even for one snapshot".to_owned();
                    for s in batch {
                        outcomes.insert(
                            s,
                            Err(ZfsErrorKind::Other {
                                detail: detail.clone(),
                            }),
                        );
                    }
                }
            }
        }
        Ok(wanted
            .into_iter()
            .map(|snapshot| {
                let result = outcomes.remove(&snapshot).unwrap_or_else(|| {
                    Err(ZfsErrorKind::Other {
                        detail: "not attempted".into(),
                    })
                });
                DestroyOutcome { snapshot, result }
            })
            .collect())
    }

    async fn destroy_bookmark(&self, bookmark: &VersionName) -> Result<(), ZfsError> {
        let op = Operation::DestroyBookmark;
        let object = bookmark.to_string();
        let args = argv::destroy_bookmark(bookmark).map_err(|e| refused(op, &object, &e))?;
        self.run_ok(op, &object, &args).await.map(drop)
    }

    async fn destroy_dataset(
        &self,
        dataset: &DatasetName,
        recursive: bool,
    ) -> Result<(), ZfsError> {
        let op = Operation::DestroyDataset;
        let object = dataset.to_string();
        self.run_ok(op, &object, &argv::destroy_dataset(dataset, recursive))
            .await
            .map(drop)
    }

    async fn send_estimate(&self, request: &SendRequest) -> Result<Option<u64>, ZfsError> {
        let op = Operation::SendEstimate;
        let object = send_object(request);
        // zrepl skips the dry run from a bookmark: ZFS before 2.0 cannot estimate it.
        if let SendSource::Incremental { from, .. } = &request.source
            && from.kind() == VersionKind::Bookmark
        {
            return Ok(None);
        }
        let args = argv::send_estimate(request).map_err(|e| refused(op, &object, &e))?;
        let done = self.run_ok(op, &object, &args).await?;
        // Old ZFS printed the dry run on stderr.
        parse::parse_send_estimate(&done.stdout)
            .or_else(|_| parse::parse_send_estimate(&done.stderr))
            .map_err(|e| output_error(op, &object, &e, &done))
    }

    async fn send(&self, request: &SendRequest) -> Result<ByteStream, ZfsError> {
        let op = Operation::Send;
        let object = send_object(request);
        let args = argv::send(request).map_err(|e| refused(op, &object, &e))?;
        let child = self
            .launcher
            .spawn(op, &object, Program::Zfs, &args, Stdio::null())?;
        Ok(SendStream::new(child, object)?.boxed())
    }

    async fn receive(
        &self,
        request: &ReceiveRequest,
        stream: ByteStream,
    ) -> Result<Received, ZfsError> {
        let op = Operation::Receive;
        let object = request.dataset.to_string();
        let to = VersionName::new(
            request.dataset.clone(),
            VersionKind::Snapshot,
            request.to.clone(),
        )
        .map_err(|e| {
            ZfsError::new(
                op,
                &object,
                ZfsErrorKind::Other {
                    detail: e.to_string(),
                },
            )
        })?;
        let args = argv::receive(request).map_err(|e| refused(op, &object, &e))?;
        let mut child = self
            .launcher
            .spawn(op, &object, Program::Zfs, &args, Stdio::piped())?;
        let stdin = child.stdin.take().ok_or_else(|| {
            ZfsError::new(
                op,
                &object,
                ZfsErrorKind::Other {
                    detail: "zfs recv was started without piped stdin".into(),
                },
            )
        })?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let feeding = async {
            let fed = stream::feed(stream, stdin).await;
            if let Err(FeedError::Read(_)) = &fed {
                // The stream broke: stop the receive now rather than let it wait for more.
                let _ = child.start_kill();
            }
            fed
        };
        let (fed, _stdout, stderr) = tokio::join!(
            feeding,
            process::read_bounded(stdout),
            process::read_tail(stderr)
        );
        let status = child.wait().await.map_err(|e| {
            ZfsError::new(
                op,
                &object,
                ZfsErrorKind::Other {
                    detail: format!("waiting for zfs recv failed: {e}"),
                },
            )
        })?;
        if !status.success() {
            if let Err(FeedError::Read(e)) = &fed {
                // Prefer the stream's error (the sender's, or the network's) unless zfs recv
                // failed for a reason of its own.
                match classify(&stderr) {
                    None | Some(ZfsErrorKind::StreamBroken) => {
                        return Err(ZfsError::from_io(op, &object, e));
                    }
                    Some(_) => {}
                }
            }
            return Err(exit_error(op, &object, status, &stderr));
        }
        // zfs recv succeeded; whatever the feeder saw after the end record does not matter.
        let listed = match self.list_exact(op, &[&to]).await {
            Ok(listed) => listed,
            Err(e) if e.kind == ZfsErrorKind::DoesNotExist => {
                let detail = format!(
                    "zfs recv succeeded but `{to}` is not there: the stream ends with another \
                     snapshot"
                );
                return Err(ZfsError::new(op, &to, ZfsErrorKind::Other { detail }));
            }
            Err(e) => return Err(e),
        };
        let Some(version) = listed.get(&to) else {
            let detail = format!("`{to}` is missing from `zfs list` after the receive");
            return Err(ZfsError::new(op, &to, ZfsErrorKind::Other { detail }));
        };
        if version.guid != request.to_guid {
            return Err(ZfsError::new(
                op,
                &to,
                ZfsErrorKind::ExistsWithOtherGuid {
                    existing: version.guid,
                },
            ));
        }
        Ok(Received {
            to: version.clone(),
        })
    }

    async fn abort_receive(&self, dataset: &DatasetName) -> Result<(), ZfsError> {
        let op = Operation::AbortReceive;
        let object = dataset.to_string();
        let done = self.run(op, &object, &argv::abort_receive(dataset)).await?;
        if done.status.success() || nothing_to_abort(&done.stderr) {
            return Ok(());
        }
        Err(exit_error(op, &object, done.status, &done.stderr))
    }

    async fn resume_token(&self, dataset: &DatasetName) -> Result<Option<String>, ZfsError> {
        let props = self
            .get_properties(
                &ObjectName::Dataset(dataset.clone()),
                &["receive_resume_token"],
            )
            .await?;
        Ok(props
            .get("receive_resume_token")
            .map(|p| p.value.clone())
            .filter(|v| !v.is_empty() && v != "-"))
    }

    async fn create_placeholder(
        &self,
        dataset: &DatasetName,
        encryption: PlaceholderEncryption,
    ) -> Result<(), ZfsError> {
        let op = Operation::CreatePlaceholder;
        let object = dataset.to_string();
        let args =
            argv::create_placeholder(dataset, encryption).map_err(|e| refused(op, &object, &e))?;
        self.run_ok(op, &object, &args).await.map(drop)
    }

    async fn rollback(&self, snapshot: &VersionName) -> Result<(), ZfsError> {
        let op = Operation::Rollback;
        let object = snapshot.to_string();
        let args = argv::rollback(snapshot).map_err(|e| refused(op, &object, &e))?;
        self.run_ok(op, &object, &args).await.map(drop)
    }

    async fn features(&self, pool: &str) -> Result<Features, ZfsError> {
        let cli = self.cli_features().await?;
        let pool_ok = self.pool_resumable(pool).await?;
        Ok(Features {
            resumable_send: cli.resumable_send,
            resumable_receive: cli.resumable_receive && pool_ok,
            encryption: cli.encryption,
            batch_destroy: cli.batch_destroy,
        })
    }
}

/// Cuts `items` into runs whose shell-quoted names fit `bytes_max` and that have at most
/// `count_max` items; an item longer than `bytes_max` gets a run of its own.
fn chunks_by_bytes<T: ToString>(items: &[T], bytes_max: usize, count_max: usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, item) in items.iter().enumerate() {
        let len = shell_quote(&item.to_string()).len() + 1;
        if i > start && (bytes + len > bytes_max || i - start >= count_max) {
            out.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += len;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    out
}

/// What a send is named by in errors.
fn send_object(request: &SendRequest) -> String {
    match &request.source {
        SendSource::Full { to }
        | SendSource::Incremental { to, .. }
        | SendSource::IncrementalRange { to, .. } => to.to_string(),
        SendSource::Resume { token } => {
            let shown: String = token.chars().take(RESUME_TOKEN_SHOWN_CHARS).collect();
            format!("resume token {shown}...")
        }
    }
}

/// How much of a resume token an error shows, in characters.
const RESUME_TOKEN_SHOWN_CHARS: usize = 24;

fn refused(operation: Operation, object: &str, e: &ArgvError) -> ZfsError {
    ZfsError::new(
        operation,
        object,
        ZfsErrorKind::Other {
            detail: format!("not run: {e}"),
        },
    )
}

fn output_error(
    operation: Operation,
    object: &str,
    e: &impl std::fmt::Display,
    done: &Finished,
) -> ZfsError {
    ZfsError::new(
        operation,
        object,
        ZfsErrorKind::Other {
            detail: format!("cannot read zfs's output: {e}"),
        },
    )
    .with_stderr(&done.stderr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Fixture;

    /// The argument vectors match what was run against real ZFS to capture the fixtures.
    #[test]
    fn argv_matches_the_captured_commands() {
        let ds = |s: &str| DatasetName::parse(s).unwrap();
        let v = |s: &str| VersionName::parse(s).unwrap();
        let c = |s: &str| Component::parse(s).unwrap();
        let cases: Vec<(&str, Vec<String>)> = vec![
            (
                "list_versions",
                argv::list_versions(&[ds("tank/list me")], VersionTypes::All),
            ),
            ("list_datasets", argv::list_datasets(Some(&ds("tank")), &[])),
            ("holds", argv::holds(&v("tank/list me@b")).unwrap()),
            (
                "hold_exists",
                argv::hold("zferry keep A", &[v("tank/list me@b")]).unwrap(),
            ),
            (
                "release_missing",
                argv::release("no such tag", &[v("tank/list me@b")]).unwrap(),
            ),
            (
                "bookmark_exists_same",
                argv::bookmark(&v("tank/list me@a"), &v("tank/list me#a")).unwrap(),
            ),
            (
                "destroy_held_in_list",
                argv::destroy_snapshots(&ds("tank/destroy me"), &[c("a"), c("b"), c("c")]),
            ),
            (
                "destroy_missing_bookmark",
                argv::destroy_bookmark(&v("tank/destroy me#nosuch")).unwrap(),
            ),
            (
                "destroy_missing_dataset",
                argv::destroy_dataset(&ds("tank/nosuch"), false),
            ),
            ("recv_abort", argv::abort_receive(&ds("tank/rpart"))),
            (
                "send_dry_full",
                argv::send_estimate(&SendRequest {
                    source: SendSource::Full {
                        to: v("tank/list me@a"),
                    },
                    flags: Default::default(),
                })
                .unwrap(),
            ),
            (
                "send_dry_range",
                argv::send_estimate(&SendRequest {
                    source: SendSource::IncrementalRange {
                        from: v("tank/list me@a"),
                        to: v("tank/list me@c with space"),
                    },
                    flags: Default::default(),
                })
                .unwrap(),
            ),
            (
                "get_props_missing",
                argv::get_properties(
                    &[&ObjectName::Dataset(ds("tank/nosuch"))],
                    &["guid", "receive_resume_token"],
                )
                .unwrap(),
            ),
        ];
        for (case, args) in cases {
            let f = Fixture::load(case);
            assert_eq!(f.args[0], "zfs", "{case}");
            assert_eq!(f.args_after(1), args, "{case}");
        }
        let f = Fixture::load("zpool_get_feature");
        assert_eq!(
            f.args_after(1),
            argv::zpool_feature("tank", argv::FEATURE_EXTENSIBLE_DATASET)
        );
        assert_eq!(f.status, 0);
    }

    proptest::proptest! {
        /// Chunks keep every item in order, and each stays within both bounds unless it is a
        /// single over-long item.
        #[test]
        fn chunks_cover_the_input_within_bounds(
            items in proptest::collection::vec("[a-z ]{1,30}", 0..60),
            bytes_max in 1usize..200,
            count_max in 1usize..10,
        ) {
            let chunks = chunks_by_bytes(&items, bytes_max, count_max);
            let flat: Vec<&String> = chunks.iter().flat_map(|c| c.iter()).collect();
            proptest::prop_assert_eq!(flat, items.iter().collect::<Vec<_>>());
            for chunk in chunks {
                proptest::prop_assert!(!chunk.is_empty());
                proptest::prop_assert!(chunk.len() <= count_max);
                let bytes: usize = chunk.iter().map(|i| shell_quote(i).len() + 1).sum();
                proptest::prop_assert!(bytes <= bytes_max || chunk.len() == 1);
            }
        }
    }

    #[test]
    fn chunks_respect_bytes_and_counts() {
        let items: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
        // Each item is 2 bytes + 1 separator.
        let sizes: Vec<usize> = chunks_by_bytes(&items, 9, usize::MAX)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, [3, 3, 3, 1]);
        let sizes: Vec<usize> = chunks_by_bytes(&items, 1000, 4)
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(sizes, [4, 4, 2]);
        let long = vec!["x".repeat(50), "y".into()];
        assert_eq!(chunks_by_bytes(&long, 10, usize::MAX).len(), 2);
        assert!(chunks_by_bytes::<String>(&[], 10, 10).is_empty());
    }
}
