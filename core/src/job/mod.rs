//! Jobs: the long-running units a daemon runs, each a loop over the engine's parts.
//!
//! - [`active`]: `push` and `pull`, which decide and drive replication and pruning;
//! - [`push`]: a push job with its snapshotter;
//! - [`passive`]: `sink` and `source`, which serve endpoints;
//! - [`local`]: the `local` transport that joins them in one process;
//! - [`snap`]: zrepl's `type: snap`, local snapshots and local pruning, no replication.

pub mod active;
pub mod local;
pub mod passive;
pub mod push;
pub mod snap;
