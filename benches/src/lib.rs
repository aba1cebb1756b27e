//! Criterion benchmarks of zferry's hot paths, and the fixtures they share.
//!
//! The benchmarks live in `benches/`; this library holds the deterministic generators of large
//! inputs (many filesystems, many snapshots) so that every benchmark measures the same data.
//!
//! What it never does: assert on timings. Figures are written down in the README with the
//! command that produced them.

pub mod queue_fixtures;
