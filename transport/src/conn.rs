//! One connection: the handshake, a reader task and a writer task, requests in flight and the
//! streams that travel alongside them.
//!
//! # Architecture invariants
//!
//! - Every read has a deadline ([`Config::peer_timeout`] without any byte from the peer) and
//!   every write too; the writer sends a heartbeat whenever it was idle for
//!   [`Config::heartbeat_interval`], so a live peer is never silent for long.
//! - The reader task never waits on the application: stream data goes into per-stream queues
//!   whose size the receiving side bounds with credit ([`Config::stream_window_bytes`]). A
//!   slow `zfs receive` stalls its own stream, never the connection.
//! - The writer sends control frames (requests, responses, credit, resets) before stream data,
//!   and data in chunks of at most [`DATA_CHUNK_MAX_BYTES`]: a large send cannot starve a
//!   small request.
//! - When the connection fails, every request in flight and every stream fails with the same
//!   [`TransportError`], on both sides.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::codec::FramedRead;
use zferry_core::backend::ByteStream;

use crate::error::{Side, TransportError};
use crate::wire::{
    DATA_CHUNK_MAX_BYTES, Direction, HELLO_LEN_BYTES, Header, MESSAGE_LEN_MAX_BYTES,
    bounded_reason, check_hello, codec, decode_frame, encode_head, hello,
};

/// The most requests a client has in flight on one connection (including those whose stream
/// is still running); further calls wait. The server allows twice as many, because a
/// finished request leaves its books a moment after the client may reuse its slot.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 256;

/// The most stream credit a peer may grant beyond what was sent; more is a protocol violation
/// (and would overflow the credit counter).
pub const CREDIT_OUTSTANDING_MAX_BYTES: usize = 1 << 30;

/// Frames of stream data queued for the writer, across all streams of a connection.
pub const DATA_QUEUE_FRAMES: usize = 4;

/// The writer's buffer: small frames (credit, heartbeats, requests) are gathered in it.
pub const WRITE_BUFFER_BYTES: usize = 64 << 10;

/// The reader's initial buffer; it grows to the frame being read, at most `FRAME_LEN_MAX`.
pub const READ_BUFFER_BYTES: usize = 256 << 10;

/// Chunk buffers kept for reuse per connection: a sent chunk's buffer goes back to the pumps,
/// so a long stream does not allocate (and fault in fresh pages) for every chunk.
pub const CHUNK_POOL_LEN_MAX: usize = DATA_QUEUE_FRAMES + 4;

/// The room the reader wants before reading a frame: a whole data frame with its header.
const READ_ROOM_BYTES: usize = DATA_CHUNK_MAX_BYTES + crate::wire::HEADER_LEN_MAX_BYTES;

/// How long the writer tries to tell the peer why it closes, before giving up.
pub const CLOSE_NOTICE_TIMEOUT: Duration = Duration::from_secs(1);

/// Timing and buffering of a connection. Both sides may differ; the defaults are zrepl's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Send a heartbeat when nothing was written for this long (zrepl: 5 s).
    pub heartbeat_interval: Duration,
    /// Fail the connection when nothing arrived, or a write made no progress, for this long
    /// (zrepl: 10 s). Must exceed the peer's heartbeat interval.
    pub peer_timeout: Duration,
    /// The deadline for the version handshake (zrepl: 10 s).
    pub handshake_timeout: Duration,
    /// How many bytes of one incoming stream may be buffered before the application reads
    /// them: the flow-control window this side grants. At least one data chunk.
    pub stream_window_bytes: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(5),
            peer_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            stream_window_bytes: 8 << 20,
        }
    }
}

impl Config {
    fn window_bytes(&self) -> u32 {
        let min = u32::try_from(DATA_CHUNK_MAX_BYTES).unwrap_or(u32::MAX);
        let max = u32::try_from(CREDIT_OUTSTANDING_MAX_BYTES / 2).unwrap_or(u32::MAX);
        self.stream_window_bytes.clamp(min, max)
    }
}

/// What a server answers: the response, and optionally a stream sent after it (the client
/// receives it only if it asked with [`Client::call_download`]).
pub struct Reply<R> {
    /// The response.
    pub response: R,
    /// A stream to send after the response.
    pub download: Option<ByteStream>,
}

impl<R> Reply<R> {
    /// A response without a stream.
    pub fn new(response: R) -> Self {
        Self {
            response,
            download: None,
        }
    }

    /// A response followed by a stream.
    pub fn with_download(response: R, download: ByteStream) -> Self {
        Self {
            response,
            download: Some(download),
        }
    }
}

impl<R: fmt::Debug> fmt::Debug for Reply<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("response", &self.response)
            .field("download", &self.download.is_some())
            .finish()
    }
}

/// What a server does with requests. One instance serves one connection (the caller of
/// [`serve`] knows the client's identity and builds the service for it).
pub trait Service: Send + Sync + 'static {
    /// The requests it accepts.
    type Request: DeserializeOwned + Send + 'static;
    /// The responses it gives; errors the client should see belong in here (e.g. a `Result`).
    type Response: Serialize + Send + 'static;

    /// Handles one request. `upload` is the stream the client sent with it, if any: read it to
    /// the end, or drop it to tell the client to stop sending.
    fn call(
        &self,
        request: Self::Request,
        upload: Option<ByteReader>,
    ) -> impl Future<Output = Reply<Self::Response>> + Send;
}

/// The client end of a connection: sends requests, concurrently, from any number of clones.
/// Dropping the last clone (and every stream it returned) closes the connection.
pub struct Client<Req, Resp> {
    conn: Arc<Handle>,
    types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Clone for Client<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            conn: self.conn.clone(),
            types: PhantomData,
        }
    }
}

impl<Req, Resp> fmt::Debug for Client<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("closed", &self.conn.shared.closed())
            .finish()
    }
}

impl<Req, Resp> Client<Req, Resp>
where
    Req: Serialize,
    Resp: DeserializeOwned,
{
    /// Runs the handshake on `stream` and starts the connection's tasks.
    pub async fn connect<S>(mut stream: S, config: Config) -> Result<Self, TransportError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        handshake(&mut stream, config.handshake_timeout).await?;
        let shared = Shared::start(stream, config, Role::Client, |_| {
            Err(TransportError::Protocol {
                detail: "the server sent a request".to_owned(),
            })
        });
        Ok(Self {
            conn: Arc::new(Handle { shared }),
            types: PhantomData,
        })
    }

    /// Sends a request and waits for its response.
    pub async fn call(&self, request: &Req) -> Result<Resp, TransportError> {
        let (call, _permit) = self.start(request, false, false).await?;
        let (body, _) = call.answer().await?;
        decode_body(&body)
    }

    /// Sends a request with a stream (e.g. `zfs receive` data) and waits for the response. The
    /// server may answer before the stream ended (it stopped reading): the stream is then cut
    /// and the response returned. If `upload` fails, the server is told and the error
    /// returned as [`TransportError::StreamReset`] by [`Side::Local`].
    pub async fn call_upload<U>(&self, request: &Req, mut upload: U) -> Result<Resp, TransportError>
    where
        U: AsyncRead + Unpin + Send,
    {
        let (mut call, _permit) = self.start(request, true, false).await?;
        let Some(outbound) = call.outbound.clone() else {
            return Err(self.conn.shared.closed_error());
        };
        let answer = {
            let sending = pump(
                &self.conn.shared,
                call.id,
                Direction::Upload,
                &outbound,
                &mut upload,
            );
            tokio::pin!(sending);
            let rx = &mut call.rx;
            tokio::select! {
                biased;
                answer = rx => Some(answer),
                sent = &mut sending => match sent {
                    Ok(_) => None,
                    Err(e @ TransportError::StreamReset { by: Side::Local, .. }) => return Err(e),
                    // The server stopped reading; its response says why.
                    Err(_) => None,
                },
            }
        };
        let answer = match answer {
            Some(answer) => answer,
            None => (&mut call.rx).await,
        };
        let (body, _) = Call::flatten(answer)?;
        decode_body(&body)
    }

    /// Sends a request, accepting a stream with the response (e.g. `zfs send` data). The
    /// stream is `None` if the server sent none.
    pub async fn call_download(
        &self,
        request: &Req,
    ) -> Result<(Resp, Option<ByteReader>), TransportError> {
        let (mut call, permit) = self.start(request, false, true).await?;
        let (body, download) = Call::flatten((&mut call.rx).await)?;
        let response = decode_body(&body)?;
        if !download {
            // No stream follows: forget its place quietly (no reset to send).
            self.conn.shared.lock().inbound.remove(&call.id);
            call.inbound = None;
            return Ok((response, None));
        }
        let reader = call.take_reader(self.conn.clone(), permit);
        Ok((response, reader))
    }

    /// Why the connection is closed, if it is.
    pub fn closed(&self) -> Option<TransportError> {
        self.conn.shared.closed()
    }

    async fn start(
        &self,
        request: &Req,
        upload: bool,
        download: bool,
    ) -> Result<(Call, OwnedSemaphorePermit), TransportError> {
        let shared = &self.conn.shared;
        let body = encode_body(request)?;
        let permit = shared
            .call_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| shared.closed_error())?;
        let window = shared.config.window_bytes();
        let (tx, rx) = oneshot::channel();
        let mut call = Call {
            shared: shared.clone(),
            id: 0,
            rx,
            outbound: None,
            inbound: None,
        };
        {
            let mut state = shared.lock();
            if let Some(e) = &state.closed {
                return Err(e.clone());
            }
            state.next_id += 1;
            call.id = state.next_id;
            state.calls.insert(call.id, tx);
            if upload {
                let outbound = Arc::new(Outbound::new());
                state.outbound.insert(call.id, outbound.clone());
                call.outbound = Some(outbound);
            }
            if download {
                let (tx, rx) = mpsc::unbounded_channel();
                state.inbound.insert(
                    call.id,
                    Inbound {
                        tx,
                        credit_left: u64::from(window),
                    },
                );
                call.inbound = Some(rx);
            }
        }
        let id = call.id;
        shared.send_control(
            Header::Request {
                id,
                upload,
                download,
            },
            body,
        );
        if download {
            shared.send_control(
                Header::Credit {
                    id,
                    dir: Direction::Download,
                    bytes: window,
                },
                Bytes::new(),
            );
        }
        Ok((call, permit))
    }
}

/// Serves one connection: runs the handshake, then hands each request to `service`, each in
/// its own task, until the client closes the connection (`Ok`) or it fails (`Err`).
pub async fn serve<S, Svc>(
    mut stream: S,
    service: Arc<Svc>,
    config: Config,
) -> Result<(), TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: Service,
{
    handshake(&mut stream, config.handshake_timeout).await?;
    let (shared, tasks) = Shared::start_with_tasks(stream, config, Role::Server, move |incoming| {
        spawn_handler(service.clone(), incoming)
    });
    let (reader, writer) = tasks;
    // If this future is dropped (the daemon stops serving), the connection closes with it.
    let _closer = Handle {
        shared: shared.clone(),
    };
    // A task that panicked is a bug; it shows as a closed connection.
    let _ = reader.await;
    let _ = writer.await;
    match shared.closed() {
        None | Some(TransportError::PeerClosed { .. }) => Ok(()),
        Some(e) => Err(e),
    }
}

/// The byte stream that arrives alongside a request or response. Reading it grants the peer
/// more credit; dropping it before the end tells the peer to stop sending. Errors carry a
/// [`TransportError`] ([`TransportError::from_io`]).
pub struct ByteReader {
    shared: Arc<Shared>,
    id: u64,
    dir: Direction,
    rx: mpsc::UnboundedReceiver<Result<Bytes, TransportError>>,
    current: Bytes,
    consumed_ungranted: u64,
    finished: bool,
    _handle: Option<Arc<Handle>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl fmt::Debug for ByteReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteReader")
            .field("id", &self.id)
            .field("dir", &self.dir)
            .field("finished", &self.finished)
            .finish()
    }
}

impl AsyncRead for ByteReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.current.is_empty() {
                let n = this.current.len().min(buf.remaining());
                if n == this.current.len() {
                    let chunk = std::mem::take(&mut this.current);
                    buf.put_slice(&chunk);
                    this.shared.recycle_read(chunk);
                } else {
                    buf.put_slice(&this.current.split_to(n));
                }
                this.consumed(n);
                return Poll::Ready(Ok(()));
            }
            if this.finished {
                return Poll::Ready(Ok(()));
            }
            match ready!(this.rx.poll_recv(cx)) {
                Some(Ok(chunk)) => this.current = chunk,
                Some(Err(e)) => {
                    this.finished = true;
                    return Poll::Ready(Err(e.into_io()));
                }
                None => this.finished = true,
            }
        }
    }
}

impl ByteReader {
    /// The next chunk of the stream as it arrived, without copying; `None` at its end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, TransportError>> {
        if self.current.is_empty() && !self.finished {
            match self.rx.recv().await {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => {
                    self.finished = true;
                    return Some(Err(e));
                }
                None => self.finished = true,
            }
        }
        if self.current.is_empty() {
            return None;
        }
        let chunk = std::mem::take(&mut self.current);
        self.consumed(chunk.len());
        Some(Ok(chunk))
    }

    /// Writes the rest of the stream into `w` (e.g. `zfs receive`'s stdin) without an
    /// intermediate buffer; returns the bytes written. A broken stream is an error that
    /// carries a [`TransportError`].
    pub async fn copy_to<W>(&mut self, w: &mut W) -> io::Result<u64>
    where
        W: AsyncWrite + Unpin,
    {
        let mut n_total = 0u64;
        while let Some(chunk) = self.next_chunk().await {
            let chunk = chunk.map_err(TransportError::into_io)?;
            w.write_all(&chunk).await?;
            n_total += chunk.len() as u64;
            self.shared.recycle_read(chunk);
        }
        Ok(n_total)
    }

    fn consumed(&mut self, n: usize) {
        self.consumed_ungranted += n as u64;
        let threshold = u64::from(self.shared.config.window_bytes() / 4);
        if self.consumed_ungranted >= threshold {
            let bytes = u32::try_from(self.consumed_ungranted).unwrap_or(u32::MAX);
            self.consumed_ungranted -= u64::from(bytes);
            self.shared.grant(self.id, self.dir, bytes);
        }
    }
}

impl Drop for ByteReader {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let removed = self.shared.lock().inbound.remove(&self.id).is_some();
        if removed {
            self.shared.send_control(
                Header::Reset {
                    id: self.id,
                    dir: self.dir,
                    reason: "the reader stopped reading before the end of the stream".to_owned(),
                },
                Bytes::new(),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Internals.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Client,
    Server,
}

impl Role {
    fn inbound_dir(self) -> Direction {
        match self {
            Self::Client => Direction::Download,
            Self::Server => Direction::Upload,
        }
    }
}

/// Closes the connection (orderly) when the last client clone and stream are gone.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close(TransportError::LocallyClosed);
    }
}

struct Outgoing {
    header: Header,
    payload: Bytes,
}

struct Inbound {
    tx: mpsc::UnboundedSender<Result<Bytes, TransportError>>,
    /// Bytes the peer may still send: granted minus received.
    credit_left: u64,
}

struct Outbound {
    credit: Semaphore,
    reset: Mutex<Option<TransportError>>,
}

impl Outbound {
    fn new() -> Self {
        Self {
            credit: Semaphore::new(0),
            reset: Mutex::new(None),
        }
    }

    fn reset(&self, e: TransportError) {
        let mut reset = self.reset.lock().unwrap_or_else(PoisonError::into_inner);
        reset.get_or_insert(e);
        self.credit.close();
    }

    fn reset_error(&self) -> Option<TransportError> {
        self.reset
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

type Answer = Result<(Bytes, bool), TransportError>;

struct State {
    closed: Option<TransportError>,
    calls: BTreeMap<u64, oneshot::Sender<Answer>>,
    inbound: BTreeMap<u64, Inbound>,
    outbound: BTreeMap<u64, Arc<Outbound>>,
    handlers: BTreeSet<u64>,
    next_id: u64,
}

struct Shared {
    state: Mutex<State>,
    control_tx: mpsc::UnboundedSender<Outgoing>,
    data_tx: mpsc::Sender<Outgoing>,
    shutdown_tx: watch::Sender<bool>,
    call_slots: Arc<Semaphore>,
    chunk_pool: Mutex<Vec<BytesMut>>,
    read_pool: Mutex<Vec<BytesMut>>,
    config: Config,
    role: Role,
}

/// A request that arrived at a server.
struct Incoming {
    shared: Arc<Shared>,
    id: u64,
    body: Bytes,
    upload: Option<ByteReader>,
    download: bool,
}

impl Shared {
    fn start<S, F>(stream: S, config: Config, role: Role, on_request: F) -> Arc<Self>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: FnMut(Incoming) -> Result<(), TransportError> + Send + 'static,
    {
        Self::start_with_tasks(stream, config, role, on_request).0
    }

    #[allow(clippy::type_complexity)]
    fn start_with_tasks<S, F>(
        stream: S,
        config: Config,
        role: Role,
        on_request: F,
    ) -> (
        Arc<Self>,
        (tokio::task::JoinHandle<()>, tokio::task::JoinHandle<()>),
    )
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: FnMut(Incoming) -> Result<(), TransportError> + Send + 'static,
    {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (data_tx, data_rx) = mpsc::channel(DATA_QUEUE_FRAMES);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Self {
            state: Mutex::new(State {
                closed: None,
                calls: BTreeMap::new(),
                inbound: BTreeMap::new(),
                outbound: BTreeMap::new(),
                handlers: BTreeSet::new(),
                next_id: 0,
            }),
            control_tx,
            data_tx,
            shutdown_tx,
            call_slots: Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX)),
            chunk_pool: Mutex::new(Vec::new()),
            read_pool: Mutex::new(Vec::new()),
            config,
            role,
        });
        let (r, w) = tokio::io::split(stream);
        let reader = tokio::spawn(read_loop(
            r,
            shared.clone(),
            shutdown_rx.clone(),
            on_request,
        ));
        let writer = tokio::spawn(write_loop(
            w,
            shared.clone(),
            control_rx,
            data_rx,
            shutdown_rx,
        ));
        (shared, (reader, writer))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn closed(&self) -> Option<TransportError> {
        self.lock().closed.clone()
    }

    fn chunk_buffer(&self) -> BytesMut {
        let pooled = self
            .chunk_pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        pooled.unwrap_or_else(|| BytesMut::with_capacity(DATA_CHUNK_MAX_BYTES))
    }

    /// A buffer with room for a whole data frame, from chunks the application consumed.
    fn read_buffer(&self) -> Option<BytesMut> {
        let mut buf = self
            .read_pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()?;
        buf.clear();
        // Reclaims the space before the chunk's old position; allocates only if too small.
        buf.reserve(READ_ROOM_BYTES);
        Some(buf)
    }

    /// Takes back a consumed chunk's buffer if nothing else holds it.
    fn recycle_read(&self, chunk: Bytes) {
        if let Ok(buf) = chunk.try_into_mut() {
            let mut pool = self
                .read_pool
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if pool.len() < CHUNK_POOL_LEN_MAX {
                pool.push(buf);
            }
        }
    }

    /// Takes back a sent chunk's buffer if nothing else holds it.
    fn recycle(&self, payload: Bytes) {
        if let Ok(mut buf) = payload.try_into_mut() {
            buf.clear();
            if buf.capacity() >= DATA_CHUNK_MAX_BYTES {
                let mut pool = self
                    .chunk_pool
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if pool.len() < CHUNK_POOL_LEN_MAX {
                    pool.push(buf);
                }
            }
        }
    }

    fn closed_error(&self) -> TransportError {
        self.closed().unwrap_or(TransportError::LocallyClosed)
    }

    fn send_control(&self, header: Header, payload: Bytes) {
        // The writer only goes away when the connection is closed; then nothing needs sending.
        let _ = self.control_tx.send(Outgoing { header, payload });
    }

    fn grant(&self, id: u64, dir: Direction, bytes: u32) {
        {
            let mut state = self.lock();
            let Some(inbound) = state.inbound.get_mut(&id) else {
                return;
            };
            inbound.credit_left += u64::from(bytes);
        }
        self.send_control(Header::Credit { id, dir, bytes }, Bytes::new());
    }

    /// Closes the connection with `e`: fails everything in flight with it and stops both
    /// tasks. The first error wins.
    fn close(&self, e: TransportError) {
        let (calls, inbound, outbound) = {
            let mut state = self.lock();
            if state.closed.is_some() {
                return;
            }
            state.closed = Some(e.clone());
            (
                std::mem::take(&mut state.calls),
                std::mem::take(&mut state.inbound),
                std::mem::take(&mut state.outbound),
            )
        };
        for (_, tx) in calls {
            let _ = tx.send(Err(e.clone()));
        }
        for (_, inbound) in inbound {
            let _ = inbound.tx.send(Err(e.clone()));
        }
        for (_, outbound) in outbound {
            outbound.reset(e.clone());
        }
        self.call_slots.close();
        self.shutdown_tx.send_replace(true);
    }

    /// Handles one decoded frame from the peer.
    fn dispatch(
        self: &Arc<Self>,
        header: Header,
        payload: Bytes,
    ) -> Result<Option<Incoming>, TransportError> {
        let inbound_dir = self.role.inbound_dir();
        let violation = |detail: String| Err(TransportError::Protocol { detail });
        match header {
            Header::Heartbeat => {}
            Header::Close { reason } => {
                self.close(match reason {
                    None => TransportError::PeerClosed {
                        reason: "orderly shutdown".to_owned(),
                    },
                    Some(reason) => TransportError::PeerClosed { reason },
                });
            }
            Header::Request {
                id,
                upload,
                download,
            } => {
                if self.role != Role::Server {
                    return violation(format!("request {id} sent to a client"));
                }
                let window = self.config.window_bytes();
                let reader = {
                    let mut state = self.lock();
                    if state.handlers.len() >= 2 * REQUESTS_IN_FLIGHT_MAX {
                        return violation(format!(
                            "more than {} requests in flight",
                            2 * REQUESTS_IN_FLIGHT_MAX
                        ));
                    }
                    if !state.handlers.insert(id) {
                        return violation(format!("request ID {id} is already in use"));
                    }
                    if download {
                        state.outbound.insert(id, Arc::new(Outbound::new()));
                    }
                    upload.then(|| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        state.inbound.insert(
                            id,
                            Inbound {
                                tx,
                                credit_left: u64::from(window),
                            },
                        );
                        ByteReader {
                            shared: self.clone(),
                            id,
                            dir: Direction::Upload,
                            rx,
                            current: Bytes::new(),
                            consumed_ungranted: 0,
                            finished: false,
                            _handle: None,
                            _permit: None,
                        }
                    })
                };
                if upload {
                    let dir = Direction::Upload;
                    self.send_control(
                        Header::Credit {
                            id,
                            dir,
                            bytes: window,
                        },
                        Bytes::new(),
                    );
                }
                return Ok(Some(Incoming {
                    shared: self.clone(),
                    id,
                    body: payload,
                    upload: reader,
                    download,
                }));
            }
            Header::Response { id, download } => {
                if self.role != Role::Client {
                    return violation(format!("response {id} sent to a server"));
                }
                let call = self.lock().calls.remove(&id);
                match call {
                    Some(tx) => {
                        let _ = tx.send(Ok((payload, download)));
                    }
                    // The call was cancelled here: stop its stream.
                    None if download => self.send_control(
                        Header::Reset {
                            id,
                            dir: Direction::Download,
                            reason: "the request was cancelled".to_owned(),
                        },
                        Bytes::new(),
                    ),
                    None => {}
                }
            }
            Header::Failed { id, reason } => {
                if self.role != Role::Client {
                    return violation(format!("failure of request {id} sent to a server"));
                }
                if let Some(tx) = self.lock().calls.remove(&id) {
                    let _ = tx.send(Err(TransportError::RemoteFailure { reason }));
                }
            }
            Header::Data { id, dir } => {
                if dir != inbound_dir {
                    return violation(format!(
                        "{dir:?} data for request {id} in the wrong direction"
                    ));
                }
                let mut state = self.lock();
                // Data after this side reset the stream is dropped.
                if let Some(inbound) = state.inbound.get_mut(&id) {
                    let len = payload.len() as u64;
                    if len > inbound.credit_left {
                        return violation(format!(
                            "{len} bytes of stream {id} exceed its remaining credit of {} bytes",
                            inbound.credit_left
                        ));
                    }
                    inbound.credit_left -= len;
                    let _ = inbound.tx.send(Ok(payload));
                }
            }
            Header::End { id, dir } => {
                if dir != inbound_dir {
                    return violation(format!(
                        "{dir:?} end for request {id} in the wrong direction"
                    ));
                }
                // Dropping the sender ends the reader's stream.
                self.lock().inbound.remove(&id);
            }
            Header::Reset { id, dir, reason } => {
                let e = TransportError::StreamReset {
                    by: Side::Peer,
                    reason,
                };
                if dir == inbound_dir {
                    if let Some(inbound) = self.lock().inbound.remove(&id) {
                        let _ = inbound.tx.send(Err(e));
                    }
                } else if let Some(outbound) = self.lock().outbound.remove(&id) {
                    outbound.reset(e);
                }
            }
            Header::Credit { id, dir, bytes } => {
                if dir == inbound_dir {
                    return violation(format!("credit for request {id} in the wrong direction"));
                }
                let outbound = self.lock().outbound.get(&id).cloned();
                if let Some(outbound) = outbound {
                    let available = outbound.credit.available_permits();
                    if available + bytes as usize > CREDIT_OUTSTANDING_MAX_BYTES {
                        return violation(format!(
                            "credit for stream {id} exceeds {CREDIT_OUTSTANDING_MAX_BYTES} bytes"
                        ));
                    }
                    outbound.credit.add_permits(bytes as usize);
                }
            }
        }
        Ok(None)
    }
}

/// A request in flight at the client; dropping it cancels the request and its streams.
struct Call {
    shared: Arc<Shared>,
    id: u64,
    rx: oneshot::Receiver<Answer>,
    outbound: Option<Arc<Outbound>>,
    inbound: Option<mpsc::UnboundedReceiver<Result<Bytes, TransportError>>>,
}

impl Call {
    async fn answer(mut self) -> Answer {
        Self::flatten((&mut self.rx).await)
    }

    fn flatten(answer: Result<Answer, oneshot::error::RecvError>) -> Answer {
        // The sender is only dropped without an answer when the connection closed.
        answer.unwrap_or(Err(TransportError::LocallyClosed))
    }

    fn take_reader(
        &mut self,
        handle: Arc<Handle>,
        permit: OwnedSemaphorePermit,
    ) -> Option<ByteReader> {
        let rx = self.inbound.take()?;
        Some(ByteReader {
            shared: self.shared.clone(),
            id: self.id,
            dir: Direction::Download,
            rx,
            current: Bytes::new(),
            consumed_ungranted: 0,
            finished: false,
            _handle: Some(handle),
            _permit: Some(permit),
        })
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let (inbound, outbound) = {
            let mut state = self.shared.lock();
            state.calls.remove(&self.id);
            let inbound = match self.inbound {
                Some(_) => state.inbound.remove(&self.id),
                None => None,
            };
            (inbound, state.outbound.remove(&self.id))
        };
        let reason = "the request was cancelled";
        if inbound.is_some() {
            self.shared.send_control(
                Header::Reset {
                    id: self.id,
                    dir: Direction::Download,
                    reason: reason.to_owned(),
                },
                Bytes::new(),
            );
        }
        if let Some(outbound) = outbound {
            // A finished upload already sent its end.
            if outbound.reset_error().is_none() && !outbound.credit.is_closed() {
                outbound.reset(TransportError::StreamReset {
                    by: Side::Local,
                    reason: reason.to_owned(),
                });
                self.shared.send_control(
                    Header::Reset {
                        id: self.id,
                        dir: Direction::Upload,
                        reason: reason.to_owned(),
                    },
                    Bytes::new(),
                );
            }
        }
    }
}

fn encode_body<T: Serialize>(value: &T) -> Result<Bytes, TransportError> {
    let body = postcard::to_stdvec(value).map_err(|e| TransportError::Encode {
        detail: e.to_string(),
    })?;
    if body.len() > MESSAGE_LEN_MAX_BYTES {
        return Err(TransportError::Encode {
            detail: format!(
                "message of {} bytes exceeds {MESSAGE_LEN_MAX_BYTES}",
                body.len()
            ),
        });
    }
    Ok(Bytes::from(body))
}

fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, TransportError> {
    postcard::from_bytes(body).map_err(|e| TransportError::Protocol {
        detail: format!("undecodable message body: {e}"),
    })
}

/// Exchanges the fixed-size greeting: both sides write theirs, then check the other's.
async fn handshake<S>(stream: &mut S, deadline: Duration) -> Result<(), TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        stream
            .write_all(&hello())
            .await
            .map_err(|e| TransportError::io("handshake write", &e))?;
        stream
            .flush()
            .await
            .map_err(|e| TransportError::io("handshake write", &e))?;
        let mut theirs = [0u8; HELLO_LEN_BYTES];
        stream
            .read_exact(&mut theirs)
            .await
            .map_err(|e| TransportError::io("handshake read", &e))?;
        check_hello(&theirs).map_err(TransportError::from)
    };
    timeout(deadline, exchange)
        .await
        .map_err(|_| TransportError::Timeout {
            what: "handshake",
            after: deadline,
        })?
}

fn spawn_handler<Svc: Service>(
    service: Arc<Svc>,
    incoming: Incoming,
) -> Result<(), TransportError> {
    let request: Svc::Request = decode_body(&incoming.body)?;
    let Incoming {
        shared,
        id,
        upload,
        download,
        ..
    } = incoming;
    let handler = tokio::spawn(async move { service.call(request, upload).await });
    tokio::spawn(async move {
        let failed = |reason: String| Header::Failed {
            id,
            reason: bounded_reason(&reason),
        };
        match handler.await {
            Err(e) => shared.send_control(failed(format!("the handler failed: {e}")), Bytes::new()),
            Ok(reply) => match encode_body(&reply.response) {
                Err(e) => shared.send_control(failed(e.to_string()), Bytes::new()),
                Ok(body) => {
                    let stream = reply.download.filter(|_| download);
                    let outbound = shared.lock().outbound.get(&id).cloned();
                    shared.send_control(
                        Header::Response {
                            id,
                            download: stream.is_some() && outbound.is_some(),
                        },
                        body,
                    );
                    if let (Some(stream), Some(outbound)) = (stream, outbound) {
                        // A failure is the client's to see (it got a reset); nothing to do here.
                        let _ = pump(&shared, id, Direction::Download, &outbound, stream).await;
                    }
                }
            },
        }
        let mut state = shared.lock();
        state.handlers.remove(&id);
        state.outbound.remove(&id);
    });
    Ok(())
}

/// Sends `source` as stream `id` within the credit the peer grants; returns the bytes sent.
async fn pump<S>(
    shared: &Shared,
    id: u64,
    dir: Direction,
    outbound: &Outbound,
    mut source: S,
) -> Result<u64, TransportError>
where
    S: AsyncRead + Unpin,
{
    let stopped = || {
        outbound
            .reset_error()
            .unwrap_or_else(|| shared.closed_error())
    };
    let mut n_sent = 0u64;
    loop {
        let mut buf = shared.chunk_buffer();
        let read = {
            let mut limited = (&mut buf).limit(DATA_CHUNK_MAX_BYTES);
            source.read_buf(&mut limited).await
        };
        // Fill the chunk with whatever else is ready now (a pipe hands out 64 KiB at a
        // time): fewer, larger frames. The end or an error shows again on the next read.
        if let Ok(1..) = read {
            while buf.len() < DATA_CHUNK_MAX_BYTES {
                let room = DATA_CHUNK_MAX_BYTES - buf.len();
                let mut limited = (&mut buf).limit(room);
                match source.read_buf(&mut limited).now_or_never() {
                    Some(Ok(1..)) => {}
                    _ => break,
                }
            }
        }
        let n = match read {
            Ok(_) => buf.len(),
            Err(e) => {
                let reason = bounded_reason(&format!("the stream's source failed: {e}"));
                outbound.reset(TransportError::StreamReset {
                    by: Side::Local,
                    reason: reason.clone(),
                });
                shared.send_control(
                    Header::Reset {
                        id,
                        dir,
                        reason: reason.clone(),
                    },
                    Bytes::new(),
                );
                return Err(TransportError::StreamReset {
                    by: Side::Local,
                    reason,
                });
            }
        };
        let header = if n == 0 {
            Header::End { id, dir }
        } else {
            let permits = u32::try_from(n).unwrap_or(u32::MAX);
            outbound
                .credit
                .acquire_many(permits)
                .await
                .map_err(|_| stopped())?
                .forget();
            Header::Data { id, dir }
        };
        let payload = buf.freeze();
        shared
            .data_tx
            .send(Outgoing { header, payload })
            .await
            .map_err(|_| stopped())?;
        if n == 0 {
            // Ended: a later reset from the peer has nothing left to stop.
            outbound.credit.close();
            return Ok(n_sent);
        }
        n_sent += n as u64;
    }
}

/// Records when the last byte arrived, for the read deadline.
struct ProgressReader<R> {
    inner: R,
    last_progress: Instant,
}

impl<R: AsyncRead + Unpin> AsyncRead for ProgressReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut self.inner).poll_read(cx, buf));
        if buf.filled().len() > before {
            self.last_progress = Instant::now();
        }
        Poll::Ready(result)
    }
}

async fn read_loop<R, F>(
    r: R,
    shared: Arc<Shared>,
    mut shutdown_rx: watch::Receiver<bool>,
    mut on_request: F,
) where
    R: AsyncRead + Unpin,
    F: FnMut(Incoming) -> Result<(), TransportError>,
{
    let peer_timeout = shared.config.peer_timeout;
    let reader = ProgressReader {
        inner: r,
        last_progress: Instant::now(),
    };
    let mut frames = FramedRead::with_capacity(reader, codec(), READ_BUFFER_BYTES);
    let result = loop {
        let deadline = frames.get_ref().last_progress + peer_timeout;
        let item = tokio::select! {
            biased;
            _ = shutdown_rx.wait_for(|closed| *closed) => break Ok(()),
            item = frames.next() => item,
            _ = sleep_until(deadline) => {
                if frames.get_ref().last_progress + peer_timeout <= Instant::now() {
                    break Err(TransportError::Timeout {
                        what: "read (the peer sent nothing, not even a heartbeat)",
                        after: peer_timeout,
                    });
                }
                continue;
            }
        };
        let frame = match item {
            None => break Err(TransportError::ConnectionClosed),
            Some(Err(e)) => break Err(codec_error(&e)),
            Some(Ok(frame)) => frame.freeze(),
        };
        let dispatched = decode_frame(frame)
            .map_err(TransportError::from)
            .and_then(|(header, payload)| shared.dispatch(header, payload))
            .and_then(|incoming| match incoming {
                Some(incoming) => on_request(incoming),
                None => Ok(()),
            });
        if let Err(e) = dispatched {
            break Err(e);
        }
        // Read the next frame into a recycled buffer rather than a fresh allocation.
        let buffer = frames.read_buffer_mut();
        if buffer.capacity() - buffer.len() < READ_ROOM_BYTES
            && let Some(mut recycled) = shared.read_buffer()
        {
            recycled.extend_from_slice(buffer);
            *buffer = recycled;
        }
    };
    if let Err(e) = result {
        shared.close(e);
    }
}

fn codec_error(e: &io::Error) -> TransportError {
    let detail = e.to_string();
    if e.kind() == io::ErrorKind::InvalidData && detail.contains("frame size too big") {
        return TransportError::Protocol {
            detail: format!(
                "a frame's declared length exceeds {} bytes",
                crate::wire::FRAME_LEN_MAX
            ),
        };
    }
    if detail.contains("bytes remaining on stream") {
        return TransportError::Protocol {
            detail: "the connection ended in the middle of a frame (truncated frame)".to_owned(),
        };
    }
    TransportError::io("read", e)
}

async fn write_loop<W>(
    w: W,
    shared: Arc<Shared>,
    mut control_rx: mpsc::UnboundedReceiver<Outgoing>,
    mut data_rx: mpsc::Receiver<Outgoing>,
    mut shutdown_rx: watch::Receiver<bool>,
) where
    W: AsyncWrite + Unpin,
{
    let config = shared.config;
    let mut w = BufWriter::with_capacity(WRITE_BUFFER_BYTES, w);
    let result = async {
        let mut idle_deadline = Instant::now() + config.heartbeat_interval;
        loop {
            let out = tokio::select! {
                biased;
                _ = shutdown_rx.wait_for(|closed| *closed) => return Ok(()),
                Some(out) = control_rx.recv() => out,
                Some(out) = data_rx.recv() => out,
                _ = sleep_until(idle_deadline) => Outgoing {
                    header: Header::Heartbeat,
                    payload: Bytes::new(),
                },
            };
            write_frame(&mut w, &out, config.peer_timeout).await?;
            if let Header::Data { .. } = out.header {
                shared.recycle(out.payload);
            }
            if control_rx.is_empty() && data_rx.is_empty() {
                with_deadline("write", config.peer_timeout, w.flush()).await?;
            }
            idle_deadline = Instant::now() + config.heartbeat_interval;
        }
    }
    .await;
    match result {
        Err(e) => shared.close(e),
        Ok(()) => {
            let reason = match shared.closed() {
                None
                | Some(TransportError::LocallyClosed)
                | Some(TransportError::PeerClosed { .. }) => None,
                Some(e) => Some(bounded_reason(&e.to_string())),
            };
            let notice = Outgoing {
                header: Header::Close { reason },
                payload: Bytes::new(),
            };
            let _ = timeout(CLOSE_NOTICE_TIMEOUT, async {
                write_frame(&mut w, &notice, CLOSE_NOTICE_TIMEOUT).await?;
                w.flush()
                    .await
                    .map_err(|e| TransportError::io("write", &e))?;
                w.shutdown()
                    .await
                    .map_err(|e| TransportError::io("write", &e))
            })
            .await;
        }
    }
}

async fn write_frame<W>(w: &mut W, out: &Outgoing, deadline: Duration) -> Result<(), TransportError>
where
    W: AsyncWrite + Unpin,
{
    let head = encode_head(&out.header, out.payload.len());
    let mut chunks = out.payload.chunks(DATA_CHUNK_MAX_BYTES);
    // The head goes out with the first chunk in one write where the stream supports it, so
    // that the peer does not read a lone header.
    let first = chunks.next().unwrap_or_default();
    with_deadline("write", deadline, write_all_pair(w, &head, first)).await?;
    // One deadline per chunk: a large message on a slow link is fine as long as it moves.
    for chunk in chunks {
        with_deadline("write", deadline, w.write_all(chunk)).await?;
    }
    Ok(())
}

/// Writes `a` then `b`, vectored.
async fn write_all_pair<W>(w: &mut W, mut a: &[u8], mut b: &[u8]) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    while !a.is_empty() || !b.is_empty() {
        let slices = [io::IoSlice::new(a), io::IoSlice::new(b)];
        let n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    Ok(())
}

async fn with_deadline<F>(op: &'static str, deadline: Duration, f: F) -> Result<(), TransportError>
where
    F: Future<Output = io::Result<()>>,
{
    match timeout(deadline, f).await {
        Err(_) => Err(TransportError::Timeout {
            what: op,
            after: deadline,
        }),
        Ok(Err(e)) => Err(TransportError::io(op, &e)),
        Ok(Ok(())) => Ok(()),
    }
}
