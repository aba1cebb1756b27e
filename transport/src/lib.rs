//! zferry's transport: a framed, multiplexed RPC with a versioned handshake.
//!
//! One connection carries many requests and byte streams at once (zrepl's RPC served one
//! request at a time, which serialized replication and pruning). It is generic over the stream
//! type, so the same code runs over tokio's TCP ([`tcp`]), rustls ([`tls`]), an SSH child's
//! pipes and turmoil's simulated TCP.
//!
//! - [`Client`] sends typed requests ([`Client::call`]), requests with a stream
//!   ([`Client::call_upload`], for `zfs receive` data) and requests answered with a stream
//!   ([`Client::call_download`], for `zfs send` data), concurrently from any number of clones.
//! - [`serve`] answers them with a [`Service`].
//! - [`wire`] is the protocol: a handshake that names protocol and version, then
//!   length-delimited frames with postcard headers; per-stream credit for flow control;
//!   heartbeats and deadlines on every read and write.
//!
//! What it never does: interpret ZFS data or decide replication; it moves typed messages and
//! byte streams with deadlines and heartbeats, nothing more. It never reads the wall clock
//! (deadlines use `tokio::time`, which turmoil and paused tests control) and never blocks a
//! thread.
#![deny(missing_docs)]

mod conn;
pub mod endpoint_rpc;
mod error;
pub mod identity;
pub mod ssh;
pub mod stdinserver;
pub mod tcp;
pub mod tls;
pub mod wire;

pub use conn::{
    ByteReader, CHUNK_POOL_LEN_MAX, CLOSE_NOTICE_TIMEOUT, CREDIT_OUTSTANDING_MAX_BYTES, Client,
    Config, DATA_QUEUE_FRAMES, READ_BUFFER_BYTES, REQUESTS_IN_FLIGHT_MAX, Reply, Service,
    WRITE_BUFFER_BYTES, serve,
};
pub use error::{Side, TransportError};
