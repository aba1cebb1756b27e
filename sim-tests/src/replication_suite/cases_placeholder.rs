//! Placeholders and properties: chained replication through a placeholder, placeholder
//! encryption (inherit, unspecified with and without a client identity), and `-p` with
//! `recv -x` and `-o`.

use std::collections::BTreeMap;

use zferry_core::backend::{PLACEHOLDER_PROPERTY, PropertySource};
use zferry_core::endpoint::Guarantee;
use zferry_core::endpoint::receiver::PlaceholderEncryptionConfig;
use zferry_core::engine::replication::report::{AttemptState, FilesystemState};
use zferry_core::name::DatasetName;

use super::setup::{Invocation, create_all, property, snapshot_names};
use crate::conformance::check::{Ctx, ensure, ensure_eq};
use crate::conformance::util::{MIB, child, exists, snap, snapshots};
use crate::conformance::{CaseFailure, DatasetSpec, Harness, case_table};

case_table!(
    replication_of_placeholder_filesystems_in_chained_replication_scenario,
    replication_placeholder_encryption_encrypt_on_receiver_use_case_works_if_configured_with_inherit,
    replication_placeholder_encryption_unspecified_is_ok_for_client_identity_placeholder,
    replication_placeholder_encryption_unspecified_leads_to_failure_at_runtime_when_creating_placeholders,
    replication_property_replication_works,
);

/// The pool the client-identity case replicates from (its root dataset is a sender
/// filesystem, as in zrepl's test).
const IDENTITY_POOL: &str = "zferry-cid";

/// Its size: comfortably above OpenZFS's minimum vdev size.
const IDENTITY_POOL_BYTES: u64 = 256 * MIB;

/// Whether `dataset` is a placeholder: `zrepl:placeholder=on`, set locally.
async fn is_placeholder(h: &dyn Harness, dataset: &DatasetName) -> Result<bool, CaseFailure> {
    let (value, source) = property(h, dataset, PLACEHOLDER_PROPERTY).await?;
    Ok(value == "on" && source == PropertySource::Local)
}

/// `<root>/sender/a/child` with `@initial` on each of `sender`, `a`, `child` (one atomic
/// snapshot, zrepl's `zfs snapshot -r`); returns (root, child).
async fn sender_a_child(
    h: &dyn Harness,
    key: &str,
) -> Result<(DatasetName, DatasetName), CaseFailure> {
    let root = h.fresh_root(key).await?;
    let sender = child(&root, "sender")?;
    let a = child(&sender, "a")?;
    let a_child = child(&a, "child")?;
    for fs in [&sender, &a, &a_child] {
        h.create_dataset(fs, DatasetSpec::FILESYSTEM).await?;
    }
    let snaps = [&sender, &a, &a_child]
        .iter()
        .map(|fs| snap(fs, "initial"))
        .collect::<Result<Vec<_>, _>>()?;
    h.backend()
        .snapshot(&snaps)
        .await
        .ctx("snapshot -r @initial")?;
    Ok((root, a_child))
}

/// host1 → host2 → host3: host1's `a` is not replicated, so host2 has it as a placeholder;
/// host2's job replicates host2's whole sink, placeholders included; host3 ends with `b@1`
/// and with `a` as a placeholder again (zrepl #742).
async fn replication_of_placeholder_filesystems_in_chained_replication_scenario(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let root = h.fresh_root("repl chain").await?;
    let host1_a = child(&root, "host1/a")?;
    let host1_b = child(&host1_a, "b")?;
    let host2_sink = child(&root, "host2/sink")?;
    let host3_sink = child(&root, "host3/sink")?;
    for d in [&host1_b, &host2_sink, &host3_sink] {
        create_all(h, d).await?;
    }
    snapshots(h, &host1_b, &["1"]).await?;

    let mut h1_to_h2 = Invocation::new(&[&host1_b], &host2_sink, Guarantee::GuaranteeResumability);
    h1_to_h2.sender_job = "h1-to-h2-sender".to_owned();
    h1_to_h2.receiver_job = "h1-to-h2-receiver".to_owned();
    h1_to_h2.placeholder_encryption = PlaceholderEncryptionConfig::Off;
    h1_to_h2.run(h).await?.expect_done()?;
    let host2_a = h1_to_h2.receiver_fs(&host1_a)?;
    let host2_b = h1_to_h2.receiver_fs(&host1_b)?;

    let mut h2_to_h3 = Invocation::new(&[], &host3_sink, Guarantee::GuaranteeResumability);
    h2_to_h3.filter = vec![
        (host2_sink.as_str().to_owned(), false),
        (format!("{host2_sink}<"), true),
    ];
    h2_to_h3.sender_job = "h2-to-h3-sender".to_owned();
    h2_to_h3.receiver_job = "h2-to-h3-receiver".to_owned();
    h2_to_h3.placeholder_encryption = PlaceholderEncryptionConfig::Off;
    let ran = h2_to_h3.run(h).await?;
    ran.expect_done()?;
    let host3_a = h2_to_h3.receiver_fs(&host2_a)?;
    let host3_b = h2_to_h3.receiver_fs(&host2_b)?;
    ensure_eq!(ran.steps(&host2_b)?, ["full @1"], "steps of host2's b");
    ensure_eq!(
        ran.steps(&host2_a)?,
        Vec::<String>::new(),
        "steps of host2's placeholder a"
    );

    ensure_eq!(snapshot_names(h, &host3_b).await?, ["@1"], "host3's b");
    for fs in [&host2_a, &host3_a] {
        ensure!(is_placeholder(h, fs).await?, "`{fs}` is not a placeholder");
    }
    for fs in [&host2_b, &host3_b] {
        ensure!(!is_placeholder(h, fs).await?, "`{fs}` is a placeholder");
    }
    super::setup::finish(h, &root).await
}

/// An encrypted receiver root and `recv.placeholder.encryption: inherit`: the placeholders and
/// the received plain filesystem below them are encrypted under the receiver root.
async fn replication_placeholder_encryption_encrypt_on_receiver_use_case_works_if_configured_with_inherit(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let (root, a_child) = sender_a_child(h, "repl enc inherit").await?;
    let receiver_root = child(&root, "receiver")?;
    h.create_dataset(&receiver_root, DatasetSpec::ENCRYPTED)
        .await?;
    let mut rep = Invocation::new(
        &[&a_child],
        &receiver_root,
        Guarantee::GuaranteeResumability,
    );
    rep.placeholder_encryption = PlaceholderEncryptionConfig::Inherit;
    let ran = rep.run(h).await?;
    ran.expect_done()?;
    let attempt = ran.attempt()?;
    ensure_eq!(attempt.state, AttemptState::Done, "attempt state");
    ensure_eq!(attempt.filesystems.len(), 1, "filesystems");
    ensure_eq!(ran.steps(&a_child)?, ["full @initial"], "steps");
    let rfs = rep.receiver_fs(&a_child)?;
    ensure_eq!(
        snapshot_names(h, &rfs).await?,
        ["@initial"],
        "received snapshots"
    );
    ensure_eq!(
        property(h, &rfs, "encryptionroot").await?.0,
        receiver_root.as_str(),
        "encryptionroot of the received filesystem"
    );
    let mut placeholder = rfs.parent();
    while let Some(p) = placeholder.filter(|p| receiver_root.is_ancestor_of(p)) {
        ensure!(is_placeholder(h, &p).await?, "`{p}` is not a placeholder");
        ensure_eq!(
            property(h, &p, "encryptionroot").await?.0,
            receiver_root.as_str(),
            "encryptionroot of placeholder `{p}`"
        );
        placeholder = p.parent();
    }
    super::setup::finish(h, &root).await
}

/// `unspecified` placeholder encryption is fine when the only placeholder is the sink's
/// client-identity dataset: the sender filesystems are a pool's root and its child, as in
/// zrepl's test, so nothing else is missing below the identity.
async fn replication_placeholder_encryption_unspecified_is_ok_for_client_identity_placeholder(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let root = h.fresh_root("repl enc identity").await?;
    let receiver_root = child(&root, "receiver")?;
    h.create_dataset(&receiver_root, DatasetSpec::FILESYSTEM)
        .await?;
    let pool_name = h
        .create_small_pool(IDENTITY_POOL, IDENTITY_POOL_BYTES)
        .await?;
    let result = async {
        let pool = super::setup::ds(&pool_name)?;
        let pool_child = child(&pool, "child")?;
        h.create_dataset(&pool_child, DatasetSpec::FILESYSTEM)
            .await?;
        snapshots(h, &pool, &["testsnap"]).await?;
        snapshots(h, &pool_child, &["testsnap"]).await?;
        let mut rep = Invocation::new(
            &[&pool, &pool_child],
            &receiver_root,
            Guarantee::GuaranteeResumability,
        );
        rep.client_identity = Some("testclientid".to_owned());
        rep.placeholder_encryption = PlaceholderEncryptionConfig::Unspecified;
        let ran = rep.run(h).await?;
        ran.expect_done()?;
        for fs in [&pool, &pool_child] {
            let report = ran.fs(fs)?;
            ensure_eq!(report.state, FilesystemState::Done, "state of `{fs}`");
            ensure_eq!(report.last_error, None, "error of `{fs}`");
            ensure_eq!(
                snapshot_names(h, &rep.receiver_fs(fs)?).await?,
                ["@testsnap"],
                "received snapshots of `{fs}`"
            );
        }
        let identity = child(&receiver_root, "testclientid")?;
        ensure!(
            is_placeholder(h, &identity).await?,
            "the client identity dataset `{identity}` is not a placeholder"
        );
        Ok(())
    }
    .await;
    h.destroy_pool(&pool_name).await?;
    result?;
    super::setup::finish(h, &root).await
}

/// A gap in the receiver's hierarchy with `unspecified` placeholder encryption: the step fails
/// with zrepl's message naming the first placeholder that would have been created.
async fn replication_placeholder_encryption_unspecified_leads_to_failure_at_runtime_when_creating_placeholders(
    h: &dyn Harness,
) -> Result<(), CaseFailure> {
    let (root, a_child) = sender_a_child(h, "repl enc unspecified").await?;
    let receiver_root = child(&root, "receiver")?;
    h.create_dataset(&receiver_root, DatasetSpec::FILESYSTEM)
        .await?;
    let mut rep = Invocation::new(
        &[&a_child],
        &receiver_root,
        Guarantee::GuaranteeResumability,
    );
    rep.placeholder_encryption = PlaceholderEncryptionConfig::Unspecified;
    let ran = rep.run(h).await?;
    let attempt = ran.attempt()?;
    ensure_eq!(attempt.error, None, "attempt-level error");
    ensure_eq!(attempt.filesystems.len(), 1, "filesystems");
    let fs = ran.fs(&a_child)?;
    ensure_eq!(fs.steps.len(), 1, "steps");
    ensure_eq!(fs.current_step, 0, "current step");
    ensure_eq!(fs.state, FilesystemState::StepError, "state");
    let first_placeholder = child(&receiver_root, a_child.pool())?;
    let expected = format!(
        "cannot create placeholder filesystem `{first_placeholder}`: placeholder filesystem \
         encryption handling is unspecified in receiver config"
    );
    let error = fs.last_error.clone().unwrap_or_default();
    ensure!(
        error.contains(&expected),
        "step error: {error}\nexpected: {expected}"
    );
    ensure!(
        !exists(h, &first_placeholder).await?,
        "`{first_placeholder}` was created"
    );
    super::setup::finish(h, &root).await
}

/// With `send -p`: a property the receiver excludes (`recv -x`) is absent there, a plain one
/// arrives as `received`, an overridden one (`recv -o`) is `local` with the override value.
async fn replication_property_replication_works(h: &dyn Harness) -> Result<(), CaseFailure> {
    let root = h.fresh_root("repl props").await?;
    let sender = child(&root, "sender")?;
    let a = child(&sender, "a")?;
    let a_child = child(&a, "child")?;
    h.create_dataset(&sender, DatasetSpec::FILESYSTEM).await?;
    h.create_dataset(&a, DatasetSpec::FILESYSTEM).await?;
    snapshots(h, &a, &["1"]).await?;
    h.create_dataset(&a_child, DatasetSpec::FILESYSTEM).await?;
    snapshots(h, &a_child, &["1"]).await?;
    let receiver_root = child(&root, "receiver")?;
    create_all(h, &child(&receiver_root, sender.as_str())?).await?;

    const IGNORED: &str = "zrepl:ignored";
    const REPLICATE: &str = "zrepl:replicate";
    const OVERRIDDEN: &str = "zrepl:overridden";
    const OVERRIDE_VALUE: &str = "overridden value";
    for (name, on) in [
        (IGNORED, vec![&a, &a_child]),
        (REPLICATE, vec![&a, &a_child]),
        (OVERRIDDEN, vec![&a_child]),
    ] {
        for fs in on {
            h.backend()
                .set_property(fs, name, name)
                .await
                .ctx(format!("set {name} on `{fs}`"))?;
        }
    }

    let mut rep = Invocation::new(&[&a, &a_child], &receiver_root, Guarantee::GuaranteeNothing);
    rep.send.send_properties = true;
    rep.properties_inherit = vec![IGNORED.to_owned()];
    rep.properties_override = BTreeMap::from([(OVERRIDDEN.to_owned(), OVERRIDE_VALUE.to_owned())]);
    let ran = rep.run(h).await?;
    ran.expect_done()?;
    ensure_eq!(ran.attempt()?.filesystems.len(), 2, "filesystems");
    for fs in [&a, &a_child] {
        let report = ran.fs(fs)?;
        ensure_eq!(report.steps.len(), 1, "steps of `{fs}`");
        ensure_eq!(report.current_step, 1, "current step of `{fs}`");
        let rfs = rep.receiver_fs(fs)?;
        ensure_eq!(
            property(h, &rfs, IGNORED).await?.1,
            PropertySource::None,
            "source of {IGNORED} on `{rfs}`"
        );
        ensure_eq!(
            property(h, &rfs, REPLICATE).await?,
            (REPLICATE.to_owned(), PropertySource::Received),
            "{REPLICATE} on `{rfs}`"
        );
        ensure_eq!(
            property(h, &rfs, OVERRIDDEN).await?,
            (OVERRIDE_VALUE.to_owned(), PropertySource::Local),
            "{OVERRIDDEN} on `{rfs}`"
        );
    }
    super::setup::finish(h, &root).await
}
