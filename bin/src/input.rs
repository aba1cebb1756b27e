//! Reading the files a command is given, with errors that name the file and the line.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use zferry_core::listing::{ListingError, VersionListing, parse_versions};

/// The exit code for bad input: a file that cannot be read or parsed, or bad arguments.
pub(crate) const EXIT_BAD_INPUT: u8 = 2;

/// A problem with a file given on the command line.
#[derive(Debug)]
pub(crate) enum InputError {
    /// The file cannot be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line of a listing is malformed.
    Listing { path: PathBuf, source: ListingError },
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => write!(f, "cannot read `{}`: {source}", path.display()),
            Self::Listing { path, source } => write!(
                f,
                "{}:{}: {}\n  (expected `zfs list -H -p -o name,guid,createtxg,creation,userrefs \
                 -t snapshot,bookmark` output: one tab-separated entry per line)",
                path.display(),
                source.line,
                source.kind
            ),
        }
    }
}

impl InputError {
    /// Prints the error and returns the bad-input exit code.
    pub(crate) fn report(&self) -> ExitCode {
        eprintln!("zferry: {self}");
        ExitCode::from(EXIT_BAD_INPUT)
    }
}

/// Reads and parses a versions listing.
pub(crate) fn read_versions(path: &Path) -> Result<VersionListing, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_versions(&text).map_err(|source| InputError::Listing {
        path: path.to_owned(),
        source,
    })
}
