//! The jobs: `push` and `pull` (active: they decide and drive), `sink` and `source` (passive:
//! they serve endpoints), joined in one process by the `local` transport; `snap` (snapshots
//! and local pruning only).

pub mod active;
pub mod local;
pub mod passive;
pub mod push;
