//! Send streams: reading, closing early, errors, estimates.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use zferry_core::backend::{
    Operation, SendFlags, SendRequest, SendSource, VersionTypes, ZfsError, ZfsErrorKind,
};

use super::check::{Ctx, ensure, ensure_eq, expect_kind};
use super::util::{
    MIB, bmark, comp, names_of, read_all, send_request, snap, snapshots, write_and_snapshot,
};
use super::{CaseFailure, DatasetSpec, Harness, case_table};

case_table!(
    send_stream_close_after_eof_read,
    send_stream_close_while_blocked_on_pipe_write,
    send_stream_close_before_first_read,
    send_stream_read_error_handling,
    send_estimate_sizes,
    send_estimate_of_missing_snapshot,
    send_of_encrypted_dataset_without_key_needs_raw,
);

/// How often a case retries a destroy that a just-closed sender may still block.
const DESTROY_RETRIES_MAX: u32 = 50;

/// The pause between those retries.
const DESTROY_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// zrepl `SendStreamCloseAfterEOFRead` / `SendStreamMultipleCloseAfterEOF`: after EOF, reads
/// keep returning EOF; the stream has the size of a full send.
async fn send_stream_close_after_eof_read(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("send_stream_eof").await?;
    write_and_snapshot(h, &root, &["1"], MIB).await?;
    let mut stream = h
        .backend()
        .send(&send_request(SendSource::Full {
            to: snap(&root, "1")?,
        }))
        .await
        .ctx("send")?;
    let mut buf = Vec::new();
    stream
        .read_to_end(&mut buf)
        .await
        .map_err(|e| CaseFailure::new(format!("read to EOF: {e}")))?;
    ensure!(
        buf.len() as u64 > MIB,
        "a full stream of 1 MiB of data has only {} bytes",
        buf.len()
    );
    let mut more = [0u8; 16];
    for attempt in 0..2 {
        let n = stream
            .read(&mut more)
            .await
            .map_err(|e| CaseFailure::new(format!("read #{attempt} after EOF: {e}")))?;
        ensure_eq!(n, 0, "read #{attempt} after EOF");
    }
    drop(stream);
    ensure_eq!(
        names_of(h, &root, VersionTypes::Snapshots).await?,
        vec!["@1"],
        "the snapshot is still there"
    );
    Ok(())
}

/// zrepl `SendStreamCloseAfterBlockedOnPipeWrite`: dropping a stream mid-way stops the sender:
/// nothing hangs and the snapshot can be destroyed afterwards.
async fn send_stream_close_while_blocked_on_pipe_write(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("send_stream_blocked").await?;
    write_and_snapshot(h, &root, &["big"], 16 * MIB).await?;
    let mut stream = h
        .backend()
        .send(&send_request(SendSource::Full {
            to: snap(&root, "big")?,
        }))
        .await
        .ctx("send")?;
    let mut first = vec![0u8; 64 * 1024];
    stream
        .read_exact(&mut first)
        .await
        .map_err(|e| CaseFailure::new(format!("read the first 64 KiB: {e}")))?;
    // The sender now blocks on a full pipe; dropping the stream must stop it.
    drop(stream);
    destroy_eventually(h, &root, "big").await
}

/// Dropping a stream before reading anything stops the sender too.
async fn send_stream_close_before_first_read(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("send_stream_unread").await?;
    write_and_snapshot(h, &root, &["big"], 8 * MIB).await?;
    let stream = h
        .backend()
        .send(&send_request(SendSource::Full {
            to: snap(&root, "big")?,
        }))
        .await
        .ctx("send")?;
    drop(stream);
    destroy_eventually(h, &root, "big").await
}

/// Destroys `@name`, retrying while a stopped sender may still be exiting; fails if the
/// snapshot stays busy (the sender was not stopped).
async fn destroy_eventually(
    h: &dyn Harness,
    root: &zferry_core::name::DatasetName,
    name: &str,
) -> Result<(), CaseFailure> {
    let mut last = None;
    for _ in 0..DESTROY_RETRIES_MAX {
        let out = h
            .backend()
            .destroy_snapshots(root, &[comp(name)?])
            .await
            .ctx("destroy after the stream was dropped")?;
        match out.first().map(|o| o.result.clone()) {
            Some(Ok(())) => {
                ensure_eq!(
                    names_of(h, root, VersionTypes::Snapshots).await?,
                    Vec::<String>::new(),
                    "snapshots left"
                );
                return Ok(());
            }
            other => last = Some(other),
        }
        tokio::time::sleep(DESTROY_RETRY_PAUSE).await;
    }
    Err(CaseFailure::new(format!(
        "the snapshot stayed undestroyable after the stream was dropped: {last:?}"
    )))
}

/// zrepl `SendStreamNonEOFReadErrorHandling`, as far as the trait shows it: a send that fails
/// reports the ZFS error (DoesNotExist), either from `send` or from the stream's read.
async fn send_stream_read_error_handling(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("send_stream_error").await?;
    snapshots(h, &root, &["1"]).await?;
    let missing = snap(&root, "missing")?;
    let request = send_request(SendSource::Full {
        to: missing.clone(),
    });
    let err = match h.backend().send(&request).await {
        Err(e) => e,
        Ok(stream) => match read_all(stream).await {
            Err(io) => ZfsError::from_io(Operation::Send, &missing, &io),
            Ok(bytes) => {
                return Err(CaseFailure::new(format!(
                    "send of a missing snapshot produced {} bytes and no error",
                    bytes.len()
                )));
            }
        },
    };
    ensure_eq!(err.kind, ZfsErrorKind::DoesNotExist, "kind ({err})");
    let inc = send_request(SendSource::Incremental {
        from: snap(&root, "missing")?,
        to: snap(&root, "1")?,
    });
    let err = match h.backend().send(&inc).await {
        Err(e) => e,
        Ok(stream) => match read_all(stream).await {
            Err(io) => ZfsError::from_io(Operation::Send, &missing, &io),
            Ok(bytes) => {
                return Err(CaseFailure::new(format!(
                    "incremental send from a missing snapshot produced {} bytes",
                    bytes.len()
                )));
            }
        },
    };
    ensure_eq!(
        err.kind,
        ZfsErrorKind::DoesNotExist,
        "kind of incremental from a missing base ({err})"
    );
    Ok(())
}

/// Estimates: Some for full, incremental and range sends; None from a bookmark base.
async fn send_estimate_sizes(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("send_estimate").await?;
    write_and_snapshot(h, &root, &["a", "b", "c with space"], MIB).await?;
    h.backend()
        .bookmark(&snap(&root, "a")?, &bmark(&root, "b mark")?)
        .await
        .ctx("bookmark")?;
    let (a, b, c) = (
        snap(&root, "a")?,
        snap(&root, "b")?,
        snap(&root, "c with space")?,
    );
    let full = estimate(h, SendSource::Full { to: c.clone() }).await?;
    let inc = estimate(
        h,
        SendSource::Incremental {
            from: b.clone(),
            to: c.clone(),
        },
    )
    .await?;
    let range = estimate(
        h,
        SendSource::IncrementalRange {
            from: a.clone(),
            to: c.clone(),
        },
    )
    .await?;
    let from_bm = estimate(
        h,
        SendSource::Incremental {
            from: bmark(&root, "b mark")?,
            to: c.clone(),
        },
    )
    .await?;
    ensure_eq!(from_bm, None, "estimate from a bookmark");
    let (Some(full), Some(inc), Some(range)) = (full, inc, range) else {
        return Err(CaseFailure::new(format!(
            "estimates full {full:?} incremental {inc:?} range {range:?}: all should be Some"
        )));
    };
    ensure!(
        full >= 3 * MIB && (MIB..2 * MIB).contains(&inc) && (2 * MIB..3 * MIB).contains(&range),
        "sizes: full {full} (3 MiB written), incremental {inc} (1 MiB), range {range} (2 MiB)"
    );
    Ok(())
}

/// The estimate of a missing snapshot is DoesNotExist.
async fn send_estimate_of_missing_snapshot(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("send_estimate_missing").await?;
    expect_kind(
        h.backend()
            .send_estimate(&send_request(SendSource::Full {
                to: snap(&root, "nope")?,
            }))
            .await,
        &ZfsErrorKind::DoesNotExist,
        "estimate of a missing snapshot",
    )?;
    Ok(())
}

/// A non-raw send of an encrypted dataset whose key is not loaded fails with KeyNotLoaded; a
/// raw one works.
async fn send_of_encrypted_dataset_without_key_needs_raw(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let root = h.fresh_root("send_encrypted_no_key").await?;
    let enc = super::util::child(&root, "enc src")?;
    h.create_dataset(&enc, DatasetSpec::ENCRYPTED).await?;
    write_and_snapshot(h, &enc, &["1"], MIB).await?;
    h.unload_key(&enc).await?;
    let to = snap(&enc, "1")?;
    let plain = send_request(SendSource::Full { to: to.clone() });
    let err = match h.backend().send(&plain).await {
        Err(e) => e,
        Ok(stream) => match read_all(stream).await {
            Err(io) => ZfsError::from_io(Operation::Send, &to, &io),
            Ok(bytes) => {
                return Err(CaseFailure::new(format!(
                    "plain send without the key produced {} bytes",
                    bytes.len()
                )));
            }
        },
    };
    ensure_eq!(err.kind, ZfsErrorKind::KeyNotLoaded, "kind ({err})");
    let raw = SendRequest {
        source: SendSource::Full { to },
        flags: SendFlags {
            raw: true,
            ..SendFlags::default()
        },
    };
    let bytes = super::util::send_bytes(h, &raw).await?;
    ensure!(
        bytes.len() as u64 > MIB,
        "raw stream of 1 MiB is {} bytes",
        bytes.len()
    );
    Ok(())
}

/// The estimate of one send.
async fn estimate(h: &dyn Harness, source: SendSource) -> Result<Option<u64>, CaseFailure> {
    let what = format!("estimate {source:?}");
    h.backend()
        .send_estimate(&send_request(source))
        .await
        .ctx(what)
}
