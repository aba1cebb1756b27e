//! Faults that zrepl's platform tests inject by code, as wrapper endpoints around the real ones,
//! so that they behave the same on real ZFS and on the simulated ZFS.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use tokio::io::{AsyncRead, ReadBuf};
use zferry_core::backend::{ByteStream, DestroyOutcome, Operation, ZfsError, ZfsErrorKind};
use zferry_core::endpoint::receiver::ReceiverEndpoint;
use zferry_core::endpoint::sender::SenderEndpoint;
use zferry_core::endpoint::{
    Endpoint, EndpointError, Filesystem, PruneReq, ReceiveReq, ReceiveRes, Receiver, SendReq,
    SendRes, Sender,
};
use zferry_core::engine::pruner::PruneReport;
use zferry_core::name::{Component, DatasetName};
use zferry_core::prune::ReplicationCursor;
use zferry_core::version::{Guid, Version};

/// The size a never-ending sender claims for its stream, in bytes.
pub const NEVER_ENDING_BYTES: u64 = 1 << 30;

/// What the sender does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderFault {
    /// Nothing.
    None,
    /// Every send stream ends (cleanly, as if the connection closed) after this many bytes
    /// (zrepl's `PartialSender`).
    CutAfter(u64),
    /// `send_completed` never reaches the sender endpoint (zrepl's `FailSendCompletedSender`).
    LoseSendCompleted,
    /// `send` returns an endless stream of zeros without asking ZFS (zrepl's
    /// `NeverEndingSender`).
    NeverEnding,
}

/// What the receiver does wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverFault {
    /// Nothing.
    None,
    /// Every receive fails with this message without reading the stream (zrepl's
    /// `ErroringReceiver`).
    FailWith(String),
}

/// A sender endpoint with a [`SenderFault`].
#[derive(Debug)]
pub struct FaultySender {
    inner: SenderEndpoint,
    fault: SenderFault,
}

impl FaultySender {
    /// Wraps `inner`.
    pub fn new(inner: SenderEndpoint, fault: SenderFault) -> Self {
        Self { inner, fault }
    }
}

#[async_trait]
impl Endpoint for FaultySender {
    async fn ping(&self) -> Result<(), EndpointError> {
        self.inner.ping().await
    }

    async fn list_filesystems(&self) -> Result<Vec<Filesystem>, EndpointError> {
        self.inner.list_filesystems().await
    }

    async fn list_versions(&self, filesystem: &DatasetName) -> Result<Vec<Version>, EndpointError> {
        self.inner.list_versions(filesystem).await
    }

    async fn destroy_snapshots(
        &self,
        filesystem: &DatasetName,
        snapshots: &[(Component, Guid)],
    ) -> Result<Vec<DestroyOutcome>, EndpointError> {
        self.inner.destroy_snapshots(filesystem, snapshots).await
    }

    async fn prune(&self, request: &PruneReq) -> Result<PruneReport, EndpointError> {
        self.inner.prune(request).await
    }
}

#[async_trait]
impl Sender for FaultySender {
    async fn send_dry(&self, request: &SendReq) -> Result<SendRes, EndpointError> {
        match self.fault {
            SenderFault::NeverEnding => Ok(SendRes {
                used_resume_token: false,
                expected_size: Some(NEVER_ENDING_BYTES),
            }),
            _ => self.inner.send_dry(request).await,
        }
    }

    async fn send(&self, request: &SendReq) -> Result<(SendRes, ByteStream), EndpointError> {
        match self.fault {
            SenderFault::NeverEnding => Ok((
                SendRes {
                    used_resume_token: false,
                    expected_size: Some(NEVER_ENDING_BYTES),
                },
                Box::pin(Zeros),
            )),
            SenderFault::CutAfter(n_bytes) => {
                let (res, stream) = self.inner.send(request).await?;
                let cut: ByteStream = Box::pin(CutStream {
                    inner: Some(stream),
                    left: n_bytes,
                });
                Ok((res, cut))
            }
            SenderFault::None | SenderFault::LoseSendCompleted => self.inner.send(request).await,
        }
    }

    async fn send_completed(&self, request: &SendReq) -> Result<(), EndpointError> {
        match self.fault {
            SenderFault::LoseSendCompleted => Err(EndpointError::Connectivity {
                peer: "sender".to_owned(),
                detail: "[fault] send_completed not delivered to the sender endpoint".to_owned(),
                timeout: false,
            }),
            _ => self.inner.send_completed(request).await,
        }
    }

    async fn replication_cursors(
        &self,
        filesystems: &[DatasetName],
    ) -> Result<BTreeMap<DatasetName, ReplicationCursor>, EndpointError> {
        self.inner.replication_cursors(filesystems).await
    }
}

/// A receiver endpoint with a [`ReceiverFault`].
#[derive(Debug)]
pub struct FaultyReceiver {
    inner: ReceiverEndpoint,
    fault: ReceiverFault,
}

impl FaultyReceiver {
    /// Wraps `inner`.
    pub fn new(inner: ReceiverEndpoint, fault: ReceiverFault) -> Self {
        Self { inner, fault }
    }
}

#[async_trait]
impl Endpoint for FaultyReceiver {
    async fn ping(&self) -> Result<(), EndpointError> {
        self.inner.ping().await
    }

    async fn list_filesystems(&self) -> Result<Vec<Filesystem>, EndpointError> {
        self.inner.list_filesystems().await
    }

    async fn list_versions(&self, filesystem: &DatasetName) -> Result<Vec<Version>, EndpointError> {
        self.inner.list_versions(filesystem).await
    }

    async fn destroy_snapshots(
        &self,
        filesystem: &DatasetName,
        snapshots: &[(Component, Guid)],
    ) -> Result<Vec<DestroyOutcome>, EndpointError> {
        self.inner.destroy_snapshots(filesystem, snapshots).await
    }

    async fn prune(&self, request: &PruneReq) -> Result<PruneReport, EndpointError> {
        self.inner.prune(request).await
    }
}

#[async_trait]
impl Receiver for FaultyReceiver {
    async fn receive(
        &self,
        request: &ReceiveReq,
        stream: ByteStream,
    ) -> Result<ReceiveRes, EndpointError> {
        match &self.fault {
            ReceiverFault::FailWith(message) => {
                drop(stream);
                Err(ZfsError::new(
                    Operation::Receive,
                    &request.filesystem,
                    ZfsErrorKind::Other {
                        detail: message.clone(),
                    },
                )
                .into())
            }
            ReceiverFault::None => self.inner.receive(request, stream).await,
        }
    }
}

/// The most a [`CutStream`] reads from its inner stream at once, in bytes.
const CUT_CHUNK_BYTES: usize = 64 * 1024;

/// A stream that ends after `left` more bytes of `inner`, dropping `inner` (which stops a real
/// `zfs send`) as soon as the cut is reached.
struct CutStream {
    inner: Option<ByteStream>,
    left: u64,
}

impl AsyncRead for CutStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let left = self.left;
        let Some(inner) = self.inner.as_mut().filter(|_| left > 0) else {
            self.inner = None;
            return Poll::Ready(Ok(()));
        };
        let want = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(buf.remaining())
            .min(CUT_CHUNK_BYTES);
        let mut chunk = vec![0u8; want];
        let mut view = ReadBuf::new(&mut chunk);
        let polled = inner.as_mut().poll_read(cx, &mut view);
        if let Poll::Ready(Ok(())) = polled {
            let n = view.filled().len();
            buf.put_slice(view.filled());
            self.left = left.saturating_sub(n as u64);
            if self.left == 0 {
                self.inner = None;
            }
        }
        polled
    }
}

/// An endless stream of zero bytes.
struct Zeros;

impl AsyncRead for Zeros {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = buf.remaining();
        buf.put_slice(&vec![0u8; n]);
        Poll::Ready(Ok(()))
    }
}
