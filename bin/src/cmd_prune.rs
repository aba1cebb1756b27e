//! `zferry prune --dry-run`: which snapshots the keep rules would destroy, and why each other
//! one stays.
//!
//! It reads keep rules in zrepl's YAML shape and a `zfs list` listing, and runs the same pure
//! decision the daemon runs. It never destroys anything: only dry runs exist in this tool.
//!
//! The rules file is either a YAML list of rules, or a map with one key `keep:` holding that
//! list (the shape of a snap job's `pruning:` section):
//!
//! ```yaml
//! keep:
//!   - type: not_replicated
//!   - type: grid
//!     grid: 1x1h(keep=all) | 24x1h | 14x1d
//!     regex: "^zrepl_"
//! ```

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use zferry_core::job_id::JobId;
use zferry_core::listing::VersionListing;
use zferry_core::name::DatasetName;
use zferry_core::prune::{
    FilesystemPlan, KeepReason, KeepRules, PruneError, ReplicationCursor, Verdict,
    cursor_from_bookmarks, plan_filesystem,
};
use zferry_core::version::Guid;

use crate::input::{EXIT_BAD_INPUT, read_versions};
use crate::text::plural;

/// Exit code when at least one filesystem could not be pruned.
const EXIT_FILESYSTEM_ERROR: u8 = 1;

/// The largest rules file read, in bytes; real ones are a few hundred.
const RULES_FILE_BYTES_MAX: u64 = 1 << 20;

/// Arguments of `zferry prune`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
The rules file is a YAML list of keep rules in zrepl's shape, or a map with one key `keep:`
holding that list:
  - type: not_replicated            # keep_snapshot_at_cursor: true (default)
  - type: last_n                    # count: 10, regex: \"^zrepl_\" (optional)
  - type: grid                      # grid: 1x1h(keep=all) | 24x1h | 14x1d, regex: \"^zrepl_\"
  - type: regex                     # regex: \"^manual_\", negate: false (default)

Make the listing with:
  zfs list -H -p -o name,guid,createtxg,creation,userrefs -t snapshot,bookmark -r POOL > FILE

`not_replicated` needs the sender's replication cursor: give --job to take it from the job's
cursor bookmarks in the listing (a sender's listing), or --cursor with the GUID of the snapshot
it points at (`zfs get -H -p -o value guid POOL/FS#zrepl_CURSOR_...`).

Exit status: 0 every filesystem was planned, 1 some filesystem cannot be pruned, 2 bad input.")]
pub(crate) struct Args {
    /// Only show what would be destroyed. Required: this tool never destroys anything.
    #[arg(long)]
    dry_run: bool,
    /// The keep rules (YAML).
    #[arg(long, value_name = "FILE")]
    rules: PathBuf,
    /// The listing of the side to prune.
    #[arg(long, value_name = "FILE")]
    listing: PathBuf,
    /// The GUID (decimal, or hex with `0x`) of the snapshot the sender's replication cursor
    /// points at; `DATASET=GUID` for one filesystem, a bare GUID for every filesystem not named
    /// otherwise. May be repeated.
    #[arg(long, value_name = "[DATASET=]GUID", value_parser = parse_cursor, conflicts_with = "job")]
    cursor: Vec<CursorArg>,
    /// Take each filesystem's replication cursor from this job's cursor bookmarks in the
    /// listing, as the daemon does for the sender side.
    #[arg(long, value_name = "JOB", value_parser = parse_job)]
    job: Option<JobId>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// One `--cursor` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CursorArg {
    dataset: Option<DatasetName>,
    guid: Guid,
}

fn parse_guid(s: &str) -> Result<Guid, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u64::from_str_radix(hex, 16).ok()
        }
        Some(_) => None,
        None if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        None => None,
    };
    parsed.map(Guid).ok_or_else(|| {
        format!(
            "`{s}` is not a GUID: give it in decimal as `zfs get -p guid` prints it, or as 0x<hex>"
        )
    })
}

fn parse_cursor(s: &str) -> Result<CursorArg, String> {
    match s.rsplit_once('=') {
        Some((dataset, guid)) => Ok(CursorArg {
            dataset: Some(DatasetName::parse(dataset).map_err(|e| e.to_string())?),
            guid: parse_guid(guid)?,
        }),
        None => Ok(CursorArg {
            dataset: None,
            guid: parse_guid(s)?,
        }),
    }
}

fn parse_job(s: &str) -> Result<JobId, String> {
    JobId::parse(s).map_err(|e| e.to_string())
}

/// Runs the command.
pub(crate) fn run(args: &Args) -> ExitCode {
    if !args.dry_run {
        eprintln!(
            "zferry: `zferry prune` only does dry runs: it shows what the keep rules would \
             destroy and never destroys anything itself. Add --dry-run."
        );
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let (rules, listing) = match read_inputs(args) {
        Ok(inputs) => inputs,
        Err(message) => {
            eprintln!("zferry: {message}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let cursors = match Cursors::new(args, &listing) {
        Ok(cursors) => cursors,
        Err(message) => {
            eprintln!("zferry: {message}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let report = Report::new(&rules, &listing, &cursors);
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("zferry: cannot encode the report as JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", render_text(&report));
    }
    if report.summary.n_errors > 0 {
        ExitCode::from(EXIT_FILESYSTEM_ERROR)
    } else {
        ExitCode::SUCCESS
    }
}

fn read_inputs(args: &Args) -> Result<(KeepRules, VersionListing), String> {
    let rules = read_rules(&args.rules)?;
    let listing = read_versions(&args.listing).map_err(|e| e.to_string())?;
    Ok((rules, listing))
}

/// Reads and parses a rules file; the error names the file, line and column.
pub(crate) fn read_rules(path: &Path) -> Result<KeepRules, String> {
    let display = path.display();
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read `{display}`: {e}"))?
        .len();
    if len > RULES_FILE_BYTES_MAX {
        return Err(format!(
            "`{display}` is {len} bytes long; a rules file may have at most {RULES_FILE_BYTES_MAX}"
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read `{display}`: {e}"))?;
    parse_rules(&text, &display.to_string())
}

/// Parses the text of a rules file called `source` (for messages).
pub(crate) fn parse_rules(text: &str, source: &str) -> Result<KeepRules, String> {
    let blank = text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    });
    if blank {
        return Err(format!(
            "{source}: the rules file is empty; write a YAML list of keep rules (`[]` for none, \
             which destroys nothing)"
        ));
    }
    serde_saphyr::from_str::<RulesFile>(text)
        .map(|f| f.0)
        .map_err(|e| {
            let options = serde_saphyr::render_options! { source_name: Some(source) };
            let rendered = e.render_with_options(options);
            // The first line is `error: line L column C: message`; lead with `file:L:C:` instead,
            // as compilers do, and keep the snippet below it.
            let (first, rest) = rendered.split_once('\n').unwrap_or((&rendered, ""));
            let message = first
                .strip_prefix("error: ")
                .unwrap_or(first)
                .split_once(": ")
                .filter(|(head, _)| head.starts_with("line "))
                .map_or(first, |(_, message)| message);
            match e.location() {
                Some(l) => format!("{source}:{}:{}: {message}\n{rest}", l.line(), l.column()),
                None => format!("{source}: {message}\n{rest}"),
            }
        })
}

/// A rules file: a list of rules, or `keep:` with that list.
struct RulesFile(KeepRules);

impl<'de> Deserialize<'de> for RulesFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RulesFileVisitor)
    }
}

struct RulesFileVisitor;

impl<'de> Visitor<'de> for RulesFileVisitor {
    type Value = RulesFile;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of keep rules, or a map with `keep:` holding that list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RulesFile, A::Error> {
        KeepRules::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(RulesFile)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RulesFile, A::Error> {
        let mut rules = None;
        // Bounded: `FileKey` accepts only `keep`, and only once.
        while let Some(FileKey) = map.next_key::<FileKey>()? {
            if rules.is_some() {
                return Err(de::Error::duplicate_field("keep"));
            }
            rules = Some(map.next_value::<KeepRules>()?);
        }
        rules
            .map(RulesFile)
            .ok_or_else(|| de::Error::missing_field("keep"))
    }
}

/// The one key of a rules file's map form; any other key is an error raised while reading the
/// key, so that it is reported at the key's position.
struct FileKey;

impl<'de> Deserialize<'de> for FileKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let key = String::deserialize(deserializer)?;
        match key.as_str() {
            "keep" => Ok(FileKey),
            "keep_sender" | "keep_receiver" => Err(de::Error::custom(format!(
                "`{key}` belongs to a push or pull job; this tool prunes one side at a time: put \
                 that side's list under `keep:`"
            ))),
            _ => Err(de::Error::custom(format!(
                "unknown key `{key}`: a rules file is a list of keep rules, or a map with the one \
                 key `keep:` holding that list"
            ))),
        }
    }
}

/// Where each filesystem's replication cursor comes from.
enum Cursors {
    /// Neither `--cursor` nor `--job`.
    None,
    /// `--cursor`: per dataset, and a default for the rest.
    Given {
        per_dataset: Vec<(DatasetName, Guid)>,
        default: Option<Guid>,
    },
    /// `--job`: from the listing's bookmarks.
    FromJob(JobId),
}

impl Cursors {
    fn new(args: &Args, listing: &VersionListing) -> Result<Self, String> {
        if let Some(job) = &args.job {
            return Ok(Self::FromJob(job.clone()));
        }
        if args.cursor.is_empty() {
            return Ok(Self::None);
        }
        let mut per_dataset: Vec<(DatasetName, Guid)> = Vec::new();
        let mut default = None;
        for arg in &args.cursor {
            match &arg.dataset {
                None if default.is_some() => {
                    return Err("--cursor: only one GUID may be given without a dataset".into());
                }
                None => default = Some(arg.guid),
                Some(dataset) => {
                    if per_dataset.iter().any(|(d, _)| d == dataset) {
                        return Err(format!("--cursor: `{dataset}` is given twice"));
                    }
                    if !listing.datasets.contains_key(dataset) {
                        return Err(format!(
                            "--cursor: the listing has no snapshots or bookmarks of `{dataset}`"
                        ));
                    }
                    per_dataset.push((dataset.clone(), arg.guid));
                }
            }
        }
        Ok(Self::Given {
            per_dataset,
            default,
        })
    }

    fn of(&self, dataset: &DatasetName, listing: &VersionListing) -> ReplicationCursor {
        match self {
            Self::None => ReplicationCursor::Unknown,
            Self::FromJob(job) => cursor_from_bookmarks(listing.versions(dataset), job),
            Self::Given {
                per_dataset,
                default,
            } => per_dataset
                .iter()
                .find(|(d, _)| d == dataset)
                .map(|(_, guid)| *guid)
                .or(*default)
                .map_or(ReplicationCursor::Unknown, ReplicationCursor::At),
        }
    }
}

/// What to do about a filesystem that cannot be pruned, in this tool's terms.
fn advice(error: &PruneError) -> &'static str {
    match error {
        PruneError::CursorUnknown { .. } => {
            "give --job JOB (a sender's listing with the job's cursor bookmarks) or \
             --cursor DATASET=GUID"
        }
        PruneError::CursorMissing { .. } => {
            "the listing has no cursor bookmark of that job for this filesystem: check the job \
             name, or replicate it once first"
        }
        PruneError::CursorNotOnTarget { .. } => {
            "check that the GUID is the cursor's (`zfs get guid` on the #zrepl_CURSOR_... \
             bookmark) and that the listing is of the right side"
        }
        PruneError::DuplicateSnapshot { .. } => "list each snapshot once",
    }
}

/// The whole dry run, as printed and as JSON.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    dry_run: bool,
    /// The rules' labels, in order, as verdicts name them.
    rules: Vec<String>,
    filesystems: Vec<FilesystemReport>,
    summary: Summary,
}

#[derive(Debug, Serialize)]
struct FilesystemReport {
    dataset: DatasetName,
    cursor: Option<Guid>,
    snapshots: Vec<SnapshotReport>,
    error: Option<ErrorReport>,
}

#[derive(Debug, Serialize)]
struct SnapshotReport {
    name: String,
    guid: Guid,
    createtxg: u64,
    creation: i64,
    replicated: Option<bool>,
    verdict: &'static str,
    kept_by: Vec<String>,
    /// The verdict as the text output shows it.
    summary: String,
}

#[derive(Debug, Serialize)]
struct ErrorReport {
    message: String,
    advice: &'static str,
}

#[derive(Debug, Default, Serialize)]
struct Summary {
    n_filesystems: usize,
    n_destroy: usize,
    n_keep: usize,
    n_errors: usize,
}

impl Report {
    fn new(rules: &KeepRules, listing: &VersionListing, cursors: &Cursors) -> Self {
        let mut summary = Summary::default();
        let mut filesystems = Vec::with_capacity(listing.datasets.len());
        for (dataset, versions) in &listing.datasets {
            let cursor = cursors.of(dataset, listing);
            let cursor_guid = match cursor {
                ReplicationCursor::At(guid) => Some(guid),
                ReplicationCursor::Missing | ReplicationCursor::Unknown => None,
            };
            let report = match plan_filesystem(dataset, versions, rules, cursor) {
                Ok(plan) => FilesystemReport {
                    dataset: dataset.clone(),
                    cursor: cursor_guid,
                    snapshots: snapshot_reports(rules, &plan),
                    error: None,
                },
                Err(e) => FilesystemReport {
                    dataset: dataset.clone(),
                    cursor: cursor_guid,
                    snapshots: Vec::new(),
                    error: Some(ErrorReport {
                        message: e.to_string(),
                        advice: advice(&e),
                    }),
                },
            };
            summary.n_filesystems += 1;
            summary.n_errors += usize::from(report.error.is_some());
            for s in &report.snapshots {
                if s.verdict == "destroy" {
                    summary.n_destroy += 1;
                } else {
                    summary.n_keep += 1;
                }
            }
            filesystems.push(report);
        }
        let labels = (0..rules.rules().len()).map(|i| rules.label(i)).collect();
        Self {
            dry_run: true,
            rules: labels,
            filesystems,
            summary,
        }
    }
}

fn snapshot_reports(rules: &KeepRules, plan: &FilesystemPlan) -> Vec<SnapshotReport> {
    plan.snapshots
        .iter()
        .map(|s| {
            let (verdict, kept_by) = match &s.verdict {
                Verdict::Destroy => ("destroy", Vec::new()),
                Verdict::Keep(KeepReason::NoRules) => ("keep", Vec::new()),
                Verdict::Keep(KeepReason::KeptBy(indexes)) => {
                    ("keep", indexes.iter().map(|i| rules.label(*i)).collect())
                }
            };
            SnapshotReport {
                name: s.version.name.to_string(),
                guid: s.version.guid,
                createtxg: s.version.createtxg.0,
                creation: s.version.creation_unix,
                replicated: s.replicated,
                verdict,
                kept_by,
                summary: rules.describe(&s.verdict),
            }
        })
        .collect()
}

/// The human rendering: one block per filesystem, then a summary.
pub(crate) fn render_text(report: &Report) -> String {
    let mut out = String::new();
    for fs in &report.filesystems {
        match fs.cursor {
            Some(guid) => {
                let _ = writeln!(out, "{} (replication cursor at guid {guid})", fs.dataset);
            }
            None => {
                let _ = writeln!(out, "{}", fs.dataset);
            }
        }
        if let Some(error) = &fs.error {
            let _ = writeln!(out, "  NOT PRUNED: {}", error.message);
            let _ = writeln!(out, "  what to do: {}", error.advice);
            continue;
        }
        if fs.snapshots.is_empty() {
            let _ = writeln!(out, "  no snapshots (bookmarks are never pruned)");
            continue;
        }
        let width = fs
            .snapshots
            .iter()
            .map(|s| s.name.len() + 1)
            .max()
            .unwrap_or(0);
        for s in &fs.snapshots {
            let replicated = match s.replicated {
                Some(true) => "replicated",
                Some(false) => "not replicated",
                None => "",
            };
            let line = format!(
                "  {:<width$}  {}  {:<14}  {}",
                format!("@{}", s.name),
                format_utc(s.creation),
                replicated,
                s.summary
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    let s = &report.summary;
    let _ = writeln!(
        out,
        "\n{} {}: {} {} to destroy, {} kept, {} not pruned\ndry run: nothing was destroyed",
        s.n_filesystems,
        plural(s.n_filesystems, "filesystem", "filesystems"),
        s.n_destroy,
        plural(s.n_destroy, "snapshot", "snapshots"),
        s.n_keep,
        s.n_errors,
    );
    out
}

/// `YYYY-MM-DD HH:MM:SS` in UTC for Unix seconds, so that a user can check grid intervals by
/// eye. Days are converted to a civil date with the proleptic Gregorian calendar.
fn format_utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Shift the epoch to 0000-03-01 so that leap days fall at the end of a 400-year era.
    let z = i128::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_shifted = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_shifted + 2) / 5 + 1;
    let month = if month_shifted < 10 {
        month_shifted + 3
    } else {
        month_shifted - 9
    };
    let year = year_of_era + era * 400 + i128::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_795_651_200 + 3723), "2026-11-26 01:02:03");
        assert_eq!(format_utc(-1), "1969-12-31 23:59:59");
        assert_eq!(format_utc(4_107_542_400), "2100-03-01 00:00:00");
        // Extremes do not overflow.
        assert!(!format_utc(i64::MIN).is_empty());
        assert!(!format_utc(i64::MAX).is_empty());
    }

    #[test]
    fn cursor_arguments() {
        assert_eq!(
            parse_cursor("123"),
            Ok(CursorArg {
                dataset: None,
                guid: Guid(123)
            })
        );
        assert_eq!(parse_cursor("0xff").map(|c| c.guid), Ok(Guid(255)));
        let c = parse_cursor("pool/a b=7").unwrap();
        assert_eq!(c.dataset.unwrap().as_str(), "pool/a b");
        assert!(parse_cursor("12ab").unwrap_err().contains("is not a GUID"));
        assert!(parse_cursor("0x").is_err());
        assert!(parse_cursor("+1").is_err());
        assert!(parse_cursor("pool/@x=1").is_err());
        assert!(parse_cursor("99999999999999999999").is_err());
    }

    /// The error for a rules file's text, or the rule labels.
    fn rules_of(text: &str) -> Result<Vec<String>, String> {
        parse_rules(text, "rules.yml").map(|r| (0..r.rules().len()).map(|i| r.label(i)).collect())
    }

    #[test]
    fn rules_files_are_a_list_or_keep() {
        let list = "- type: not_replicated\n- {type: last_n, count: 2}\n";
        assert_eq!(rules_of(list).unwrap(), ["not_replicated", "last_n"]);
        let keep = "keep:\n  - type: not_replicated\n  - {type: last_n, count: 2}\n";
        assert_eq!(rules_of(keep).unwrap(), ["not_replicated", "last_n"]);
        assert_eq!(rules_of("[]").unwrap(), Vec::<String>::new());
        assert_eq!(rules_of("keep: []").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn rules_file_errors_name_file_line_and_column() {
        let e =
            rules_of("keep:\n  - type: grid\n    regex: x\n    grid: 1x1h(keep=0)\n").unwrap_err();
        assert!(
            e.starts_with("rules.yml:4:11: invalid grid: interval group 1 of 1"),
            "{e}"
        );
        assert!(e.contains("rules.yml:4:11"), "{e}");
        let e = rules_of("# only a comment\n").unwrap_err();
        assert!(e.starts_with("rules.yml: the rules file is empty"), "{e}");
        let e = rules_of("keep_sender:\n  - type: not_replicated\n").unwrap_err();
        assert!(
            e.contains("`keep_sender` belongs to a push or pull job"),
            "{e}"
        );
        let e = rules_of("kep: []\n").unwrap_err();
        assert!(
            e.starts_with("rules.yml:1:1: unknown key `kep`: a rules file is a list"),
            "{e}"
        );
        let e = rules_of("{}").unwrap_err();
        assert!(e.contains("missing field `keep`"), "{e}");
        let e = rules_of("just text").unwrap_err();
        assert!(
            e.contains("a list of keep rules, or a map with `keep:`"),
            "{e}"
        );
        let e = rules_of("- type: grid\n  grid: [1]\n").unwrap_err();
        assert!(e.starts_with("rules.yml:2:"), "{e}");
    }
}
