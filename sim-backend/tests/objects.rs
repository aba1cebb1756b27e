//! Snapshots, bookmarks, holds, destroys, rollback, placeholders, properties and listings.

mod common;

use common::*;
use zferry_core::backend::{
    ObjectName, PlaceholderEncryption, PropertySource, VersionTypes, ZfsBackend, ZfsErrorKind,
};
use zferry_core::name::VersionKind;
use zferry_core::version::Txg;
use zferry_sim::{Action, Actor, DatasetOptions, SimZfs};

#[tokio::test(start_paused = true)]
async fn snapshots_of_one_call_share_a_txg_and_existing_names_are_refused() {
    let sim = world(21);
    sim.setup().create_dataset(&ds("src/other one")).unwrap();
    let before = sim.pool_txg("src").unwrap();
    sim.snapshot(&[v("src/my data@s 1"), v("src/other one@s 1")])
        .await
        .unwrap();
    let a = sim.version(&v("src/my data@s 1")).unwrap();
    let b = sim.version(&v("src/other one@s 1")).unwrap();
    assert_eq!(a.createtxg, b.createtxg);
    assert!(a.createtxg > before);
    assert_ne!(a.guid, b.guid);
    assert_eq!(a.creation_unix, NOW);
    assert_eq!(
        kind(sim.snapshot(&[v("src/my data@s 1")]).await),
        ZfsErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(sim.snapshot(&[v("src/nope@s")]).await),
        ZfsErrorKind::DoesNotExist
    );
    assert_eq!(
        kind(sim.snapshot(&[v("src/my data@x"), v("dst@x")]).await),
        ZfsErrorKind::InvalidArgument,
        "one pool per call"
    );
}

#[tokio::test(start_paused = true)]
async fn bookmarks_are_idempotent_copyable_and_refuse_another_guid() {
    let sim = world(22);
    write_and_snap(&sim, "src/my data@a", 1);
    write_and_snap(&sim, "src/my data@b", 1);
    let first = sim
        .bookmark(&v("src/my data@a"), &v("src/my data#mark 1"))
        .await
        .unwrap();
    let again = sim
        .bookmark(&v("src/my data@a"), &v("src/my data#mark 1"))
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(first.guid, guid(&sim, "src/my data@a"));
    assert_eq!(
        first.createtxg,
        sim.version(&v("src/my data@a")).unwrap().createtxg
    );
    let e = sim
        .bookmark(&v("src/my data@b"), &v("src/my data#mark 1"))
        .await
        .unwrap_err();
    assert_eq!(
        e.kind,
        ZfsErrorKind::ExistsWithOtherGuid {
            existing: first.guid
        }
    );
    // Copying a bookmark (OpenZFS 2.x), also after its snapshot is gone.
    sim.setup()
        .destroy_snapshots(&ds("src/my data"), &[c("a")])
        .unwrap();
    let copy = sim
        .bookmark(&v("src/my data#mark 1"), &v("src/my data#copy"))
        .await
        .unwrap();
    assert_eq!((copy.guid, copy.createtxg), (first.guid, first.createtxg));
    assert_eq!(
        kind(
            sim.bookmark(&v("src/my data@a"), &v("src/my data#new"))
                .await
        ),
        ZfsErrorKind::DoesNotExist
    );
    sim.destroy_bookmark(&v("src/my data#copy")).await.unwrap();
    assert_eq!(
        kind(sim.destroy_bookmark(&v("src/my data#copy")).await),
        ZfsErrorKind::DoesNotExist
    );
}

#[tokio::test(start_paused = true)]
async fn holds_and_releases_are_idempotent() {
    let sim = world(23);
    write_and_snap(&sim, "src/my data@a", 1);
    let a = v("src/my data@a");
    sim.hold("zferry keep A", std::slice::from_ref(&a))
        .await
        .unwrap();
    sim.hold("zferry keep A", std::slice::from_ref(&a))
        .await
        .unwrap();
    sim.hold("zferry keep B", std::slice::from_ref(&a))
        .await
        .unwrap();
    assert_eq!(
        sim.holds(&a).await.unwrap(),
        ["zferry keep A", "zferry keep B"]
    );
    assert_eq!(sim.version(&a).unwrap().userrefs, Some(2));
    sim.release("no such tag", std::slice::from_ref(&a))
        .await
        .unwrap();
    sim.release("zferry keep A", std::slice::from_ref(&a))
        .await
        .unwrap();
    sim.release("zferry keep A", std::slice::from_ref(&a))
        .await
        .unwrap();
    assert_eq!(sim.holds(&a).await.unwrap(), ["zferry keep B"]);
    assert_eq!(
        kind(sim.hold("t", &[v("src/my data@nope")]).await),
        ZfsErrorKind::DoesNotExist
    );
    assert_eq!(
        kind(sim.holds(&v("src/my data@nope")).await),
        ZfsErrorKind::DoesNotExist
    );
}

#[tokio::test(start_paused = true)]
async fn batched_destroy_reports_the_held_snapshot_busy_and_destroys_the_others() {
    let sim = world(24);
    for s in ["1", "2", "3"] {
        write_and_snap(&sim, &format!("src/my data@{s}"), 1);
    }
    sim.hold("keep", &[v("src/my data@2")]).await.unwrap();
    let out = sim
        .destroy_snapshots(&ds("src/my data"), &[c("3"), c("2"), c("gone")])
        .await
        .unwrap();
    let results: Vec<(String, Result<(), ZfsErrorKind>)> = out
        .into_iter()
        .map(|o| (o.snapshot.to_string(), o.result))
        .collect();
    assert_eq!(
        results,
        [
            ("3".to_owned(), Ok(())),
            ("2".to_owned(), Err(ZfsErrorKind::Busy)),
            ("gone".to_owned(), Ok(())),
        ]
    );
    let left: Vec<String> = sim
        .versions(&ds("src/my data"))
        .iter()
        .map(|x| x.name.to_string())
        .collect();
    assert_eq!(left, ["1", "2"]);
    assert_eq!(
        kind(sim.destroy_snapshots(&ds("src/nope"), &[c("1")]).await),
        ZfsErrorKind::DoesNotExist
    );
}

#[tokio::test(start_paused = true)]
async fn destroying_datasets_needs_recursive_for_children_and_is_blocked_by_holds() {
    let sim = world(25);
    sim.setup()
        .create_dataset(&ds("src/my data/child"))
        .unwrap();
    write_and_snap(&sim, "src/my data/child@1", 1);
    let e = sim
        .destroy_dataset(&ds("src/my data"), false)
        .await
        .unwrap_err();
    assert!(matches!(e.kind, ZfsErrorKind::Other { .. }), "{e:?}");
    assert!(e.to_string().contains("filesystem has children"), "{e}");
    sim.hold("keep", &[v("src/my data/child@1")]).await.unwrap();
    assert_eq!(
        kind(sim.destroy_dataset(&ds("src/my data"), true).await),
        ZfsErrorKind::Busy
    );
    sim.release("keep", &[v("src/my data/child@1")])
        .await
        .unwrap();
    sim.destroy_dataset(&ds("src/my data"), true).await.unwrap();
    assert!(!sim.exists(&ds("src/my data/child")));
    assert_eq!(
        kind(sim.destroy_dataset(&ds("src/my data"), true).await),
        ZfsErrorKind::DoesNotExist
    );
    assert_eq!(
        kind(sim.destroy_dataset(&ds("src"), true).await),
        ZfsErrorKind::InvalidArgument
    );
}

#[tokio::test(start_paused = true)]
async fn rollback_destroys_later_snapshots_and_bookmarks_unless_held() {
    let sim = world(26);
    write_and_snap(&sim, "src/my data@1", 1);
    write_and_snap(&sim, "src/my data@2", 1);
    sim.setup()
        .bookmark(&v("src/my data@2"), &v("src/my data#2 mark"))
        .unwrap();
    sim.setup().write(&ds("src/my data"), MIB).unwrap();
    sim.hold("keep", &[v("src/my data@2")]).await.unwrap();
    assert_eq!(
        kind(sim.rollback(&v("src/my data@1")).await),
        ZfsErrorKind::Busy
    );
    sim.release("keep", &[v("src/my data@2")]).await.unwrap();
    sim.rollback(&v("src/my data@1")).await.unwrap();
    let left: Vec<String> = sim
        .versions(&ds("src/my data"))
        .iter()
        .map(|x| x.to_string())
        .collect();
    assert_eq!(left, ["@1"]);
    assert_eq!(
        sim.digest(&ds("src/my data")),
        sim.version_digest(&v("src/my data@1"))
    );
}

#[tokio::test(start_paused = true)]
async fn placeholders_are_marked_unmounted_and_choose_their_encryption() {
    let sim = world(27);
    let encrypted = DatasetOptions {
        encrypted: true,
        ..DatasetOptions::default()
    };
    sim.setup()
        .create_dataset_with(&ds("dst/enc root"), &encrypted)
        .unwrap();
    sim.create_placeholder(&ds("dst/enc root/inherits"), PlaceholderEncryption::Inherit)
        .await
        .unwrap();
    sim.create_placeholder(&ds("dst/enc root/plain"), PlaceholderEncryption::Off)
        .await
        .unwrap();
    let get = |d: &str| {
        let sim = sim.clone();
        let d = ds(d);
        async move {
            sim.get_properties(
                &ObjectName::Dataset(d),
                &[
                    "zrepl:placeholder",
                    "mountpoint",
                    "encryption",
                    "encryptionroot",
                ],
            )
            .await
            .unwrap()
        }
    };
    let p = get("dst/enc root/inherits").await;
    assert_eq!(
        (
            p["zrepl:placeholder"].value.as_str(),
            &p["zrepl:placeholder"].source
        ),
        ("on", &PropertySource::Local)
    );
    assert_eq!(p["mountpoint"].value, "none");
    assert_eq!(p["encryptionroot"].value, "dst/enc root");
    assert_eq!(get("dst/enc root/plain").await["encryption"].value, "off");
    assert_eq!(
        kind(
            sim.create_placeholder(&ds("dst"), PlaceholderEncryption::Inherit)
                .await
        ),
        ZfsErrorKind::InvalidArgument,
        "never a pool's root"
    );
    assert_eq!(
        kind(
            sim.create_placeholder(&ds("dst/enc root/plain"), PlaceholderEncryption::Off)
                .await
        ),
        ZfsErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(
            sim.create_placeholder(&ds("dst/a/b"), PlaceholderEncryption::Off)
                .await
        ),
        ZfsErrorKind::DoesNotExist
    );
}

#[tokio::test(start_paused = true)]
async fn properties_inherit_like_zfs_get_shows_them() {
    let sim = world(28);
    sim.setup().create_dataset(&ds("src/my data/kid")).unwrap();
    sim.set_property(&ds("src/my data"), "zferry:note", "set here")
        .await
        .unwrap();
    sim.set_property(&ds("src/my data"), "mountpoint", "/mnt/data")
        .await
        .unwrap();
    let kid = ObjectName::Dataset(ds("src/my data/kid"));
    let p = sim
        .get_properties(
            &kid,
            &[
                "zferry:note",
                "zferry:absent",
                "mountpoint",
                "receive_resume_token",
                "encryption",
                "keystatus",
            ],
        )
        .await
        .unwrap();
    assert_eq!(p["zferry:note"].value, "set here");
    assert_eq!(
        p["zferry:note"].source,
        PropertySource::Inherited {
            from: "src/my data".to_owned()
        }
    );
    assert_eq!(
        (
            p["zferry:absent"].value.as_str(),
            &p["zferry:absent"].source
        ),
        ("-", &PropertySource::None)
    );
    assert_eq!(p["mountpoint"].value, "/mnt/data/kid");
    assert_eq!(p["receive_resume_token"].value, "-");
    assert_eq!(
        (p["encryption"].value.as_str(), &p["encryption"].source),
        ("off", &PropertySource::Default)
    );
    assert_eq!(p["keystatus"].value, "-");
    assert_eq!(
        sim.get_properties(&ObjectName::Dataset(ds("src/other")), &["mountpoint"])
            .await
            .map(|_| ())
            .unwrap_err()
            .kind,
        ZfsErrorKind::DoesNotExist
    );
    assert_eq!(
        kind(sim.get_properties(&kid, &["no such property"]).await),
        ZfsErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(sim.set_property(&ds("src/my data"), "guid", "1").await),
        ZfsErrorKind::InvalidArgument
    );
    write_and_snap(&sim, "src/my data@s", 1);
    let snap = sim
        .get_properties(
            &ObjectName::Version(v("src/my data@s")),
            &["guid", "createtxg", "userrefs", "zferry:note"],
        )
        .await
        .unwrap();
    assert_eq!(snap["guid"].value, guid(&sim, "src/my data@s").to_string());
    assert_eq!(snap["userrefs"].value, "0");
    assert_eq!(
        snap["zferry:note"].source,
        PropertySource::Inherited {
            from: "src/my data".to_owned()
        }
    );
    assert_eq!(
        kind(
            sim.get_properties(&ObjectName::Version(v("src/my data#none")), &["guid"])
                .await
        ),
        ZfsErrorKind::DoesNotExist
    );
}

#[tokio::test(start_paused = true)]
async fn listings_walk_the_tree_and_sort_versions_by_createtxg() {
    let sim = world(29);
    sim.setup().create_dataset(&ds("src/a")).unwrap();
    sim.setup().create_dataset(&ds("src/a b")).unwrap();
    sim.setup().create_dataset(&ds("src/a/x")).unwrap();
    let vol = DatasetOptions {
        volume: true,
        ..DatasetOptions::default()
    };
    sim.setup()
        .create_dataset_with(&ds("src/vol one"), &vol)
        .unwrap();
    let all = sim
        .list_datasets(Some(&ds("src")), &["type"])
        .await
        .unwrap();
    let names: Vec<String> = all
        .iter()
        .map(|e| format!("{} {}", e.name, e.properties[0]))
        .collect();
    assert_eq!(
        names,
        [
            "src filesystem",
            "src/a filesystem",
            "src/a/x filesystem",
            "src/a b filesystem",
            "src/my data filesystem",
            "src/vol one volume"
        ]
    );
    assert_eq!(
        sim.list_datasets(None, &[]).await.unwrap().len(),
        names.len() + 1
    );
    assert_eq!(
        kind(sim.list_datasets(Some(&ds("src/zz")), &[]).await),
        ZfsErrorKind::DoesNotExist
    );
    // Snapshots made in reverse name order list by createtxg, bookmarks first on a tie.
    for s in ["3", "2", "1"] {
        write_and_snap(&sim, &format!("src/my data@{s}"), 1);
    }
    sim.setup()
        .bookmark(&v("src/my data@2"), &v("src/my data#2"))
        .unwrap();
    let listing = sim
        .list_versions(&[ds("src/my data"), ds("src/a")], VersionTypes::All)
        .await
        .unwrap();
    let got: Vec<String> = listing
        .versions(&ds("src/my data"))
        .iter()
        .map(|x| x.to_string())
        .collect();
    assert_eq!(got, ["@3", "#2", "@2", "@1"]);
    assert!(listing.versions(&ds("src/a")).is_empty());
    let snaps = sim
        .list_versions(&[ds("src/my data")], VersionTypes::Bookmarks)
        .await
        .unwrap();
    assert!(
        snaps
            .versions(&ds("src/my data"))
            .iter()
            .all(|x| x.kind == VersionKind::Bookmark)
    );
    assert_eq!(
        kind(sim.list_versions(&[ds("src/zz")], VersionTypes::All).await),
        ZfsErrorKind::DoesNotExist
    );
}

#[tokio::test(start_paused = true)]
async fn every_change_is_logged_with_its_actor_and_txg() {
    let sim = world(30);
    write_and_snap(&sim, "src/my data@1", 1);
    sim.user()
        .destroy_snapshots(&ds("src/my data"), &[c("1")])
        .unwrap();
    sim.snapshot(&[v("src/my data@2")]).await.unwrap();
    let events = sim.events();
    let last: Vec<(Actor, Action, String)> = events
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(|e| (e.actor, e.action.clone(), e.object.clone()))
        .collect();
    assert_eq!(
        last,
        [
            (Actor::Setup, Action::Snapshot, "src/my data@1".to_owned()),
            (
                Actor::User,
                Action::DestroySnapshot,
                "src/my data@1".to_owned()
            ),
            (Actor::Daemon, Action::Snapshot, "src/my data@2".to_owned()),
        ]
    );
    let txgs: Vec<Txg> = events
        .iter()
        .filter(|e| e.pool == "src")
        .map(|e| e.txg)
        .collect();
    assert!(
        txgs.windows(2).all(|w| w[0] < w[1]),
        "every mutation advances the txg: {txgs:?}"
    );
    let dump = sim.dump("src");
    assert!(dump.0.contains("src/my data@2\tsnapshot"), "{dump:?}");
}

#[tokio::test(start_paused = true)]
async fn usage_grows_with_writes_and_shrinks_on_rollback_and_dataset_destroy() {
    let sim = world(31);
    let base = sim.pool_used_bytes("src").unwrap();
    write_and_snap(&sim, "src/my data@1", 2);
    sim.setup().write(&ds("src/my data"), 3 * MIB).unwrap();
    assert_eq!(sim.pool_used_bytes("src"), Some(base + 5 * MIB));
    sim.setup().snapshot(&[v("src/my data@2")]).unwrap();
    sim.setup()
        .destroy_snapshots(&ds("src/my data"), &[c("1")])
        .unwrap();
    assert_eq!(
        sim.pool_used_bytes("src"),
        Some(base + 5 * MIB),
        "the head still has it all"
    );
    write_and_snap(&sim, "src/my data@3", 1);
    sim.rollback(&v("src/my data@2")).await.unwrap();
    assert_eq!(sim.pool_used_bytes("src"), Some(base + 5 * MIB));
    sim.destroy_dataset(&ds("src/my data"), true).await.unwrap();
    assert_eq!(sim.pool_used_bytes("src"), Some(base));
    let small = SimZfs::new(1, || NOW);
    small.setup().create_pool("tiny", 2 * MIB).unwrap();
    small.setup().create_dataset(&ds("tiny/fs")).unwrap();
    assert_eq!(
        kind(small.setup().write(&ds("tiny/fs"), 3 * MIB)),
        ZfsErrorKind::NoSpace
    );
}
