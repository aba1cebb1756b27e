//! Jobs: the long-running units a daemon runs, each a loop over the engine's parts.
//!
//! - [`snap`]: zrepl's `type: snap`, local snapshots and local pruning, no replication.

pub mod snap;
