//! Listing, properties, snapshots, holds, bookmarks, placeholders, features.

use std::collections::BTreeMap;

use zferry_core::backend::{
    ObjectName, PLACEHOLDER_PROPERTY, PlaceholderEncryption, PropertySource, VersionTypes,
    ZfsErrorKind,
};

use super::check::{Ctx, ensure, ensure_eq, expect_kind};
use super::util::{
    MIB, bmark, child, dataset_names, guid, local_placeholder_props, names_of, placeholder_props,
    rel_names, snap, snapshots, version, versions,
};
use super::{CaseFailure, DatasetSpec, Harness, case_table};

case_table!(
    get_nonexistent,
    holds_work,
    idempotent_hold,
    hold_on_missing_snapshot_does_not_exist,
    release_of_missing_tag_is_success,
    idempotent_bookmark,
    bookmark_of_a_bookmark_keeps_the_guid,
    list_versions_filesystem_not_exist,
    list_versions_type_filtering_and_prefix,
    list_versions_userrefs,
    list_versions_zero_exist_is_not_an_error,
    list_versions_of_several_datasets_in_one_call,
    list_versions_orders_by_createtxg_not_name,
    list_datasets_no_filter,
    multi_snapshot_is_atomic,
    multi_snapshot_with_a_missing_dataset_takes_none,
    snapshot_that_exists_is_already_exists,
    get_properties_sources,
    set_property_round_trip,
    features_of_this_zfs,
    placeholder_properties,
    placeholder_encryption_choice,
    list_datasets_shows_placeholders,
);

/// zrepl `GetNonexistent`: `zfs get` on a missing filesystem, snapshot and bookmark.
async fn get_nonexistent(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("get_nonexistent").await?;
    let fs = child(&root, "foo bar")?;
    h.create_dataset(&fs, DatasetSpec::FILESYSTEM).await?;
    snapshots(h, &fs, &["1"]).await?;
    let b = h
        .backend()
        .bookmark(&snap(&fs, "1")?, &bmark(&fs, "1")?)
        .await
        .ctx("bookmark #1")?;
    ensure_eq!(b.name.as_str(), "1", "bookmark name");

    let missing: [ObjectName; 3] = [
        child(&root, "not existent")?.into(),
        snap(&fs, "not existent")?.into(),
        bmark(&fs, "not existent")?.into(),
    ];
    for object in missing {
        let err = expect_kind(
            h.backend().get_properties(&object, &["name"]).await,
            &ZfsErrorKind::DoesNotExist,
            format!("get name of `{object}`"),
        )?;
        ensure_eq!(err.object, object.to_string(), "the error names the object");
    }
    Ok(())
}

/// zrepl `HoldsWork`: two tags with spaces, both listed, sorted.
async fn holds_work(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("holds_work").await?;
    snapshots(h, &root, &["1"]).await?;
    let s = snap(&root, "1")?;
    ensure_eq!(
        h.backend().holds(&s).await.ctx("holds before")?,
        Vec::<String>::new(),
        "no holds yet"
    );
    for tag in ["tag 2 with spaces", "tag 1 with spaces"] {
        h.backend()
            .hold(tag, std::slice::from_ref(&s))
            .await
            .ctx(format!("hold `{tag}`"))?;
    }
    ensure_eq!(
        h.backend().holds(&s).await.ctx("holds")?,
        vec![
            "tag 1 with spaces".to_owned(),
            "tag 2 with spaces".to_owned()
        ],
        "holds of @1"
    );
    Ok(())
}

/// zrepl `IdempotentHold`: holding the same tag twice succeeds, and it is there once.
async fn idempotent_hold(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("idempotent_hold").await?;
    snapshots(h, &root, &["1", "2"]).await?;
    let both = [snap(&root, "1")?, snap(&root, "2")?];
    h.backend().hold("zferry tag", &both).await.ctx("hold")?;
    h.backend()
        .hold("zferry tag", &both)
        .await
        .ctx("hold again")?;
    for s in &both {
        ensure_eq!(
            h.backend().holds(s).await.ctx("holds")?,
            vec!["zferry tag".to_owned()],
            "holds of `{s}`"
        );
    }
    let listed = versions(h, &root, VersionTypes::Snapshots).await?;
    let refs: Vec<_> = listed.iter().map(|v| v.userrefs).collect();
    ensure_eq!(refs, vec![Some(1), Some(1)], "userrefs after holding twice");
    Ok(())
}

/// Holding a snapshot that does not exist is DoesNotExist.
async fn hold_on_missing_snapshot_does_not_exist(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("hold_on_missing_snapshot").await?;
    expect_kind(
        h.backend().hold("t", &[snap(&root, "nosuch")?]).await,
        &ZfsErrorKind::DoesNotExist,
        "hold on a missing snapshot",
    )?;
    expect_kind(
        h.backend().holds(&snap(&root, "nosuch")?).await,
        &ZfsErrorKind::DoesNotExist,
        "holds of a missing snapshot",
    )?;
    Ok(())
}

/// Releasing a tag that is not there succeeds, and releasing one that is removes it.
async fn release_of_missing_tag_is_success(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("release_missing_tag").await?;
    snapshots(h, &root, &["a", "b"]).await?;
    let (a, b) = (snap(&root, "a")?, snap(&root, "b")?);
    h.backend()
        .hold("keep me", std::slice::from_ref(&a))
        .await
        .ctx("hold a")?;
    h.backend()
        .release("keep me", &[a.clone(), b.clone()])
        .await
        .ctx("release from a (held) and b (not held)")?;
    ensure_eq!(
        h.backend().holds(&a).await.ctx("holds a")?,
        Vec::<String>::new(),
        "a released"
    );
    h.backend()
        .release("no such tag", std::slice::from_ref(&b))
        .await
        .ctx("release a tag that was never there")?;
    Ok(())
}

/// zrepl `IdempotentBookmark`: same source is success with the same object; another source
/// is ExistsWithOtherGuid; a missing source is DoesNotExist.
async fn idempotent_bookmark(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("idempotent_bookmark").await?;
    h.write(&root, MIB).await?;
    snapshots(h, &root, &["a snap"]).await?;
    h.write(&root, MIB).await?;
    snapshots(h, &root, &["other snap"]).await?;
    let (a, other) = (snap(&root, "a snap")?, snap(&root, "other snap")?);
    let (guid_a, guid_other) = (guid(h, &a).await?, guid(h, &other).await?);
    let bm = bmark(&root, "a bookmark")?;

    let first = h.backend().bookmark(&a, &bm).await.ctx("bookmark")?;
    ensure_eq!(first.guid, guid_a, "bookmark guid is the snapshot's");
    ensure!(
        !first.is_snapshot(),
        "bookmark() returned a snapshot: {first:?}"
    );
    ensure_eq!(first.name.as_str(), "a bookmark", "bookmark name");
    let again = h.backend().bookmark(&a, &bm).await.ctx("bookmark again")?;
    ensure_eq!(again, first, "re-bookmarking returns the same bookmark");
    ensure_eq!(
        version(h, &bm).await?,
        first,
        "bookmark() returns the bookmark as listed"
    );

    expect_kind(
        h.backend().bookmark(&other, &bm).await,
        &ZfsErrorKind::ExistsWithOtherGuid { existing: guid_a },
        "same bookmark name from another snapshot",
    )?;
    ensure!(guid_other != guid_a, "two snapshots with one guid");

    h.backend()
        .destroy_snapshots(&root, std::slice::from_ref(a.short()))
        .await
        .ctx("destroy a snap")?;
    expect_kind(
        h.backend().bookmark(&a, &bmark(&root, "fresh")?).await,
        &ZfsErrorKind::DoesNotExist,
        "bookmark of a destroyed snapshot",
    )?;
    ensure_eq!(
        names_of(h, &root, VersionTypes::Bookmarks).await?,
        vec!["#a bookmark".to_owned()],
        "bookmarks"
    );
    Ok(())
}

/// `zfs bookmark fs#a fs#b` (bookmark copy, OpenZFS >= 2.0) keeps guid and createtxg.
async fn bookmark_of_a_bookmark_keeps_the_guid(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("bookmark_copy").await?;
    snapshots(h, &root, &["s"]).await?;
    let s = snap(&root, "s")?;
    let first = h
        .backend()
        .bookmark(&s, &bmark(&root, "first")?)
        .await
        .ctx("bookmark")?;
    h.backend()
        .destroy_snapshots(&root, std::slice::from_ref(s.short()))
        .await
        .ctx("destroy @s")?;
    let copy = h
        .backend()
        .bookmark(&bmark(&root, "first")?, &bmark(&root, "copy")?)
        .await
        .ctx("bookmark of the bookmark")?;
    ensure_eq!(
        (copy.guid, copy.createtxg),
        (first.guid, first.createtxg),
        "the copy's guid and createtxg"
    );
    ensure_eq!(copy.name.as_str(), "copy", "copy name");
    Ok(())
}

/// zrepl `ListFilesystemVersionsFilesystemNotExist`.
async fn list_versions_filesystem_not_exist(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("list_versions_not_exist").await?;
    let missing = child(&root, "not existent")?;
    let err = expect_kind(
        h.backend()
            .list_versions(&[root.clone(), missing.clone()], VersionTypes::All)
            .await,
        &ZfsErrorKind::DoesNotExist,
        "list versions of a missing dataset (and an existing one)",
    )?;
    ensure!(
        err.object.contains(missing.as_str()),
        "the error should name `{missing}`, names `{}`",
        err.object
    );
    Ok(())
}

/// zrepl `ListFilesystemVersionsTypeFilteringAndPrefix`: type filter, no recursion into
/// children, names with leading whitespace.
async fn list_versions_type_filtering_and_prefix(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("list_versions_types").await?;
    let fs = child(&root, "foo bar")?;
    let kid = child(&fs, "child dataset")?;
    h.create_dataset(&fs, DatasetSpec::FILESYSTEM).await?;
    h.create_dataset(&kid, DatasetSpec::FILESYSTEM).await?;
    snapshots(h, &fs, &[" 1 leading whitespace", "2", "3"]).await?;
    snapshots(h, &kid, &["1"]).await?;
    for (s, b) in [
        (" 1 leading whitespace", " 1 bm"),
        ("2", "2"),
        ("3", "3 bm"),
    ] {
        h.backend()
            .bookmark(&snap(&fs, s)?, &bmark(&fs, b)?)
            .await
            .ctx(format!("bookmark @{s}"))?;
    }
    ensure_eq!(
        names_of(h, &fs, VersionTypes::Snapshots).await?,
        vec!["@ 1 leading whitespace", "@2", "@3"],
        "snapshots only"
    );
    ensure_eq!(
        names_of(h, &fs, VersionTypes::Bookmarks).await?,
        vec!["# 1 bm", "#2", "#3 bm"],
        "bookmarks only"
    );
    let all = versions(h, &fs, VersionTypes::All).await?;
    ensure_eq!(
        rel_names(&all),
        vec![
            "# 1 bm",
            "@ 1 leading whitespace",
            "#2",
            "@2",
            "#3 bm",
            "@3"
        ],
        "all, by createtxg, bookmark before snapshot"
    );
    let leading: Vec<_> = all
        .iter()
        .filter(|v| v.name.as_str().starts_with(" 1"))
        .map(|v| v.relative_name())
        .collect();
    ensure_eq!(
        leading,
        vec!["# 1 bm", "@ 1 leading whitespace"],
        "prefix ` 1`"
    );
    ensure!(
        all.iter()
            .all(|v| v.kind.delimiter() == '#' || v.userrefs == Some(0)),
        "snapshots without holds must have userrefs 0: {all:?}"
    );
    Ok(())
}

/// zrepl `ListFilesystemVersionsUserrefs`: 0, 1, 2 holds; bookmarks have none.
async fn list_versions_userrefs(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("list_versions_userrefs").await?;
    snapshots(h, &root, &["none", "one", "two"]).await?;
    h.backend()
        .hold("a", &[snap(&root, "one")?, snap(&root, "two")?])
        .await
        .ctx("hold a")?;
    h.backend()
        .hold("b", &[snap(&root, "two")?])
        .await
        .ctx("hold b")?;
    h.backend()
        .bookmark(&snap(&root, "two")?, &bmark(&root, "bm")?)
        .await
        .ctx("bookmark")?;
    let listed = versions(h, &root, VersionTypes::All).await?;
    let refs: BTreeMap<_, _> = listed
        .iter()
        .map(|v| (v.relative_name(), v.userrefs))
        .collect();
    let expected: BTreeMap<_, _> = [
        ("#bm".to_owned(), None),
        ("@none".to_owned(), Some(0)),
        ("@one".to_owned(), Some(1)),
        ("@two".to_owned(), Some(2)),
    ]
    .into_iter()
    .collect();
    ensure_eq!(refs, expected, "userrefs");
    Ok(())
}

/// zrepl `ListFilesystemVersionsZeroExistIsNotAnError`.
async fn list_versions_zero_exist_is_not_an_error(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("list_versions_zero").await?;
    let listing = h
        .backend()
        .list_versions(std::slice::from_ref(&root), VersionTypes::All)
        .await
        .ctx("list versions")?;
    ensure_eq!(
        listing.datasets.get(&root).map(Vec::len),
        Some(0),
        "an empty list for the dataset, present in the listing"
    );
    Ok(())
}

/// One call lists several datasets, each only its own versions.
async fn list_versions_of_several_datasets_in_one_call(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("list_versions_batch").await?;
    let (a, b, empty) = (
        child(&root, "a a")?,
        child(&root, "b b")?,
        child(&root, "empty one")?,
    );
    for d in [&a, &b, &empty] {
        h.create_dataset(d, DatasetSpec::FILESYSTEM).await?;
    }
    snapshots(h, &a, &["1", "2"]).await?;
    snapshots(h, &b, &["x"]).await?;
    let listing = h
        .backend()
        .list_versions(&[a.clone(), b.clone(), empty.clone()], VersionTypes::All)
        .await
        .ctx("list three datasets")?;
    ensure_eq!(rel_names(listing.versions(&a)), vec!["@1", "@2"], "a");
    ensure_eq!(rel_names(listing.versions(&b)), vec!["@x"], "b");
    ensure_eq!(
        listing.datasets.get(&empty).map(Vec::len),
        Some(0),
        "empty is listed empty"
    );
    ensure!(
        !listing.datasets.contains_key(&root),
        "root was not asked for but is in the listing"
    );
    Ok(())
}

/// zrepl orders by createtxg, never by name: snapshots taken as @3, @2, @1 list in that order.
async fn list_versions_orders_by_createtxg_not_name(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("list_versions_order").await?;
    snapshots(h, &root, &["3", "2", "1"]).await?;
    let listed = versions(h, &root, VersionTypes::Snapshots).await?;
    ensure_eq!(
        rel_names(&listed),
        vec!["@3", "@2", "@1"],
        "createtxg order"
    );
    ensure!(
        listed.windows(2).all(|w| w[0].createtxg < w[1].createtxg),
        "createtxg strictly increasing for separate snapshot calls: {listed:?}"
    );
    Ok(())
}

/// zrepl `ListFilesystemsNoFilter`: filesystems and volumes with spaces, recursively.
async fn list_datasets_no_filter(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("list_datasets").await?;
    let a = child(&root, "a b")?;
    let ab = child(&a, "c d")?;
    let vol = child(&root, "vol one")?;
    let deep = child(&ab, "e f")?;
    h.create_dataset(&a, DatasetSpec::FILESYSTEM).await?;
    h.create_dataset(&ab, DatasetSpec::FILESYSTEM).await?;
    h.create_dataset(&deep, DatasetSpec::FILESYSTEM).await?;
    h.create_dataset(&vol, DatasetSpec::volume(8 * MIB)).await?;
    snapshots(h, &a, &["not listed"]).await?;
    let mut got = dataset_names(h, &root).await?;
    got.sort();
    let mut want: Vec<String> = [&root, &a, &ab, &deep, &vol]
        .iter()
        .map(|d| d.as_str().to_owned())
        .collect();
    want.sort();
    ensure_eq!(got, want, "datasets under root");

    let typed = h
        .backend()
        .list_datasets(Some(&root), &["type"])
        .await
        .ctx("list with type")?;
    let types: BTreeMap<_, _> = typed
        .iter()
        .map(|e| (e.name.as_str().to_owned(), e.properties.clone()))
        .collect();
    ensure_eq!(
        types.get(vol.as_str()),
        Some(&vec!["volume".to_owned()]),
        "type of the volume"
    );
    ensure_eq!(
        types.get(ab.as_str()),
        Some(&vec!["filesystem".to_owned()]),
        "type of a filesystem"
    );

    let all = h
        .backend()
        .list_datasets(None, &[])
        .await
        .ctx("list all pools")?;
    ensure!(
        all.iter().any(|e| e.name == deep) && all.iter().any(|e| e.name.as_str() == root.pool()),
        "listing all pools misses `{deep}` or the pool root"
    );
    expect_kind(
        h.backend()
            .list_datasets(Some(&child(&root, "nope")?), &[])
            .await,
        &ZfsErrorKind::DoesNotExist,
        "list under a missing dataset",
    )?;
    Ok(())
}

/// Several snapshots in one call share one txg (zfs snapshot is atomic).
async fn multi_snapshot_is_atomic(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("multi_snapshot").await?;
    let ds: Vec<_> = ["a", "b b", "c"]
        .iter()
        .map(|n| child(&root, n))
        .collect::<Result<_, _>>()?;
    for d in &ds {
        h.create_dataset(d, DatasetSpec::FILESYSTEM).await?;
        h.write(d, 64 * 1024).await?;
    }
    let snaps: Vec<_> = ds
        .iter()
        .map(|d| snap(d, "together"))
        .collect::<Result<_, _>>()?;
    h.backend().snapshot(&snaps).await.ctx("snapshot three")?;
    let mut txgs = Vec::new();
    for s in &snaps {
        txgs.push(version(h, s).await?.createtxg);
    }
    ensure!(
        txgs.iter().all(|t| *t == txgs[0]),
        "createtxgs differ: {txgs:?}"
    );
    Ok(())
}

/// A snapshot call naming a missing dataset fails as DoesNotExist and takes none.
async fn multi_snapshot_with_a_missing_dataset_takes_none(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let root = h.fresh_root("multi_snapshot_missing").await?;
    let a = child(&root, "a")?;
    h.create_dataset(&a, DatasetSpec::FILESYSTEM).await?;
    let batch = [snap(&a, "s")?, snap(&child(&root, "missing")?, "s")?];
    expect_kind(
        h.backend().snapshot(&batch).await,
        &ZfsErrorKind::DoesNotExist,
        "snapshot of an existing and a missing dataset",
    )?;
    ensure_eq!(
        names_of(h, &a, VersionTypes::All).await?,
        Vec::<String>::new(),
        "no snapshot taken on the existing dataset"
    );
    Ok(())
}

/// Taking a snapshot that exists is AlreadyExists.
async fn snapshot_that_exists_is_already_exists(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("snapshot_exists").await?;
    snapshots(h, &root, &["s"]).await?;
    let before = guid(h, &snap(&root, "s")?).await?;
    expect_kind(
        h.backend().snapshot(&[snap(&root, "s")?]).await,
        &ZfsErrorKind::AlreadyExists,
        "snapshot again",
    )?;
    ensure_eq!(
        guid(h, &snap(&root, "s")?).await?,
        before,
        "the snapshot is unchanged"
    );
    Ok(())
}

/// `get_properties` reports local, inherited, default and unset sources as `zfs get` does.
async fn get_properties_sources(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("get_properties").await?;
    let parent = child(&root, "props parent")?;
    let kid = child(&parent, "kid")?;
    h.create_dataset(&parent, DatasetSpec::FILESYSTEM).await?;
    h.create_dataset(&kid, DatasetSpec::FILESYSTEM).await?;
    h.backend()
        .set_property(&parent, "zferry:note", "set here")
        .await
        .ctx("set note")?;
    h.backend()
        .set_property(&kid, "zferry:own", "kid")
        .await
        .ctx("set own")?;
    let props = h
        .backend()
        .get_properties(
            &kid.clone().into(),
            &[
                "zferry:note",
                "zferry:own",
                "zferry:absent",
                "compression",
                "receive_resume_token",
                "encryption",
            ],
        )
        .await
        .ctx("get")?;
    let got: BTreeMap<_, _> = props
        .into_iter()
        .map(|(k, p)| (k, (p.value, p.source)))
        .collect();
    let want: BTreeMap<String, (String, PropertySource)> = [
        (
            "zferry:note",
            "set here",
            PropertySource::Inherited {
                from: parent.as_str().to_owned(),
            },
        ),
        ("zferry:own", "kid", PropertySource::Local),
        ("zferry:absent", "-", PropertySource::None),
        ("compression", "on", PropertySource::Default),
        ("receive_resume_token", "-", PropertySource::None),
        ("encryption", "off", PropertySource::Default),
    ]
    .into_iter()
    .map(|(k, v, s)| (k.to_owned(), (v.to_owned(), s)))
    .collect();
    ensure_eq!(got, want, "properties of `{kid}`");
    Ok(())
}

/// A user property with spaces in its value reads back as set, locally, and a snapshot
/// inherits it; a property name with a space is InvalidArgument.
async fn set_property_round_trip(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("set_property").await?;
    snapshots(h, &root, &["s"]).await?;
    h.backend()
        .set_property(&root, "zferry:something", "a value with spaces")
        .await
        .ctx("set")?;
    let p = h
        .backend()
        .get_properties(&root.clone().into(), &["zferry:something"])
        .await
        .ctx("get")?;
    let prop = p
        .get("zferry:something")
        .ok_or_else(|| CaseFailure::new("property missing from the result"))?;
    ensure_eq!(
        (prop.value.as_str(), &prop.source),
        ("a value with spaces", &PropertySource::Local),
        "property"
    );
    let on_snap = h
        .backend()
        .get_properties(&snap(&root, "s")?.into(), &["zferry:something", "guid"])
        .await
        .ctx("get on the snapshot")?;
    let inherited = on_snap
        .get("zferry:something")
        .ok_or_else(|| CaseFailure::new("property missing on snapshot"))?;
    ensure_eq!(
        inherited.source,
        PropertySource::Inherited {
            from: root.as_str().to_owned()
        },
        "a snapshot inherits user properties from its dataset"
    );
    let g = guid(h, &snap(&root, "s")?).await?;
    ensure_eq!(
        on_snap.get("guid").map(|p| p.value.clone()),
        Some(g.0.to_string()),
        "guid of the snapshot via get"
    );
    expect_kind(
        h.backend()
            .set_property(&root, "zferry:some thing", "x")
            .await,
        &ZfsErrorKind::InvalidArgument,
        "a user property name with a space",
    )?;
    Ok(())
}

/// OpenZFS 2.x supports everything zferry probes for.
async fn features_of_this_zfs(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("features").await?;
    let f = h.backend().features(root.pool()).await.ctx("features")?;
    ensure!(
        f.resumable_send && f.resumable_receive && f.encryption && f.batch_destroy,
        "features: {f:?}"
    );
    expect_kind(
        h.backend().features("nosuchpool").await,
        &ZfsErrorKind::DoesNotExist,
        "features of a missing pool",
    )?;
    Ok(())
}

/// A placeholder has `zrepl:placeholder=on` and `mountpoint=none`, both local; a pool root is
/// refused.
async fn placeholder_properties(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("placeholder_properties").await?;
    let ph = child(&root, "place holder")?;
    h.backend()
        .create_placeholder(&ph, PlaceholderEncryption::Inherit)
        .await
        .ctx("create placeholder")?;
    let got = placeholder_props(h, &ph).await?;
    ensure_eq!(got, local_placeholder_props("on"), "placeholder properties");
    expect_kind(
        h.backend()
            .create_placeholder(&ph, PlaceholderEncryption::Inherit)
            .await,
        &ZfsErrorKind::AlreadyExists,
        "create the placeholder again",
    )?;
    let pool = zferry_core::name::DatasetName::parse(root.pool())
        .map_err(|e| CaseFailure::new(e.to_string()))?;
    let refused = h
        .backend()
        .create_placeholder(&pool, PlaceholderEncryption::Inherit)
        .await;
    ensure!(
        refused.is_err(),
        "a placeholder on the pool root must be refused"
    );
    Ok(())
}

/// Under an encrypted parent, `Inherit` yields an encrypted placeholder and `Off` a plain one.
async fn placeholder_encryption_choice(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("placeholder_encryption").await?;
    let enc = child(&root, "enc root")?;
    h.create_dataset(&enc, DatasetSpec::ENCRYPTED).await?;
    let (inh, off) = (child(&enc, "inherit ph")?, child(&enc, "off ph")?);
    h.backend()
        .create_placeholder(&inh, PlaceholderEncryption::Inherit)
        .await
        .ctx("inherit placeholder")?;
    h.backend()
        .create_placeholder(&off, PlaceholderEncryption::Off)
        .await
        .ctx("off placeholder")?;
    for (d, want_enc, want_root) in [
        (&inh, true, enc.as_str().to_owned()),
        (&off, false, "-".to_owned()),
    ] {
        let p = h
            .backend()
            .get_properties(&d.clone().into(), &["encryption", "encryptionroot"])
            .await
            .ctx(format!("get `{d}`"))?;
        let encryption = p.get("encryption").map(|p| p.value.clone());
        ensure_eq!(
            encryption.as_deref().is_some_and(|v| v != "off"),
            want_enc,
            "`{d}` encrypted? (encryption={encryption:?})"
        );
        ensure_eq!(
            p.get("encryptionroot").map(|p| p.value.clone()),
            Some(want_root),
            "encryptionroot of `{d}`"
        );
    }
    Ok(())
}

/// zrepl's placeholder listing: `list_datasets` with `zrepl:placeholder` gives `on` for the
/// placeholder and its children inherit it (`on`, inherited), others `-`.
async fn list_datasets_shows_placeholders(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("list_placeholders").await?;
    let (ph, plain) = (child(&root, "place holder")?, child(&root, "plain fs")?);
    h.backend()
        .create_placeholder(&ph, PlaceholderEncryption::Inherit)
        .await
        .ctx("create placeholder")?;
    h.create_dataset(&plain, DatasetSpec::FILESYSTEM).await?;
    let under = child(&ph, "kid")?;
    h.create_dataset(&under, DatasetSpec::FILESYSTEM).await?;
    let listed = h
        .backend()
        .list_datasets(Some(&root), &[PLACEHOLDER_PROPERTY])
        .await
        .ctx("list with the placeholder property")?;
    let got: BTreeMap<_, _> = listed
        .into_iter()
        .map(|e| (e.name.as_str().to_owned(), e.properties))
        .collect();
    let want: BTreeMap<_, _> = [(&root, "-"), (&ph, "on"), (&under, "on"), (&plain, "-")]
        .into_iter()
        .map(|(d, v)| (d.as_str().to_owned(), vec![v.to_owned()]))
        .collect();
    ensure_eq!(got, want, "placeholder property per dataset");
    let source = h
        .backend()
        .get_properties(&under.clone().into(), &[PLACEHOLDER_PROPERTY])
        .await
        .ctx("get on the child")?
        .remove(PLACEHOLDER_PROPERTY)
        .map(|p| p.source);
    ensure_eq!(
        source,
        Some(PropertySource::Inherited {
            from: ph.as_str().to_owned()
        }),
        "the child's placeholder property is inherited (so it is no placeholder)"
    );
    Ok(())
}
