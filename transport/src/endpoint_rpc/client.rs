//! The active side: [`RemoteSender`] and [`RemoteReceiver`] implement the core's endpoint
//! traits over a connection, and [`RemotePush`] / [`RemotePull`] connect a job to them.
//!
//! # Connections
//!
//! Each invocation of a job calls [`Connect::connect`], which makes a new remote endpoint and
//! dials a fresh connection for it (as zrepl dials per invocation). Within the invocation the
//! endpoint redials whenever its connection is closed: the replication driver's reconnect wait
//! pings, the ping dials, and the next attempt runs on the new connection and resumes from the
//! receiver's resume token. A dial that fails at connect time with a temporary error is not an
//! error of the invocation: the first request fails the attempt as a connectivity error and the
//! driver waits for the connection as zrepl does. Only a permanent failure (another protocol
//! version) fails the connect.
//!
//! Transport errors become [`EndpointError::Connectivity`] (with `timeout` set for an expired
//! deadline), which the driver classifies as temporary: reconnect and make another attempt.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, ReadBuf};
use zferry_core::backend::{ByteStream, DestroyOutcome, Operation, ZfsError};
use zferry_core::endpoint::{
    Endpoint, EndpointError, Filesystem, PruneReq, ReceiveReq, ReceiveRes, Receiver, SendReq,
    SendRes, Sender,
};
use zferry_core::engine::pruner::PruneReport;
use zferry_core::error_class::{Classify, Persistence};
use zferry_core::job::active::Connect;
use zferry_core::name::{Component, DatasetName};
use zferry_core::prune::ReplicationCursor;
use zferry_core::version::{Guid, Version};

use super::messages::{EndpointRequest, EndpointResponse, EndpointResult, Json, WirePruneReq};
use crate::tls::TlsClient;
use crate::{Client, Config, Side, TransportError};

/// A client connection of the endpoint protocol.
pub type EndpointClient = Client<EndpointRequest, EndpointResult>;

/// How a remote endpoint opens a connection: dial, run the handshakes, start the transport.
#[async_trait]
pub trait Dial: Send + Sync + fmt::Debug {
    /// Opens a new connection.
    async fn dial(&self) -> Result<EndpointClient, TransportError>;

    /// Where it dials, for messages (`tcp 10.0.0.1:8888`).
    fn describe(&self) -> String;
}

/// zrepl's `tcp` connect: `address` and `dial_timeout`.
#[derive(Debug, Clone)]
pub struct TcpDial {
    /// `host:port`.
    pub address: String,
    /// How long a dial may take.
    pub dial_timeout: Duration,
    /// The connection's timing.
    pub config: Config,
}

#[async_trait]
impl Dial for TcpDial {
    async fn dial(&self) -> Result<EndpointClient, TransportError> {
        let stream = crate::tcp::connect(&self.address, self.dial_timeout).await?;
        Client::connect(stream, self.config).await
    }

    fn describe(&self) -> String {
        format!("tcp {}", self.address)
    }
}

/// zrepl's `tls` connect: `address`, `dial_timeout`, and the TLS client made from `ca`, `cert`,
/// `key` and `server_cn` ([`TlsClient::new`]).
#[derive(Debug, Clone)]
pub struct TlsDial {
    /// `host:port`.
    pub address: String,
    /// How long a dial may take (the TLS handshake has its own deadline).
    pub dial_timeout: Duration,
    /// The TLS client.
    pub tls: TlsClient,
    /// The connection's timing.
    pub config: Config,
}

#[async_trait]
impl Dial for TlsDial {
    async fn dial(&self) -> Result<EndpointClient, TransportError> {
        let stream = crate::tcp::connect(&self.address, self.dial_timeout).await?;
        let stream = self.tls.connect(stream).await?;
        Client::connect(stream, self.config).await
    }

    fn describe(&self) -> String {
        format!("tls {}", self.address)
    }
}

/// zrepl's `ssh+stdinserver` connect: the system `ssh` runs the server's forced command
/// `zferry stdinserver IDENTITY`, whose stdio is the connection ([`crate::ssh`]).
#[derive(Debug, Clone)]
pub struct SshDial {
    /// How to run `ssh`.
    pub ssh: crate::ssh::SshConnect,
    /// The connection's timing.
    pub config: Config,
}

#[async_trait]
impl Dial for SshDial {
    async fn dial(&self) -> Result<EndpointClient, TransportError> {
        crate::ssh::connect_client(&self.ssh, self.config).await
    }

    fn describe(&self) -> String {
        format!("ssh {}@{}:{}", self.ssh.user, self.ssh.host, self.ssh.port)
    }
}

/// A push job's connection: its own sender, and a sink reached through `dial`.
#[derive(Debug, Clone)]
pub struct RemotePush {
    /// The push job's sender endpoint.
    pub sender: Arc<dyn Sender>,
    /// How to reach the sink.
    pub dial: Arc<dyn Dial>,
}

#[async_trait]
impl Connect for RemotePush {
    async fn connect(&self) -> Result<(Arc<dyn Sender>, Arc<dyn Receiver>), EndpointError> {
        let receiver = RemoteReceiver::connect(Arc::clone(&self.dial)).await?;
        Ok((Arc::clone(&self.sender), Arc::new(receiver)))
    }
}

/// A pull job's connection: a source reached through `dial`, and its own receiver.
#[derive(Debug, Clone)]
pub struct RemotePull {
    /// How to reach the source.
    pub dial: Arc<dyn Dial>,
    /// The pull job's receiver endpoint.
    pub receiver: Arc<dyn Receiver>,
}

#[async_trait]
impl Connect for RemotePull {
    async fn connect(&self) -> Result<(Arc<dyn Sender>, Arc<dyn Receiver>), EndpointError> {
        let sender = RemoteSender::connect(Arc::clone(&self.dial)).await?;
        Ok((Arc::new(sender), Arc::clone(&self.receiver)))
    }
}

/// A sender on the other end of a connection (a source job).
#[derive(Debug)]
pub struct RemoteSender {
    link: Link,
}

/// A receiver on the other end of a connection (a sink job, which places what it receives
/// below `root_fs/<this client's identity>`).
#[derive(Debug)]
pub struct RemoteReceiver {
    link: Link,
}

impl RemoteSender {
    /// Dials a source (see the module doc for what a failed dial means).
    pub async fn connect(dial: Arc<dyn Dial>) -> Result<Self, EndpointError> {
        Ok(Self {
            link: Link::open(dial, "sender").await?,
        })
    }
}

impl RemoteReceiver {
    /// Dials a sink (see the module doc for what a failed dial means).
    pub async fn connect(dial: Arc<dyn Dial>) -> Result<Self, EndpointError> {
        Ok(Self {
            link: Link::open(dial, "receiver").await?,
        })
    }
}

/// One remote endpoint's connection, redialed when it closed.
struct Link {
    dial: Arc<dyn Dial>,
    /// "sender" or "receiver" and where, for messages.
    peer: String,
    /// The current connection; a closed one is replaced on the next request.
    client: tokio::sync::Mutex<Option<EndpointClient>>,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link").field("peer", &self.peer).finish()
    }
}

impl Link {
    async fn open(dial: Arc<dyn Dial>, role: &str) -> Result<Self, EndpointError> {
        let peer = format!("{role} ({})", dial.describe());
        let link = Self {
            dial,
            peer,
            client: tokio::sync::Mutex::new(None),
        };
        match link.client().await {
            Ok(_) => Ok(link),
            Err(e) if e.class().persistence == Persistence::Temporary => Ok(link),
            Err(e) => Err(e),
        }
    }

    /// The open connection, dialing a new one if there is none or it closed.
    async fn client(&self) -> Result<EndpointClient, EndpointError> {
        let mut current = self.client.lock().await;
        if let Some(client) = current.as_ref().filter(|c| c.closed().is_none()) {
            return Ok(client.clone());
        }
        *current = None;
        let client = self
            .dial
            .dial()
            .await
            .map_err(|e| self.transport_error(e))?;
        *current = Some(client.clone());
        Ok(client)
    }

    /// A transport error as an endpoint error: connectivity (temporary), unless it cannot heal
    /// by reconnecting (another protocol version, a message that does not encode).
    fn transport_error(&self, e: TransportError) -> EndpointError {
        if e.class().persistence == Persistence::Permanent {
            return EndpointError::Config {
                side: self.peer.clone(),
                detail: format!("{e}; both sides must run compatible zferry versions"),
            };
        }
        e.into_endpoint_error(&self.peer)
    }

    fn unexpected(&self, request: &EndpointRequest, response: &EndpointResponse) -> EndpointError {
        EndpointError::Config {
            side: self.peer.clone(),
            detail: format!(
                "it answered `{}` with {}; both sides must run compatible zferry versions",
                request.method(),
                response.name()
            ),
        }
    }

    async fn call(&self, request: &EndpointRequest) -> Result<EndpointResponse, EndpointError> {
        let client = self.client().await?;
        let answer = client
            .call(request)
            .await
            .map_err(|e| self.transport_error(e))?;
        answer.map_err(EndpointError::from)
    }

    async fn ping(&self) -> Result<(), EndpointError> {
        let request = EndpointRequest::Ping;
        match self.call(&request).await? {
            EndpointResponse::Pong => Ok(()),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    async fn list_filesystems(&self) -> Result<Vec<Filesystem>, EndpointError> {
        let request = EndpointRequest::ListFilesystems;
        match self.call(&request).await? {
            EndpointResponse::Filesystems(list) => Ok(list),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    async fn list_versions(&self, filesystem: &DatasetName) -> Result<Vec<Version>, EndpointError> {
        let request = EndpointRequest::ListVersions {
            filesystem: filesystem.clone(),
        };
        match self.call(&request).await? {
            EndpointResponse::Versions(list) => Ok(list),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    async fn destroy_snapshots(
        &self,
        filesystem: &DatasetName,
        snapshots: &[(Component, Guid)],
    ) -> Result<Vec<DestroyOutcome>, EndpointError> {
        let request = EndpointRequest::DestroySnapshots {
            filesystem: filesystem.clone(),
            snapshots: snapshots.to_vec(),
        };
        match self.call(&request).await? {
            EndpointResponse::Destroyed(Json(outcomes)) => Ok(outcomes),
            other => Err(self.unexpected(&request, &other)),
        }
    }

    async fn prune(&self, request: &PruneReq) -> Result<PruneReport, EndpointError> {
        let request = EndpointRequest::Prune(WirePruneReq::from(request));
        match self.call(&request).await? {
            EndpointResponse::Pruned(Json(report)) => Ok(report),
            other => Err(self.unexpected(&request, &other)),
        }
    }
}

#[async_trait]
impl Endpoint for RemoteSender {
    async fn ping(&self) -> Result<(), EndpointError> {
        self.link.ping().await
    }

    async fn list_filesystems(&self) -> Result<Vec<Filesystem>, EndpointError> {
        self.link.list_filesystems().await
    }

    async fn list_versions(&self, filesystem: &DatasetName) -> Result<Vec<Version>, EndpointError> {
        self.link.list_versions(filesystem).await
    }

    async fn destroy_snapshots(
        &self,
        filesystem: &DatasetName,
        snapshots: &[(Component, Guid)],
    ) -> Result<Vec<DestroyOutcome>, EndpointError> {
        self.link.destroy_snapshots(filesystem, snapshots).await
    }

    async fn prune(&self, request: &PruneReq) -> Result<PruneReport, EndpointError> {
        self.link.prune(request).await
    }
}

#[async_trait]
impl Sender for RemoteSender {
    async fn send_dry(&self, request: &SendReq) -> Result<SendRes, EndpointError> {
        let request = EndpointRequest::SendDry(request.clone());
        match self.link.call(&request).await? {
            EndpointResponse::SendDry(response) => Ok(response),
            other => Err(self.link.unexpected(&request, &other)),
        }
    }

    async fn send(&self, request: &SendReq) -> Result<(SendRes, ByteStream), EndpointError> {
        let request = EndpointRequest::Send(request.clone());
        let client = self.link.client().await?;
        let (answer, stream) = client
            .call_download(&request)
            .await
            .map_err(|e| self.link.transport_error(e))?;
        match (answer.map_err(EndpointError::from)?, stream) {
            (EndpointResponse::Sent(response), Some(stream)) => Ok((response, Box::pin(stream))),
            (EndpointResponse::Sent(_), None) => Err(EndpointError::Config {
                side: self.link.peer.clone(),
                detail: "it answered `send` without a stream; both sides must run compatible \
                         zferry versions"
                    .to_owned(),
            }),
            (other, _) => Err(self.link.unexpected(&request, &other)),
        }
    }

    async fn send_completed(&self, request: &SendReq) -> Result<(), EndpointError> {
        let request = EndpointRequest::SendCompleted(request.clone());
        match self.link.call(&request).await? {
            EndpointResponse::SendCompleted => Ok(()),
            other => Err(self.link.unexpected(&request, &other)),
        }
    }

    async fn replication_cursors(
        &self,
        filesystems: &[DatasetName],
    ) -> Result<BTreeMap<DatasetName, ReplicationCursor>, EndpointError> {
        let request = EndpointRequest::ReplicationCursors {
            filesystems: filesystems.to_vec(),
        };
        match self.link.call(&request).await? {
            EndpointResponse::Cursors(cursors) => Ok(cursors),
            other => Err(self.link.unexpected(&request, &other)),
        }
    }
}

#[async_trait]
impl Endpoint for RemoteReceiver {
    async fn ping(&self) -> Result<(), EndpointError> {
        self.link.ping().await
    }

    async fn list_filesystems(&self) -> Result<Vec<Filesystem>, EndpointError> {
        self.link.list_filesystems().await
    }

    async fn list_versions(&self, filesystem: &DatasetName) -> Result<Vec<Version>, EndpointError> {
        self.link.list_versions(filesystem).await
    }

    async fn destroy_snapshots(
        &self,
        filesystem: &DatasetName,
        snapshots: &[(Component, Guid)],
    ) -> Result<Vec<DestroyOutcome>, EndpointError> {
        self.link.destroy_snapshots(filesystem, snapshots).await
    }

    async fn prune(&self, request: &PruneReq) -> Result<PruneReport, EndpointError> {
        self.link.prune(request).await
    }
}

#[async_trait]
impl Receiver for RemoteReceiver {
    async fn receive(
        &self,
        request: &ReceiveReq,
        stream: ByteStream,
    ) -> Result<ReceiveRes, EndpointError> {
        let wire = EndpointRequest::Receive(request.clone());
        let client = self.link.client().await?;
        let failure = Arc::new(Mutex::new(None));
        let upload = FirstError {
            inner: stream,
            filesystem: request.filesystem.clone(),
            failure: Arc::clone(&failure),
        };
        let answer = match client.call_upload(&wire, upload).await {
            Ok(answer) => answer,
            Err(e) => {
                // The stream this side uploads failed (the local `zfs send` broke off): that
                // error, not the transport's report of it, is what the driver must see.
                let local = failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                return Err(match (e, local) {
                    (
                        TransportError::StreamReset {
                            by: Side::Local, ..
                        },
                        Some(local),
                    ) => EndpointError::Zfs(local),
                    (e, _) => self.link.transport_error(e),
                });
            }
        };
        match answer.map_err(EndpointError::from)? {
            EndpointResponse::Received(response) => Ok(response),
            other => Err(self.link.unexpected(&wire, &other)),
        }
    }
}

/// Passes a stream through and keeps its first read error as the backend error it carries.
struct FirstError {
    inner: ByteStream,
    filesystem: DatasetName,
    failure: Arc<Mutex<Option<ZfsError>>>,
}

impl AsyncRead for FirstError {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = self.inner.as_mut().poll_read(cx, buf);
        if let Poll::Ready(Err(e)) = &polled {
            let error = ZfsError::from_io(Operation::Send, &self.filesystem, e);
            self.failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_or_insert(error);
        }
        polled
    }
}
