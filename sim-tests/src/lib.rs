//! Deterministic simulation of zferry under turmoil, and the backend conformance suite.
//!
//! This crate will run the real core, engine and transport on simulated hosts with the
//! simulated ZFS, inject faults from one master seed, and check the safety and liveness
//! invariants after every step. Today it holds [`conformance`]: one set of scenario tests
//! written against [`zferry_core::backend::ZfsBackend`] and run against both the simulated
//! ZFS (in every `cargo test`) and real OpenZFS (by `scripts/real-zfs-test.sh` in a VM).
//!
//! What it never does: run outside tests, the `zferry sim` commands and the
//! `zferry-conformance` binary, or depend on anything but the seed for its decisions.

#![deny(missing_docs)]

pub mod conformance;
pub mod replication_suite;
