//! Receiving: full, incremental, ranges, bookmarks, encryption, placeholders, resumable state,
//! out of space.

use std::collections::BTreeMap;

use zferry_core::backend::{
    PLACEHOLDER_PROPERTY, PlaceholderEncryption, PropertySource, ReceiveRequest, SendFlags,
    SendRequest, SendSource, VersionTypes, ZfsErrorKind,
};
use zferry_core::name::DatasetName;
use zferry_core::resume_token::{ResumeToken, ResumeTokenContents};
use zferry_core::version::Guid;

use super::check::{Ctx, ensure, ensure_eq, expect_err_where, expect_kind};
use super::util::{
    MIB, bmark, child, comp, exists, guid, local_placeholder_props, names_of, placeholder_props,
    recv_request, replicate_full, replicate_incremental, send_bytes, send_request, snap, snapshots,
    stream_of, transfer, versions, write_and_snapshot,
};
use super::{CaseFailure, DatasetSpec, Harness, case_table};

case_table!(
    full_receive_keeps_guid,
    full_receive_onto_existing_is_already_exists,
    receive_checks_the_to_guid,
    incremental_receive_onto_modified_target,
    incremental_receive_without_base,
    incremental_receive_onto_target_with_newer_snapshot,
    incremental_receive_onto_target_with_noop_newer_snapshot,
    incremental_range_receive_brings_every_snapshot,
    send_from_bookmark,
    receive_of_a_volume,
    receive_force_into_encrypted_err,
    receive_force_rollback_works_unencrypted,
    receive_force_full_onto_target_with_snapshots,
    raw_incremental_onto_target_with_noop_newer_snapshot,
    raw_send_of_encrypted_dataset,
    receive_into_placeholder,
    receive_property_override_and_exclude,
    resumable_recv_and_token_handling,
    resume_token_parsing,
    interrupted_receive_without_resumable_leaves_nothing,
    partial_state_blocks_other_receives,
    abort_receive_without_state_is_success,
    abort_receive_of_missing_dataset,
    resume_token_is_none_without_partial_receive,
    enospc_mid_receive_leaves_resumable_state,
    enospc_without_resumable_leaves_nothing,
);

/// A source filesystem with `names` snapshots, each after 1 MiB of new data, and an absent
/// target name next to it.
async fn source_and_target(
    h: &dyn Harness,
    case: &str,
    names: &[&str],
) -> Result<(DatasetName, DatasetName), CaseFailure> {
    let root = h.fresh_root(case).await?;
    let src = child(&root, "src fs")?;
    h.create_dataset(&src, DatasetSpec::FILESYSTEM).await?;
    write_and_snapshot(h, &src, names, MIB).await?;
    Ok((src, child(&root, "dst fs")?))
}

/// A full receive creates the target with the sender's guid for the snapshot.
async fn full_receive_keeps_guid(h: &dyn Harness) -> Result<(), CaseFailure> {
    let (src, dst) = source_and_target(h, "full_receive", &["1 one"]).await?;
    let s = snap(&src, "1 one")?;
    let g = guid(h, &s).await?;
    let received = replicate_full(h, &s, &dst).await?;
    ensure_eq!(
        (received.to.guid, received.to.name.as_str()),
        (g, "1 one"),
        "received"
    );
    ensure!(received.to.is_snapshot(), "received a non-snapshot");
    let listed = versions(h, &dst, VersionTypes::All).await?;
    ensure_eq!(
        listed,
        vec![received.to],
        "target's versions are what receive returned"
    );
    Ok(())
}

/// A full stream onto an existing dataset without force is AlreadyExists.
async fn full_receive_onto_existing_is_already_exists(h: &dyn Harness) -> Result<(), CaseFailure> {
    let (src, dst) = source_and_target(h, "full_onto_existing", &["1"]).await?;
    h.create_dataset(&dst, DatasetSpec::FILESYSTEM).await?;
    let s = snap(&src, "1")?;
    let g = guid(h, &s).await?;
    expect_kind(
        transfer(
            h,
            &send_request(SendSource::Full { to: s.clone() }),
            &recv_request(&dst, &s, g),
        )
        .await,
        &ZfsErrorKind::AlreadyExists,
        "full receive onto an existing dataset",
    )?;
    ensure_eq!(
        names_of(h, &dst, VersionTypes::All).await?,
        Vec::<String>::new(),
        "target unchanged"
    );
    Ok(())
}

/// A receive whose `to` arrives with another GUID than requested is ExistsWithOtherGuid
/// carrying the GUID that arrived (the received snapshot stays: it is what the stream held).
async fn receive_checks_the_to_guid(h: &dyn Harness) -> Result<(), CaseFailure> {
    let (src, dst) = source_and_target(h, "receive_checks_guid", &["1"]).await?;
    let s = snap(&src, "1")?;
    let g = guid(h, &s).await?;
    let wrong = Guid(g.0 ^ 1);
    expect_kind(
        transfer(
            h,
            &send_request(SendSource::Full { to: s.clone() }),
            &recv_request(&dst, &s, wrong),
        )
        .await,
        &ZfsErrorKind::ExistsWithOtherGuid { existing: g },
        "receive expecting another guid",
    )?;
    ensure_eq!(
        versions(h, &dst, VersionTypes::All)
            .await?
            .iter()
            .map(|v| (v.relative_name(), v.guid))
            .collect::<Vec<_>>(),
        vec![("@1".to_owned(), g)],
        "what arrived"
    );
    Ok(())
}

/// An incremental onto a target written to since its snapshot is ModifiedSinceSnapshot.
async fn incremental_receive_onto_modified_target(h: &dyn Harness) -> Result<(), CaseFailure> {
    let (src, dst) = source_and_target(h, "incremental_modified", &["1", "2"]).await?;
    replicate_full(h, &snap(&src, "1")?, &dst).await?;
    h.write(&dst, MIB).await?;
    let to = snap(&src, "2")?;
    let g = guid(h, &to).await?;
    expect_kind(
        transfer(
            h,
            &send_request(SendSource::Incremental {
                from: snap(&src, "1")?,
                to: to.clone(),
            }),
            &recv_request(&dst, &to, g),
        )
        .await,
        &ZfsErrorKind::ModifiedSinceSnapshot,
        "incremental onto a modified target",
    )?;
    ensure_eq!(
        names_of(h, &dst, VersionTypes::All).await?,
        vec!["@1"],
        "target unchanged"
    );
    Ok(())
}

/// An incremental onto a target that lacks the base is IncrementalSourceMismatch.
async fn incremental_receive_without_base(h: &dyn Harness) -> Result<(), CaseFailure> {
    let (src, dst) = source_and_target(h, "incremental_no_base", &["1", "2", "3"]).await?;
    replicate_full(h, &snap(&src, "1")?, &dst).await?;
    let to = snap(&src, "3")?;
    let g = guid(h, &to).await?;
    expect_kind(
        transfer(
            h,
            &send_request(SendSource::Incremental {
                from: snap(&src, "2")?,
                to: to.clone(),
            }),
            &recv_request(&dst, &to, g),
        )
        .await,
        &ZfsErrorKind::IncrementalSourceMismatch,
        "incremental @2->@3 onto a target with only @1",
    )?;
    Ok(())
}

/// A target snapshot newer than the base, with other data, is ModifiedSinceSnapshot (what
/// OpenZFS 2.3 says, not "does not match incremental source").
async fn incremental_receive_onto_target_with_newer_snapshot(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let (src, dst) = source_and_target(h, "incremental_newer", &["1", "2"]).await?;
    replicate_full(h, &snap(&src, "1")?, &dst).await?;
    write_and_snapshot(h, &dst, &["newer"], MIB).await?;
    let to = snap(&src, "2")?;
    let g = guid(h, &to).await?;
    expect_kind(
        transfer(
            h,
            &send_request(SendSource::Incremental {
                from: snap(&src, "1")?,
                to: to.clone(),
            }),
            &recv_request(&dst, &to, g),
        )
        .await,
        &ZfsErrorKind::ModifiedSinceSnapshot,
        "incremental onto a target with a newer snapshot",
    )?;
    ensure_eq!(
        names_of(h, &dst, VersionTypes::All).await?,
        vec!["@1", "@newer"],
        "target unchanged"
    );
    Ok(())
}

/// OpenZFS accepts a non-raw incremental onto a target whose newer snapshot holds no changes
/// since the base; the newer snapshot stays, the received one comes after it.
async fn incremental_receive_onto_target_with_noop_newer_snapshot(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let (src, dst) = source_and_target(h, "incremental_noop_newer", &["1", "2"]).await?;
    replicate_full(h, &snap(&src, "1")?, &dst).await?;
    snapshots(h, &dst, &["noop"]).await?;
    let received = replicate_incremental(h, &snap(&src, "1")?, &snap(&src, "2")?, &dst).await?;
    ensure_eq!(
        received.to.guid,
        guid(h, &snap(&src, "2")?).await?,
        "received guid"
    );
    ensure_eq!(
        names_of(h, &dst, VersionTypes::All).await?,
        vec!["@1", "@noop", "@2"],
        "target after"
    );
    Ok(())
}

/// `-I` brings every snapshot between, each with the sender's guid, in createtxg order.
async fn incremental_range_receive_brings_every_snapshot(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let names = ["1", "2 two", "3", "4 four"];
    let (src, dst) = source_and_target(h, "incremental_range", &names).await?;
    replicate_full(h, &snap(&src, "1")?, &dst).await?;
    let to = snap(&src, "4 four")?;
    let g = guid(h, &to).await?;
    let received = transfer(
        h,
        &send_request(SendSource::IncrementalRange {
            from: snap(&src, "1")?,
            to: to.clone(),
        }),
        &recv_request(&dst, &to, g),
    )
    .await
    .ctx("receive -I @1..@4")?;
    ensure_eq!(received.to.guid, g, "received guid");
    let sent: Vec<(String, Guid)> = versions(h, &src, VersionTypes::Snapshots)
        .await?
        .into_iter()
        .map(|v| (v.relative_name(), v.guid))
        .collect();
    let got: Vec<(String, Guid)> = versions(h, &dst, VersionTypes::Snapshots)
        .await?
        .into_iter()
        .map(|v| (v.relative_name(), v.guid))
        .collect();
    ensure_eq!(got, sent, "all snapshots with the sender's guids");
    Ok(())
}

/// An incremental from a bookmark, after the base snapshot is gone on the sender.
async fn send_from_bookmark(h: &dyn Harness) -> Result<(), CaseFailure> {
    let (src, dst) = source_and_target(h, "send_from_bookmark", &["1", "2"]).await?;
    replicate_full(h, &snap(&src, "1")?, &dst).await?;
    let bm = bmark(&src, "1 cursor")?;
    h.backend()
        .bookmark(&snap(&src, "1")?, &bm)
        .await
        .ctx("bookmark @1")?;
    h.backend()
        .destroy_snapshots(&src, &[comp("1")?])
        .await
        .ctx("destroy @1 on the sender")?;
    let received = replicate_incremental(h, &bm, &snap(&src, "2")?, &dst).await?;
    ensure_eq!(
        received.to.guid,
        guid(h, &snap(&src, "2")?).await?,
        "received guid"
    );
    ensure_eq!(
        names_of(h, &dst, VersionTypes::All).await?,
        vec!["@1", "@2"],
        "target"
    );
    Ok(())
}

/// A volume with data goes through full and incremental sends.
async fn receive_of_a_volume(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("receive_volume").await?;
    let (vol, dst) = (child(&root, "vol src")?, child(&root, "vol dst")?);
    h.create_dataset(&vol, DatasetSpec::volume(16 * MIB))
        .await?;
    write_and_snapshot(h, &vol, &["1", "2"], MIB).await?;
    replicate_full(h, &snap(&vol, "1")?, &dst).await?;
    replicate_incremental(h, &snap(&vol, "1")?, &snap(&vol, "2")?, &dst).await?;
    let typed = h
        .backend()
        .list_datasets(Some(&dst), &["type"])
        .await
        .ctx("list the received volume")?;
    ensure_eq!(
        typed.first().map(|e| e.properties.clone()),
        Some(vec!["volume".to_owned()]),
        "received type"
    );
    ensure_eq!(
        names_of(h, &dst, VersionTypes::All).await?,
        vec!["@1", "@2"],
        "received snapshots"
    );
    Ok(())
}

/// zrepl `ReceiveForceIntoEncryptedErr`: `recv -F` of a plain stream onto an encrypted
/// dataset is EncryptedOverwriteRefused.
async fn receive_force_into_encrypted_err(h: &dyn Harness) -> Result<(), CaseFailure> {
    let (src, _) = source_and_target(h, "receive_force_encrypted", &["1"]).await?;
    let enc = child(
        &src.parent()
            .ok_or_else(|| CaseFailure::new("source has no parent"))?,
        "enc target",
    )?;
    h.create_dataset(&enc, DatasetSpec::ENCRYPTED).await?;
    h.write(&enc, MIB).await?;
    let s = snap(&src, "1")?;
    let g = guid(h, &s).await?;
    let mut request = recv_request(&enc, &s, g);
    request.force = true;
    expect_kind(
        transfer(h, &send_request(SendSource::Full { to: s }), &request).await,
        &ZfsErrorKind::EncryptedOverwriteRefused,
        "forced plain receive onto an encrypted dataset",
    )?;
    ensure_eq!(
        names_of(h, &enc, VersionTypes::All).await?,
        Vec::<String>::new(),
        "target unchanged"
    );
    Ok(())
}

/// zrepl `ReceiveForceRollbackWorksUnencrypted`: rollback to the oldest, destroy it, `recv
/// -F` a full stream: exactly the received snapshot is left.
async fn receive_force_rollback_works_unencrypted(h: &dyn Harness) -> Result<(), CaseFailure> {
    let (src, dst) = source_and_target(h, "receive_force_rollback", &["1"]).await?;
    h.create_dataset(&dst, DatasetSpec::FILESYSTEM).await?;
    write_and_snapshot(h, &dst, &["a", "b", "c"], MIB).await?;
    h.backend()
        .rollback(&snap(&dst, "a")?)
        .await
        .ctx("rollback to the oldest")?;
    h.backend()
        .destroy_snapshots(&dst, &[comp("a")?])
        .await
        .ctx("destroy the oldest")?;
    let s = snap(&src, "1")?;
    let g = guid(h, &s).await?;
    let mut request = recv_request(&dst, &s, g);
    request.force = true;
    let received = transfer(h, &send_request(SendSource::Full { to: s }), &request)
        .await
        .ctx("forced full receive")?;
    ensure_eq!(received.to.guid, g, "received guid");
    ensure_eq!(
        names_of(h, &dst, VersionTypes::All).await?,
        vec!["@1"],
        "exactly the received snapshot"
    );
    Ok(())
}

/// `recv -F` of a full stream onto a target that has snapshots is refused (AlreadyExists:
/// "destination has snapshots ... must destroy them to overwrite it"); this is why the
/// placeholder replacement rolls back and destroys first.
async fn receive_force_full_onto_target_with_snapshots(h: &dyn Harness) -> Result<(), CaseFailure> {
    let (src, dst) = source_and_target(h, "receive_force_with_snapshots", &["1"]).await?;
    h.create_dataset(&dst, DatasetSpec::FILESYSTEM).await?;
    write_and_snapshot(h, &dst, &["own"], MIB).await?;
    let s = snap(&src, "1")?;
    let g = guid(h, &s).await?;
    let mut request = recv_request(&dst, &s, g);
    request.force = true;
    expect_kind(
        transfer(h, &send_request(SendSource::Full { to: s }), &request).await,
        &ZfsErrorKind::AlreadyExists,
        "forced full receive onto a target with snapshots",
    )?;
    ensure_eq!(
        names_of(h, &dst, VersionTypes::All).await?,
        vec!["@own"],
        "target unchanged"
    );
    Ok(())
}

/// Unlike a plain one, a raw incremental onto a target whose newer snapshot holds no changes
/// is refused.
async fn raw_incremental_onto_target_with_noop_newer_snapshot(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let root = h.fresh_root("raw_incremental_noop_newer").await?;
    let (src, dst) = (child(&root, "enc src")?, child(&root, "raw dst")?);
    h.create_dataset(&src, DatasetSpec::ENCRYPTED).await?;
    write_and_snapshot(h, &src, &["1", "2"], MIB).await?;
    let raw = SendFlags {
        raw: true,
        ..SendFlags::default()
    };
    let (s1, s2) = (snap(&src, "1")?, snap(&src, "2")?);
    let g1 = guid(h, &s1).await?;
    transfer(
        h,
        &SendRequest {
            source: SendSource::Full { to: s1.clone() },
            flags: raw,
        },
        &recv_request(&dst, &s1, g1),
    )
    .await
    .ctx("raw full receive of @1")?;
    snapshots(h, &dst, &["noop"]).await?;
    let g2 = guid(h, &s2).await?;
    expect_kind(
        transfer(
            h,
            &SendRequest {
                source: SendSource::Incremental {
                    from: s1,
                    to: s2.clone(),
                },
                flags: raw,
            },
            &recv_request(&dst, &s2, g2),
        )
        .await,
        &ZfsErrorKind::ModifiedSinceSnapshot,
        "raw incremental onto a target with a no-op newer snapshot",
    )?;
    ensure_eq!(
        names_of(h, &dst, VersionTypes::All).await?,
        vec!["@1", "@noop"],
        "target unchanged"
    );
    Ok(())
}

/// A raw send of an encrypted dataset is received encrypted, with the key not loaded, and an
/// incremental raw send follows onto it.
async fn raw_send_of_encrypted_dataset(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("raw_send").await?;
    let (src, dst) = (child(&root, "enc src")?, child(&root, "raw dst")?);
    h.create_dataset(&src, DatasetSpec::ENCRYPTED).await?;
    write_and_snapshot(h, &src, &["1", "2"], MIB).await?;
    let raw = SendFlags {
        raw: true,
        ..SendFlags::default()
    };
    for (source, to) in [
        (
            SendSource::Full {
                to: snap(&src, "1")?,
            },
            "1",
        ),
        (
            SendSource::Incremental {
                from: snap(&src, "1")?,
                to: snap(&src, "2")?,
            },
            "2",
        ),
    ] {
        let s = snap(&src, to)?;
        let g = guid(h, &s).await?;
        let received = transfer(
            h,
            &SendRequest { source, flags: raw },
            &recv_request(&dst, &s, g),
        )
        .await
        .ctx(format!("raw receive of @{to}"))?;
        ensure_eq!(received.to.guid, g, "received guid of @{to}");
    }
    let props = h
        .backend()
        .get_properties(
            &dst.clone().into(),
            &["encryption", "keystatus", "encryptionroot"],
        )
        .await
        .ctx("get")?;
    let value = |k: &str| props.get(k).map(|p| p.value.clone()).unwrap_or_default();
    ensure_eq!(
        (
            value("encryption"),
            value("keystatus"),
            value("encryptionroot")
        ),
        (
            "aes-256-gcm".to_owned(),
            "unavailable".to_owned(),
            dst.as_str().to_owned()
        ),
        "received encryption state"
    );
    ensure_eq!(
        names_of(h, &dst, VersionTypes::All).await?,
        vec!["@1", "@2"],
        "received snapshots"
    );
    Ok(())
}

/// Placeholder replacement as zrepl does it: flip `zrepl:placeholder` off, `recv -F` a full
/// stream into the placeholder; the local properties stay.
async fn receive_into_placeholder(h: &dyn Harness) -> Result<(), CaseFailure> {
    let (src, _) = source_and_target(h, "receive_into_placeholder", &["1"]).await?;
    let ph = child(
        &src.parent()
            .ok_or_else(|| CaseFailure::new("source has no parent"))?,
        "place holder",
    )?;
    h.backend()
        .create_placeholder(&ph, PlaceholderEncryption::Inherit)
        .await
        .ctx("create placeholder")?;
    h.backend()
        .set_property(&ph, PLACEHOLDER_PROPERTY, "off")
        .await
        .ctx("flip placeholder off")?;
    let s = snap(&src, "1")?;
    let g = guid(h, &s).await?;
    let mut request = recv_request(&ph, &s, g);
    request.force = true;
    let received = transfer(h, &send_request(SendSource::Full { to: s }), &request)
        .await
        .ctx("forced full receive into the placeholder")?;
    ensure_eq!(received.to.guid, g, "received guid");
    ensure_eq!(
        names_of(h, &ph, VersionTypes::All).await?,
        vec!["@1"],
        "received snapshots"
    );
    let got = placeholder_props(h, &ph).await?;
    ensure_eq!(
        got,
        local_placeholder_props("off"),
        "properties after the receive"
    );
    Ok(())
}

/// zrepl `ReplicationPropertyReplicationWorks` at the backend: with `-p`, a sent property is
/// `received`, `-x` leaves it out, `-o` makes it local with the override value.
async fn receive_property_override_and_exclude(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("receive_properties").await?;
    let (src, dst) = (child(&root, "src")?, child(&root, "dst")?);
    h.create_dataset(&src, DatasetSpec::FILESYSTEM).await?;
    for (k, v) in [
        ("zferry:recv", "r"),
        ("zferry:excl", "e"),
        ("zferry:over", "s"),
    ] {
        h.backend()
            .set_property(&src, k, v)
            .await
            .ctx(format!("set {k}"))?;
    }
    snapshots(h, &src, &["1"]).await?;
    let s = snap(&src, "1")?;
    let g = guid(h, &s).await?;
    let request = ReceiveRequest {
        properties_override: [("zferry:over".to_owned(), "o".to_owned())]
            .into_iter()
            .collect(),
        properties_inherit: vec!["zferry:excl".to_owned()],
        ..recv_request(&dst, &s, g)
    };
    let send = SendRequest {
        source: SendSource::Full { to: s },
        flags: SendFlags {
            properties: true,
            ..SendFlags::default()
        },
    };
    transfer(h, &send, &request)
        .await
        .ctx("receive with -o and -x")?;
    let props = h
        .backend()
        .get_properties(
            &dst.clone().into(),
            &["zferry:recv", "zferry:excl", "zferry:over"],
        )
        .await
        .ctx("get")?;
    let got: BTreeMap<_, _> = props
        .into_iter()
        .map(|(k, p)| (k, (p.value, p.source)))
        .collect();
    let want: BTreeMap<_, _> = [
        ("zferry:recv", "r", PropertySource::Received),
        ("zferry:excl", "-", PropertySource::None),
        ("zferry:over", "o", PropertySource::Local),
    ]
    .into_iter()
    .map(|(k, v, s)| (k.to_owned(), (v.to_owned(), s)))
    .collect();
    ensure_eq!(got, want, "received properties");
    Ok(())
}

/// Receives the first half of a full stream of `@1` with `-s`; returns the error's token.
async fn interrupt_full_receive(
    h: &dyn Harness,
    src: &DatasetName,
    dst: &DatasetName,
    resumable: bool,
) -> Result<Result<zferry_core::backend::Received, zferry_core::backend::ZfsError>, CaseFailure> {
    let s = snap(src, "1")?;
    let g = guid(h, &s).await?;
    let bytes = send_bytes(h, &send_request(SendSource::Full { to: s.clone() })).await?;
    let half = bytes[..bytes.len() / 2].to_vec();
    let mut request = recv_request(dst, &s, g);
    request.resumable = resumable;
    Ok(h.backend().receive(&request, stream_of(half)).await)
}

/// zrepl `ResumableRecvAndTokenHandling`: an interrupted `recv -s` leaves a token equal to the
/// one in the error; a resumed send from it completes the receive with the right guid.
async fn resumable_recv_and_token_handling(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("resumable_recv").await?;
    let (src, dst) = (child(&root, "src fs")?, child(&root, "dst fs")?);
    h.create_dataset(&src, DatasetSpec::FILESYSTEM).await?;
    write_and_snapshot(h, &src, &["1"], 4 * MIB).await?;
    let err = expect_err_where(
        interrupt_full_receive(h, &src, &dst, true).await?,
        "ReceiveInterrupted with a token",
        |k| matches!(k, ZfsErrorKind::ReceiveInterrupted { token: Some(_) }),
        "receive of half a stream with -s",
    )?;
    let ZfsErrorKind::ReceiveInterrupted { token: Some(token) } = err.kind else {
        return Err(CaseFailure::new("unreachable: checked above"));
    };
    let stored = h
        .backend()
        .resume_token(&dst)
        .await
        .ctx("resume token of the target")?;
    ensure_eq!(
        stored.as_deref(),
        Some(token.as_str()),
        "receive_resume_token equals the error's token"
    );
    let s = snap(&src, "1")?;
    let g = guid(h, &s).await?;
    let decoded = decode(&token)?;
    ensure_eq!(
        (decoded.fromguid, decoded.toguid, &decoded.toname),
        (None, g, &s),
        "decoded token (fromguid, toguid, toname)"
    );
    ensure_eq!(
        names_of(h, &dst, VersionTypes::All).await?,
        Vec::<String>::new(),
        "a partial receive shows no snapshot"
    );

    let mut request = recv_request(&dst, &s, g);
    request.resumable = true;
    let received = transfer(h, &send_request(SendSource::Resume { token }), &request)
        .await
        .ctx("resumed send and receive")?;
    ensure_eq!(received.to.guid, g, "resumed receive's guid");
    ensure_eq!(
        h.backend().resume_token(&dst).await.ctx("token after")?,
        None,
        "no token after completion"
    );
    Ok(())
}

/// zrepl `ResumeTokenParsing`, as far as the trait reaches: a real token estimates and resumes;
/// a corrupted one is ResumeTokenInvalid.
async fn resume_token_parsing(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("resume_token_parsing").await?;
    let (src, dst) = (child(&root, "src fs")?, child(&root, "dst fs")?);
    h.create_dataset(&src, DatasetSpec::FILESYSTEM).await?;
    write_and_snapshot(h, &src, &["1"], 4 * MIB).await?;
    let _ = interrupt_full_receive(h, &src, &dst, true).await?;
    let token = h
        .backend()
        .resume_token(&dst)
        .await
        .ctx("token")?
        .ok_or_else(|| CaseFailure::new("no token after an interrupted -s receive"))?;
    ensure!(
        token.starts_with("1-"),
        "token `{token}` lacks the version prefix"
    );
    let decoded = decode(&token)?;
    let s = snap(&src, "1")?;
    ensure_eq!(
        (decoded.toguid, &decoded.toname, decoded.fromguid),
        (guid(h, &s).await?, &s, None),
        "decoded (toguid, toname, fromguid)"
    );
    ensure!(
        decoded.bytes.is_some_and(|b| b > 0),
        "the token should record the bytes received: {decoded:?}"
    );
    let left = h
        .backend()
        .send_estimate(&send_request(SendSource::Resume {
            token: token.clone(),
        }))
        .await
        .ctx("estimate of the resumed send")?;
    ensure!(
        left.is_some_and(|n| n > 0 && n < 4 * MIB + MIB),
        "estimate of the rest: {left:?}"
    );
    // Flip characters in the compressed payload: the checksum no longer matches.
    let corrupt: String = token
        .char_indices()
        .map(|(i, c)| {
            if i > token.len() - 12 && c.is_ascii_hexdigit() {
                if c == '0' { '1' } else { '0' }
            } else {
                c
            }
        })
        .collect();
    let est = h
        .backend()
        .send_estimate(&send_request(SendSource::Resume {
            token: corrupt.clone(),
        }))
        .await;
    expect_kind(
        est,
        &ZfsErrorKind::ResumeTokenInvalid,
        "estimate of a corrupted token",
    )?;
    ensure!(
        ResumeToken::decode(&corrupt).is_err(),
        "the core decoder accepts the corrupted token `{corrupt}`"
    );
    Ok(())
}

/// A cut stream without `-s` is StreamBroken and leaves no dataset and no token.
async fn interrupted_receive_without_resumable_leaves_nothing(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let root = h.fresh_root("interrupted_not_resumable").await?;
    let (src, dst) = (child(&root, "src fs")?, child(&root, "dst fs")?);
    h.create_dataset(&src, DatasetSpec::FILESYSTEM).await?;
    write_and_snapshot(h, &src, &["1"], 4 * MIB).await?;
    expect_kind(
        interrupt_full_receive(h, &src, &dst, false).await?,
        &ZfsErrorKind::StreamBroken,
        "receive of half a stream without -s",
    )?;
    ensure!(
        !exists(h, &dst).await?,
        "`{dst}` exists after a failed receive"
    );
    Ok(())
}

/// With partial state on an existing target, a new (non-resuming) incremental receive is
/// ResumeStatePresent; aborting clears the state and the incremental then works.
async fn partial_state_blocks_other_receives(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("partial_state_blocks").await?;
    let (src, dst) = (child(&root, "src fs")?, child(&root, "dst fs")?);
    h.create_dataset(&src, DatasetSpec::FILESYSTEM).await?;
    write_and_snapshot(h, &src, &["1"], MIB).await?;
    write_and_snapshot(h, &src, &["2"], 4 * MIB).await?;
    replicate_full(h, &snap(&src, "1")?, &dst).await?;
    let (from, to) = (snap(&src, "1")?, snap(&src, "2")?);
    let g = guid(h, &to).await?;
    let inc = send_request(SendSource::Incremental {
        from: from.clone(),
        to: to.clone(),
    });
    let bytes = send_bytes(h, &inc).await?;
    let mut request = recv_request(&dst, &to, g);
    request.resumable = true;
    expect_err_where(
        h.backend()
            .receive(&request, stream_of(bytes[..bytes.len() / 2].to_vec()))
            .await,
        "ReceiveInterrupted",
        |k| matches!(k, ZfsErrorKind::ReceiveInterrupted { .. }),
        "half an incremental with -s",
    )?;
    let token = h
        .backend()
        .resume_token(&dst)
        .await
        .ctx("token")?
        .ok_or_else(|| CaseFailure::new("no token on the existing target"))?;
    let decoded = decode(&token)?;
    ensure_eq!(
        (decoded.fromguid, decoded.toguid, &decoded.toname),
        (Some(guid(h, &from).await?), g, &to),
        "decoded incremental token (fromguid, toguid, toname)"
    );
    ensure_eq!(
        names_of(h, &dst, VersionTypes::All).await?,
        vec!["@1"],
        "target keeps @1 and shows no partial snapshot"
    );
    expect_kind(
        transfer(h, &inc, &recv_request(&dst, &to, g)).await,
        &ZfsErrorKind::ResumeStatePresent,
        "a fresh incremental over partial state",
    )?;
    h.backend().abort_receive(&dst).await.ctx("abort")?;
    ensure_eq!(
        h.backend()
            .resume_token(&dst)
            .await
            .ctx("token after abort")?,
        None,
        "abort clears the token"
    );
    replicate_incremental(h, &from, &to, &dst).await?;
    ensure_eq!(
        names_of(h, &dst, VersionTypes::All).await?,
        vec!["@1", "@2"],
        "target after"
    );
    Ok(())
}

/// `zfs receive -A` without partial state is success (zrepl treats it so).
async fn abort_receive_without_state_is_success(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("abort_without_state").await?;
    snapshots(h, &root, &["1"]).await?;
    h.backend()
        .abort_receive(&root)
        .await
        .ctx("abort without state")?;
    ensure_eq!(
        names_of(h, &root, VersionTypes::All).await?,
        vec!["@1"],
        "nothing changed"
    );
    Ok(())
}

/// `zfs receive -A` of a dataset that does not exist is DoesNotExist.
async fn abort_receive_of_missing_dataset(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("abort_missing").await?;
    expect_kind(
        h.backend().abort_receive(&child(&root, "not here")?).await,
        &ZfsErrorKind::DoesNotExist,
        "abort of a missing dataset",
    )?;
    Ok(())
}

/// No partial receive: no token; a missing dataset: DoesNotExist.
async fn resume_token_is_none_without_partial_receive(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("resume_token_none").await?;
    ensure_eq!(
        h.backend().resume_token(&root).await.ctx("token")?,
        None,
        "token of a plain dataset"
    );
    expect_kind(
        h.backend().resume_token(&child(&root, "missing")?).await,
        &ZfsErrorKind::DoesNotExist,
        "token of a missing dataset",
    )?;
    Ok(())
}

/// Size of the pool for out-of-space cases (the smallest OpenZFS accepts is 64 MiB).
const SMALL_POOL_BYTES: u64 = 64 * MIB;

/// Data that cannot fit in [`SMALL_POOL_BYTES`].
const TOO_BIG_BYTES: u64 = 80 * MIB;

/// Runs `body` with a fresh small pool and a source too big for it; destroys the pool after.
async fn with_small_pool(
    h: &dyn Harness,
    case: &str,
    pool_name: &str,
    resumable: bool,
) -> Result<(DatasetName, Result<(), CaseFailure>), CaseFailure> {
    let root = h.fresh_root(case).await?;
    let src = child(&root, "big src")?;
    h.create_dataset(&src, DatasetSpec::FILESYSTEM).await?;
    write_and_snapshot(h, &src, &["1"], TOO_BIG_BYTES).await?;
    let pool = h.create_small_pool(pool_name, SMALL_POOL_BYTES).await?;
    let pool_ds = DatasetName::parse(&pool).map_err(|e| CaseFailure::new(e.to_string()))?;
    let dst = child(&pool_ds, "dst fs")?;
    let s = snap(&src, "1")?;
    let g = guid(h, &s).await?;
    let mut request = recv_request(&dst, &s, g);
    request.resumable = resumable;
    let outcome = expect_kind(
        transfer(h, &send_request(SendSource::Full { to: s }), &request).await,
        &ZfsErrorKind::NoSpace,
        "receive onto a full pool",
    )
    .map(|_| ());
    Ok((dst, outcome))
}

/// Out of space mid-receive with `-s` is NoSpace and leaves a resume token; abort clears it
/// (and, for a new filesystem, removes it).
async fn enospc_mid_receive_leaves_resumable_state(h: &dyn Harness) -> Result<(), CaseFailure> {
    let (dst, outcome) = with_small_pool(h, "enospc_resumable", "zfsmall1", true).await?;
    let checks = async {
        outcome?;
        ensure!(
            h.backend().resume_token(&dst).await.ctx("token")?.is_some(),
            "no resume token after running out of space with -s"
        );
        h.backend().abort_receive(&dst).await.ctx("abort")?;
        ensure!(
            !exists(h, &dst).await?,
            "`{dst}` still exists after aborting its first receive"
        );
        Ok(())
    }
    .await;
    h.destroy_pool(dst.pool()).await?;
    checks
}

/// Out of space without `-s` is NoSpace and leaves nothing.
async fn enospc_without_resumable_leaves_nothing(h: &dyn Harness) -> Result<(), CaseFailure> {
    let (dst, outcome) = with_small_pool(h, "enospc_plain", "zfsmall2", false).await?;
    let checks = async {
        outcome?;
        ensure!(
            !exists(h, &dst).await?,
            "`{dst}` exists after a failed receive"
        );
        Ok(())
    }
    .await;
    h.destroy_pool(dst.pool()).await?;
    checks
}

/// Decodes a resume token with the core's decoder.
#[track_caller]
fn decode(token: &str) -> Result<ResumeTokenContents, CaseFailure> {
    ResumeToken::decode(token)
        .map(|t| t.contents().clone())
        .map_err(|e| CaseFailure::new(format!("the core cannot decode token `{token}`: {e}")))
}
