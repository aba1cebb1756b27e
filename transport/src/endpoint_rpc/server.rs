//! The passive side: a [`Service`] that answers endpoint requests with a sink's receiver (made
//! for the connected client's identity) or a source's sender, and the accept loops that serve
//! it over TCP and TLS.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use zferry_core::endpoint::{Endpoint, EndpointError, Receiver, Sender};
use zferry_core::job::local::Listener;

use super::messages::{
    EndpointRequest, EndpointResponse, EndpointResult, InvalidMessage, Json, RemoteError,
};
use crate::identity::ClientIdentity;
use crate::tcp::{AcceptError, TcpServer};
use crate::tls::TlsServer;
use crate::{ByteReader, Config, Reply, Service, TransportError, serve};

/// The most connections a server serves at once; the accept loop waits for one to end before
/// it accepts more. A daemon has a handful of active peers, each with one connection per
/// invocation.
pub const CONNECTIONS_MAX: usize = 256;

/// How long the accept loop pauses after the listener failed (e.g. out of file descriptors).
pub const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What one connection is served with.
#[derive(Clone)]
enum Target {
    Sender(Arc<dyn Sender>),
    Receiver(Arc<dyn Receiver>),
    /// The sink could not make a receiver for this client: every request gets the error.
    Unavailable(EndpointError),
}

/// Answers endpoint requests on one connection; see the module doc.
#[derive(Clone)]
pub struct EndpointService {
    target: Target,
    gate: Option<Arc<Gate>>,
}

/// The receives in flight of each client identity of a sink, across its connections.
///
/// When a connection dies mid-receive, the client may notice first (its deadline expired a
/// heartbeat earlier), reconnect and list its filesystems before this side's receive has
/// noticed and saved its resumable state: the listing would show no resume token, and the next
/// step would discard the partial receive instead of resuming it. So a client's new
/// connection waits, before its first request, until the receives of its earlier connections
/// have ended (at most [`DRAIN_TIMEOUT_PEER_TIMEOUTS`] times the peer timeout: a dead
/// connection's receive fails within one).
#[derive(Debug, Default)]
pub struct ReceivesInFlight {
    by_identity: std::sync::Mutex<BTreeMap<ClientIdentity, Arc<watch::Sender<usize>>>>,
}

/// How many peer timeouts a new connection waits at most for the receives of the client's
/// earlier connections to end.
pub const DRAIN_TIMEOUT_PEER_TIMEOUTS: u32 = 3;

impl ReceivesInFlight {
    fn counter(&self, identity: &ClientIdentity) -> Arc<watch::Sender<usize>> {
        let mut map = self
            .by_identity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded by the configured identities (`clients`, `client_cns`).
        Arc::clone(
            map.entry(identity.clone())
                .or_insert_with(|| Arc::new(watch::Sender::new(0))),
        )
    }
}

/// One connection's view of its client's receives in flight.
struct Gate {
    in_flight: Arc<watch::Sender<usize>>,
    drained: tokio::sync::OnceCell<()>,
    timeout: Duration,
}

impl Gate {
    /// Waits once per connection, before its first request, for the earlier receives to end.
    async fn drained(&self) {
        self.drained
            .get_or_init(|| async {
                let mut counter = self.in_flight.subscribe();
                let _ = tokio::time::timeout(self.timeout, counter.wait_for(|n| *n == 0)).await;
            })
            .await;
    }

    fn enter(&self) -> InFlightGuard {
        self.in_flight.send_modify(|n| *n += 1);
        InFlightGuard {
            in_flight: Arc::clone(&self.in_flight),
        }
    }
}

struct InFlightGuard {
    in_flight: Arc<watch::Sender<usize>>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.in_flight.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl fmt::Debug for EndpointService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.target {
            Target::Sender(s) => format!("sender {s:?}"),
            Target::Receiver(r) => format!("receiver {r:?}"),
            Target::Unavailable(e) => format!("unavailable: {e}"),
        };
        f.debug_struct("EndpointService")
            .field("target", &what)
            .finish()
    }
}

impl EndpointService {
    /// Serves a sender (a source job).
    pub fn sender(sender: Arc<dyn Sender>) -> Self {
        Self {
            target: Target::Sender(sender),
            gate: None,
        }
    }

    /// Serves a receiver (a sink job's receiver for one client).
    pub fn receiver(receiver: Arc<dyn Receiver>) -> Self {
        Self {
            target: Target::Receiver(receiver),
            gate: None,
        }
    }

    /// What `listener` serves to the client named `identity`: a sink makes a receiver confined
    /// to `root_fs/<identity>`; a source serves its sender to every client. If the sink cannot
    /// make the receiver (the identity makes an invalid dataset name), every request is
    /// answered with that error, so the client's user reads why.
    pub fn for_client(listener: &Listener, identity: &ClientIdentity) -> Self {
        match listener {
            Listener::Sink(factory) => match factory(identity) {
                Ok(receiver) => Self::receiver(receiver),
                Err(e) => Self {
                    target: Target::Unavailable(e),
                    gate: None,
                },
            },
            Listener::Source(sender) => Self::sender(Arc::clone(sender)),
        }
    }

    /// [`Self::for_client`] for one connection of a server: a sink's connection first waits
    /// for the receives of the client's earlier connections (see [`ReceivesInFlight`]).
    pub fn for_connection(
        listener: &Listener,
        identity: &ClientIdentity,
        receives: &ReceivesInFlight,
        config: &Config,
    ) -> Self {
        let mut service = Self::for_client(listener, identity);
        if let Target::Receiver(_) = service.target {
            service.gate = Some(Arc::new(Gate {
                in_flight: receives.counter(identity),
                drained: tokio::sync::OnceCell::new(),
                timeout: config.peer_timeout * DRAIN_TIMEOUT_PEER_TIMEOUTS,
            }));
        }
        service
    }

    async fn dispatch(
        &self,
        request: EndpointRequest,
        upload: Option<ByteReader>,
    ) -> Result<Reply<EndpointResult>, EndpointError> {
        let method = request.method();
        if let Some(gate) = &self.gate {
            gate.drained().await;
        }
        let answer = |response: EndpointResponse| Ok(Reply::new(Ok(response)));
        match request {
            EndpointRequest::Ping => {
                self.endpoint()?.ping().await?;
                answer(EndpointResponse::Pong)
            }
            EndpointRequest::ListFilesystems => answer(EndpointResponse::Filesystems(
                self.endpoint()?.list_filesystems().await?,
            )),
            EndpointRequest::ListVersions { filesystem } => answer(EndpointResponse::Versions(
                self.endpoint()?.list_versions(&filesystem).await?,
            )),
            EndpointRequest::DestroySnapshots {
                filesystem,
                snapshots,
            } => answer(EndpointResponse::Destroyed(Json(
                self.endpoint()?
                    .destroy_snapshots(&filesystem, &snapshots)
                    .await?,
            ))),
            EndpointRequest::Prune(wire) => {
                let request = wire.try_into().map_err(invalid)?;
                answer(EndpointResponse::Pruned(Json(
                    self.endpoint()?.prune(&request).await?,
                )))
            }
            EndpointRequest::SendDry(request) => answer(EndpointResponse::SendDry(
                self.serving_sender(method)?.send_dry(&request).await?,
            )),
            EndpointRequest::Send(request) => {
                let (response, stream) = self.serving_sender(method)?.send(&request).await?;
                Ok(Reply::with_download(
                    Ok(EndpointResponse::Sent(response)),
                    stream,
                ))
            }
            EndpointRequest::SendCompleted(request) => {
                self.serving_sender(method)?
                    .send_completed(&request)
                    .await?;
                answer(EndpointResponse::SendCompleted)
            }
            EndpointRequest::ReplicationCursors { filesystems } => {
                answer(EndpointResponse::Cursors(
                    self.serving_sender(method)?
                        .replication_cursors(&filesystems)
                        .await?,
                ))
            }
            EndpointRequest::Receive(request) => {
                let receiver = self.serving_receiver(method)?;
                let _in_flight = self.gate.as_ref().map(|g| g.enter());
                let upload = upload.ok_or_else(|| {
                    invalid(InvalidMessage {
                        what: "receive request",
                        detail: "it came without a stream".to_owned(),
                    })
                })?;
                answer(EndpointResponse::Received(
                    receiver.receive(&request, Box::pin(upload)).await?,
                ))
            }
        }
    }

    fn endpoint(&self) -> Result<&dyn Endpoint, EndpointError> {
        match &self.target {
            Target::Sender(s) => Ok(s.as_ref()),
            Target::Receiver(r) => Ok(r.as_ref()),
            Target::Unavailable(e) => Err(e.clone()),
        }
    }

    fn serving_sender(&self, method: &str) -> Result<&dyn Sender, EndpointError> {
        match &self.target {
            Target::Sender(s) => Ok(s.as_ref()),
            Target::Receiver(_) => Err(wrong_kind(method, "a sink", "a source")),
            Target::Unavailable(e) => Err(e.clone()),
        }
    }

    fn serving_receiver(&self, method: &str) -> Result<&dyn Receiver, EndpointError> {
        match &self.target {
            Target::Receiver(r) => Ok(r.as_ref()),
            Target::Sender(_) => Err(wrong_kind(method, "a source", "a sink")),
            Target::Unavailable(e) => Err(e.clone()),
        }
    }
}

impl Service for EndpointService {
    type Request = EndpointRequest;
    type Response = EndpointResult;

    async fn call(
        &self,
        request: EndpointRequest,
        upload: Option<ByteReader>,
    ) -> Reply<EndpointResult> {
        match self.dispatch(request, upload).await {
            Ok(reply) => reply,
            Err(e) => Reply::new(Err(RemoteError::from(&e))),
        }
    }
}

fn invalid(e: InvalidMessage) -> EndpointError {
    EndpointError::Config {
        side: "passive side".to_owned(),
        detail: e.to_string(),
    }
}

fn wrong_kind(method: &str, this: &str, wanted: &str) -> EndpointError {
    EndpointError::Config {
        side: "passive side".to_owned(),
        detail: format!(
            "`{method}` was asked of {this} job, which does not serve it; point the active \
             job's `connect` at {wanted} job"
        ),
    }
}

/// Something the accept loop wants its owner to know (to log it); serving goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A client's connection ended with an error (its replication sees it too).
    ConnectionFailed {
        /// The client, if it got as far as being named.
        identity: Option<ClientIdentity>,
        /// Why.
        error: TransportError,
    },
    /// A client was refused (no `clients` entry, or its TLS certificate was refused).
    Refused {
        /// Why.
        reason: String,
    },
    /// The listener failed; the loop pauses [`ACCEPT_RETRY_PAUSE`] and accepts again.
    ListenerFailed {
        /// Why.
        error: TransportError,
    },
}

/// Where the accept loops report [`ServerEvent`]s.
pub type ServerEvents = Arc<dyn Fn(ServerEvent) + Send + Sync>;

/// Serves `listener` to every client `server` accepts, until `shutdown` becomes `true`; then
/// the connections are closed (a client's invocation sees a connectivity error and resumes
/// later).
pub async fn serve_tcp(
    server: TcpServer,
    listener: Listener,
    config: Config,
    mut shutdown: watch::Receiver<bool>,
    events: ServerEvents,
) {
    let mut connections = JoinSet::new();
    let receives = ReceivesInFlight::default();
    loop {
        reap(&mut connections, &events).await;
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = server.accept() => accepted,
        };
        match accepted {
            Ok((stream, identity)) => {
                let service =
                    EndpointService::for_connection(&listener, &identity, &receives, &config);
                connections.spawn(async move {
                    serve(stream, Arc::new(service), config)
                        .await
                        .map_err(|error| ServerEvent::ConnectionFailed {
                            identity: Some(identity),
                            error,
                        })
                });
            }
            Err(AcceptError::Refused(e)) => events(ServerEvent::Refused {
                reason: e.to_string(),
            }),
            Err(AcceptError::Listener(error)) => {
                events(ServerEvent::ListenerFailed { error });
                tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
            }
        }
    }
    connections.shutdown().await;
}

/// Serves `listener` over TLS to every client whose certificate `tls` accepts (its CN is the
/// identity), until `shutdown` becomes `true`. The TLS handshake runs in the connection's own
/// task, so a slow client does not hold up the others.
pub async fn serve_tls(
    tcp: TcpListener,
    tls: TlsServer,
    listener: Listener,
    config: Config,
    mut shutdown: watch::Receiver<bool>,
    events: ServerEvents,
) {
    let mut connections = JoinSet::new();
    let receives = Arc::new(ReceivesInFlight::default());
    loop {
        reap(&mut connections, &events).await;
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = tcp.accept() => accepted,
        };
        let stream = match accepted.and_then(|(stream, _)| {
            // Latency of small requests matters more than packet count.
            stream.set_nodelay(true)?;
            Ok(stream)
        }) {
            Ok(stream) => stream,
            Err(e) => {
                events(ServerEvent::ListenerFailed {
                    error: TransportError::io("accept", &e),
                });
                tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                continue;
            }
        };
        let tls = tls.clone();
        let listener = listener.clone();
        let receives = Arc::clone(&receives);
        connections.spawn(async move {
            let (stream, identity) =
                tls.accept(stream).await.map_err(|e| ServerEvent::Refused {
                    reason: e.to_string(),
                })?;
            let service = EndpointService::for_connection(&listener, &identity, &receives, &config);
            serve(stream, Arc::new(service), config)
                .await
                .map_err(|error| ServerEvent::ConnectionFailed {
                    identity: Some(identity),
                    error,
                })
        });
    }
    connections.shutdown().await;
}

/// Collects finished connections, and waits for one to finish while [`CONNECTIONS_MAX`] run.
async fn reap(connections: &mut JoinSet<Result<(), ServerEvent>>, events: &ServerEvents) {
    let report = |joined: Result<Result<(), ServerEvent>, tokio::task::JoinError>| {
        if let Ok(Err(event)) = joined {
            events(event);
        }
    };
    while let Some(joined) = connections.try_join_next() {
        report(joined);
    }
    while connections.len() >= CONNECTIONS_MAX {
        match connections.join_next().await {
            Some(joined) => report(joined),
            None => break,
        }
    }
}
