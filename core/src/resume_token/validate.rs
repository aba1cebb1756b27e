//! Validation of a decoded resume token against the send the sender was asked to do.
//!
//! Security-sensitive: the token comes from the receiver, which may be compromised. A forged
//! token could name another filesystem than the one the receiver may read (to steal its data),
//! another snapshot, or flags that turn an encrypted raw send into a plaintext one. Every field
//! that decides *what* is sent and *whether it is encrypted* is compared; flags that only change
//! the stream's form (compression, large blocks, embedded data) are deliberately not, as in
//! zrepl since 0.6 (zrepl issue #503).

use crate::name::DatasetName;
use crate::version::Guid;

use super::ResumeTokenContents;

/// The job's policy on encryption of sends (zrepl's `send.encrypted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendEncryptionPolicy {
    /// Only encrypted (raw) sends of encrypted filesystems are allowed.
    Encrypted,
    /// Only sends that arrive unencrypted on the receiver are allowed.
    Unencrypted,
}

/// Whether the filesystem being sent is encrypted (its `encryption` property is not `off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilesystemEncryption {
    /// Encrypted.
    Encrypted,
    /// Not encrypted.
    Unencrypted,
}

impl FilesystemEncryption {
    fn describe(self) -> &'static str {
        match self {
            FilesystemEncryption::Encrypted => "encrypted",
            FilesystemEncryption::Unencrypted => "not encrypted",
        }
    }
}

/// The send a resume token is checked against: what the sender decided to send, from its own
/// listing, not from anything the receiver said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeRequest {
    /// The sender's filesystem.
    pub filesystem: DatasetName,
    /// The GUID of the incremental source, `None` for a full send.
    pub from: Option<Guid>,
    /// The GUID of the snapshot to send.
    pub to: Guid,
    /// Whether `filesystem` is encrypted.
    pub encryption: FilesystemEncryption,
    /// The job's policy.
    pub policy: SendEncryptionPolicy,
}

/// A resume token that does not fit the send request. The sender must refuse to resume; the
/// receiver can discard its partial state (`zfs recv -A`) and the step be sent afresh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeTokenMismatch {
    /// The policy mandates encrypted sends but the filesystem is not encrypted; no token can
    /// make that right.
    #[error("encrypted send mandated by policy, but filesystem `{filesystem}` is not encrypted")]
    EncryptedSendOfUnencryptedFilesystem {
        /// The request's filesystem.
        filesystem: DatasetName,
    },
    /// The token resumes a send of another filesystem.
    #[error(
        "resume token is for filesystem `{token}` (toname `{toname}`), but the send is of \
         filesystem `{request}`"
    )]
    Filesystem {
        /// The filesystem the token names.
        token: DatasetName,
        /// The token's full `toname`.
        toname: String,
        /// The request's filesystem.
        request: DatasetName,
    },
    /// The token resumes an incremental send, the request is a full send.
    #[error(
        "resume token is for an incremental send from guid {token_from} ({token_from_hex}), but \
         the send of `{filesystem}` is a full send",
        token_from_hex = token_from.hex16()
    )]
    UnexpectedFromGuid {
        /// The token's `fromguid`.
        token_from: Guid,
        /// The request's filesystem.
        filesystem: DatasetName,
    },
    /// The token resumes a full send, the request is incremental.
    #[error(
        "resume token is for a full send, but the send of `{filesystem}` is incremental from \
         guid {request_from} ({request_from_hex})",
        request_from_hex = request_from.hex16()
    )]
    MissingFromGuid {
        /// The request's `from` GUID.
        request_from: Guid,
        /// The request's filesystem.
        filesystem: DatasetName,
    },
    /// Both are incremental, from different snapshots.
    #[error(
        "resume token `fromguid` is {token} ({token_hex}), but the send of `{filesystem}` is \
         incremental from guid {request} ({request_hex})",
        token_hex = token.hex16(),
        request_hex = request.hex16()
    )]
    FromGuid {
        /// The token's `fromguid`.
        token: Guid,
        /// The request's `from` GUID.
        request: Guid,
        /// The request's filesystem.
        filesystem: DatasetName,
    },
    /// The token sends another snapshot.
    #[error(
        "resume token `toguid` is {token} ({token_hex}, toname `{toname}`), but the send is of \
         guid {request} ({request_hex})",
        token_hex = token.hex16(),
        request_hex = request.hex16()
    )]
    ToGuid {
        /// The token's `toguid`.
        token: Guid,
        /// The token's `toname`.
        toname: String,
        /// The request's `to` GUID.
        request: Guid,
    },
    /// The policy mandates encrypted sends, but the token would produce a plaintext one.
    #[error(
        "resume token does not have rawok=true (rawok={rawok}), so resuming would send \
         filesystem `{filesystem}` unencrypted, but policy mandates encrypted sends only"
    )]
    EncryptionNotSet {
        /// The token's `rawok`.
        rawok: bool,
        /// The request's filesystem.
        filesystem: DatasetName,
    },
    /// The policy mandates unencrypted sends, but the token would produce an encrypted one.
    #[error(
        "resume token has rawok=true which would result in encrypted send, but policy mandates \
         unencrypted sends only (filesystem `{filesystem}` is {})",
        encryption.describe()
    )]
    EncryptionSet {
        /// The request's filesystem.
        filesystem: DatasetName,
        /// Its encryption (always encrypted: an unencrypted one cannot be sent encrypted).
        encryption: FilesystemEncryption,
    },
}

/// Checks that resuming with `token` sends exactly what `request` asks for, under the job's
/// encryption policy. The first mismatch found is returned, in this order: policy against the
/// filesystem, filesystem, `fromguid`, `toguid`, encryption.
pub fn validate(
    token: &ResumeTokenContents,
    request: &ResumeRequest,
) -> Result<(), ResumeTokenMismatch> {
    let filesystem = || request.filesystem.clone();
    if request.policy == SendEncryptionPolicy::Encrypted
        && request.encryption == FilesystemEncryption::Unencrypted
    {
        return Err(ResumeTokenMismatch::EncryptedSendOfUnencryptedFilesystem {
            filesystem: filesystem(),
        });
    }
    if token.toname.dataset() != &request.filesystem {
        return Err(ResumeTokenMismatch::Filesystem {
            token: token.toname.dataset().clone(),
            toname: token.toname.to_string(),
            request: filesystem(),
        });
    }
    match (token.fromguid, request.from) {
        (None, None) => {}
        (Some(token_from), None) => {
            return Err(ResumeTokenMismatch::UnexpectedFromGuid {
                token_from,
                filesystem: filesystem(),
            });
        }
        (None, Some(request_from)) => {
            return Err(ResumeTokenMismatch::MissingFromGuid {
                request_from,
                filesystem: filesystem(),
            });
        }
        (Some(token_from), Some(request_from)) => {
            if token_from != request_from {
                return Err(ResumeTokenMismatch::FromGuid {
                    token: token_from,
                    request: request_from,
                    filesystem: filesystem(),
                });
            }
        }
    }
    if token.toguid != request.to {
        return Err(ResumeTokenMismatch::ToGuid {
            token: token.toguid,
            toname: token.toname.to_string(),
            request: request.to,
        });
    }
    // `zfs send -w` of an unencrypted filesystem is a plain send, so only raw *and* encrypted
    // produces an encrypted stream.
    let sends_encrypted = token.rawok && request.encryption == FilesystemEncryption::Encrypted;
    match request.policy {
        SendEncryptionPolicy::Encrypted if !sends_encrypted => {
            Err(ResumeTokenMismatch::EncryptionNotSet {
                rawok: token.rawok,
                filesystem: filesystem(),
            })
        }
        SendEncryptionPolicy::Unencrypted if sends_encrypted => {
            Err(ResumeTokenMismatch::EncryptionSet {
                filesystem: filesystem(),
                encryption: request.encryption,
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::VersionName;

    use FilesystemEncryption::{Encrypted as FsEnc, Unencrypted as FsPlain};
    use SendEncryptionPolicy::{Encrypted as PolicyEnc, Unencrypted as PolicyPlain};

    const A: Guid = Guid(0x94a2_0a5f_2587_7859);
    const B: Guid = Guid(0xf784_e100_4f46_0f7a);
    const C: Guid = Guid(3);

    /// A token for `toname`, incremental from `from` if given, to `to`, with `rawok`.
    fn token(toname: &str, from: Option<Guid>, to: Guid, rawok: bool) -> ResumeTokenContents {
        ResumeTokenContents {
            fromguid: from,
            toguid: to,
            toname: VersionName::parse(toname).unwrap(),
            object: 2,
            offset: 0,
            bytes: Some(0),
            rawok,
            // Compression and the other stream-form flags never matter (zrepl #503).
            compressok: rawok,
            embedok: !rawok,
            largeblockok: true,
            savedok: false,
        }
    }

    fn request(
        fs: &str,
        from: Option<Guid>,
        to: Guid,
        encryption: FilesystemEncryption,
        policy: SendEncryptionPolicy,
    ) -> ResumeRequest {
        ResumeRequest {
            filesystem: DatasetName::parse(fs).unwrap(),
            from,
            to,
            encryption,
            policy,
        }
    }

    fn ds(s: &str) -> DatasetName {
        DatasetName::parse(s).unwrap()
    }

    /// One row: what the token says, what was asked, and the verdict with a fragment its
    /// message must contain (zrepl's error regexes, where zrepl has one).
    struct Case {
        name: &'static str,
        token: ResumeTokenContents,
        request: ResumeRequest,
        expected: Result<(), ResumeTokenMismatch>,
        message: &'static str,
    }

    fn check(case: &Case) {
        let got = validate(&case.token, &case.request);
        assert_eq!(got, case.expected, "case `{}`", case.name);
        if let Err(e) = got {
            let message = e.to_string();
            assert!(
                message.contains(case.message),
                "case `{}`: {message}",
                case.name
            );
        }
    }

    /// zrepl's `SendArgsValidationEE_EncryptionAndRaw`, the resume half: sender filesystem
    /// encrypted?, `send.encrypted`, `send.raw`. The interrupted send was raw if either flag was
    /// set, so the token has `rawok = encrypted || raw`; the resumed send has the same config.
    #[test]
    fn zrepl_encryption_and_raw_matrix() {
        let s = "pool/send er";
        let t = "pool/send er@a snap";
        // (filesystem encrypted, send.encrypted, send.raw, verdict, message fragment)
        type Row = (
            bool,
            bool,
            bool,
            Result<(), ResumeTokenMismatch>,
            &'static str,
        );
        let rows: [Row; 8] = [
            (false, false, false, Ok(()), ""),
            (false, false, true, Ok(()), ""), // unencrypted raw sends are plain sends (#503)
            (
                false,
                true,
                false,
                Err(ResumeTokenMismatch::EncryptedSendOfUnencryptedFilesystem {
                    filesystem: ds(s),
                }),
                "encrypted send mandated by policy, but filesystem `pool/send er` is not encrypted",
            ),
            (
                false,
                true,
                true,
                Err(ResumeTokenMismatch::EncryptedSendOfUnencryptedFilesystem {
                    filesystem: ds(s),
                }),
                "encrypted send mandated by policy, but filesystem `pool/send er` is not encrypted",
            ),
            (true, false, false, Ok(()), ""), // keys loaded: a plain send is possible
            (
                true,
                false,
                true,
                Err(ResumeTokenMismatch::EncryptionSet {
                    filesystem: ds(s),
                    encryption: FsEnc,
                }),
                "resume token has rawok=true which would result in encrypted send, but policy \
                 mandates unencrypted sends only",
            ),
            (true, true, false, Ok(()), ""),
            (true, true, true, Ok(()), ""),
        ];
        for (fs_encrypted, send_encrypted, send_raw, expected, message) in rows {
            let encryption = if fs_encrypted { FsEnc } else { FsPlain };
            let policy = if send_encrypted {
                PolicyEnc
            } else {
                PolicyPlain
            };
            check(&Case {
                name: "EE_EncryptionAndRaw",
                token: token(t, None, A, send_encrypted || send_raw),
                request: request(s, None, A, encryption, policy),
                expected,
                message,
            });
        }
    }

    #[test]
    fn table() {
        let cases = [
            // zrepl `SendArgsValidationResumeTokenDifferentFilesystemForbidden`: a token for a
            // full send of fs1@a presented to steal fs2@a.
            Case {
                name: "different filesystem",
                token: token("pool/send er1@a", None, A, false),
                request: request("pool/send er2", None, B, FsPlain, PolicyPlain),
                expected: Err(ResumeTokenMismatch::Filesystem {
                    token: ds("pool/send er1"),
                    toname: "pool/send er1@a".into(),
                    request: ds("pool/send er2"),
                }),
                message: "resume token is for filesystem `pool/send er1` (toname \
                          `pool/send er1@a`), but the send is of filesystem `pool/send er2`",
            },
            // A child or a prefix-sharing sibling is another filesystem too.
            Case {
                name: "child filesystem",
                token: token("pool/a/b@s", None, A, false),
                request: request("pool/a", None, A, FsPlain, PolicyPlain),
                expected: Err(ResumeTokenMismatch::Filesystem {
                    token: ds("pool/a/b"),
                    toname: "pool/a/b@s".into(),
                    request: ds("pool/a"),
                }),
                message: "`pool/a/b`",
            },
            // zrepl `SendArgsValidationResumeTokenEncryptionMismatchForbidden`, both ways.
            Case {
                name: "token of an unencrypted send under the encrypted policy",
                token: token("pool/send er@a", None, A, false),
                request: request("pool/send er", None, A, FsEnc, PolicyEnc),
                expected: Err(ResumeTokenMismatch::EncryptionNotSet {
                    rawok: false,
                    filesystem: ds("pool/send er"),
                }),
                message: "resume token does not have rawok=true",
            },
            Case {
                name: "token of an encrypted send under the unencrypted policy",
                token: token("pool/send er@a", None, A, true),
                request: request("pool/send er", None, A, FsEnc, PolicyPlain),
                expected: Err(ResumeTokenMismatch::EncryptionSet {
                    filesystem: ds("pool/send er"),
                    encryption: FsEnc,
                }),
                message: "policy mandates unencrypted sends only (filesystem `pool/send er` is \
                          encrypted)",
            },
            Case {
                name: "incremental token for a full send",
                token: token("pool/a@b", Some(A), B, false),
                request: request("pool/a", None, B, FsPlain, PolicyPlain),
                expected: Err(ResumeTokenMismatch::UnexpectedFromGuid {
                    token_from: A,
                    filesystem: ds("pool/a"),
                }),
                message: "incremental send from guid 10710134267608266841 (94a20a5f25877859)",
            },
            Case {
                name: "full token for an incremental send",
                token: token("pool/a@b", None, B, false),
                request: request("pool/a", Some(A), B, FsPlain, PolicyPlain),
                expected: Err(ResumeTokenMismatch::MissingFromGuid {
                    request_from: A,
                    filesystem: ds("pool/a"),
                }),
                message: "resume token is for a full send, but the send of `pool/a` is \
                          incremental from guid 10710134267608266841",
            },
            Case {
                name: "other incremental source",
                token: token("pool/a@b", Some(C), B, false),
                request: request("pool/a", Some(A), B, FsPlain, PolicyPlain),
                expected: Err(ResumeTokenMismatch::FromGuid {
                    token: C,
                    request: A,
                    filesystem: ds("pool/a"),
                }),
                message: "resume token `fromguid` is 3 (0000000000000003)",
            },
            Case {
                name: "other target snapshot",
                token: token("pool/a@b", Some(A), C, false),
                request: request("pool/a", Some(A), B, FsPlain, PolicyPlain),
                expected: Err(ResumeTokenMismatch::ToGuid {
                    token: C,
                    toname: "pool/a@b".into(),
                    request: B,
                }),
                message: "resume token `toguid` is 3 (0000000000000003, toname `pool/a@b`), but \
                          the send is of guid 17835627815740247930 (f784e1004f460f7a)",
            },
            Case {
                name: "matching incremental encrypted",
                token: token("pool/a@b", Some(A), B, true),
                request: request("pool/a", Some(A), B, FsEnc, PolicyEnc),
                expected: Ok(()),
                message: "",
            },
            // The policy check comes first, as in zrepl: it holds whatever the token says.
            Case {
                name: "policy check precedes the filesystem check",
                token: token("pool/other@b", None, B, true),
                request: request("pool/a", None, B, FsPlain, PolicyEnc),
                expected: Err(ResumeTokenMismatch::EncryptedSendOfUnencryptedFilesystem {
                    filesystem: ds("pool/a"),
                }),
                message: "`pool/a` is not encrypted",
            },
            // The filesystem check precedes the GUID checks.
            Case {
                name: "filesystem check precedes the guid checks",
                token: token("pool/other@b", Some(C), C, false),
                request: request("pool/a", None, B, FsPlain, PolicyPlain),
                expected: Err(ResumeTokenMismatch::Filesystem {
                    token: ds("pool/other"),
                    toname: "pool/other@b".into(),
                    request: ds("pool/a"),
                }),
                message: "pool/other",
            },
        ];
        for case in &cases {
            check(case);
        }
    }
}
