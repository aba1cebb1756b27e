//! The engine executes the core's pure decisions against the backend trait; it never reads the
//! wall clock or spawns anything.
//!
//! Each part of the engine takes a [`ZfsBackend`](crate::backend::ZfsBackend) and the plain
//! data a decision needs, asks the decision module what to do, re-checks every destructive
//! action right before it is issued, and returns a report that a status command can render.
//! The same code runs over real ZFS and over the simulated ZFS.

pub mod pruner;
pub mod replication;
pub mod snapper;
