//! The ZFS backend of zferry over the real `zfs` and `zpool` commands.
//!
//! This crate will implement the core's backend trait by launching `zfs`/`zpool`, parsing their
//! output and classifying their stderr into typed errors. It is the only crate that spawns
//! processes and reads the wall clock for them.
//!
//! What it never does: decide anything. Which snapshot to send, hold or destroy is decided in
//! `zferry-core`; this crate only carries out one command at a time and reports what happened.
