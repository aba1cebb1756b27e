//! Finding the abstractions (cursors, tentative cursors, step holds, last-received holds) on one
//! filesystem, for the endpoints' protection strategies.
//!
//! Bookmarks are recognised from the versions listing alone (name and GUID). Holds need one
//! `zfs holds` per snapshot, so only snapshots whose `userrefs` says they have holds are asked
//! (zrepl does the same); a snapshot listed without `userrefs` is asked too, to be safe.

use crate::abstraction::{Abstraction, FoundAbstraction, Recognition};
use crate::backend::{ZfsBackend, ZfsError};
use crate::name::{DatasetName, NameError, VersionName};
use crate::version::Version;

/// The most snapshots of one filesystem whose holds are listed in one search; bounds the
/// `zfs holds` calls a single request can cause.
pub const HOLD_LISTINGS_MAX: usize = 100_000;

/// Why the abstractions of a filesystem could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindError {
    /// A ZFS operation failed.
    #[error(transparent)]
    Zfs(#[from] ZfsError),
    /// A listed version's full name is not a valid name (cannot happen with a sane listing).
    #[error(transparent)]
    Name(#[from] NameError),
    /// More held snapshots than [`HOLD_LISTINGS_MAX`].
    #[error(
        "`{filesystem}` has {n_held} snapshots with holds, more than the {max} zferry lists in \
         one go; release holds you no longer need (`zfs holds -r {filesystem}`)"
    )]
    TooManyHeld {
        /// The filesystem.
        filesystem: DatasetName,
        /// How many snapshots have holds.
        n_held: usize,
        /// [`HOLD_LISTINGS_MAX`].
        max: usize,
    },
}

/// The abstractions on `filesystem`, given its `versions` as just listed, in createtxg order of
/// the listing. Only [`Recognition::Ours`] names are returned; foreign and tinkered ones are
/// never touched and so not reported here.
pub async fn find(
    backend: &dyn ZfsBackend,
    filesystem: &DatasetName,
    versions: &[Version],
) -> Result<Vec<FoundAbstraction>, FindError> {
    let held: Vec<&Version> = versions
        .iter()
        .filter(|v| v.is_snapshot() && v.userrefs.is_none_or(|n| n > 0))
        .collect();
    if held.len() > HOLD_LISTINGS_MAX {
        return Err(FindError::TooManyHeld {
            filesystem: filesystem.clone(),
            n_held: held.len(),
            max: HOLD_LISTINGS_MAX,
        });
    }
    let mut found = Vec::new();
    for v in versions {
        let name = VersionName::new(filesystem.clone(), v.kind, v.name.clone())?;
        if v.is_snapshot() {
            if v.userrefs == Some(0) {
                continue;
            }
            for tag in backend.holds(&name).await? {
                if let Recognition::Ours(abstraction) = Abstraction::parse_hold_tag(&tag) {
                    found.push(FoundAbstraction {
                        version: name.clone(),
                        createtxg: v.createtxg,
                        abstraction,
                    });
                }
            }
        } else if let Recognition::Ours(abstraction) =
            Abstraction::parse_bookmark(v.name.as_str(), v.guid)
        {
            found.push(FoundAbstraction {
                version: name,
                createtxg: v.createtxg,
                abstraction,
            });
        }
    }
    Ok(found)
}
