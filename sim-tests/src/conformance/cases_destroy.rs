//! Destroying snapshots, bookmarks and datasets, and rolling back.

use std::collections::BTreeMap;

use zferry_core::backend::{VersionTypes, ZfsErrorKind};
use zferry_core::name::Component;

use super::check::{Ctx, ensure, ensure_eq, expect_err_where, expect_kind};
use super::util::{MIB, bmark, child, comp, exists, names_of, snap, snapshots};
use super::{CaseFailure, DatasetSpec, Harness, case_table};

case_table!(
    batch_destroy,
    undestroyable_snapshot_parsing,
    destroy_snapshots_missing_in_list_is_success,
    destroy_snapshots_of_missing_dataset,
    idempotent_destroy,
    destroy_bookmark_keeps_snapshot,
    destroy_dataset_recursive_vs_not,
    rollback_r_destroys_later_snapshots,
    rollback_to_missing_snapshot_does_not_exist,
    rollback_blocked_by_held_later_snapshot,
);

/// The outcomes of a batched destroy as `name -> result`.
fn outcome_map(
    outcomes: Vec<zferry_core::backend::DestroyOutcome>,
) -> BTreeMap<String, Result<(), ZfsErrorKind>> {
    outcomes
        .into_iter()
        .map(|o| (o.snapshot.as_str().to_owned(), o.result))
        .collect()
}

/// zrepl `BatchDestroy`: destroy `@3,@2` where `@2` is held: `@3` goes, `@2` reports Busy,
/// `@1` is untouched.
async fn batch_destroy(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("batch_destroy").await?;
    snapshots(h, &root, &["1", "2", "3"]).await?;
    h.backend()
        .hold("zrepl_platformtest", &[snap(&root, "2")?])
        .await
        .ctx("hold @2")?;
    let out = h
        .backend()
        .destroy_snapshots(&root, &[comp("3")?, comp("2")?])
        .await
        .ctx("destroy @3,@2")?;
    let want: BTreeMap<_, _> = [
        ("2".to_owned(), Err(ZfsErrorKind::Busy)),
        ("3".to_owned(), Ok(())),
    ]
    .into_iter()
    .collect();
    ensure_eq!(outcome_map(out), want, "outcomes");
    ensure_eq!(
        names_of(h, &root, VersionTypes::Snapshots).await?,
        vec!["@1", "@2"],
        "left"
    );
    Ok(())
}

/// zrepl `UndestroyableSnapshotParsing`: `destroy @a,b,c` with `b` held reports exactly `b`.
async fn undestroyable_snapshot_parsing(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("undestroyable_snapshot").await?;
    let fs = child(&root, "with space")?;
    h.create_dataset(&fs, DatasetSpec::FILESYSTEM).await?;
    snapshots(h, &fs, &["a", "b b", "c"]).await?;
    h.backend()
        .hold("hold tag", &[snap(&fs, "b b")?])
        .await
        .ctx("hold")?;
    let names: Vec<Component> = ["a", "b b", "c"]
        .iter()
        .map(|n| comp(n))
        .collect::<Result<_, _>>()?;
    let out = h
        .backend()
        .destroy_snapshots(&fs, &names)
        .await
        .ctx("destroy")?;
    ensure_eq!(out.len(), 3, "one outcome per snapshot: {out:?}");
    let want: BTreeMap<_, _> = [
        ("a".to_owned(), Ok(())),
        ("b b".to_owned(), Err(ZfsErrorKind::Busy)),
        ("c".to_owned(), Ok(())),
    ]
    .into_iter()
    .collect();
    ensure_eq!(outcome_map(out), want, "outcomes");
    ensure_eq!(
        names_of(h, &fs, VersionTypes::Snapshots).await?,
        vec!["@b b"],
        "left"
    );
    Ok(())
}

/// A snapshot already gone counts as destroyed, next to one that is really destroyed.
async fn destroy_snapshots_missing_in_list_is_success(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("destroy_missing_in_list").await?;
    snapshots(h, &root, &["a", "keep"]).await?;
    let out = h
        .backend()
        .destroy_snapshots(&root, &[comp("a")?, comp("no such")?])
        .await
        .ctx("destroy @a,@no such")?;
    let want: BTreeMap<_, _> = [("a".to_owned(), Ok(())), ("no such".to_owned(), Ok(()))]
        .into_iter()
        .collect();
    ensure_eq!(outcome_map(out), want, "outcomes");
    ensure_eq!(
        names_of(h, &root, VersionTypes::Snapshots).await?,
        vec!["@keep"],
        "left"
    );
    Ok(())
}

/// Destroying snapshots of a dataset that does not exist fails the call as DoesNotExist.
async fn destroy_snapshots_of_missing_dataset(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("destroy_missing_dataset").await?;
    let missing = child(&root, "not here")?;
    expect_kind(
        h.backend().destroy_snapshots(&missing, &[comp("a")?]).await,
        &ZfsErrorKind::DoesNotExist,
        "destroy snapshots of a missing dataset",
    )?;
    Ok(())
}

/// zrepl `IdempotentDestroy`: a second destroy of a bookmark or dataset is DoesNotExist (a
/// snapshot is reported destroyed), also when the parent does not exist.
async fn idempotent_destroy(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("idempotent_destroy").await?;
    let fs = child(&root, "foo bar")?;
    h.create_dataset(&fs, DatasetSpec::FILESYSTEM).await?;
    snapshots(h, &fs, &["a snap"]).await?;
    let bm = bmark(&fs, "a bookmark")?;
    h.backend()
        .bookmark(&snap(&fs, "a snap")?, &bm)
        .await
        .ctx("bookmark")?;

    for attempt in ["first", "second"] {
        let out = h
            .backend()
            .destroy_snapshots(&fs, &[comp("a snap")?])
            .await
            .ctx(format!("{attempt} destroy of @a snap"))?;
        ensure_eq!(
            out.into_iter().map(|o| o.result).collect::<Vec<_>>(),
            vec![Ok(())],
            "{attempt} destroy of the snapshot"
        );
    }
    h.backend()
        .destroy_bookmark(&bm)
        .await
        .ctx("destroy bookmark")?;
    expect_kind(
        h.backend().destroy_bookmark(&bm).await,
        &ZfsErrorKind::DoesNotExist,
        "second destroy of the bookmark",
    )?;
    h.backend()
        .destroy_dataset(&fs, false)
        .await
        .ctx("destroy dataset")?;
    expect_kind(
        h.backend().destroy_dataset(&fs, false).await,
        &ZfsErrorKind::DoesNotExist,
        "second destroy of the dataset",
    )?;
    expect_kind(
        h.backend().destroy_bookmark(&bm).await,
        &ZfsErrorKind::DoesNotExist,
        "destroy of a bookmark whose dataset is gone",
    )?;
    expect_kind(
        h.backend()
            .destroy_dataset(&child(&fs, "orphan")?, true)
            .await,
        &ZfsErrorKind::DoesNotExist,
        "destroy of a dataset whose parent is gone",
    )?;
    Ok(())
}

/// Destroying a bookmark leaves its snapshot alone (and the reverse).
async fn destroy_bookmark_keeps_snapshot(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("destroy_bookmark").await?;
    snapshots(h, &root, &["s", "t"]).await?;
    for (s, b) in [("s", "s"), ("t", "t")] {
        h.backend()
            .bookmark(&snap(&root, s)?, &bmark(&root, b)?)
            .await
            .ctx("bookmark")?;
    }
    h.backend()
        .destroy_bookmark(&bmark(&root, "s")?)
        .await
        .ctx("destroy #s")?;
    h.backend()
        .destroy_snapshots(&root, &[comp("t")?])
        .await
        .ctx("destroy @t")?;
    ensure_eq!(
        names_of(h, &root, VersionTypes::All).await?,
        vec!["@s", "#t"],
        "left"
    );
    Ok(())
}

/// Without `recursive` a dataset with children or snapshots is refused and stays; with it, the
/// whole tree goes.
async fn destroy_dataset_recursive_vs_not(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("destroy_dataset").await?;
    let parent = child(&root, "par ent")?;
    let kid = child(&parent, "ki d")?;
    let with_snap = child(&root, "with snap")?;
    h.create_dataset(&parent, DatasetSpec::FILESYSTEM).await?;
    h.create_dataset(&kid, DatasetSpec::FILESYSTEM).await?;
    h.create_dataset(&with_snap, DatasetSpec::FILESYSTEM)
        .await?;
    snapshots(h, &with_snap, &["s"]).await?;
    for d in [&parent, &with_snap] {
        expect_err_where(
            h.backend().destroy_dataset(d, false).await,
            "an error other than DoesNotExist",
            |k| *k != ZfsErrorKind::DoesNotExist,
            format!("non-recursive destroy of `{d}`"),
        )?;
        ensure!(exists(h, d).await?, "`{d}` was destroyed without recursive");
    }
    ensure!(exists(h, &kid).await?, "`{kid}` vanished");
    ensure_eq!(
        names_of(h, &with_snap, VersionTypes::All).await?,
        vec!["@s"],
        "snapshot still there"
    );
    for d in [&parent, &with_snap] {
        h.backend()
            .destroy_dataset(d, true)
            .await
            .ctx(format!("recursive destroy of `{d}`"))?;
        ensure!(!exists(h, d).await?, "`{d}` still exists");
    }
    ensure!(!exists(h, &kid).await?, "`{kid}` still exists");
    expect_kind(
        h.backend()
            .list_versions(std::slice::from_ref(&with_snap), VersionTypes::All)
            .await,
        &ZfsErrorKind::DoesNotExist,
        "versions of the destroyed dataset",
    )?;
    Ok(())
}

/// `zfs rollback -r` destroys the later snapshots and the later bookmarks too (libzfs's
/// rollback destroys both; a cursor bookmark newer than the rollback target is lost).
async fn rollback_r_destroys_later_snapshots(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("rollback").await?;
    for s in ["1", "2", "3"] {
        h.write(&root, MIB).await?;
        snapshots(h, &root, &[s]).await?;
    }
    h.backend()
        .bookmark(&snap(&root, "3")?, &bmark(&root, "3")?)
        .await
        .ctx("bookmark @3")?;
    h.write(&root, MIB).await?;
    h.backend()
        .rollback(&snap(&root, "1")?)
        .await
        .ctx("rollback to @1")?;
    ensure_eq!(
        names_of(h, &root, VersionTypes::All).await?,
        vec!["@1"],
        "left after rollback (bookmark #3 included)"
    );
    Ok(())
}

/// Rolling back to a snapshot that does not exist is DoesNotExist.
async fn rollback_to_missing_snapshot_does_not_exist(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("rollback_missing").await?;
    snapshots(h, &root, &["1"]).await?;
    expect_kind(
        h.backend().rollback(&snap(&root, "nope")?).await,
        &ZfsErrorKind::DoesNotExist,
        "rollback to a missing snapshot",
    )?;
    Ok(())
}

/// A held later snapshot blocks `rollback -r` (Busy) and nothing is destroyed.
async fn rollback_blocked_by_held_later_snapshot(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("rollback_held").await?;
    h.write(&root, MIB).await?;
    snapshots(h, &root, &["1"]).await?;
    h.write(&root, MIB).await?;
    snapshots(h, &root, &["2"]).await?;
    h.backend()
        .hold("keep", &[snap(&root, "2")?])
        .await
        .ctx("hold @2")?;
    expect_kind(
        h.backend().rollback(&snap(&root, "1")?).await,
        &ZfsErrorKind::Busy,
        "rollback past a held snapshot",
    )?;
    ensure_eq!(
        names_of(h, &root, VersionTypes::Snapshots).await?,
        vec!["@1", "@2"],
        "left"
    );
    Ok(())
}
