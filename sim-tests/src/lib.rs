//! Deterministic simulation of zferry under turmoil.
//!
//! This crate will run the real core, engine and transport on simulated hosts with the
//! simulated ZFS, inject faults from one master seed, and check the safety and liveness
//! invariants after every step.
//!
//! What it never does: run outside tests and the `zferry sim` commands, or depend on anything
//! but the seed for its decisions.
