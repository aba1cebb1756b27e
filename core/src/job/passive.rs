//! The passive jobs: `sink` serves a receiver per client below its `root_fs`, `source` serves
//! its sender (and runs its own snapshotter, which notifies nobody, as in zrepl).

use std::sync::Arc;

use crate::backend::ZfsBackend;
use crate::endpoint::receiver::{ReceiverConfig, ReceiverEndpoint};
use crate::endpoint::sender::SenderEndpoint;
use crate::endpoint::{EndpointError, Receiver, Sender};
use crate::engine::snapper::Snapshotter;
use crate::job::local::Listener;
use crate::name::Component;

/// A sink: what it serves to each connecting client.
#[derive(Debug, Clone)]
pub struct SinkJob {
    backend: Arc<dyn ZfsBackend>,
    /// The receiver configuration; `client_identity` is replaced by each client's identity.
    template: ReceiverConfig,
}

impl SinkJob {
    /// A sink receiving below `template.root_fs`.
    pub fn new(backend: Arc<dyn ZfsBackend>, template: ReceiverConfig) -> Self {
        Self { backend, template }
    }

    /// The receiver endpoint for one client identity (`root_fs/<identity>`).
    pub fn receiver_for(&self, identity: &Component) -> Result<Arc<dyn Receiver>, EndpointError> {
        let mut config = self.template.clone();
        config.client_identity = Some(identity.clone());
        let endpoint = ReceiverEndpoint::new(Arc::clone(&self.backend), config).map_err(|e| {
            EndpointError::Config {
                side: "receiver".to_owned(),
                detail: e.to_string(),
            }
        })?;
        Ok(Arc::new(endpoint))
    }

    /// The listener to register in a [`crate::job::local::LocalHub`].
    pub fn listener(self: &Arc<Self>) -> Listener {
        let sink = Arc::clone(self);
        Listener::Sink(Arc::new(move |identity: &Component| {
            sink.receiver_for(identity)
        }))
    }
}

/// A source: one sender endpoint for every client, and its own snapshotter.
#[derive(Debug)]
pub struct SourceJob {
    sender: Arc<SenderEndpoint>,
    snapshotter: Option<Snapshotter>,
}

impl SourceJob {
    /// A source serving `sender`; `snapshotter` (built without a notify channel: a source's
    /// rounds wake nobody, as in zrepl) runs in [`SourceJob::run`].
    pub fn new(sender: Arc<SenderEndpoint>, snapshotter: Option<Snapshotter>) -> Self {
        Self {
            sender,
            snapshotter,
        }
    }

    /// Runs the snapshotter (if any) until `shutdown`; the sender is served through the
    /// listener meanwhile.
    pub async fn run(self, shutdown: tokio::sync::watch::Receiver<bool>) {
        if let Some(snapshotter) = self.snapshotter {
            snapshotter.run(shutdown).await;
        }
    }

    /// The listener to register in a [`crate::job::local::LocalHub`].
    pub fn listener(&self) -> Listener {
        let sender: Arc<dyn Sender> = self.sender.clone();
        Listener::Source(sender)
    }
}
