//! The messages of the endpoint protocol: one request variant per method of
//! [`Endpoint`](zferry_core::endpoint::Endpoint), [`Sender`](zferry_core::endpoint::Sender) and
//! [`Receiver`](zferry_core::endpoint::Receiver), one response variant per answer, and the
//! error that crosses the wire.
//!
//! The transport encodes them with postcard, which is not self-describing: a type whose serde
//! shape needs a self-describing format (an internally tagged enum such as
//! [`ZfsErrorKind`](zferry_core::backend::ZfsErrorKind), found in destroy outcomes and prune
//! reports) travels as JSON text inside the message ([`Json`]). Keep rules travel as their rule
//! list ([`WireKeepRule`]): their own serde shape is zrepl's YAML, which postcard cannot read.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zferry_core::backend::DestroyOutcome;
use zferry_core::endpoint::{
    EndpointError, Filesystem, PruneCursors, PruneReq, ReceiveReq, ReceiveRes, SendReq, SendRes,
};
use zferry_core::engine::pruner::PruneReport;
use zferry_core::error_class::{Persistence, Scope};
use zferry_core::name::{Component, DatasetName};
use zferry_core::prune::{
    GridRule, GridSpec, KeepRule, KeepRules, LastNRule, NotReplicatedRule, Pattern, RegexRule,
    ReplicationCursor,
};
use zferry_core::version::{Guid, Version};

/// The longest error message that crosses the wire, in bytes; a longer one keeps its end
/// (where `zfs`'s reason is). A ZFS error's stderr tail is at most 32 KiB.
pub const REMOTE_MESSAGE_LEN_MAX_BYTES: usize = 64 << 10;

/// A request to a remote endpoint: the method and its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndpointRequest {
    /// [`Endpoint::ping`](zferry_core::endpoint::Endpoint::ping).
    Ping,
    /// [`Endpoint::list_filesystems`](zferry_core::endpoint::Endpoint::list_filesystems).
    ListFilesystems,
    /// [`Endpoint::list_versions`](zferry_core::endpoint::Endpoint::list_versions).
    ListVersions {
        /// The sender-side path.
        filesystem: DatasetName,
    },
    /// [`Endpoint::destroy_snapshots`](zferry_core::endpoint::Endpoint::destroy_snapshots).
    DestroySnapshots {
        /// The sender-side path.
        filesystem: DatasetName,
        /// Short names, each with the GUID it must still have.
        snapshots: Vec<(Component, Guid)>,
    },
    /// [`Endpoint::prune`](zferry_core::endpoint::Endpoint::prune).
    Prune(WirePruneReq),
    /// [`Sender::send_dry`](zferry_core::endpoint::Sender::send_dry).
    SendDry(SendReq),
    /// [`Sender::send`](zferry_core::endpoint::Sender::send); the stream comes as a download.
    Send(SendReq),
    /// [`Sender::send_completed`](zferry_core::endpoint::Sender::send_completed).
    SendCompleted(SendReq),
    /// [`Sender::replication_cursors`](zferry_core::endpoint::Sender::replication_cursors).
    ReplicationCursors {
        /// The sender-side paths.
        filesystems: Vec<DatasetName>,
    },
    /// [`Receiver::receive`](zferry_core::endpoint::Receiver::receive); the stream comes as an
    /// upload.
    Receive(ReceiveReq),
}

impl EndpointRequest {
    /// The method's name, for messages.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::ListFilesystems => "list_filesystems",
            Self::ListVersions { .. } => "list_versions",
            Self::DestroySnapshots { .. } => "destroy_snapshots",
            Self::Prune(_) => "prune",
            Self::SendDry(_) => "send_dry",
            Self::Send(_) => "send",
            Self::SendCompleted(_) => "send_completed",
            Self::ReplicationCursors { .. } => "replication_cursors",
            Self::Receive(_) => "receive",
        }
    }
}

/// A remote endpoint's answer to a request that succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndpointResponse {
    /// To [`EndpointRequest::Ping`].
    Pong,
    /// To [`EndpointRequest::ListFilesystems`].
    Filesystems(Vec<Filesystem>),
    /// To [`EndpointRequest::ListVersions`].
    Versions(Vec<Version>),
    /// To [`EndpointRequest::DestroySnapshots`].
    Destroyed(Json<Vec<DestroyOutcome>>),
    /// To [`EndpointRequest::Prune`].
    Pruned(Json<PruneReport>),
    /// To [`EndpointRequest::SendDry`].
    SendDry(SendRes),
    /// To [`EndpointRequest::Send`]; the stream follows.
    Sent(SendRes),
    /// To [`EndpointRequest::SendCompleted`].
    SendCompleted,
    /// To [`EndpointRequest::ReplicationCursors`].
    Cursors(BTreeMap<DatasetName, ReplicationCursor>),
    /// To [`EndpointRequest::Receive`].
    Received(ReceiveRes),
}

impl EndpointResponse {
    /// The variant's name, for messages about a mismatched answer.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pong => "Pong",
            Self::Filesystems(_) => "Filesystems",
            Self::Versions(_) => "Versions",
            Self::Destroyed(_) => "Destroyed",
            Self::Pruned(_) => "Pruned",
            Self::SendDry(_) => "SendDry",
            Self::Sent(_) => "Sent",
            Self::SendCompleted => "SendCompleted",
            Self::Cursors(_) => "Cursors",
            Self::Received(_) => "Received",
        }
    }
}

/// What the server answers: the response, or the endpoint's error as the client must see it.
pub type EndpointResult = Result<EndpointResponse, RemoteError>;

/// An endpoint error on its way to the other side: what [`EndpointError::to_remote`] keeps
/// (the message, the class and the resume-token verdict). It arrives as
/// [`EndpointError::Remote`], so the active side classifies it exactly as the passive side
/// would have classified the original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// The error's message as the remote side renders it.
    pub message: String,
    /// Whether retrying can help.
    pub persistence: Persistence,
    /// What it stops.
    pub scope: Scope,
    /// Whether the remote side refused the resume token.
    pub resume_token_unusable: bool,
}

impl From<&EndpointError> for RemoteError {
    fn from(error: &EndpointError) -> Self {
        match error.to_remote() {
            EndpointError::Remote {
                message,
                persistence,
                scope,
                resume_token_unusable,
            } => Self {
                message: tail(message, REMOTE_MESSAGE_LEN_MAX_BYTES),
                persistence,
                scope,
                resume_token_unusable,
            },
            // `to_remote` always makes `Remote`; classify anything else here rather than fail.
            other => {
                use zferry_core::error_class::Classify;
                let class = other.class();
                Self {
                    message: tail(other.to_string(), REMOTE_MESSAGE_LEN_MAX_BYTES),
                    persistence: class.persistence,
                    scope: class.scope,
                    resume_token_unusable: other.is_resume_token_unusable(),
                }
            }
        }
    }
}

impl From<RemoteError> for EndpointError {
    fn from(e: RemoteError) -> Self {
        EndpointError::Remote {
            message: e.message,
            persistence: e.persistence,
            scope: e.scope,
            resume_token_unusable: e.resume_token_unusable,
        }
    }
}

/// The end of `text`, at most `max` bytes, cut at a character boundary.
fn tail(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// A value carried as JSON text inside a postcard message, for types whose serde shape needs a
/// self-describing format (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: Serialize> Serialize for Json<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Json<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        serde_json::from_str(&text)
            .map(Json)
            .map_err(serde::de::Error::custom)
    }
}

/// [`PruneReq`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePruneReq {
    /// The sender-side paths of the filesystems to prune.
    pub filesystems: Vec<DatasetName>,
    /// The side's keep rules, in order.
    pub rules: Vec<WireKeepRule>,
    /// Where the cursors come from.
    pub cursors: PruneCursors,
    /// Snapshots the running replication still needs.
    pub protected: Vec<(DatasetName, Guid)>,
}

/// One keep rule on the wire: the fields of [`KeepRule`], with patterns and grids as text. The
/// receiving side parses them again with the same checks as a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireKeepRule {
    /// [`KeepRule::Grid`].
    Grid {
        /// The grid as written (`1x1h(keep=all) | 24x1h`).
        grid: String,
        /// The pattern.
        regex: String,
    },
    /// [`KeepRule::LastN`].
    LastN {
        /// How many to keep (at least 1).
        count: u32,
        /// The pattern, if any.
        regex: Option<String>,
    },
    /// [`KeepRule::Regex`].
    Regex {
        /// The pattern.
        regex: String,
        /// Keep the non-matching snapshots instead.
        negate: bool,
    },
    /// [`KeepRule::NotReplicated`].
    NotReplicated {
        /// Whether the cursor's snapshot is kept too.
        keep_snapshot_at_cursor: bool,
    },
}

/// A message field the other side sent that this side refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the active side sent an invalid {what}: {detail}; are both sides the same zferry version?"
)]
pub struct InvalidMessage {
    /// Which field.
    pub what: &'static str,
    /// Why it is invalid.
    pub detail: String,
}

impl From<&KeepRule> for WireKeepRule {
    fn from(rule: &KeepRule) -> Self {
        match rule {
            KeepRule::Grid(r) => Self::Grid {
                grid: r.grid.to_string(),
                regex: r.regex.as_str().to_owned(),
            },
            KeepRule::LastN(r) => Self::LastN {
                count: r.count.get(),
                regex: r.regex.as_ref().map(|p| p.as_str().to_owned()),
            },
            KeepRule::Regex(r) => Self::Regex {
                regex: r.regex.as_str().to_owned(),
                negate: r.negate,
            },
            KeepRule::NotReplicated(r) => Self::NotReplicated {
                keep_snapshot_at_cursor: r.keep_snapshot_at_cursor,
            },
        }
    }
}

impl TryFrom<&WireKeepRule> for KeepRule {
    type Error = InvalidMessage;

    fn try_from(rule: &WireKeepRule) -> Result<Self, InvalidMessage> {
        let pattern = |text: &str| {
            Pattern::new(text).map_err(|e| InvalidMessage {
                what: "keep rule regex",
                detail: e.to_string(),
            })
        };
        Ok(match rule {
            WireKeepRule::Grid { grid, regex } => KeepRule::Grid(GridRule {
                grid: GridSpec::parse(grid).map_err(|e| InvalidMessage {
                    what: "keep rule grid",
                    detail: e.to_string(),
                })?,
                regex: pattern(regex)?,
            }),
            WireKeepRule::LastN { count, regex } => KeepRule::LastN(LastNRule {
                count: NonZeroU32::new(*count).ok_or_else(|| InvalidMessage {
                    what: "last_n count",
                    detail: "it is 0".to_owned(),
                })?,
                regex: regex.as_deref().map(pattern).transpose()?,
            }),
            WireKeepRule::Regex { regex, negate } => KeepRule::Regex(RegexRule {
                regex: pattern(regex)?,
                negate: *negate,
            }),
            WireKeepRule::NotReplicated {
                keep_snapshot_at_cursor,
            } => KeepRule::NotReplicated(NotReplicatedRule {
                keep_snapshot_at_cursor: *keep_snapshot_at_cursor,
            }),
        })
    }
}

impl From<&PruneReq> for WirePruneReq {
    fn from(req: &PruneReq) -> Self {
        Self {
            filesystems: req.filesystems.clone(),
            rules: req.rules.rules().iter().map(WireKeepRule::from).collect(),
            cursors: req.cursors.clone(),
            protected: req.protected.clone(),
        }
    }
}

impl TryFrom<WirePruneReq> for PruneReq {
    type Error = InvalidMessage;

    fn try_from(req: WirePruneReq) -> Result<Self, InvalidMessage> {
        let rules = req
            .rules
            .iter()
            .map(KeepRule::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        let rules = KeepRules::new(rules).map_err(|e| InvalidMessage {
            what: "keep rule list",
            detail: e.to_string(),
        })?;
        Ok(Self {
            filesystems: req.filesystems,
            rules,
            cursors: req.cursors,
            protected: req.protected,
        })
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests may panic on broken fixtures.

    use super::*;
    use zferry_core::backend::{Operation, ZfsError, ZfsErrorKind};
    use zferry_core::endpoint::{Guarantee, Protection};
    use zferry_core::engine::pruner::{
        DropReason, Dropped, FilesystemError, FilesystemOutcome, FilesystemReport, KeptOverride,
        KeptReason, Side,
    };
    use zferry_core::error_class::Classify;
    use zferry_core::prune::PruneError;
    use zferry_core::queue::CountersFull;
    use zferry_core::version::Txg;

    fn ds(s: &str) -> DatasetName {
        DatasetName::parse(s).unwrap()
    }

    fn c(s: &str) -> Component {
        Component::parse(s).unwrap()
    }

    fn roundtrip<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(value: &T) {
        let bytes = postcard::to_stdvec(value).unwrap();
        let back: T = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(&back, value);
    }

    fn version(name: &str, guid: u64) -> Version {
        Version::snapshot(c(name), Guid(guid), Txg(guid + 100), 1_700_000_000)
    }

    fn send_req() -> SendReq {
        SendReq {
            filesystem: ds("pool/a b/c"),
            from: Some(version("s1", 1)),
            to: version("s2", 2),
            include_intermediates: true,
            resume_token: Some("1-abc-def".to_owned()),
            protection: Protection {
                initial: Guarantee::GuaranteeNothing,
                incremental: Guarantee::GuaranteeIncremental,
            },
        }
    }

    fn rules() -> KeepRules {
        let yaml = r#"
- type: grid
  grid: 1x1h(keep=all) | 24x1h | 35x1d
  regex: "^zrepl_"
- type: last_n
  count: 10
- type: last_n
  count: 3
  regex: "^manual"
- type: regex
  regex: "^keep_"
  negate: true
- type: not_replicated
  keep_snapshot_at_cursor: false
"#;
        serde_saphyr::from_str(yaml).unwrap()
    }

    /// Every request, with every field set, survives postcard, and the keep rules come back
    /// equal to the configured ones.
    #[test]
    fn every_request_survives_the_wire() {
        let prune = PruneReq {
            filesystems: vec![ds("pool/a"), ds("pool/a b")],
            rules: rules(),
            cursors: PruneCursors::Given(BTreeMap::from([
                (ds("pool/a"), ReplicationCursor::At(Guid(7))),
                (ds("pool/b"), ReplicationCursor::Missing),
                (ds("pool/c"), ReplicationCursor::Unknown),
            ])),
            protected: vec![(ds("pool/a"), Guid(9))],
        };
        let wire = WirePruneReq::from(&prune);
        assert_eq!(PruneReq::try_from(wire.clone()).unwrap(), prune);
        let requests = [
            EndpointRequest::Ping,
            EndpointRequest::ListFilesystems,
            EndpointRequest::ListVersions {
                filesystem: ds("pool/a"),
            },
            EndpointRequest::DestroySnapshots {
                filesystem: ds("pool/a"),
                snapshots: vec![(c("s1"), Guid(1)), (c("s 2"), Guid(u64::MAX))],
            },
            EndpointRequest::Prune(wire),
            EndpointRequest::Prune(WirePruneReq::from(&PruneReq {
                cursors: PruneCursors::Own,
                ..prune
            })),
            EndpointRequest::SendDry(send_req()),
            EndpointRequest::Send(SendReq {
                from: None,
                resume_token: None,
                ..send_req()
            }),
            EndpointRequest::SendCompleted(send_req()),
            EndpointRequest::ReplicationCursors {
                filesystems: vec![ds("pool/a")],
            },
            EndpointRequest::Receive(ReceiveReq {
                filesystem: ds("pool/a"),
                to: version("s2", 2),
                clear_resume_token: true,
                protection: Protection::default(),
                incremental: true,
            }),
        ];
        for request in &requests {
            roundtrip(request);
        }
    }

    /// Every response survives postcard, including ZFS error kinds (internally tagged, so they
    /// travel as JSON) inside destroy outcomes and prune reports.
    #[test]
    fn every_response_survives_the_wire() {
        let zfs = ZfsError::new(
            Operation::DestroySnapshots,
            "pool/a@s1",
            ZfsErrorKind::ExistsWithOtherGuid { existing: Guid(3) },
        )
        .with_stderr("zfs: some text");
        let report = PruneReport {
            side: Side::Receiver,
            filesystems: vec![
                FilesystemReport {
                    filesystem: ds("pool/a"),
                    outcome: FilesystemOutcome::Done {
                        destroyed: 2,
                        of: 2,
                    },
                    kept: vec![KeptOverride {
                        snapshot: c("s9"),
                        guid: Guid(9),
                        reason: KeptReason::NeededByReplication,
                    }],
                    dropped: vec![Dropped {
                        snapshot: c("s8"),
                        guid: Guid(8),
                        reason: DropReason::GuidChanged { now: Guid(10) },
                    }],
                },
                FilesystemReport {
                    filesystem: ds("pool/b"),
                    outcome: FilesystemOutcome::Error {
                        error: FilesystemError::Destroy {
                            filesystem: ds("pool/b"),
                            snapshot: c("s1"),
                            kind: ZfsErrorKind::Busy,
                            n_destroyed: 1,
                        },
                        destroyed: 1,
                    },
                    kept: vec![],
                    dropped: vec![],
                },
                FilesystemReport {
                    filesystem: ds("pool/c"),
                    outcome: FilesystemOutcome::Error {
                        error: FilesystemError::Relist {
                            filesystem: ds("pool/c"),
                            source: zfs.clone(),
                        },
                        destroyed: 0,
                    },
                    kept: vec![],
                    dropped: vec![],
                },
                FilesystemReport {
                    filesystem: ds("pool/d"),
                    outcome: FilesystemOutcome::Error {
                        error: FilesystemError::Plan(PruneError::CursorNotOnTarget {
                            dataset: ds("pool/d"),
                            guid: Guid(4),
                        }),
                        destroyed: 0,
                    },
                    kept: vec![],
                    dropped: vec![],
                },
            ],
            counters_full: vec![CountersFull {
                filesystem: ds("pool/e"),
                len_max: 5,
            }],
        };
        let responses = [
            EndpointResponse::Pong,
            EndpointResponse::Filesystems(vec![Filesystem {
                path: ds("pool/a"),
                is_placeholder: true,
                resume_token: Some("1-x".to_owned()),
            }]),
            EndpointResponse::Versions(vec![version("s1", 1), version("s2", 2)]),
            EndpointResponse::Destroyed(Json(vec![
                DestroyOutcome {
                    snapshot: c("s1"),
                    result: Ok(()),
                },
                DestroyOutcome {
                    snapshot: c("s2"),
                    result: Err(ZfsErrorKind::ReceiveInterrupted {
                        token: Some("t".to_owned()),
                    }),
                },
            ])),
            EndpointResponse::Pruned(Json(report)),
            EndpointResponse::SendDry(SendRes {
                used_resume_token: true,
                expected_size: Some(12),
            }),
            EndpointResponse::Sent(SendRes {
                used_resume_token: false,
                expected_size: None,
            }),
            EndpointResponse::SendCompleted,
            EndpointResponse::Cursors(BTreeMap::from([(
                ds("pool/a"),
                ReplicationCursor::At(Guid(1)),
            )])),
            EndpointResponse::Received(ReceiveRes {
                received: version("s2", 2),
            }),
        ];
        for response in responses {
            roundtrip(&EndpointResult::Ok(response));
        }
        let error = EndpointError::Zfs(zfs);
        roundtrip(&EndpointResult::Err(RemoteError::from(&error)));
    }

    /// An error that crossed the wire keeps its message, its class and its resume-token verdict.
    #[test]
    fn an_error_keeps_its_class_across_the_wire() {
        let errors = [
            EndpointError::Zfs(ZfsError::new(
                Operation::Send,
                "p/a",
                ZfsErrorKind::ResumeTokenInvalid,
            )),
            EndpointError::Zfs(ZfsError::new(Operation::Receive, "p/a", ZfsErrorKind::Busy)),
            EndpointError::Connectivity {
                peer: "sender".to_owned(),
                detail: "gone".to_owned(),
                timeout: true,
            },
            EndpointError::Config {
                side: "receiver".to_owned(),
                detail: "bad".to_owned(),
            },
        ];
        for local in errors {
            let wire = postcard::to_stdvec(&RemoteError::from(&local)).unwrap();
            let arrived = EndpointError::from(postcard::from_bytes::<RemoteError>(&wire).unwrap());
            assert_eq!(arrived.to_string(), local.to_string());
            assert_eq!(arrived.class(), local.class(), "{local}");
            assert_eq!(
                arrived.is_resume_token_unusable(),
                local.is_resume_token_unusable(),
                "{local}"
            );
        }
    }

    #[test]
    fn a_long_message_keeps_its_end() {
        let long = format!("{}é the reason", "x".repeat(REMOTE_MESSAGE_LEN_MAX_BYTES));
        let error = EndpointError::Config {
            side: "receiver".to_owned(),
            detail: long,
        };
        let remote = RemoteError::from(&error);
        assert!(remote.message.len() <= REMOTE_MESSAGE_LEN_MAX_BYTES + '…'.len_utf8());
        assert!(
            remote.message.ends_with("é the reason"),
            "{}",
            remote.message
        );
    }

    #[test]
    fn invalid_keep_rules_are_refused_with_the_field() {
        let cases = [
            (
                WireKeepRule::LastN {
                    count: 0,
                    regex: None,
                },
                "last_n count",
            ),
            (
                WireKeepRule::Regex {
                    regex: "(".to_owned(),
                    negate: false,
                },
                "keep rule regex",
            ),
            (
                WireKeepRule::Grid {
                    grid: "nonsense".to_owned(),
                    regex: "^z".to_owned(),
                },
                "keep rule grid",
            ),
        ];
        for (rule, what) in cases {
            let e = KeepRule::try_from(&rule).unwrap_err();
            assert_eq!(e.what, what, "{rule:?}");
            assert!(e.to_string().contains("invalid"), "{e}");
        }
        let too_many = WirePruneReq {
            filesystems: vec![],
            rules: vec![
                WireKeepRule::NotReplicated {
                    keep_snapshot_at_cursor: true
                };
                zferry_core::prune::KEEP_RULES_MAX + 1
            ],
            cursors: PruneCursors::Own,
            protected: vec![],
        };
        assert_eq!(
            PruneReq::try_from(too_many).unwrap_err().what,
            "keep rule list"
        );
    }
}
