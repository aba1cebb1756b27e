//! Sends and receives: full, incremental, -I, bookmark bases, resumable state, encryption,
//! space, and every receive error kind.

mod common;

use common::*;
use zferry_core::backend::{
    ObjectName, PropertySource, SendFlags, SendRequest, SendSource, ZfsBackend, ZfsErrorKind,
};
use zferry_core::name::VersionKind;
use zferry_core::version::Guid;
use zferry_sim::{DatasetOptions, Fault, StreamBreak, token};

#[tokio::test(start_paused = true)]
async fn full_send_keeps_guid_creation_and_digest_and_gets_the_receivers_createtxg() {
    let sim = world(1);
    write_and_snap(&sim, "src/my data@snap 1", 3);
    let g = guid(&sim, "src/my data@snap 1");
    let received = transfer(
        &sim,
        &full("src/my data@snap 1"),
        &recv("dst/my copy", "snap 1", g),
    )
    .await
    .unwrap();
    let sent = sim.version(&v("src/my data@snap 1")).unwrap();
    assert_eq!(received.to.guid, g);
    assert_eq!(received.to.creation_unix, sent.creation_unix);
    assert_eq!(
        sim.version(&v("dst/my copy@snap 1")),
        Some(received.to.clone())
    );
    let dst_txg = sim.pool_txg("dst").unwrap();
    assert_eq!(
        received.to.createtxg, dst_txg,
        "the receiver pool's txg, not the sender's"
    );
    assert_eq!(
        sim.version_digest(&v("dst/my copy@snap 1")),
        sim.version_digest(&v("src/my data@snap 1"))
    );
    assert_eq!(
        sim.digest(&ds("dst/my copy")),
        sim.digest(&ds("src/my data"))
    );
    assert!(
        sim.resume_token(&ds("dst/my copy"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(start_paused = true)]
async fn incremental_range_and_bookmark_based_sends_arrive_with_equal_digests() {
    let sim = world(2);
    write_and_snap(&sim, "src/my data@a 1", 1);
    write_and_snap(&sim, "src/my data@b 2", 2);
    write_and_snap(&sim, "src/my data@c 3", 1);
    write_and_snap(&sim, "src/my data@d 4", 1);
    let ga = guid(&sim, "src/my data@a 1");
    transfer(&sim, &full("src/my data@a 1"), &recv("dst/r", "a 1", ga))
        .await
        .unwrap();
    // -i
    let gb = guid(&sim, "src/my data@b 2");
    transfer(
        &sim,
        &incremental("src/my data@a 1", "src/my data@b 2"),
        &recv("dst/r", "b 2", gb),
    )
    .await
    .unwrap();
    // -I carries every intermediate snapshot.
    let range = SendRequest {
        source: SendSource::IncrementalRange {
            from: v("src/my data@b 2"),
            to: v("src/my data@d 4"),
        },
        flags: SendFlags::default(),
    };
    let gd = guid(&sim, "src/my data@d 4");
    transfer(&sim, &range, &recv("dst/r", "d 4", gd))
        .await
        .unwrap();
    for s in ["a 1", "b 2", "c 3", "d 4"] {
        let src = v(&format!("src/my data@{s}"));
        let dst = v(&format!("dst/r@{s}"));
        assert_eq!(
            sim.version(&dst).map(|x| x.guid),
            sim.version(&src).map(|x| x.guid),
            "{s}"
        );
        assert_eq!(sim.version_digest(&dst), sim.version_digest(&src), "{s}");
    }
    // From a bookmark whose snapshot is gone.
    sim.setup()
        .bookmark(&v("src/my data@d 4"), &v("src/my data#d mark"))
        .unwrap();
    sim.setup()
        .destroy_snapshots(&ds("src/my data"), &[c("d 4")])
        .unwrap();
    write_and_snap(&sim, "src/my data@e 5", 2);
    let from_bookmark = incremental("src/my data#d mark", "src/my data@e 5");
    assert_eq!(
        sim.send_estimate(&from_bookmark).await.unwrap(),
        None,
        "no dry run from a bookmark"
    );
    let ge = guid(&sim, "src/my data@e 5");
    transfer(&sim, &from_bookmark, &recv("dst/r", "e 5", ge))
        .await
        .unwrap();
    assert_eq!(sim.digest(&ds("dst/r")), sim.digest(&ds("src/my data")));
    assert!(
        sim.send_estimate(&incremental("src/my data@a 1", "src/my data@b 2"))
            .await
            .unwrap()
            .unwrap()
            > 0
    );
}

#[tokio::test(start_paused = true)]
async fn receiving_the_same_snapshot_again_is_consumed_and_succeeds() {
    let sim = world(3);
    write_and_snap(&sim, "src/my data@1", 1);
    write_and_snap(&sim, "src/my data@2", 1);
    let (g1, g2) = (guid(&sim, "src/my data@1"), guid(&sim, "src/my data@2"));
    transfer(&sim, &full("src/my data@1"), &recv("dst/r", "1", g1))
        .await
        .unwrap();
    let step = incremental("src/my data@1", "src/my data@2");
    transfer(&sim, &step, &recv("dst/r", "2", g2))
        .await
        .unwrap();
    let again = transfer(&sim, &step, &recv("dst/r", "2", g2))
        .await
        .unwrap();
    assert_eq!(again.to.guid, g2);
    assert_eq!(sim.versions(&ds("dst/r")).len(), 2);
}

#[tokio::test(start_paused = true)]
async fn incremental_receive_errors_follow_openzfs() {
    let sim = world(4);
    write_and_snap(&sim, "src/my data@1", 1);
    write_and_snap(&sim, "src/my data@2", 1);
    let (g1, g2) = (guid(&sim, "src/my data@1"), guid(&sim, "src/my data@2"));
    let step = incremental("src/my data@1", "src/my data@2");
    // Missing base.
    sim.setup().create_dataset(&ds("dst/no base")).unwrap();
    assert_eq!(
        kind(transfer(&sim, &step, &recv("dst/no base", "2", g2)).await),
        ZfsErrorKind::IncrementalSourceMismatch
    );
    // Missing dataset.
    assert_eq!(
        kind(transfer(&sim, &step, &recv("dst/nothing", "2", g2)).await),
        ZfsErrorKind::DoesNotExist
    );
    // Modified since the base.
    transfer(&sim, &full("src/my data@1"), &recv("dst/r", "1", g1))
        .await
        .unwrap();
    sim.user().write(&ds("dst/r"), MIB).unwrap();
    let e = transfer(&sim, &step, &recv("dst/r", "2", g2))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::ModifiedSinceSnapshot);
    assert!(e.to_string().contains("has been modified"), "{e}");
    // A newer snapshot with other data is "modified" too.
    sim.user().snapshot(&[v("dst/r@newer")]).unwrap();
    assert_eq!(
        kind(transfer(&sim, &step, &recv("dst/r", "2", g2)).await),
        ZfsErrorKind::ModifiedSinceSnapshot
    );
    // -F rolls back to the base (destroying @newer) and receives.
    let mut forced = recv("dst/r", "2", g2);
    forced.force = true;
    transfer(&sim, &step, &forced).await.unwrap();
    let names: Vec<String> = sim
        .versions(&ds("dst/r"))
        .iter()
        .map(|x| x.name.to_string())
        .collect();
    assert_eq!(names, ["1", "2"]);
    assert_eq!(
        sim.digest(&ds("dst/r")),
        sim.version_digest(&v("src/my data@2"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_newer_snapshot_without_changes_does_not_block_a_plain_incremental() {
    // Captured from OpenZFS 2.3.2: `recv_incremental_target_has_noop_newer` exits 0 and the
    // received snapshot lands after the no-op one.
    let sim = world(5);
    write_and_snap(&sim, "src/my data@1", 1);
    write_and_snap(&sim, "src/my data@2", 1);
    let (g1, g2) = (guid(&sim, "src/my data@1"), guid(&sim, "src/my data@2"));
    transfer(&sim, &full("src/my data@1"), &recv("dst/r", "1", g1))
        .await
        .unwrap();
    sim.user().snapshot(&[v("dst/r@noop")]).unwrap();
    transfer(
        &sim,
        &incremental("src/my data@1", "src/my data@2"),
        &recv("dst/r", "2", g2),
    )
    .await
    .unwrap();
    let names: Vec<String> = sim
        .versions(&ds("dst/r"))
        .iter()
        .map(|x| x.name.to_string())
        .collect();
    assert_eq!(names, ["1", "noop", "2"]);
}

#[tokio::test(start_paused = true)]
async fn full_receive_onto_an_existing_dataset_needs_force_and_no_snapshots() {
    let sim = world(6);
    write_and_snap(&sim, "src/my data@1", 1);
    let g1 = guid(&sim, "src/my data@1");
    sim.setup().create_dataset(&ds("dst/exists")).unwrap();
    let e = transfer(&sim, &full("src/my data@1"), &recv("dst/exists", "1", g1))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::AlreadyExists);
    assert!(e.to_string().contains("must specify -F"), "{e}");
    sim.setup().snapshot(&[v("dst/exists@old")]).unwrap();
    let mut forced = recv("dst/exists", "1", g1);
    forced.force = true;
    let e = transfer(&sim, &full("src/my data@1"), &forced)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::AlreadyExists);
    assert!(e.to_string().contains("destination has snapshots"), "{e}");
    sim.setup()
        .destroy_snapshots(&ds("dst/exists"), &[c("old")])
        .unwrap();
    transfer(&sim, &full("src/my data@1"), &forced)
        .await
        .unwrap();
    assert_eq!(
        sim.digest(&ds("dst/exists")),
        sim.digest(&ds("src/my data"))
    );
}

#[tokio::test(start_paused = true)]
async fn forced_full_receive_over_an_encrypted_dataset_is_refused() {
    let sim = world(7);
    write_and_snap(&sim, "src/my data@1", 1);
    let g1 = guid(&sim, "src/my data@1");
    let encrypted = DatasetOptions {
        encrypted: true,
        ..DatasetOptions::default()
    };
    sim.setup()
        .create_dataset_with(&ds("dst/enc target"), &encrypted)
        .unwrap();
    let mut forced = recv("dst/enc target", "1", g1);
    forced.force = true;
    let e = transfer(&sim, &full("src/my data@1"), &forced)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::EncryptedOverwriteRefused);
    assert!(
        e.to_string()
            .contains("zfs receive -F cannot be used to destroy an encrypted filesystem")
    );
}

#[tokio::test(start_paused = true)]
async fn raw_send_of_an_encrypted_dataset_arrives_encrypted_without_a_key() {
    let sim = world(8);
    let encrypted = DatasetOptions {
        encrypted: true,
        ..DatasetOptions::default()
    };
    sim.setup()
        .create_dataset_with(&ds("src/secret stuff"), &encrypted)
        .unwrap();
    write_and_snap(&sim, "src/secret stuff@1", 2);
    let g1 = guid(&sim, "src/secret stuff@1");
    let raw = SendRequest {
        source: SendSource::Full {
            to: v("src/secret stuff@1"),
        },
        flags: SendFlags {
            raw: true,
            ..SendFlags::default()
        },
    };
    transfer(&sim, &raw, &recv("dst/vault", "1", g1))
        .await
        .unwrap();
    let props = sim
        .get_properties(
            &ObjectName::Dataset(ds("dst/vault")),
            &["encryption", "keystatus", "encryptionroot"],
        )
        .await
        .unwrap();
    assert_eq!(props["encryption"].value, "aes-256-gcm");
    assert_eq!(props["keystatus"].value, "unavailable");
    assert_eq!(props["encryptionroot"].value, "dst/vault");
    assert_eq!(
        sim.digest(&ds("dst/vault")),
        sim.digest(&ds("src/secret stuff"))
    );
    // Raw incrementals need no key on either side.
    write_and_snap(&sim, "src/secret stuff@2", 1);
    sim.setup().unload_key(&ds("src/secret stuff")).unwrap();
    let g2 = guid(&sim, "src/secret stuff@2");
    let raw_inc = SendRequest {
        source: SendSource::Incremental {
            from: v("src/secret stuff@1"),
            to: v("src/secret stuff@2"),
        },
        flags: SendFlags {
            raw: true,
            ..SendFlags::default()
        },
    };
    transfer(&sim, &raw_inc, &recv("dst/vault", "2", g2))
        .await
        .unwrap();
    // A plain send needs the key.
    let plain = full("src/secret stuff@2");
    assert_eq!(
        kind(send_all(&sim, &plain).await),
        ZfsErrorKind::KeyNotLoaded
    );
    sim.setup().load_key(&ds("src/secret stuff")).unwrap();
    assert!(send_all(&sim, &plain).await.is_ok());
    // libzfs refuses -I, -p and -b of an encrypted dataset unless raw.
    let plain_range = SendRequest {
        source: SendSource::IncrementalRange {
            from: v("src/secret stuff@1"),
            to: v("src/secret stuff@2"),
        },
        flags: SendFlags::default(),
    };
    let e = send_all(&sim, &plain_range).await.unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::InvalidArgument);
    assert!(e.to_string().contains("without the raw flag"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_resumable_receive_leaves_a_token_that_resumes_to_completion() {
    let sim = world(9);
    write_and_snap(&sim, "src/my data@1", 1);
    write_and_snap(&sim, "src/my data@2", 8);
    let (g1, g2) = (guid(&sim, "src/my data@1"), guid(&sim, "src/my data@2"));
    transfer(&sim, &full("src/my data@1"), &recv("dst/r", "1", g1))
        .await
        .unwrap();
    let step = incremental("src/my data@1", "src/my data@2");
    sim.inject(Fault::BreakSend {
        after_bytes: 3000,
        how: StreamBreak::Eof,
    });
    let e = transfer(&sim, &step, &recv("dst/r", "2", g2))
        .await
        .unwrap_err();
    let ZfsErrorKind::ReceiveInterrupted { token: Some(t) } = &e.kind else {
        panic!("{e:?}");
    };
    assert!(e.to_string().contains("zfs send -t"), "{e}");
    assert_eq!(
        sim.resume_token(&ds("dst/r")).await.unwrap().as_deref(),
        Some(t.as_str())
    );
    let fields = token::decode(t).unwrap();
    assert_eq!(fields.fromguid, Some(g1));
    assert_eq!(fields.toguid, g2);
    assert_eq!(fields.toname, "src/my data@2");
    assert!(fields.offset > 0 && fields.offset < 8 * MIB, "{fields:?}");
    assert_eq!(fields.bytes, 3000, "every stream byte the receiver read");
    // While partial state exists, a fresh receive is refused.
    assert_eq!(
        kind(transfer(&sim, &step, &recv("dst/r", "2", g2)).await),
        ZfsErrorKind::ResumeStatePresent
    );
    let resume = SendRequest {
        source: SendSource::Resume { token: t.clone() },
        flags: SendFlags::default(),
    };
    let estimate = sim.send_estimate(&resume).await.unwrap().unwrap();
    assert!(estimate < sim.send_estimate(&step).await.unwrap().unwrap());
    transfer(&sim, &resume, &recv("dst/r", "2", g2))
        .await
        .unwrap();
    assert_eq!(
        sim.version_digest(&v("dst/r@2")),
        sim.version_digest(&v("src/my data@2"))
    );
    assert!(sim.resume_token(&ds("dst/r")).await.unwrap().is_none());
    // A stale token is refused by the receiver.
    assert_eq!(
        kind(transfer(&sim, &resume, &recv("dst/r", "2", g2)).await),
        ZfsErrorKind::ResumeTokenInvalid
    );
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_full_receive_keeps_an_inconsistent_dataset_until_aborted() {
    let sim = world(10);
    write_and_snap(&sim, "src/my data@1", 4);
    let g1 = guid(&sim, "src/my data@1");
    sim.inject(Fault::BreakReceive { after_bytes: 2000 });
    let e = transfer(&sim, &full("src/my data@1"), &recv("dst/new one", "1", g1))
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind, ZfsErrorKind::ReceiveInterrupted { token: Some(_) }),
        "{e:?}"
    );
    assert!(sim.exists(&ds("dst/new one")));
    let props = sim
        .get_properties(
            &ObjectName::Dataset(ds("dst/new one")),
            &["receive_resume_token", "inconsistent"],
        )
        .await
        .unwrap();
    assert_eq!(props["inconsistent"].value, "1");
    let t = token::decode(&props["receive_resume_token"].value).unwrap();
    assert_eq!((t.fromguid, t.toguid), (None, g1));
    // A full stream again without -F: the destination exists.
    assert_eq!(
        kind(transfer(&sim, &full("src/my data@1"), &recv("dst/new one", "1", g1)).await),
        ZfsErrorKind::AlreadyExists
    );
    sim.abort_receive(&ds("dst/new one")).await.unwrap();
    assert!(!sim.exists(&ds("dst/new one")), "{:?}", sim.dump("dst"));
    sim.abort_receive(&ds("dst")).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_broken_receive_without_resumable_leaves_nothing() {
    let sim = world(11);
    write_and_snap(&sim, "src/my data@1", 4);
    let g1 = guid(&sim, "src/my data@1");
    let mut plain = recv("dst/new one", "1", g1);
    plain.resumable = false;
    sim.inject(Fault::BreakSend {
        after_bytes: 1500,
        how: StreamBreak::Error,
    });
    let e = transfer(&sim, &full("src/my data@1"), &plain)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::StreamBroken);
    assert!(!sim.exists(&ds("dst/new one")));
    // A header cut short changes nothing either.
    sim.inject(Fault::BreakReceive { after_bytes: 10 });
    let e = transfer(&sim, &full("src/my data@1"), &recv("dst/new one", "1", g1))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::StreamBroken);
    assert!(!sim.exists(&ds("dst/new one")));
}

#[tokio::test(start_paused = true)]
async fn out_of_space_writes_what_fits_and_leaves_resumable_state() {
    let sim = world(12);
    write_and_snap(&sim, "src/my data@1", 10);
    let g1 = guid(&sim, "src/my data@1");
    sim.setup().fill_pool("dst", 4 * MIB).unwrap();
    let e = transfer(&sim, &full("src/my data@1"), &recv("dst/r", "1", g1))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::NoSpace, "{e}");
    assert!(e.to_string().contains("out of space"));
    let t = sim
        .resume_token(&ds("dst/r"))
        .await
        .unwrap()
        .expect("resumable state");
    let fields = token::decode(&t).unwrap();
    assert_eq!(fields.offset, 4 * MIB, "exactly what fit");
    sim.setup().fill_pool("dst", 100 * MIB).unwrap();
    let resume = SendRequest {
        source: SendSource::Resume { token: t },
        flags: SendFlags::default(),
    };
    transfer(&sim, &resume, &recv("dst/r", "1", g1))
        .await
        .unwrap();
    assert_eq!(sim.digest(&ds("dst/r")), sim.digest(&ds("src/my data")));
}

#[tokio::test(start_paused = true)]
async fn a_receive_dropped_mid_stream_leaves_a_token() {
    let sim = world(13);
    write_and_snap(&sim, "src/my data@1", 4);
    let g1 = guid(&sim, "src/my data@1");
    let mut stream = sim.send(&full("src/my data@1")).await.unwrap();
    let mut head = vec![0u8; 1200];
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut head)
        .await
        .unwrap();
    // A pipe that delivers 1200 bytes and then stalls forever, as a hung peer would.
    let (mut tx, rx) = tokio::io::duplex(64 * 1024);
    tokio::io::AsyncWriteExt::write_all(&mut tx, &head)
        .await
        .unwrap();
    let receiver = sim.clone();
    let task = tokio::spawn(async move {
        receiver
            .receive(&recv("dst/r", "1", g1), Box::pin(rx))
            .await
    });
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    drop(tx);
    let t = sim
        .resume_token(&ds("dst/r"))
        .await
        .unwrap()
        .expect("token after a crash");
    assert_eq!(token::decode(&t).unwrap().toguid, g1);
}

#[tokio::test(start_paused = true)]
async fn properties_travel_with_p_and_overrides_apply() {
    let sim = world(14);
    sim.setup()
        .set_property(&ds("src/my data"), "user:note", "sent")
        .unwrap();
    sim.setup()
        .set_property(&ds("src/my data"), "user:skip", "x")
        .unwrap();
    write_and_snap(&sim, "src/my data@1", 1);
    let g1 = guid(&sim, "src/my data@1");
    let send = SendRequest {
        source: SendSource::Full {
            to: v("src/my data@1"),
        },
        flags: SendFlags {
            properties: true,
            ..SendFlags::default()
        },
    };
    let mut req = recv("dst/r", "1", g1);
    req.properties_inherit.push("user:skip".to_owned());
    req.properties_override
        .insert("user:mine".to_owned(), "local".to_owned());
    transfer(&sim, &send, &req).await.unwrap();
    let props = sim
        .get_properties(
            &ObjectName::Dataset(ds("dst/r")),
            &["user:note", "user:skip", "user:mine"],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            props["user:note"].value.as_str(),
            &props["user:note"].source
        ),
        ("sent", &PropertySource::Received)
    );
    assert_eq!(props["user:skip"].value, "-");
    assert_eq!(props["user:mine"].source, PropertySource::Local);
}

#[tokio::test(start_paused = true)]
async fn sender_side_errors() {
    let sim = world(15);
    write_and_snap(&sim, "src/my data@1", 1);
    write_and_snap(&sim, "src/my data@2", 1);
    assert_eq!(
        kind(send_all(&sim, &full("src/my data@nope")).await),
        ZfsErrorKind::DoesNotExist
    );
    assert_eq!(
        kind(send_all(&sim, &incremental("src/my data@2", "src/my data@1")).await),
        ZfsErrorKind::InvalidArgument
    );
    let corrupt = SendRequest {
        source: SendSource::Resume {
            token: "1-abc-10-00".to_owned(),
        },
        flags: SendFlags::default(),
    };
    assert_eq!(
        kind(send_all(&sim, &corrupt).await),
        ZfsErrorKind::ResumeTokenInvalid
    );
    let forged = token::encode(&token::TokenFields {
        fromguid: None,
        object: 2,
        offset: 0,
        bytes: 0,
        toguid: Guid(12345),
        toname: "src/my data@1".to_owned(),
        largeblockok: false,
        embedok: false,
        compressok: false,
        rawok: false,
    });
    let stale = SendRequest {
        source: SendSource::Resume { token: forged },
        flags: SendFlags::default(),
    };
    assert_eq!(
        kind(send_all(&sim, &stale).await),
        ZfsErrorKind::ResumeTokenInvalid,
        "a token whose snapshot was replaced is stale"
    );
    assert_eq!(VersionKind::Snapshot, v("src/my data@1").kind());
}

#[tokio::test(start_paused = true)]
async fn a_refused_send_fails_through_its_stream_and_the_receiver_sees_a_broken_stream() {
    let sim = world(18);
    let stream = sim
        .send(&full("src/my data@nope"))
        .await
        .expect("zfs send started");
    let e = sim
        .receive(&recv("dst/r", "nope", Guid(1)), stream)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::StreamBroken);
    assert!(!sim.exists(&ds("dst/r")));
}

#[tokio::test(start_paused = true)]
async fn received_snapshots_keep_their_stream_names_and_to_is_checked_by_guid() {
    let sim = world(17);
    write_and_snap(&sim, "src/my data@1", 1);
    let g1 = guid(&sim, "src/my data@1");
    // `to` names another snapshot than the stream carries: the receive lands `@1`, then the
    // check finds no `@other`.
    let e = transfer(&sim, &full("src/my data@1"), &recv("dst/r", "other", g1))
        .await
        .unwrap_err();
    assert!(matches!(e.kind, ZfsErrorKind::Other { .. }), "{e:?}");
    assert_eq!(sim.version(&v("dst/r@1")).map(|x| x.guid), Some(g1));
    // `to` arrives with another GUID than expected.
    write_and_snap(&sim, "src/my data@2", 1);
    let g2 = guid(&sim, "src/my data@2");
    let e = transfer(
        &sim,
        &incremental("src/my data@1", "src/my data@2"),
        &recv("dst/r", "2", Guid(1)),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind, ZfsErrorKind::ExistsWithOtherGuid { existing: g2 });
}

#[tokio::test(start_paused = true)]
async fn a_volume_arrives_as_a_volume_and_an_unloaded_key_blocks_children() {
    let sim = world(16);
    let vol = DatasetOptions {
        volume: true,
        ..DatasetOptions::default()
    };
    sim.setup()
        .create_dataset_with(&ds("src/vol one"), &vol)
        .unwrap();
    write_and_snap(&sim, "src/vol one@1", 2);
    let g = guid(&sim, "src/vol one@1");
    transfer(&sim, &full("src/vol one@1"), &recv("dst/vol copy", "1", g))
        .await
        .unwrap();
    let t = sim
        .get_properties(&ObjectName::Dataset(ds("dst/vol copy")), &["type"])
        .await
        .unwrap();
    assert_eq!(t["type"].value, "volume");
    let encrypted = DatasetOptions {
        encrypted: true,
        ..DatasetOptions::default()
    };
    sim.setup()
        .create_dataset_with(&ds("dst/locked"), &encrypted)
        .unwrap();
    sim.setup().unload_key(&ds("dst/locked")).unwrap();
    assert_eq!(
        kind(sim.setup().create_dataset(&ds("dst/locked/child"))),
        ZfsErrorKind::KeyNotLoaded
    );
    // A plain stream cannot be received below it either; a placeholder with encryption=off can.
    let e = transfer(
        &sim,
        &full("src/vol one@1"),
        &recv("dst/locked/copy", "1", g),
    )
    .await;
    assert_eq!(kind(e), ZfsErrorKind::KeyNotLoaded);
    sim.create_placeholder(
        &ds("dst/locked/plain"),
        zferry_core::backend::PlaceholderEncryption::Off,
    )
    .await
    .unwrap();
}
