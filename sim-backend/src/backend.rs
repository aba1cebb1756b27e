//! The backend trait over the simulated world: fault injection, then the world's operation with
//! [`Actor::Daemon`]. Sends and receives stream bytes; a receive that is dropped mid-stream (a
//! daemon crash under turmoil) leaves the state a broken stream would.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use zferry_core::backend::{
    ByteStream, DestroyOutcome, Features, ObjectName, Operation, PlaceholderEncryption, Property,
    ReceiveRequest, Received, SendRequest, SendSource, VersionTypes, ZfsBackend, ZfsError,
    ZfsErrorKind,
};
use zferry_core::listing::{DatasetEntry, VersionListing};
use zferry_core::name::{Component, DatasetName, VersionKind, VersionName};
use zferry_core::version::Version;

use crate::stream::{Header, HeaderError, TRAILER, encode_stream, payload_byte};
use crate::world::{ReceiveCtx, RecordStart, World, err};
use crate::{Actor, SimZfs, StreamBreak};

/// The most bytes one read of a send stream returns, so that streams arrive in pieces.
const SEND_CHUNK_BYTES_MAX: usize = 16 * 1024;
/// The receive's read buffer, in bytes.
const RECEIVE_CHUNK_BYTES: usize = 8 * 1024;
/// The longest stream header a receive accepts, in bytes.
const HEADER_BYTES_MAX: usize = 64 * 1024 * 1024;

#[async_trait]
impl ZfsBackend for SimZfs {
    async fn list_datasets(
        &self,
        root: Option<&DatasetName>,
        properties: &[&str],
    ) -> Result<Vec<DatasetEntry>, ZfsError> {
        let object = root.map_or_else(String::new, ToString::to_string);
        self.enter(Operation::ListDatasets, &object).await?;
        self.lock().list_datasets(root, properties)
    }

    async fn list_versions(
        &self,
        datasets: &[DatasetName],
        types: VersionTypes,
    ) -> Result<VersionListing, ZfsError> {
        let object = datasets
            .first()
            .map_or_else(String::new, ToString::to_string);
        self.enter_on(Operation::ListVersions, &object, datasets)
            .await?;
        self.lock().list_versions(datasets, types)
    }

    async fn get_properties(
        &self,
        object: &ObjectName,
        properties: &[&str],
    ) -> Result<BTreeMap<String, Property>, ZfsError> {
        self.enter(Operation::GetProperties, object).await?;
        self.lock().get_properties(object, properties)
    }

    async fn set_property(
        &self,
        dataset: &DatasetName,
        property: &str,
        value: &str,
    ) -> Result<(), ZfsError> {
        self.enter(Operation::SetProperty, dataset).await?;
        self.lock()
            .set_property(Actor::Daemon, dataset, property, value)
    }

    async fn snapshot(&self, snapshots: &[VersionName]) -> Result<(), ZfsError> {
        let object = snapshots
            .first()
            .map_or_else(String::new, ToString::to_string);
        let datasets: Vec<DatasetName> = snapshots.iter().map(|s| s.dataset().clone()).collect();
        self.enter_on(Operation::Snapshot, &object, &datasets)
            .await?;
        self.lock().snapshot(Actor::Daemon, snapshots)
    }

    async fn bookmark(
        &self,
        source: &VersionName,
        bookmark: &VersionName,
    ) -> Result<Version, ZfsError> {
        self.enter(Operation::Bookmark, bookmark).await?;
        self.lock().bookmark(Actor::Daemon, source, bookmark)
    }

    async fn hold(&self, tag: &str, snapshots: &[VersionName]) -> Result<(), ZfsError> {
        let object = snapshots
            .first()
            .map_or_else(String::new, ToString::to_string);
        let datasets: Vec<DatasetName> = snapshots.iter().map(|s| s.dataset().clone()).collect();
        self.enter_on(Operation::Hold, &object, &datasets).await?;
        self.lock().hold(Actor::Daemon, tag, snapshots)
    }

    async fn release(&self, tag: &str, snapshots: &[VersionName]) -> Result<(), ZfsError> {
        let object = snapshots
            .first()
            .map_or_else(String::new, ToString::to_string);
        let datasets: Vec<DatasetName> = snapshots.iter().map(|s| s.dataset().clone()).collect();
        self.enter_on(Operation::Release, &object, &datasets)
            .await?;
        self.lock().release(Actor::Daemon, tag, snapshots)
    }

    async fn holds(&self, snapshot: &VersionName) -> Result<Vec<String>, ZfsError> {
        self.enter(Operation::ListHolds, snapshot).await?;
        self.lock().holds(snapshot)
    }

    async fn destroy_snapshots(
        &self,
        dataset: &DatasetName,
        snapshots: &[Component],
    ) -> Result<Vec<DestroyOutcome>, ZfsError> {
        self.enter(Operation::DestroySnapshots, dataset).await?;
        self.lock()
            .destroy_snapshots(Actor::Daemon, dataset, snapshots)
    }

    async fn destroy_bookmark(&self, bookmark: &VersionName) -> Result<(), ZfsError> {
        self.enter(Operation::DestroyBookmark, bookmark).await?;
        self.lock().destroy_bookmark(Actor::Daemon, bookmark)
    }

    async fn destroy_dataset(
        &self,
        dataset: &DatasetName,
        recursive: bool,
    ) -> Result<(), ZfsError> {
        self.enter(Operation::DestroyDataset, dataset).await?;
        self.lock()
            .destroy_dataset(Actor::Daemon, dataset, recursive)
    }

    async fn send_estimate(&self, request: &SendRequest) -> Result<Option<u64>, ZfsError> {
        let op = Operation::SendEstimate;
        self.enter(op, source_object(&request.source)).await?;
        // zrepl does no dry run from a bookmark; the estimate is unknown then.
        if let SendSource::Incremental { from, .. } = &request.source
            && from.kind() == VersionKind::Bookmark
        {
            return Ok(None);
        }
        let (header, _) = self.lock().plan_send(op, request)?;
        Ok(Some(stream_len(&header)))
    }

    async fn send(&self, request: &SendRequest) -> Result<ByteStream, ZfsError> {
        let op = Operation::Send;
        let object = source_object(&request.source);
        let faults = self.enter(op, &object).await?;
        // As with the CLI backend, `zfs send` has started once this returns; what it refuses
        // (a missing snapshot, a stale token, a locked key) arrives as the stream's read error.
        let planned = {
            let mut w = self.lock();
            w.plan_send(op, request)
                .map(|(header, held)| (encode_stream(&header), w.start_send(held)))
        };
        let (data, send_id) = match planned {
            Ok(planned) => planned,
            Err(e) => return Ok(Box::pin(FailedSend { error: Some(e) })),
        };
        let limit = faults
            .break_send
            .map_or(data.len(), |(after, _)| data.len().min(after as usize));
        let fail_at_break = matches!(faults.break_send, Some((_, StreamBreak::Error)));
        Ok(Box::pin(SendReader {
            data,
            pos: 0,
            limit,
            fail_at_break,
            world: Arc::clone(&self.world_arc()),
            send_id: Some(send_id),
            object,
        }))
    }

    async fn receive(
        &self,
        request: &ReceiveRequest,
        stream: ByteStream,
    ) -> Result<Received, ZfsError> {
        let faults = self.enter(Operation::Receive, &request.dataset).await?;
        receive(self, request, stream, faults.break_receive).await
    }

    async fn abort_receive(&self, dataset: &DatasetName) -> Result<(), ZfsError> {
        self.enter(Operation::AbortReceive, dataset).await?;
        self.lock().abort_receive(Actor::Daemon, dataset)
    }

    async fn resume_token(&self, dataset: &DatasetName) -> Result<Option<String>, ZfsError> {
        self.enter(Operation::GetProperties, dataset).await?;
        self.lock().resume_token(dataset)
    }

    async fn create_placeholder(
        &self,
        dataset: &DatasetName,
        encryption: PlaceholderEncryption,
    ) -> Result<(), ZfsError> {
        self.enter(Operation::CreatePlaceholder, dataset).await?;
        self.lock()
            .create_placeholder(Actor::Daemon, dataset, encryption)
    }

    async fn rollback(&self, snapshot: &VersionName) -> Result<(), ZfsError> {
        self.enter(Operation::Rollback, snapshot).await?;
        self.lock().rollback(Actor::Daemon, snapshot)
    }

    async fn features(&self, pool: &str) -> Result<Features, ZfsError> {
        self.enter(Operation::Features, pool).await?;
        self.lock().features(Operation::Features, pool)
    }
}

impl SimZfs {
    fn world_arc(&self) -> Arc<Mutex<World>> {
        Arc::clone(&self.world)
    }
}

fn source_object(source: &SendSource) -> String {
    match source {
        SendSource::Full { to }
        | SendSource::Incremental { to, .. }
        | SendSource::IncrementalRange { to, .. } => to.to_string(),
        SendSource::Resume { .. } => "resume token".to_owned(),
    }
}

fn stream_len(header: &Header) -> u64 {
    let payload: u64 = header.records.iter().map(|r| r.payload_len).sum();
    header.encode().len() as u64 + payload - header.resume_offset + TRAILER.len() as u64
}

/// The bytes `zfs send` writes; while it is open, its snapshots cannot be destroyed.
struct SendReader {
    data: Vec<u8>,
    pos: usize,
    limit: usize,
    fail_at_break: bool,
    world: Arc<Mutex<World>>,
    send_id: Option<u64>,
    object: String,
}

impl SendReader {
    fn finish(&mut self) {
        if let Some(id) = self.send_id.take() {
            self.world
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .end_send(id);
        }
    }
}

impl AsyncRead for SendReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.pos >= this.limit {
            this.finish();
            if this.limit < this.data.len() && this.fail_at_break {
                let e = ZfsError::new(Operation::Send, &this.object, ZfsErrorKind::StreamBroken)
                    .with_stderr("injected fault: the sender died mid-stream");
                return Poll::Ready(Err(e.into_io()));
            }
            return Poll::Ready(Ok(()));
        }
        let n = buf
            .remaining()
            .min(this.limit - this.pos)
            .min(SEND_CHUNK_BYTES_MAX);
        buf.put_slice(&this.data[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl Drop for SendReader {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A `zfs send` that refused to start: its first read fails with why, later reads see the end.
struct FailedSend {
    error: Option<ZfsError>,
}

impl AsyncRead for FailedSend {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.error.take() {
            Some(e) => Poll::Ready(Err(e.into_io())),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// Holds a receive in progress; dropped before the end (the daemon crashed, the task was
/// cancelled), it leaves what a broken stream leaves.
struct ReceiveGuard {
    world: Arc<Mutex<World>>,
    ctx: Option<ReceiveCtx>,
}

impl Drop for ReceiveGuard {
    fn drop(&mut self) {
        if let Some(mut ctx) = self.ctx.take() {
            self.world
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .interrupt_receive(&mut ctx);
        }
    }
}

/// Reads what is available, but no further than `cut` bytes in total.
async fn read_some(
    stream: &mut ByteStream,
    buf: &mut [u8],
    cut: Option<u64>,
    total: &mut u64,
) -> std::io::Result<usize> {
    let allowed = cut.map_or(buf.len() as u64, |c| {
        c.saturating_sub(*total).min(buf.len() as u64)
    });
    if allowed == 0 {
        return Ok(0);
    }
    let n = stream.read(&mut buf[..allowed as usize]).await?;
    *total += n as u64;
    Ok(n)
}

enum Step {
    /// Need more bytes.
    More,
    /// The trailer arrived: the stream is complete.
    Done,
}

async fn receive(
    sim: &SimZfs,
    request: &ReceiveRequest,
    mut stream: ByteStream,
    cut: Option<u64>,
) -> Result<Received, ZfsError> {
    let op = Operation::Receive;
    let d = &request.dataset;
    let mut chunk = vec![0u8; RECEIVE_CHUNK_BYTES];
    let mut total: u64 = 0;
    let broken_before_begin = |why: &str| {
        err(
            op,
            d,
            ZfsErrorKind::StreamBroken,
            &format!("cannot receive: failed to read from stream ({why})"),
        )
    };
    // The BEGIN record: nothing happens to the destination until it is complete.
    let mut buf: Vec<u8> = Vec::new();
    let (header, header_len) = loop {
        match Header::decode(&buf) {
            Ok(parsed) => break parsed,
            Err(HeaderError::Invalid(why)) => {
                return Err(err(
                    op,
                    d,
                    ZfsErrorKind::InvalidArgument,
                    &format!("cannot receive: {why}"),
                ));
            }
            Err(HeaderError::Incomplete) if buf.len() > HEADER_BYTES_MAX => {
                return Err(err(
                    op,
                    d,
                    ZfsErrorKind::InvalidArgument,
                    "cannot receive: stream header too long",
                ));
            }
            Err(HeaderError::Incomplete) => {}
        }
        match read_some(&mut stream, &mut chunk, cut, &mut total).await {
            Ok(0) => return Err(broken_before_begin("end of stream")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(broken_before_begin(&e.to_string())),
        }
    };
    let mut pending: Vec<u8> = buf.split_off(header_len);
    let world = sim.world_arc();
    let ctx = sim.lock().begin_receive(Actor::Daemon, request, header)?;
    let mut guard = ReceiveGuard {
        world: Arc::clone(&world),
        ctx: Some(ctx),
    };
    // Every stream byte read so far (the header and what came with it) counts toward the
    // token's `bytes`.
    if let Some(ctx) = guard.ctx.as_mut() {
        ctx.stream_bytes += total;
    }
    let mut checked_index: Option<usize> = None;
    let mut skip = false;
    loop {
        let step = {
            let mut w = sim.lock();
            let Some(ctx) = guard.ctx.as_mut() else {
                return Err(broken_before_begin("internal: receive state lost"));
            };
            process(&mut w, ctx, &mut pending, &mut checked_index, &mut skip)
        };
        match step {
            Ok(Step::Done) => break,
            Ok(Step::More) => {}
            Err(Failure::Broken(why)) => return Err(interrupted(sim, &mut guard, d, &why, false)),
            Err(Failure::NoSpace) => {
                return Err(interrupted(sim, &mut guard, d, "out of space", true));
            }
            Err(Failure::Refused(e)) => {
                if let Some(mut ctx) = guard.ctx.take() {
                    ctx.resumable = false;
                    sim.lock().interrupt_receive(&mut ctx);
                }
                return Err(e);
            }
        }
        match read_some(&mut stream, &mut chunk, cut, &mut total).await {
            Ok(0) => {
                return Err(interrupted(sim, &mut guard, d, "incomplete stream", false));
            }
            Ok(n) => {
                pending.extend_from_slice(&chunk[..n]);
                if let Some(ctx) = guard.ctx.as_mut() {
                    ctx.stream_bytes += n as u64;
                }
            }
            Err(e) => {
                let why = format!("failed to read from stream: {e}");
                return Err(interrupted(sim, &mut guard, d, &why, false));
            }
        }
    }
    let Some(mut ctx) = guard.ctx.take() else {
        return Err(broken_before_begin("internal: receive state lost"));
    };
    let mut w = sim.lock();
    if let Err(e) = w.commit_record(&mut ctx, skip) {
        ctx.resumable = false;
        w.interrupt_receive(&mut ctx);
        return Err(e);
    }
    w.finish_receive(&mut ctx);
    w.apply_overrides(&ctx, request);
    let to = VersionName::new(d.clone(), VersionKind::Snapshot, request.to.clone())
        .map_err(|e| err(op, d, ZfsErrorKind::InvalidArgument, &e.to_string()))?;
    // As the CLI backend: `to` must be there, with the GUID the request expects.
    let Ok(version) = w.version(op, &to) else {
        let detail = format!("`{to}` is missing after the receive");
        return Err(err(
            op,
            &to,
            ZfsErrorKind::Other {
                detail: detail.clone(),
            },
            &detail,
        ));
    };
    if version.guid != request.to_guid {
        let msg = format!(
            "received `{to}` has guid {}, the request expected {}",
            version.guid, request.to_guid
        );
        let existing = version.guid;
        return Err(err(
            op,
            &to,
            ZfsErrorKind::ExistsWithOtherGuid { existing },
            &msg,
        ));
    }
    Ok(Received { to: version })
}

enum Failure {
    Broken(String),
    NoSpace,
    Refused(ZfsError),
}

/// Consumes `pending` as far as it goes: record checks, payload verification and space, record
/// commits, and the trailer. Never waits.
fn process(
    w: &mut World,
    ctx: &mut ReceiveCtx,
    pending: &mut Vec<u8>,
    checked_index: &mut Option<usize>,
    skip: &mut bool,
) -> Result<Step, Failure> {
    let n_records = ctx.header.records.len();
    let mut consumed = 0usize;
    let result = loop {
        if *checked_index != Some(ctx.index) {
            match w.check_record(ctx) {
                Ok(RecordStart::Skip) => *skip = true,
                Ok(RecordStart::Receive) => *skip = false,
                Err(e) => break Err(Failure::Refused(e)),
            }
            *checked_index = Some(ctx.index);
        }
        let record = &ctx.header.records[ctx.index];
        let need = record.payload_len.saturating_sub(ctx.pos);
        let available = (pending.len() - consumed) as u64;
        if need > 0 {
            if available == 0 {
                break Ok(Step::More);
            }
            let want = need.min(available);
            let take = if *skip {
                want
            } else {
                w.accept_payload(ctx, want)
            };
            let digest = ctx.header.records[ctx.index].digest;
            for i in 0..take {
                if pending[consumed + i as usize] != payload_byte(digest, ctx.pos + i) {
                    ctx.pos += i;
                    consumed += i as usize;
                    return finish_process(
                        pending,
                        consumed,
                        Err(Failure::Broken("checksum mismatch".to_owned())),
                    );
                }
            }
            ctx.pos += take;
            consumed += take as usize;
            if take < want {
                break Err(Failure::NoSpace);
            }
            continue;
        }
        if ctx.index + 1 < n_records {
            let was_skip = *skip;
            if let Err(e) = w.commit_record(ctx, was_skip) {
                break Err(Failure::Refused(e));
            }
            continue;
        }
        // The last record is complete: it is committed once the trailer arrives.
        if available < TRAILER.len() as u64 {
            break Ok(Step::More);
        }
        if pending[consumed..consumed + TRAILER.len()] != TRAILER[..] {
            break Err(Failure::Broken(
                "invalid stream (bad end record)".to_owned(),
            ));
        }
        consumed += TRAILER.len();
        break Ok(Step::Done);
    };
    finish_process(pending, consumed, result)
}

fn finish_process(
    pending: &mut Vec<u8>,
    consumed: usize,
    result: Result<Step, Failure>,
) -> Result<Step, Failure> {
    pending.drain(..consumed);
    result
}

/// Ends a broken receive: resumable state is kept where ZFS keeps it, and the error says so.
fn interrupted(
    sim: &SimZfs,
    guard: &mut ReceiveGuard,
    d: &DatasetName,
    why: &str,
    no_space: bool,
) -> ZfsError {
    let op = Operation::Receive;
    let Some(mut ctx) = guard.ctx.take() else {
        return err(op, d, ZfsErrorKind::StreamBroken, why);
    };
    let prefix = if ctx.header.flags.resuming {
        "cannot receive resume stream"
    } else if ctx.header.from_guid.is_none() && ctx.index == 0 {
        "cannot receive new filesystem stream"
    } else {
        "cannot receive incremental stream"
    };
    let token = sim.lock().interrupt_receive(&mut ctx);
    if no_space {
        return err(
            op,
            d,
            ZfsErrorKind::NoSpace,
            &format!("{prefix}: out of space"),
        );
    }
    match token {
        Some(token) => {
            let msg = format!(
                "{prefix}: checksum mismatch or incomplete stream ({why}).\nPartially received snapshot is saved.\nA resuming stream can be generated on the sending system by running:\n    zfs send -t {token}"
            );
            err(
                op,
                d,
                ZfsErrorKind::ReceiveInterrupted { token: Some(token) },
                &msg,
            )
        }
        None => err(
            op,
            d,
            ZfsErrorKind::StreamBroken,
            &format!("{prefix}: checksum mismatch or incomplete stream ({why})"),
        ),
    }
}
