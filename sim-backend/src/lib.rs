//! An in-memory simulated ZFS for zferry's tests and deterministic simulation.
//!
//! This crate will implement the core's backend trait over a model of pools, datasets,
//! snapshots, bookmarks, holds, send streams and resume tokens, with seeded fault injection and
//! a record of who changed what.
//!
//! What it never does: read the wall clock, draw unseeded randomness, or get linked into the
//! production daemon except for its explicit `sim` commands.
