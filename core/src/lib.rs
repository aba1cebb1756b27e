//! zferry's deterministic core.
//!
//! The names and types of ZFS and of zrepl's on-pool abstractions, and the pure decisions of
//! replication: which snapshots to send (the planner), which to keep, in what order to work.
//! Everything here takes plain data and returns plain data, so that it runs unchanged in the
//! production daemon, in turmoil simulations and in benchmarks.
//!
//! What it never does: spawn a process, open a socket or a file, read the wall clock, or draw
//! from an unseeded random number generator. Those live behind traits implemented elsewhere.
#![deny(missing_docs)]

pub mod abstraction;
pub mod backend;
pub mod clock;
pub mod endpoint;
pub mod engine;
pub mod error_class;
pub mod filter;
pub mod job;
pub mod job_id;
pub mod listing;
pub mod name;
pub mod plan;
pub mod prune;
pub mod queue;
pub mod resume_token;
pub mod snapshotter;
pub mod version;
pub mod watchdog;
