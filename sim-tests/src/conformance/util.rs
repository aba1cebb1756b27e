//! Small steps that many cases share: names, listings, send-and-receive, stream plumbing.

use std::collections::BTreeMap;

use tokio::io::AsyncReadExt;
use zferry_core::backend::{
    ByteStream, Operation, PLACEHOLDER_PROPERTY, PropertySource, ReceiveRequest, Received,
    SendFlags, SendRequest, SendSource, VersionTypes, ZfsError, ZfsErrorKind,
};
use zferry_core::name::{Component, DatasetName, VersionKind, VersionName};
use zferry_core::version::{Guid, Version};

use super::check::Ctx;
use super::{CaseFailure, Harness};

/// The most a case reads of one send stream into memory, in bytes.
pub const STREAM_BYTES_MAX: usize = 256 * 1024 * 1024;

/// One MiB, for data sizes.
pub const MIB: u64 = 1024 * 1024;

/// `parent/child`.
#[track_caller]
pub fn child(parent: &DatasetName, name: &str) -> Result<DatasetName, CaseFailure> {
    parent
        .join(name)
        .map_err(|e| CaseFailure::new(format!("bad test dataset name: {e}")))
}

/// A component (short snapshot or bookmark name).
#[track_caller]
pub fn comp(name: &str) -> Result<Component, CaseFailure> {
    Component::parse(name).map_err(|e| CaseFailure::new(format!("bad test name: {e}")))
}

/// `dataset@name`.
#[track_caller]
pub fn snap(dataset: &DatasetName, name: &str) -> Result<VersionName, CaseFailure> {
    VersionName::new(dataset.clone(), VersionKind::Snapshot, comp(name)?)
        .map_err(|e| CaseFailure::new(format!("bad test snapshot name: {e}")))
}

/// `dataset#name`.
#[track_caller]
pub fn bmark(dataset: &DatasetName, name: &str) -> Result<VersionName, CaseFailure> {
    VersionName::new(dataset.clone(), VersionKind::Bookmark, comp(name)?)
        .map_err(|e| CaseFailure::new(format!("bad test bookmark name: {e}")))
}

/// Takes the snapshots one call each, in order (so each gets its own txg).
pub async fn snapshots(
    h: &dyn Harness,
    dataset: &DatasetName,
    names: &[&str],
) -> Result<(), CaseFailure> {
    for name in names {
        let s = snap(dataset, name)?;
        h.backend()
            .snapshot(std::slice::from_ref(&s))
            .await
            .ctx(format!("snapshot `{s}`"))?;
    }
    Ok(())
}

/// Writes `bytes` and then takes each snapshot (write before each).
pub async fn write_and_snapshot(
    h: &dyn Harness,
    dataset: &DatasetName,
    names: &[&str],
    bytes: u64,
) -> Result<(), CaseFailure> {
    for name in names {
        h.write(dataset, bytes).await?;
        snapshots(h, dataset, &[name]).await?;
    }
    Ok(())
}

/// The versions of one dataset.
pub async fn versions(
    h: &dyn Harness,
    dataset: &DatasetName,
    types: VersionTypes,
) -> Result<Vec<Version>, CaseFailure> {
    let listing = h
        .backend()
        .list_versions(std::slice::from_ref(dataset), types)
        .await
        .ctx(format!("list versions of `{dataset}`"))?;
    Ok(listing.versions(dataset).to_vec())
}

/// The relative names (`@a`, `#b`) of versions, in the order given.
pub fn rel_names(versions: &[Version]) -> Vec<String> {
    versions.iter().map(Version::relative_name).collect()
}

/// The relative names of a dataset's versions, in listing order.
pub async fn names_of(
    h: &dyn Harness,
    dataset: &DatasetName,
    types: VersionTypes,
) -> Result<Vec<String>, CaseFailure> {
    Ok(rel_names(&versions(h, dataset, types).await?))
}

/// One version, looked up in its dataset's listing.
pub async fn version(h: &dyn Harness, name: &VersionName) -> Result<Version, CaseFailure> {
    let types = match name.kind() {
        VersionKind::Snapshot => VersionTypes::Snapshots,
        VersionKind::Bookmark => VersionTypes::Bookmarks,
    };
    versions(h, name.dataset(), types)
        .await?
        .into_iter()
        .find(|v| &v.name == name.short())
        .ok_or_else(|| CaseFailure::new(format!("`{name}` is not in its dataset's listing")))
}

/// The GUID of one version.
pub async fn guid(h: &dyn Harness, name: &VersionName) -> Result<Guid, CaseFailure> {
    Ok(version(h, name).await?.guid)
}

/// The names of the datasets under `root` (root included), relative to root's parent.
pub async fn dataset_names(
    h: &dyn Harness,
    root: &DatasetName,
) -> Result<Vec<String>, CaseFailure> {
    let entries = h
        .backend()
        .list_datasets(Some(root), &[])
        .await
        .ctx(format!("list datasets under `{root}`"))?;
    Ok(entries
        .into_iter()
        .map(|e| e.name.as_str().to_owned())
        .collect())
}

/// Whether a dataset exists (per `list_datasets` of the pool).
pub async fn exists(h: &dyn Harness, dataset: &DatasetName) -> Result<bool, CaseFailure> {
    match h.backend().list_datasets(Some(dataset), &[]).await {
        Ok(entries) => Ok(entries.iter().any(|e| &e.name == dataset)),
        Err(e) if e.kind == ZfsErrorKind::DoesNotExist => Ok(false),
        Err(e) => Err(e).ctx(format!("list `{dataset}`")),
    }
}

/// A plain receive request: no `-s`, no `-F`, no property options.
pub fn recv_request(dataset: &DatasetName, to: &VersionName, to_guid: Guid) -> ReceiveRequest {
    ReceiveRequest {
        dataset: dataset.clone(),
        to: to.short().clone(),
        to_guid,
        resumable: false,
        force: false,
        properties_override: BTreeMap::new(),
        properties_inherit: Vec::new(),
    }
}

/// A send request with default flags.
pub fn send_request(source: SendSource) -> SendRequest {
    SendRequest {
        source,
        flags: SendFlags::default(),
    }
}

/// `zfs send ... | zfs receive ...` within one backend; the send's own error wins if it fails
/// to start.
pub async fn transfer(
    h: &dyn Harness,
    send: &SendRequest,
    recv: &ReceiveRequest,
) -> Result<Received, ZfsError> {
    let stream = h.backend().send(send).await?;
    h.backend().receive(recv, stream).await
}

/// Sends `to` in full into `target` (which must not exist), checking the received GUID.
pub async fn replicate_full(
    h: &dyn Harness,
    to: &VersionName,
    target: &DatasetName,
) -> Result<Received, CaseFailure> {
    let g = guid(h, to).await?;
    transfer(
        h,
        &send_request(SendSource::Full { to: to.clone() }),
        &recv_request(target, to, g),
    )
    .await
    .ctx(format!("full send of `{to}` into `{target}`"))
}

/// Sends `from`..`to` incrementally (`-i`) into `target`.
pub async fn replicate_incremental(
    h: &dyn Harness,
    from: &VersionName,
    to: &VersionName,
    target: &DatasetName,
) -> Result<Received, CaseFailure> {
    let g = guid(h, to).await?;
    transfer(
        h,
        &send_request(SendSource::Incremental {
            from: from.clone(),
            to: to.clone(),
        }),
        &recv_request(target, to, g),
    )
    .await
    .ctx(format!(
        "incremental send `{from}` -> `{to}` into `{target}`"
    ))
}

/// Reads a whole stream into memory (at most [`STREAM_BYTES_MAX`]).
pub async fn read_all(mut stream: ByteStream) -> Result<Vec<u8>, std::io::Error> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(buf);
        }
        if buf.len() + n > STREAM_BYTES_MAX {
            return Err(std::io::Error::other(format!(
                "stream longer than {STREAM_BYTES_MAX} bytes"
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The whole send stream of a request, as bytes.
pub async fn send_bytes(h: &dyn Harness, request: &SendRequest) -> Result<Vec<u8>, CaseFailure> {
    let stream = h
        .backend()
        .send(request)
        .await
        .ctx(format!("send {:?}", request.source))?;
    read_all(stream).await.map_err(|e| {
        let z = ZfsError::from_io(Operation::Send, format!("{:?}", request.source), &e);
        CaseFailure::new(format!("reading send stream: {:?}: {z}", z.kind))
    })
}

/// A stream over bytes in memory.
pub fn stream_of(bytes: Vec<u8>) -> ByteStream {
    Box::pin(std::io::Cursor::new(bytes))
}

/// The placeholder property and `mountpoint` of `dataset` as (value, source), for comparing
/// with [`local_placeholder_props`].
pub async fn placeholder_props(
    h: &dyn Harness,
    dataset: &DatasetName,
) -> Result<BTreeMap<String, (String, PropertySource)>, CaseFailure> {
    let props = h
        .backend()
        .get_properties(
            &dataset.clone().into(),
            &[PLACEHOLDER_PROPERTY, "mountpoint"],
        )
        .await
        .ctx("get")?;
    Ok(props
        .into_iter()
        .map(|(k, p)| (k, (p.value, p.source)))
        .collect())
}

/// What [`placeholder_props`] returns for a dataset whose placeholder property is `placeholder`
/// and whose `mountpoint` is `none`, both set locally.
pub fn local_placeholder_props(placeholder: &str) -> BTreeMap<String, (String, PropertySource)> {
    [
        (
            PLACEHOLDER_PROPERTY.to_owned(),
            (placeholder.to_owned(), PropertySource::Local),
        ),
        (
            "mountpoint".to_owned(),
            ("none".to_owned(), PropertySource::Local),
        ),
    ]
    .into_iter()
    .collect()
}

/// Destroys `root` and everything below it, releasing every hold on its snapshots first
/// (`zfs destroy -r` refuses held snapshots). A missing `root` is success.
pub async fn destroy_tree(
    backend: &dyn zferry_core::backend::ZfsBackend,
    root: &DatasetName,
) -> Result<(), ZfsError> {
    let datasets = match backend.list_datasets(Some(root), &[]).await {
        Ok(entries) => entries.into_iter().map(|e| e.name).collect::<Vec<_>>(),
        Err(e) if e.kind == ZfsErrorKind::DoesNotExist => return Ok(()),
        Err(e) => return Err(e),
    };
    let listing = backend
        .list_versions(&datasets, VersionTypes::Snapshots)
        .await?;
    for dataset in &datasets {
        for v in listing.versions(dataset) {
            if v.userrefs.unwrap_or(0) == 0 {
                continue;
            }
            let name = VersionName::new(dataset.clone(), VersionKind::Snapshot, v.name.clone())
                .map_err(|e| {
                    ZfsError::new(
                        Operation::Release,
                        dataset,
                        ZfsErrorKind::Other {
                            detail: e.to_string(),
                        },
                    )
                })?;
            for tag in backend.holds(&name).await? {
                backend.release(&tag, std::slice::from_ref(&name)).await?;
            }
        }
    }
    backend.destroy_dataset(root, true).await
}
