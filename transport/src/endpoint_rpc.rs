//! Remote endpoints: the sender and receiver endpoints served over the transport, so that
//! push→sink and pull→source work across a TCP or TLS connection as they do in one process.
//!
//! - [`messages`]: the protocol, one request per endpoint method; `send` answers with its
//!   stream as a download, `receive` takes its stream as an upload; errors cross as
//!   [`EndpointError::to_remote`](zferry_core::endpoint::EndpointError::to_remote) makes them.
//! - [`EndpointService`]: the passive side, answering with a source's sender or with a sink's
//!   receiver made for the client's identity (its IP address mapped by `clients` over TCP, its
//!   certificate's CN over TLS); [`serve_tcp`] and [`serve_tls`] are the accept loops.
//! - [`RemoteSender`] and [`RemoteReceiver`]: the active side, the core's endpoint traits over a
//!   connection; [`RemotePush`] and [`RemotePull`] are the jobs'
//!   [`Connect`](zferry_core::job::active::Connect), dialing with [`TcpDial`] or [`TlsDial`].
//!
//! What it never does: decide anything about replication. Both sides run the same endpoint
//! code as in one process; this module only carries requests, answers and streams.

mod client;
pub mod messages;
mod server;

pub use client::{
    Dial, EndpointClient, RemotePull, RemotePush, RemoteReceiver, RemoteSender, SshDial, TcpDial,
    TlsDial,
};
pub use messages::{EndpointRequest, EndpointResponse, EndpointResult, RemoteError};
pub use server::{
    ACCEPT_RETRY_PAUSE, CONNECTIONS_MAX, DRAIN_TIMEOUT_PEER_TIMEOUTS, EndpointService,
    ReceivesInFlight, ServerEvent, ServerEvents, serve_tcp, serve_tls,
};
