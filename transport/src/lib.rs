//! zferry's transport: a framed, multiplexed RPC with a versioned handshake.
//!
//! This crate will carry the replication endpoints' requests and send streams over TCP, TLS,
//! SSH and in-process links, generic over the stream type so that turmoil can drive it.
//!
//! What it never does: interpret ZFS data or decide replication; it moves typed messages and
//! byte streams with deadlines and heartbeats, nothing more.
