//! The `local` transport: passive jobs (sink, source) and active jobs (push, pull) in one
//! process, joined by listener name, as zrepl's `local` transport joins them.
//!
//! A sink registers a factory that makes a receiver endpoint for a client identity (its
//! namespace below `root_fs`); a source registers its sender endpoint. An active job connects
//! by listener name and its configured client identity. The requests then go straight to the
//! endpoint objects; the transport crate serves the same traits over the network.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::endpoint::{EndpointError, Receiver, Sender};
use crate::job::active::Connect;
use crate::name::Component;

/// Makes a sink's receiver endpoint for one client identity.
pub type SinkFactory =
    Arc<dyn Fn(&Component) -> Result<Arc<dyn Receiver>, EndpointError> + Send + Sync>;

/// What a passive job serves under a listener name.
#[derive(Clone)]
pub enum Listener {
    /// A sink: a receiver per client identity.
    Sink(SinkFactory),
    /// A source: one sender for every client.
    Source(Arc<dyn Sender>),
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sink(_) => f.write_str("Listener::Sink"),
            Self::Source(s) => f.debug_tuple("Listener::Source").field(s).finish(),
        }
    }
}

/// The registry of in-process listeners.
#[derive(Debug, Default)]
pub struct LocalHub {
    listeners: Mutex<BTreeMap<String, Listener>>,
}

impl LocalHub {
    /// Registers (or replaces) a listener.
    pub fn register(&self, name: &str, listener: Listener) {
        self.lock().insert(name.to_owned(), listener);
    }

    /// Removes a listener (its job stopped); connections made before keep their endpoints.
    pub fn unregister(&self, name: &str) {
        self.lock().remove(name);
    }

    fn get(&self, name: &str) -> Result<Listener, EndpointError> {
        self.lock()
            .get(name)
            .cloned()
            .ok_or_else(|| EndpointError::Connectivity {
                peer: format!("local listener `{name}`"),
                detail: "no sink or source job listens under that name in this daemon (is it \
                         configured, and is its `serve.listener_name` spelled the same?)"
                    .to_owned(),
                timeout: false,
            })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Listener>> {
        self.listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A receiver of sink `name` for `identity`.
    pub fn connect_sink(
        &self,
        name: &str,
        identity: &Component,
    ) -> Result<Arc<dyn Receiver>, EndpointError> {
        match self.get(name)? {
            Listener::Sink(factory) => factory(identity),
            Listener::Source(_) => Err(wrong_kind(name, "a sink", "a source")),
        }
    }

    /// The sender of source `name`.
    pub fn connect_source(&self, name: &str) -> Result<Arc<dyn Sender>, EndpointError> {
        match self.get(name)? {
            Listener::Source(sender) => Ok(sender),
            Listener::Sink(_) => Err(wrong_kind(name, "a source", "a sink")),
        }
    }
}

fn wrong_kind(name: &str, wanted: &str, found: &str) -> EndpointError {
    EndpointError::Connectivity {
        peer: format!("local listener `{name}`"),
        detail: format!("expected {wanted} job under that name, found {found}"),
        timeout: false,
    }
}

/// A push job's connection: its own sender, and a sink in this process.
#[derive(Debug, Clone)]
pub struct LocalPush {
    /// The push job's sender endpoint.
    pub sender: Arc<dyn Sender>,
    /// The hub.
    pub hub: Arc<LocalHub>,
    /// The sink's listener name.
    pub listener: String,
    /// The push job's client identity at the sink.
    pub identity: Component,
}

#[async_trait]
impl Connect for LocalPush {
    async fn connect(&self) -> Result<(Arc<dyn Sender>, Arc<dyn Receiver>), EndpointError> {
        let receiver = self.hub.connect_sink(&self.listener, &self.identity)?;
        Ok((Arc::clone(&self.sender), receiver))
    }
}

/// A pull job's connection: a source in this process, and its own receiver.
#[derive(Debug, Clone)]
pub struct LocalPull {
    /// The hub.
    pub hub: Arc<LocalHub>,
    /// The source's listener name.
    pub listener: String,
    /// The pull job's receiver endpoint.
    pub receiver: Arc<dyn Receiver>,
}

#[async_trait]
impl Connect for LocalPull {
    async fn connect(&self) -> Result<(Arc<dyn Sender>, Arc<dyn Receiver>), EndpointError> {
        let sender = self.hub.connect_source(&self.listener)?;
        Ok((sender, Arc::clone(&self.receiver)))
    }
}

/// Both ends given directly (tests, and a job whose both sides are local).
#[derive(Debug, Clone)]
pub struct Direct {
    /// The sender.
    pub sender: Arc<dyn Sender>,
    /// The receiver.
    pub receiver: Arc<dyn Receiver>,
}

#[async_trait]
impl Connect for Direct {
    async fn connect(&self) -> Result<(Arc<dyn Sender>, Arc<dyn Receiver>), EndpointError> {
        Ok((Arc::clone(&self.sender), Arc::clone(&self.receiver)))
    }
}
