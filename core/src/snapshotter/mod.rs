//! The pure parts of zrepl's snapshotter: snapshot names, the periodic and cron schedules, and
//! the order in which snapshot hooks run.
//!
//! zrepl's `snapshotting:` section (types `periodic` and `cron`) takes one snapshot
//! `fs@<prefix><timestamp>` per matched filesystem, runs the configured hooks around it, and
//! decides when to do so next. Everything here takes the instant it reasons about as an input
//! ([`jiff::Timestamp`] or [`jiff::Zoned`]): it never reads a clock, runs a hook or takes a
//! snapshot. The daemon's driver does those and feeds the outcomes back.
//!
//! - [`timestamp`]: `timestamp_format` and `timestamp_location`, Go time layouts, and the
//!   [`timestamp::SnapshotNamer`] that builds `prefix + timestamp` and checks it at config time.
//! - [`duration`]: zrepl's duration syntax (`10m`, `1d`, `2w`) and the positive [`duration::Interval`].
//! - [`periodic`]: the sync-up that picks the first snapshot time from existing snapshots, and
//!   the next invocation after the last one.
//! - [`cron`]: `cron:` specs (5 fields, or 6 with leading seconds) and their next fire time in
//!   a time zone.
//! - [`hooks`]: which hooks apply to a filesystem, the environment they get, and the state
//!   machine that orders pre edges, the snapshot and post edges.

pub mod cron;
pub mod duration;
pub mod hooks;
pub mod periodic;
pub mod timestamp;
