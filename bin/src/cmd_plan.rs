//! `zferry plan`: what replication would send for each filesystem, or why it cannot.
//!
//! It answers "why won't it replicate?" from two listings a user can make on any machine with
//! `zfs list`, using the same planner the daemon runs.

use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use zferry_core::name::DatasetName;
use zferry_core::plan::{
    InitialReplication, Plan, PlanBase, PlanError, PlanPolicy, STEP_SNAPSHOTS_MAX, SendKind, Step,
    plan,
};
use zferry_core::version::Version;

use crate::input::{InputError, read_versions};
use crate::text::plural;

/// Exit code when at least one filesystem has a conflict.
const EXIT_CONFLICT: u8 = 1;

/// Arguments of `zferry plan`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Make the listings with:
  zfs list -H -p -o name,guid,createtxg,creation,userrefs -t snapshot,bookmark -r POOL > FILE

Exit status: 0 every filesystem has a plan or is up to date, 1 some filesystem has a conflict,
2 bad input.")]
pub(crate) struct Args {
    /// The sender's listing.
    #[arg(long, value_name = "FILE")]
    sender: PathBuf,
    /// The receiver's listing.
    #[arg(long, value_name = "FILE")]
    receiver: PathBuf,
    /// The receiver dataset under which the sender's paths appear (a sink's
    /// `root_fs/<client identity>`); without it, both sides use the same paths.
    #[arg(long, value_name = "DATASET", value_parser = parse_dataset)]
    receiver_root: Option<DatasetName>,
    /// What to send to a receiver without snapshots.
    #[arg(long, value_enum, default_value = "most-recent")]
    initial: InitialArg,
    /// Merge up to N consecutive snapshots into one `zfs send -I` step (1: one step per
    /// snapshot, as zrepl does).
    #[arg(long, value_name = "N", default_value = "1", value_parser = parse_batch)]
    batch: NonZeroUsize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum InitialArg {
    #[value(name = "most-recent", alias = "most_recent")]
    MostRecent,
    All,
    Fail,
}

fn parse_dataset(s: &str) -> Result<DatasetName, String> {
    DatasetName::parse(s).map_err(|e| e.to_string())
}

fn parse_batch(s: &str) -> Result<NonZeroUsize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number"))?;
    match NonZeroUsize::new(n) {
        Some(n) if n.get() <= STEP_SNAPSHOTS_MAX => Ok(n),
        _ => Err(format!("must be between 1 and {STEP_SNAPSHOTS_MAX}")),
    }
}

/// The plan of one filesystem.
#[derive(Debug, Serialize)]
pub(crate) struct FilesystemPlan {
    sender: DatasetName,
    receiver: DatasetName,
    #[serde(flatten)]
    outcome: Outcome,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
enum Outcome {
    UpToDate {
        newest: Version,
    },
    Replicate {
        base: PlanBase,
        steps: Vec<JsonStep>,
    },
    Conflict {
        conflict: PlanError,
        message: String,
        advice: &'static str,
    },
    /// The sender path does not fit under the receiver root.
    Unmappable {
        message: String,
    },
}

#[derive(Debug, Serialize)]
struct JsonStep {
    #[serde(flatten)]
    step: Step,
    send: SendKind,
    n_snapshots: usize,
    summary: String,
}

/// Runs the command.
pub(crate) fn run(args: &Args) -> ExitCode {
    let plans = match plan_all(args) {
        Ok(plans) => plans,
        Err(e) => return e.report(),
    };
    if args.json {
        match serde_json::to_string_pretty(&Report::new(&plans)) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("zferry: cannot encode the report as JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", render_text(&plans));
    }
    if plans.iter().any(|p| {
        matches!(
            p.outcome,
            Outcome::Conflict { .. } | Outcome::Unmappable { .. }
        )
    }) {
        ExitCode::from(EXIT_CONFLICT)
    } else {
        ExitCode::SUCCESS
    }
}

fn plan_all(args: &Args) -> Result<Vec<FilesystemPlan>, InputError> {
    let sender = read_versions(&args.sender)?;
    let receiver = read_versions(&args.receiver)?;
    let policy = PlanPolicy {
        initial: match args.initial {
            InitialArg::MostRecent => InitialReplication::MostRecent,
            InitialArg::All => InitialReplication::All,
            InitialArg::Fail => InitialReplication::Fail,
        },
        snapshots_per_step_max: args.batch,
    };
    let mut plans = Vec::with_capacity(sender.datasets.len());
    for (fs, versions) in &sender.datasets {
        let receiver_fs = match &args.receiver_root {
            Some(root) => match root.join(fs.as_str()) {
                Ok(name) => name,
                Err(e) => {
                    // Too long once prefixed: the daemon could not receive it either.
                    let message = e.to_string();
                    let receiver = root.clone();
                    plans.push(FilesystemPlan {
                        sender: fs.clone(),
                        receiver,
                        outcome: Outcome::Unmappable { message },
                    });
                    continue;
                }
            },
            None => fs.clone(),
        };
        let result = plan(versions, receiver.versions(&receiver_fs), None, &policy);
        plans.push(FilesystemPlan {
            sender: fs.clone(),
            receiver: receiver_fs,
            outcome: result.into(),
        });
    }
    Ok(plans)
}

impl From<Result<Plan, PlanError>> for Outcome {
    fn from(result: Result<Plan, PlanError>) -> Self {
        match result {
            Ok(Plan::UpToDate { newest }) => Self::UpToDate { newest },
            Ok(Plan::Replicate { base, steps }) => Self::Replicate {
                base,
                steps: steps
                    .into_iter()
                    .map(|step| JsonStep {
                        send: step.send_kind(),
                        n_snapshots: step.n_snapshots(),
                        summary: step.to_string(),
                        step,
                    })
                    .collect(),
            },
            Err(conflict) => Self::Conflict {
                message: conflict.to_string(),
                advice: conflict.advice(),
                conflict,
            },
        }
    }
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    filesystems: &'a [FilesystemPlan],
    summary: Summary,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    n_filesystems: usize,
    n_replicate: usize,
    n_up_to_date: usize,
    n_conflicts: usize,
    n_steps: usize,
    n_snapshots: usize,
}

impl<'a> Report<'a> {
    fn new(filesystems: &'a [FilesystemPlan]) -> Self {
        let mut summary = Summary {
            n_filesystems: filesystems.len(),
            ..Summary::default()
        };
        for fs in filesystems {
            match &fs.outcome {
                Outcome::UpToDate { .. } => summary.n_up_to_date += 1,
                Outcome::Conflict { .. } | Outcome::Unmappable { .. } => summary.n_conflicts += 1,
                Outcome::Replicate { steps, .. } => {
                    summary.n_replicate += 1;
                    summary.n_steps += steps.len();
                    summary.n_snapshots += steps.iter().map(|s| s.n_snapshots).sum::<usize>();
                }
            }
        }
        Self {
            filesystems,
            summary,
        }
    }
}

/// The human rendering: one block per filesystem, then a summary line.
pub(crate) fn render_text(plans: &[FilesystemPlan]) -> String {
    let mut out = String::new();
    for fs in plans {
        if fs.sender == fs.receiver {
            let _ = writeln!(out, "{}", fs.sender);
        } else {
            let _ = writeln!(out, "{} -> {}", fs.sender, fs.receiver);
        }
        match &fs.outcome {
            Outcome::UpToDate { newest } => {
                let _ = writeln!(out, "  up to date at {newest}");
            }
            Outcome::Replicate { base, steps } => {
                let n_snapshots: usize = steps.iter().map(|s| s.n_snapshots).sum();
                let from = match base {
                    PlanBase::Common { version } => format!("incremental from {version}"),
                    PlanBase::Initial { mode } => {
                        format!("initial replication ({})", mode.as_str())
                    }
                    PlanBase::Resume { toname } => {
                        format!("resuming the partial receive of {toname}")
                    }
                };
                let _ = writeln!(
                    out,
                    "  {from}: {} {}, {n_snapshots} {}",
                    steps.len(),
                    plural(steps.len(), "step", "steps"),
                    plural(n_snapshots, "snapshot", "snapshots")
                );
                for (i, step) in steps.iter().enumerate() {
                    let _ = writeln!(out, "    {}. {}", i + 1, step.summary);
                }
            }
            Outcome::Conflict {
                message, advice, ..
            } => {
                let _ = writeln!(out, "  CONFLICT: {message}");
                let _ = writeln!(out, "  what to do: {advice}");
            }
            Outcome::Unmappable { message } => {
                let _ = writeln!(out, "  CANNOT MAP onto the receiver root: {message}");
                let _ = writeln!(out, "  what to do: choose a shorter receiver root");
            }
        }
    }
    let report = Report::new(plans);
    let s = &report.summary;
    let _ = writeln!(
        out,
        "\n{} {}: {} to replicate ({} {}, {} {}), {} up to date, {} {}",
        s.n_filesystems,
        plural(s.n_filesystems, "filesystem", "filesystems"),
        s.n_replicate,
        s.n_steps,
        plural(s.n_steps, "step", "steps"),
        s.n_snapshots,
        plural(s.n_snapshots, "snapshot", "snapshots"),
        s.n_up_to_date,
        s.n_conflicts,
        plural(s.n_conflicts, "conflict", "conflicts"),
    );
    out
}
