//! Job ids: the name of a job as it is written into ZFS.
//!
//! A job's name is part of every abstraction it leaves on a pool (cursor bookmarks, step and
//! last-received holds, see [`crate::abstraction`]), so it is checked once, here, against every
//! place it has to fit: it must be one valid dataset-name component (spaces allowed), it must not
//! start with `_` (reserved for internal jobs), and it must leave room for the longest hold tag and
//! the longest bookmark name that zferry builds from it. The limits are derived from the actual
//! prefixes, so that they cannot drift from the names written.
//!
//! A job id cannot be changed once a job has replicated: renaming a job orphans its cursors and
//! holds (zrepl issue #327).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::abstraction::{
    GUID_HEX_DIGITS, GUID_MARKER, JOB_MARKER, LAST_RECEIVED_HOLD_PREFIX, REPLICATION_CURSOR_PREFIX,
    STEP_HOLD_PREFIX, TENTATIVE_CURSOR_PREFIX,
};
use crate::name::{Component, NAME_LEN_MAX, NameError};

/// The longest hold tag ZFS accepts, in bytes (`MAXNAMELEN` of 256 including the terminating NUL,
/// in OpenZFS's `dsl_userhold.c`); zrepl's `ZREPL_ZFS_MAX_HOLD_TAG_LEN` default.
pub const HOLD_TAG_LEN_MAX: usize = 255;

/// The longest prefix of a hold tag that zferry builds from a job id, in bytes
/// (`zrepl_last_received_J_`).
pub const HOLD_TAG_PREFIX_LEN_MAX: usize =
    max(STEP_HOLD_PREFIX.len(), LAST_RECEIVED_HOLD_PREFIX.len());

/// The longest job id that fits in every hold tag, in bytes.
pub const JOB_ID_LEN_MAX_FOR_HOLD_TAG: usize = HOLD_TAG_LEN_MAX - HOLD_TAG_PREFIX_LEN_MAX;

/// The bytes a cursor bookmark name adds around the job id, for the longer of the two cursor
/// prefixes (`zrepl_CURSORTENTATIVE__G_<16 hex digits>_J_`).
pub const BOOKMARK_NAME_OVERHEAD_BYTES: usize = max(
    REPLICATION_CURSOR_PREFIX.len(),
    TENTATIVE_CURSOR_PREFIX.len(),
) + GUID_MARKER.len()
    + GUID_HEX_DIGITS
    + JOB_MARKER.len();

/// The longest job id that fits in every cursor bookmark name, which must be one name component
/// of at most [`NAME_LEN_MAX`] bytes, in bytes.
pub const JOB_ID_LEN_MAX_FOR_BOOKMARK: usize = NAME_LEN_MAX - BOOKMARK_NAME_OVERHEAD_BYTES;

/// The longest job id accepted, in bytes: the tighter of the hold tag and bookmark limits.
pub const JOB_ID_LEN_MAX: usize = min(JOB_ID_LEN_MAX_FOR_HOLD_TAG, JOB_ID_LEN_MAX_FOR_BOOKMARK);

/// The prefix that marks a job name reserved for jobs zferry runs itself.
pub const RESERVED_PREFIX: char = '_';

/// Why a job name cannot be a job id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobIdError {
    /// The name is not one valid dataset-name component.
    #[error("{0}; a job name must be usable as one component of a ZFS dataset name")]
    Name(#[from] NameError),
    /// The name starts with `_`.
    #[error(
        "invalid job name `{job}`: names starting with `_` are reserved for internal jobs (such \
         as `_control` and `_prometheus`); choose a name that starts with another character"
    )]
    Reserved {
        /// The name as given.
        job: String,
    },
    /// The name does not fit in the longest hold tag.
    #[error(
        "invalid job name `{job}`: it is {len_bytes} bytes long, but the hold tag \
         `zrepl_last_received_J_<job>` must fit in ZFS's {HOLD_TAG_LEN_MAX}-byte hold tag \
         limit, which leaves at most {JOB_ID_LEN_MAX_FOR_HOLD_TAG} bytes for the job name"
    )]
    TooLongForHoldTag {
        /// The name as given.
        job: String,
        /// Its length.
        len_bytes: usize,
    },
    /// The name does not fit in the longest cursor bookmark name.
    #[error(
        "invalid job name `{job}`: it is {len_bytes} bytes long, but the bookmark name \
         `zrepl_CURSORTENTATIVE__G_<guid>_J_<job>` must fit in ZFS's {NAME_LEN_MAX}-byte name \
         limit, which leaves at most {JOB_ID_LEN_MAX_FOR_BOOKMARK} bytes for the job name"
    )]
    TooLongForBookmark {
        /// The name as given.
        job: String,
        /// Its length.
        len_bytes: usize,
    },
}

/// A job's name, checked to fit into every ZFS name and hold tag zferry builds from it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(Component);

impl JobId {
    /// Parses a job name.
    pub fn parse(name: &str) -> Result<Self, JobIdError> {
        let component = Component::parse_as("job name", name)?;
        if name.starts_with(RESERVED_PREFIX) {
            return Err(JobIdError::Reserved {
                job: name.to_owned(),
            });
        }
        if name.len() > JOB_ID_LEN_MAX_FOR_HOLD_TAG {
            return Err(JobIdError::TooLongForHoldTag {
                job: name.to_owned(),
                len_bytes: name.len(),
            });
        }
        if name.len() > JOB_ID_LEN_MAX_FOR_BOOKMARK {
            return Err(JobIdError::TooLongForBookmark {
                job: name.to_owned(),
                len_bytes: name.len(),
            });
        }
        Ok(Self(component))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The name as a dataset-name component (it is always a valid one).
    pub fn as_component(&self) -> &Component {
        &self.0
    }
}

impl FromStr for JobId {
    type Err = JobIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for JobId {
    type Error = JobIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<JobId> for String {
    fn from(value: JobId) -> Self {
        value.0.into()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({:?})", self.as_str())
    }
}

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

const fn min(a: usize, b: usize) -> usize {
    if a < b { a } else { b }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::NameRule;

    #[test]
    fn limits_follow_from_the_prefixes() {
        assert_eq!(HOLD_TAG_PREFIX_LEN_MAX, "zrepl_last_received_J_".len());
        assert_eq!(JOB_ID_LEN_MAX_FOR_HOLD_TAG, 233);
        assert_eq!(
            BOOKMARK_NAME_OVERHEAD_BYTES,
            "zrepl_CURSORTENTATIVE__G_0123456789abcdef_J_".len()
        );
        assert_eq!(JOB_ID_LEN_MAX_FOR_BOOKMARK, 211);
        assert_eq!(JOB_ID_LEN_MAX, 211);
    }

    /// One row per case: the name, and `ok` or the expected error message.
    fn check(name: &str, expected: &str) {
        let actual = match JobId::parse(name) {
            Ok(job) => {
                assert_eq!(job.as_str(), name);
                "ok".to_owned()
            }
            Err(e) => e.to_string(),
        };
        assert_eq!(actual, expected, "job name {name:?}");
    }

    #[test]
    fn valid_names() {
        for name in [
            "push",
            "push with legitimate name",
            "a",
            "prod:backup-1.2_x",
            "x_",
            "A b",
        ] {
            check(name, "ok");
        }
        check(&"j".repeat(JOB_ID_LEN_MAX), "ok");
    }

    #[test]
    fn invalid_names_say_why() {
        check(
            "",
            "invalid job name ``: the name is empty; a job name must be usable as one component \
             of a ZFS dataset name",
        );
        check(
            "a/b",
            "invalid job name `a/b`: expected a single component without `/`, `@` or `#`; a job \
             name must be usable as one component of a ZFS dataset name",
        );
        check(
            "il\tlegitimate",
            "invalid job name `il\tlegitimate`: the character '\\t' at byte 2 is not allowed \
             (only ASCII letters, digits, space and `-_.:` are); a job name must be usable as \
             one component of a ZFS dataset name",
        );
        check(
            "_control",
            "invalid job name `_control`: names starting with `_` are reserved for internal jobs \
             (such as `_control` and `_prometheus`); choose a name that starts with another \
             character",
        );
        let long = "j".repeat(JOB_ID_LEN_MAX_FOR_BOOKMARK + 1);
        check(
            &long,
            &format!(
                "invalid job name `{long}`: it is 212 bytes long, but the bookmark name \
                 `zrepl_CURSORTENTATIVE__G_<guid>_J_<job>` must fit in ZFS's 255-byte name \
                 limit, which leaves at most 211 bytes for the job name"
            ),
        );
        let longer = "j".repeat(JOB_ID_LEN_MAX_FOR_HOLD_TAG + 1);
        check(
            &longer,
            &format!(
                "invalid job name `{longer}`: it is 234 bytes long, but the hold tag \
                 `zrepl_last_received_J_<job>` must fit in ZFS's 255-byte hold tag limit, which \
                 leaves at most 233 bytes for the job name"
            ),
        );
    }

    #[test]
    fn rules_are_typed() {
        let rule = |name: &str| match JobId::parse(name) {
            Err(JobIdError::Name(e)) => e.rule,
            other => panic!("{name:?}: {other:?}"),
        };
        assert_eq!(rule("."), NameRule::SelfReference);
        assert_eq!(rule(".."), NameRule::ParentReference);
        assert_eq!(rule("a%b"), NameRule::Percent);
        assert!(matches!(rule("a@b"), NameRule::WrongDelimiter { .. }));
        assert!(matches!(
            rule(&"j".repeat(256)),
            NameRule::ComponentTooLong { len_bytes: 256, .. }
        ));
    }

    #[test]
    fn serde_checks_the_name() {
        let job: JobId = serde_json::from_str("\"push with spaces\"").unwrap();
        assert_eq!(job.as_str(), "push with spaces");
        assert_eq!(serde_json::to_string(&job).unwrap(), "\"push with spaces\"");
        let err = serde_json::from_str::<JobId>("\"_prometheus\"").unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    }
}
