//! What the replication cases share: one invocation of an active side's replication over the
//! real endpoints and the real driver, and the listings the cases assert on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use zferry_core::abstraction::Abstraction;
use zferry_core::backend::{PropertySource, VersionTypes, ZfsErrorKind};
use zferry_core::endpoint::receiver::{
    PlaceholderEncryptionConfig, ReceiverConfig, ReceiverEndpoint,
};
use zferry_core::endpoint::sender::{SendOptions, SenderConfig, SenderEndpoint};
use zferry_core::endpoint::{Guarantee, Protection, Receiver, Sender};
use zferry_core::engine::replication::report::{
    AttemptReport, FilesystemReport, ReplicationReport, ReportHandle,
};
use zferry_core::engine::replication::{DriverConfig, Replication, RunOutcome};
use zferry_core::filter::Filter;
use zferry_core::job_id::JobId;
use zferry_core::name::{Component, DatasetName, VersionName};
use zferry_core::plan::{InitialReplication, PlanPolicy};
use zferry_core::version::Guid;

use super::faults::{FaultyReceiver, FaultySender, ReceiverFault, SenderFault};
use crate::conformance::check::Ctx;
use crate::conformance::util::{child, comp, exists, versions};
use crate::conformance::{CaseFailure, DatasetSpec, Harness};

/// The sending job of every case (zrepl's `sender-job`).
pub const SENDER_JOB: &str = "sender-job";

/// The receiving job of every case.
pub const RECEIVER_JOB: &str = "receiver-job";

/// Another job, whose abstractions a case's job must never touch.
pub const OTHER_JOB: &str = "other-job";

/// The back-off before a filesystem's retry within an attempt: short, so that a case on real
/// ZFS does not sleep for seconds.
const RETRY_BACKOFF: Duration = Duration::from_millis(10);

/// One invocation of an active-side job's replication of zrepl's platform tests
/// (`replicationInvocation.Do`): new endpoints on every run, one attempt, one step at a time.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The sending job.
    pub sender_job: String,
    /// The receiving job.
    pub receiver_job: String,
    /// The sender's filesystem filter, as (pattern, accept) entries.
    pub filter: Vec<(String, bool)>,
    /// The receiver's `root_fs`.
    pub receiver_root: DatasetName,
    /// A sink's client identity below `root_fs`.
    pub client_identity: Option<String>,
    /// The protection the active side asks for.
    pub protection: Protection,
    /// Initial replication onto an empty receiver.
    pub initial: InitialReplication,
    /// The sender's send options.
    pub send: SendOptions,
    /// The receiver's placeholder encryption.
    pub placeholder_encryption: PlaceholderEncryptionConfig,
    /// `zfs receive -o`.
    pub properties_override: BTreeMap<String, String>,
    /// `zfs receive -x`.
    pub properties_inherit: Vec<String>,
    /// A fault of the sender.
    pub sender_fault: SenderFault,
    /// A fault of the receiver.
    pub receiver_fault: ReceiverFault,
}

/// The end of one invocation.
#[derive(Debug, Clone)]
pub struct Ran {
    /// How the run ended.
    pub outcome: RunOutcome,
    /// The driver's report.
    pub report: ReplicationReport,
}

impl Invocation {
    /// A replication of exactly the filesystems `sent` into `receiver_root`, both protections
    /// `guarantee`, zrepl's defaults otherwise (`most_recent`, placeholder encryption
    /// unspecified, no faults).
    pub fn new(sent: &[&DatasetName], receiver_root: &DatasetName, guarantee: Guarantee) -> Self {
        Self {
            sender_job: SENDER_JOB.to_owned(),
            receiver_job: RECEIVER_JOB.to_owned(),
            filter: sent
                .iter()
                .map(|fs| (fs.as_str().to_owned(), true))
                .collect(),
            receiver_root: receiver_root.clone(),
            client_identity: None,
            protection: protection(guarantee),
            initial: InitialReplication::MostRecent,
            send: SendOptions::default(),
            placeholder_encryption: PlaceholderEncryptionConfig::Unspecified,
            properties_override: BTreeMap::new(),
            properties_inherit: Vec::new(),
            sender_fault: SenderFault::None,
            receiver_fault: ReceiverFault::None,
        }
    }

    /// Where the receiver keeps sender filesystem `fs`.
    #[track_caller]
    pub fn receiver_fs(&self, fs: &DatasetName) -> Result<DatasetName, CaseFailure> {
        let mut root = self.receiver_root.clone();
        if let Some(identity) = &self.client_identity {
            root = child(&root, identity)?;
        }
        child(&root, fs.as_str())
    }

    /// Builds fresh endpoints and runs the driver once.
    pub async fn run(&self, h: &dyn Harness) -> Result<Ran, CaseFailure> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            CaseFailure::new(format!("setup: bad {what}: {e}"))
        };
        let sender_job = JobId::parse(&self.sender_job).map_err(|e| bad("job", &e))?;
        let receiver_job = JobId::parse(&self.receiver_job).map_err(|e| bad("job", &e))?;
        let filter = Filter::from_entries(self.filter.iter().map(|(p, a)| (p.as_str(), *a)))
            .map_err(|e| bad("filter", &e))?;
        let identity = self
            .client_identity
            .as_deref()
            .map(Component::parse)
            .transpose()
            .map_err(|e| bad("client identity", &e))?;
        let sender = SenderEndpoint::new(
            h.shared_backend(),
            SenderConfig {
                job: sender_job,
                filter,
                send: self.send,
            },
        );
        let receiver = ReceiverEndpoint::new(
            h.shared_backend(),
            ReceiverConfig {
                job: receiver_job,
                root_fs: self.receiver_root.clone(),
                client_identity: identity,
                placeholder_encryption: self.placeholder_encryption,
                properties_override: self.properties_override.clone(),
                properties_inherit: self.properties_inherit.clone(),
            },
        )
        .map_err(|e| bad("receiver configuration", &e))?;
        let sender: Arc<dyn Sender> = Arc::new(FaultySender::new(sender, self.sender_fault));
        let receiver: Arc<dyn Receiver> =
            Arc::new(FaultyReceiver::new(receiver, self.receiver_fault.clone()));
        let config = DriverConfig {
            protection: self.protection,
            plan: PlanPolicy {
                initial: self.initial,
                ..PlanPolicy::default()
            },
            step_concurrency: 1,
            size_estimates: true,
            attempts_max: 1,
            reconnect_timeout: Duration::from_secs(1),
            retry_backoff_base: RETRY_BACKOFF,
            retry_backoff_max: RETRY_BACKOFF,
            ..DriverConfig::default()
        };
        let report = ReportHandle::default();
        let outcome = Replication::new(sender, receiver, config, report.clone())
            .run()
            .await;
        Ok(Ran {
            outcome,
            report: report.snapshot(),
        })
    }
}

impl Ran {
    /// The run's only attempt (every invocation makes one).
    #[track_caller]
    pub fn attempt(&self) -> Result<&AttemptReport, CaseFailure> {
        match self.report.attempts.as_slice() {
            [one] => Ok(one),
            other => Err(CaseFailure::new(format!(
                "expected exactly 1 attempt, got {}:\n{}",
                other.len(),
                self.report
            ))),
        }
    }

    /// The report of one sender filesystem in the only attempt.
    #[track_caller]
    pub fn fs(&self, fs: &DatasetName) -> Result<&FilesystemReport, CaseFailure> {
        self.attempt()?.filesystems.get(fs).ok_or_else(|| {
            CaseFailure::new(format!(
                "no report of filesystem `{fs}` in the attempt:\n{}",
                self.report
            ))
        })
    }

    /// The sender-side paths the attempt reports on.
    pub fn filesystems(&self) -> Result<Vec<String>, CaseFailure> {
        Ok(self
            .attempt()?
            .filesystems
            .keys()
            .map(|k| k.as_str().to_owned())
            .collect())
    }

    /// The step descriptions of one filesystem.
    pub fn steps(&self, fs: &DatasetName) -> Result<Vec<String>, CaseFailure> {
        Ok(self
            .fs(fs)?
            .steps
            .iter()
            .map(|s| s.description.clone())
            .collect())
    }

    /// Fails unless the run ended done.
    #[track_caller]
    pub fn expect_done(&self) -> Result<(), CaseFailure> {
        if self.outcome == RunOutcome::Done {
            Ok(())
        } else {
            Err(CaseFailure::new(format!(
                "expected the run to be done, it ended {:?}:\n{}",
                self.outcome, self.report
            )))
        }
    }
}

/// The same guarantee for initial and incremental steps.
pub fn protection(guarantee: Guarantee) -> Protection {
    Protection {
        initial: guarantee,
        incremental: guarantee,
    }
}

/// A dataset name from text made by the case.
#[track_caller]
pub fn ds(name: &str) -> Result<DatasetName, CaseFailure> {
    DatasetName::parse(name).map_err(|e| CaseFailure::new(format!("bad test dataset name: {e}")))
}

/// Creates `dataset` and every missing ancestor below an existing one as plain filesystems
/// (zrepl's `zfs create -p`).
pub async fn create_all(h: &dyn Harness, dataset: &DatasetName) -> Result<(), CaseFailure> {
    let mut missing = Vec::new();
    let mut at = Some(dataset.clone());
    while let Some(d) = at {
        if exists(h, &d).await? {
            break;
        }
        at = d.parent();
        missing.push(d);
    }
    for d in missing.into_iter().rev() {
        h.create_dataset(&d, DatasetSpec::FILESYSTEM).await?;
    }
    Ok(())
}

/// The snapshot names (`@a`) of a dataset in createtxg order; none if it does not exist.
pub async fn snapshot_names(
    h: &dyn Harness,
    dataset: &DatasetName,
) -> Result<Vec<String>, CaseFailure> {
    if !exists(h, dataset).await? {
        return Ok(Vec::new());
    }
    let mut found = versions(h, dataset, VersionTypes::Snapshots).await?;
    found.sort_by(|a, b| a.cmp_by_createtxg(b));
    Ok(found.iter().map(|v| v.relative_name()).collect())
}

/// Every bookmark (`#name`) and every hold (`@snap:tag`) of a dataset, sorted: the exact
/// abstraction state the cases compare.
pub async fn abstractions(
    h: &dyn Harness,
    dataset: &DatasetName,
) -> Result<Vec<String>, CaseFailure> {
    let mut out = Vec::new();
    for v in versions(h, dataset, VersionTypes::All).await? {
        if v.is_snapshot() {
            if v.userrefs == Some(0) {
                continue;
            }
            let name = VersionName::parse(&format!("{dataset}@{}", v.name))
                .map_err(|e| CaseFailure::new(format!("snapshot name: {e}")))?;
            for tag in h
                .backend()
                .holds(&name)
                .await
                .ctx(format!("holds of `{name}`"))?
            {
                out.push(format!("@{}:{tag}", v.name));
            }
        } else {
            out.push(format!("#{}", v.name));
        }
    }
    out.sort();
    Ok(out)
}

/// `#zrepl_CURSOR_G_<guid>_J_<job>`.
pub fn cursor(guid: Guid, job: &str) -> Result<String, CaseFailure> {
    Ok(format!(
        "#{}",
        Abstraction::ReplicationCursor {
            job: job_id(job)?,
            guid
        }
    ))
}

/// `#zrepl_CURSORTENTATIVE__G_<guid>_J_<job>`.
pub fn tentative(guid: Guid, job: &str) -> Result<String, CaseFailure> {
    Ok(format!(
        "#{}",
        Abstraction::TentativeCursor {
            job: job_id(job)?,
            guid
        }
    ))
}

/// `@snap:zrepl_STEP_J_<job>`.
pub fn step_hold(snap: &str, job: &str) -> Result<String, CaseFailure> {
    Ok(format!(
        "@{snap}:{}",
        Abstraction::StepHold { job: job_id(job)? }
    ))
}

/// `@snap:zrepl_last_received_J_<job>`.
pub fn last_received(snap: &str, job: &str) -> Result<String, CaseFailure> {
    Ok(format!(
        "@{snap}:{}",
        Abstraction::LastReceivedHold { job: job_id(job)? }
    ))
}

/// A job name made by the case.
#[track_caller]
pub fn job_id(job: &str) -> Result<JobId, CaseFailure> {
    JobId::parse(job).map_err(|e| CaseFailure::new(format!("bad test job name: {e}")))
}

/// Sorted strings, for comparing with [`abstractions`].
pub fn sorted(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = items.into_iter().collect();
    v.sort();
    v
}

/// A property of a dataset as (value, source).
pub async fn property(
    h: &dyn Harness,
    dataset: &DatasetName,
    name: &str,
) -> Result<(String, PropertySource), CaseFailure> {
    let props = h
        .backend()
        .get_properties(&dataset.clone().into(), &[name])
        .await
        .ctx(format!("get `{name}` of `{dataset}`"))?;
    props
        .get(name)
        .map(|p| (p.value.clone(), p.source.clone()))
        .ok_or_else(|| CaseFailure::new(format!("`{name}` of `{dataset}` not in the answer")))
}

/// The layout most of zrepl's replication tests start from: `<root>/sender` and
/// `<root>/receiver`, with the receiver's copy's parent already there (zrepl's `zfs create -p
/// receiver/${ROOTDS}`), so that no placeholder is needed.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The case's root.
    pub root: DatasetName,
    /// `<root>/sender`.
    pub sender: DatasetName,
    /// `<root>/receiver`, the receiver's `root_fs`.
    pub receiver_root: DatasetName,
    /// Where the receiver keeps the sender's filesystem.
    pub receiver: DatasetName,
}

impl Pair {
    /// Makes the layout under a fresh root named after `key`.
    pub async fn make(h: &dyn Harness, key: &str) -> Result<Self, CaseFailure> {
        let root = h.fresh_root(key).await?;
        let sender = child(&root, "sender")?;
        let receiver_root = child(&root, "receiver")?;
        let receiver = child(&receiver_root, sender.as_str())?;
        h.create_dataset(&sender, DatasetSpec::FILESYSTEM).await?;
        if let Some(parent) = receiver.parent() {
            create_all(h, &parent).await?;
        }
        Ok(Self {
            root,
            sender,
            receiver_root,
            receiver,
        })
    }

    /// An invocation replicating `sender` with `guarantee`.
    pub fn invocation(&self, guarantee: Guarantee) -> Invocation {
        Invocation::new(&[&self.sender], &self.receiver_root, guarantee)
    }
}

/// Destroys one snapshot; the outer error is a failed call, the inner one the snapshot's
/// outcome (e.g. [`ZfsErrorKind::Busy`] when it is held).
pub async fn destroy_snapshot(
    h: &dyn Harness,
    dataset: &DatasetName,
    name: &str,
) -> Result<Result<(), ZfsErrorKind>, CaseFailure> {
    let short = comp(name)?;
    let outcomes = h
        .backend()
        .destroy_snapshots(dataset, std::slice::from_ref(&short))
        .await
        .ctx(format!("destroy `{dataset}@{name}`"))?;
    match outcomes.as_slice() {
        [one] if one.snapshot == short => Ok(one.result.clone()),
        other => Err(CaseFailure::new(format!(
            "destroy `{dataset}@{name}`: expected one outcome, got {other:?}"
        ))),
    }
}

/// Destroys one snapshot and fails the case unless that worked.
pub async fn must_destroy_snapshot(
    h: &dyn Harness,
    dataset: &DatasetName,
    name: &str,
) -> Result<(), CaseFailure> {
    destroy_snapshot(h, dataset, name)
        .await?
        .map_err(|kind| CaseFailure::new(format!("destroy `{dataset}@{name}`: {kind}")))
}

/// Removes a passed case's root (holds released first), so that the datasets of finished cases
/// do not slow down every later `zfs list` of all pools (the sender lists them all).
pub async fn finish(h: &dyn Harness, root: &DatasetName) -> Result<(), CaseFailure> {
    crate::conformance::util::destroy_tree(h.backend(), root)
        .await
        .ctx(format!("remove the case root `{root}`"))
}
