//! Shared helpers: names with spaces, a world with a sender and a receiver pool, transfers.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::BTreeMap;

use zferry_core::backend::{
    ReceiveRequest, Received, SendFlags, SendRequest, SendSource, ZfsBackend, ZfsError,
    ZfsErrorKind,
};
use zferry_core::name::{Component, DatasetName, VersionName};
use zferry_core::version::Guid;
use zferry_sim::SimZfs;

pub const TIB: u64 = 1 << 40;
pub const MIB: u64 = 1 << 20;
pub const NOW: i64 = 1_800_000_000;

pub fn ds(s: &str) -> DatasetName {
    DatasetName::parse(s).unwrap()
}

pub fn v(s: &str) -> VersionName {
    VersionName::parse(s).unwrap()
}

pub fn c(s: &str) -> Component {
    Component::parse(s).unwrap()
}

/// Pools `src` and `dst` (1 TiB each) and the dataset `src/my data`.
pub fn world(seed: u64) -> SimZfs {
    let sim = SimZfs::new(seed, || NOW);
    sim.setup().create_pool("src", TIB).unwrap();
    sim.setup().create_pool("dst", TIB).unwrap();
    sim.setup().create_dataset(&ds("src/my data")).unwrap();
    sim
}

/// Writes `mib` MiB and takes `snap`.
pub fn write_and_snap(sim: &SimZfs, snap: &str, mib: u64) {
    let snap = v(snap);
    sim.setup().write(snap.dataset(), mib * MIB).unwrap();
    sim.setup().snapshot(&[snap]).unwrap();
}

pub fn guid(sim: &SimZfs, version: &str) -> Guid {
    let version = v(version);
    sim.version(&version)
        .unwrap_or_else(|| {
            panic!(
                "{version} missing: {:?}",
                sim.dump(version.dataset().pool())
            )
        })
        .guid
}

pub fn full(to: &str) -> SendRequest {
    SendRequest {
        source: SendSource::Full { to: v(to) },
        flags: SendFlags::default(),
    }
}

pub fn incremental(from: &str, to: &str) -> SendRequest {
    SendRequest {
        source: SendSource::Incremental {
            from: v(from),
            to: v(to),
        },
        flags: SendFlags::default(),
    }
}

pub fn recv(dataset: &str, to: &str, to_guid: Guid) -> ReceiveRequest {
    ReceiveRequest {
        dataset: ds(dataset),
        to: c(to),
        to_guid,
        resumable: true,
        force: false,
        properties_override: BTreeMap::new(),
        properties_inherit: Vec::new(),
    }
}

pub async fn transfer(
    sim: &SimZfs,
    send: &SendRequest,
    receive: &ReceiveRequest,
) -> Result<Received, ZfsError> {
    let stream = sim.send(send).await?;
    sim.receive(receive, stream).await
}

pub fn kind(r: Result<impl std::fmt::Debug, ZfsError>) -> ZfsErrorKind {
    r.expect_err("expected an error").kind
}

/// Reads a send stream to its end; the sender's error if it failed.
pub async fn drain(mut stream: zferry_core::backend::ByteStream) -> Result<Vec<u8>, ZfsError> {
    let mut out = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut out)
        .await
        .map_err(|e| ZfsError::from_io(zferry_core::backend::Operation::Send, "stream", &e))?;
    Ok(out)
}

/// Starts a send and reads it to the end: errors from starting and from the stream alike.
pub async fn send_all(sim: &SimZfs, request: &SendRequest) -> Result<Vec<u8>, ZfsError> {
    drain(sim.send(request).await?).await
}
