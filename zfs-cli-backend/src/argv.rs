//! The argument vectors of every `zfs`/`zpool` command the backend runs: one pure function per
//! operation, returning the arguments after the program name.
//!
//! They follow zrepl's command table (reference §4.1) except where a comment says why not.
//! Names are passed as single arguments, never through a shell: names with spaces need no
//! quoting here (a remote-shell prefix quotes them, see [`crate::process`]).

use std::fmt;

use zferry_core::backend::{
    ObjectName, PLACEHOLDER_PROPERTY, PlaceholderEncryption, ReceiveRequest, SendFlags,
    SendRequest, SendSource, VersionTypes,
};
use zferry_core::listing::VERSION_COLUMNS;
use zferry_core::name::{Component, DatasetName, VersionKind, VersionName};

/// The columns of `zfs get` output, in order.
pub const GET_COLUMNS: &str = "name,property,value,source";

/// The pool feature that resumable receive needs.
pub const FEATURE_EXTENSIBLE_DATASET: &str = "feature@extensible_dataset";

/// Why an argument vector cannot be built: the request is one ZFS would refuse or misread.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgvError {
    /// `-I` needs a snapshot as its base; ZFS sends ranges only between snapshots.
    #[error("an incremental range (-I) needs a snapshot as base, but `{from}` is a bookmark")]
    RangeFromBookmark {
        /// The base given.
        from: VersionName,
    },
    /// An incremental base must belong to the dataset of the snapshot sent.
    #[error("the incremental base `{from}` is not of the dataset of `{to}`")]
    BaseOfOtherDataset {
        /// The base given.
        from: VersionName,
        /// The snapshot sent.
        to: VersionName,
    },
    /// Only snapshots can be sent, held or rolled back to.
    #[error("`{name}` is a bookmark, but a snapshot is needed here")]
    NotASnapshot {
        /// The name given.
        name: VersionName,
    },
    /// Only bookmarks are destroyed by `destroy_bookmark`.
    #[error("`{name}` is a snapshot, but a bookmark is needed here")]
    NotABookmark {
        /// The name given.
        name: VersionName,
    },
    /// A property name that would change the meaning of the command line.
    #[error("property name `{name}` is empty or contains one of `=`, `,`, tab or newline")]
    BadPropertyName {
        /// The name given.
        name: String,
    },
    /// A placeholder cannot be a pool's root dataset (zrepl never creates one there).
    #[error("a placeholder cannot be the pool's root dataset `{dataset}`")]
    PlaceholderAtPoolRoot {
        /// The dataset given.
        dataset: DatasetName,
    },
    /// A hold tag that is empty or contains a newline or tab (`zfs holds -H` could not list it).
    #[error("hold tag `{tag}` is empty or contains a tab or newline")]
    BadTag {
        /// The tag given.
        tag: String,
    },
}

/// `zfs list` of datasets under `root` (all pools without one), with extra columns.
pub fn list_datasets(root: Option<&DatasetName>, properties: &[&str]) -> Vec<String> {
    let mut columns = String::from("name");
    for p in properties {
        columns.push(',');
        columns.push_str(p);
    }
    let mut args = strings(&["list", "-H", "-p", "-o", &columns, "-r", "-t"]);
    args.push("filesystem,volume".into());
    if let Some(root) = root {
        args.push(root.to_string());
    }
    args
}

/// `zfs list` of the versions of several datasets in one call (`-d 1`: not of their children).
pub fn list_versions(datasets: &[DatasetName], types: VersionTypes) -> Vec<String> {
    let types = match types {
        VersionTypes::Snapshots => "snapshot",
        VersionTypes::Bookmarks => "bookmark",
        VersionTypes::All => "bookmark,snapshot",
    };
    let mut args = strings(&[
        "list",
        "-H",
        "-p",
        "-o",
        VERSION_COLUMNS,
        "-r",
        "-d",
        "1",
        "-t",
        types,
        "-s",
        "createtxg",
    ]);
    args.extend(datasets.iter().map(ToString::to_string));
    args
}

/// `zfs list` of exactly the given snapshots or bookmarks (used to read back what was made).
pub fn list_exact(versions: &[&VersionName]) -> Vec<String> {
    let mut args = strings(&["list", "-H", "-p", "-o", VERSION_COLUMNS, "-t"]);
    args.push("snapshot,bookmark".into());
    args.extend(versions.iter().map(ToString::to_string));
    args
}

/// `zfs get` of some properties of some objects.
pub fn get_properties(
    objects: &[&ObjectName],
    properties: &[&str],
) -> Result<Vec<String>, ArgvError> {
    for p in properties {
        check_property_name(p)?;
    }
    let mut args = strings(&["get", "-Hp", "-o", GET_COLUMNS]);
    args.push(properties.join(","));
    args.extend(objects.iter().map(ToString::to_string));
    Ok(args)
}

/// `zfs set property=value dataset`.
pub fn set_property(
    dataset: &DatasetName,
    property: &str,
    value: &str,
) -> Result<Vec<String>, ArgvError> {
    check_property_name(property)?;
    Ok(vec![
        "set".into(),
        format!("{property}={value}"),
        dataset.to_string(),
    ])
}

/// `zfs snapshot a@s b@s ...`: one call, so ZFS takes them in one transaction group.
pub fn snapshot(snapshots: &[VersionName]) -> Result<Vec<String>, ArgvError> {
    let mut args = vec!["snapshot".to_owned()];
    for s in snapshots {
        require_snapshot(s)?;
        args.push(s.to_string());
    }
    Ok(args)
}

/// `zfs bookmark source bookmark`.
pub fn bookmark(source: &VersionName, bookmark: &VersionName) -> Result<Vec<String>, ArgvError> {
    if bookmark.kind() != VersionKind::Bookmark {
        return Err(ArgvError::NotABookmark {
            name: bookmark.clone(),
        });
    }
    Ok(vec![
        "bookmark".into(),
        source.to_string(),
        bookmark.to_string(),
    ])
}

/// `zfs hold tag snap...`; ZFS holds each snapshot on its own and reports each failure on a line.
pub fn hold(tag: &str, snapshots: &[VersionName]) -> Result<Vec<String>, ArgvError> {
    hold_or_release("hold", tag, snapshots)
}

/// `zfs release tag snap...`; like [`hold`].
pub fn release(tag: &str, snapshots: &[VersionName]) -> Result<Vec<String>, ArgvError> {
    hold_or_release("release", tag, snapshots)
}

/// `zfs holds -H snap`.
pub fn holds(snapshot: &VersionName) -> Result<Vec<String>, ArgvError> {
    require_snapshot(snapshot)?;
    Ok(vec!["holds".into(), "-H".into(), snapshot.to_string()])
}

/// `zfs destroy fs@a,b,c` (comma syntax, never `%` ranges).
pub fn destroy_snapshots(dataset: &DatasetName, snapshots: &[Component]) -> Vec<String> {
    let names: Vec<&str> = snapshots.iter().map(Component::as_str).collect();
    vec!["destroy".into(), format!("{dataset}@{}", names.join(","))]
}

/// `zfs destroy fs#bookmark`.
pub fn destroy_bookmark(bookmark: &VersionName) -> Result<Vec<String>, ArgvError> {
    if bookmark.kind() != VersionKind::Bookmark {
        return Err(ArgvError::NotABookmark {
            name: bookmark.clone(),
        });
    }
    Ok(vec!["destroy".into(), bookmark.to_string()])
}

/// `zfs destroy [-r] fs`.
pub fn destroy_dataset(dataset: &DatasetName, recursive: bool) -> Vec<String> {
    let mut args = vec!["destroy".to_owned()];
    if recursive {
        args.push("-r".into());
    }
    args.push(dataset.to_string());
    args
}

/// `zfs send [-w] [-p] [-b] [-L] [-c] [-e] [-S] [-i|-I from] to` or `zfs send -t token`.
pub fn send(request: &SendRequest) -> Result<Vec<String>, ArgvError> {
    let mut args = vec!["send".to_owned()];
    push_send_source(&mut args, request)?;
    Ok(args)
}

/// `zfs send -n -v -P` with the same flags and source as [`send`].
pub fn send_estimate(request: &SendRequest) -> Result<Vec<String>, ArgvError> {
    let mut args = strings(&["send", "-n", "-v", "-P"]);
    push_send_source(&mut args, request)?;
    Ok(args)
}

/// `zfs recv [-F] [-s] [-x p]... [-o p=v]... fs`.
///
/// The target is the filesystem, not `fs@to` as in zrepl: OpenZFS 2.3.2 receives a
/// multi-snapshot (`-I`) stream given `fs@to` by naming the FIRST contained snapshot `to` and
/// then failing with "cannot restore to fs@to: destination already exists" (checked in the
/// realzfs VM: `zfs send -I @a @c | zfs recv fs@c` left `fs@c` with `@b`'s GUID). Given the
/// filesystem, every snapshot keeps the name it has in the stream, for all stream kinds; the
/// backend then checks that `to` arrived with the expected GUID.
pub fn receive(request: &ReceiveRequest) -> Result<Vec<String>, ArgvError> {
    let mut args = vec!["recv".to_owned()];
    if request.force {
        args.push("-F".into());
    }
    if request.resumable {
        args.push("-s".into());
    }
    for p in &request.properties_inherit {
        check_property_name(p)?;
        args.push("-x".into());
        args.push(p.clone());
    }
    for (p, v) in &request.properties_override {
        check_property_name(p)?;
        args.push("-o".into());
        args.push(format!("{p}={v}"));
    }
    args.push(request.dataset.to_string());
    Ok(args)
}

/// `zfs recv -A fs`.
pub fn abort_receive(dataset: &DatasetName) -> Vec<String> {
    vec!["recv".into(), "-A".into(), dataset.to_string()]
}

/// `zfs create -o zrepl:placeholder=on -o mountpoint=none [-o encryption=off] fs`.
pub fn create_placeholder(
    dataset: &DatasetName,
    encryption: PlaceholderEncryption,
) -> Result<Vec<String>, ArgvError> {
    if dataset.parent().is_none() {
        return Err(ArgvError::PlaceholderAtPoolRoot {
            dataset: dataset.clone(),
        });
    }
    let mut args = vec!["create".to_owned()];
    args.push("-o".into());
    args.push(format!("{PLACEHOLDER_PROPERTY}=on"));
    args.push("-o".into());
    args.push("mountpoint=none".into());
    if encryption == PlaceholderEncryption::Off {
        args.push("-o".into());
        args.push("encryption=off".into());
    }
    args.push(dataset.to_string());
    Ok(args)
}

/// `zfs rollback -r fs@snap`.
pub fn rollback(snapshot: &VersionName) -> Result<Vec<String>, ArgvError> {
    require_snapshot(snapshot)?;
    Ok(vec!["rollback".into(), "-r".into(), snapshot.to_string()])
}

/// `zfs <subcommand>` without arguments: prints the usage text that feature detection reads.
pub fn usage(subcommand: &str) -> Vec<String> {
    vec![subcommand.to_owned()]
}

/// `zpool get -H -p -o value feature@... pool`.
pub fn zpool_feature(pool: &str, feature: &str) -> Vec<String> {
    strings(&["get", "-H", "-p", "-o", "value", feature, pool])
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| (*s).to_owned()).collect()
}

fn hold_or_release(
    verb: &str,
    tag: &str,
    snapshots: &[VersionName],
) -> Result<Vec<String>, ArgvError> {
    if tag.is_empty() || tag.contains(['\t', '\n']) {
        return Err(ArgvError::BadTag {
            tag: tag.to_owned(),
        });
    }
    let mut args = vec![verb.to_owned(), tag.to_owned()];
    for s in snapshots {
        require_snapshot(s)?;
        args.push(s.to_string());
    }
    Ok(args)
}

fn require_snapshot(name: &VersionName) -> Result<(), ArgvError> {
    if name.kind() != VersionKind::Snapshot {
        return Err(ArgvError::NotASnapshot { name: name.clone() });
    }
    Ok(())
}

fn check_property_name(name: &str) -> Result<(), ArgvError> {
    if name.is_empty() || name.contains(['=', ',', '\t', '\n']) {
        return Err(ArgvError::BadPropertyName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

fn push_send_source(args: &mut Vec<String>, request: &SendRequest) -> Result<(), ArgvError> {
    let (flag, from, to) = match &request.source {
        SendSource::Resume { token } => {
            // The flags are in the token; zfs refuses most of them next to `-t`.
            args.push("-t".into());
            args.push(token.clone());
            return Ok(());
        }
        SendSource::Full { to } => (None, None, to),
        SendSource::Incremental { from, to } => (Some("-i"), Some(from), to),
        SendSource::IncrementalRange { from, to } => {
            if from.kind() != VersionKind::Snapshot {
                return Err(ArgvError::RangeFromBookmark { from: from.clone() });
            }
            (Some("-I"), Some(from), to)
        }
    };
    require_snapshot(to)?;
    push_send_flags(args, request.flags);
    if let (Some(flag), Some(from)) = (flag, from) {
        if from.dataset() != to.dataset() {
            return Err(ArgvError::BaseOfOtherDataset {
                from: from.clone(),
                to: to.clone(),
            });
        }
        args.push(flag.into());
        args.push(from.to_string());
    }
    args.push(to.to_string());
    Ok(())
}

fn push_send_flags(args: &mut Vec<String>, flags: SendFlags) {
    let SendFlags {
        raw,
        properties,
        backup_properties,
        large_blocks,
        compressed,
        embedded_data,
        saved,
    } = flags;
    for (on, flag) in [
        (raw, "-w"),
        (properties, "-p"),
        (backup_properties, "-b"),
        (large_blocks, "-L"),
        (compressed, "-c"),
        (embedded_data, "-e"),
        (saved, "-S"),
    ] {
        if on {
            args.push(flag.into());
        }
    }
}

/// Renders an argument vector as one line for messages and tests: arguments joined by spaces,
/// those with spaces or quotes in single quotes.
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(pub &'a [String]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if a.is_empty() || a.contains([' ', '\'', '"', '\t']) {
                write!(f, "'{}'", a.replace('\'', r"'\''"))?;
            } else {
                f.write_str(a)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use zferry_core::version::Guid;

    use super::*;

    fn ds(s: &str) -> DatasetName {
        DatasetName::parse(s).unwrap()
    }
    fn v(s: &str) -> VersionName {
        VersionName::parse(s).unwrap()
    }
    fn c(s: &str) -> Component {
        Component::parse(s).unwrap()
    }
    fn show(args: &[String]) -> String {
        Shown(args).to_string()
    }

    /// The whole table: each row is what a method runs, rendered as a shell-like line.
    #[test]
    fn argv_table() {
        let a = ds("pool/a b");
        let snap = v("pool/a b@s 1");
        let bm = v("pool/a b#m 1");
        let flags_all = SendFlags {
            raw: true,
            properties: true,
            backup_properties: true,
            large_blocks: true,
            compressed: true,
            embedded_data: true,
            saved: true,
        };
        let recv = ReceiveRequest {
            dataset: ds("back/a b"),
            to: c("s 2"),
            to_guid: Guid(7),
            resumable: true,
            force: true,
            properties_override: BTreeMap::from([
                ("mountpoint".to_owned(), "none".to_owned()),
                ("canmount".to_owned(), "off".to_owned()),
            ]),
            properties_inherit: vec!["keylocation".into(), "zrepl:x".into()],
        };
        let rows: Vec<(Vec<String>, &str)> = vec![
            (
                list_datasets(Some(&a), &["zrepl:placeholder", "encryption"]),
                "list -H -p -o name,zrepl:placeholder,encryption -r -t filesystem,volume 'pool/a b'",
            ),
            (
                list_datasets(None, &[]),
                "list -H -p -o name -r -t filesystem,volume",
            ),
            (
                list_versions(&[a.clone(), ds("pool/c")], VersionTypes::All),
                "list -H -p -o name,guid,createtxg,creation,userrefs -r -d 1 -t bookmark,snapshot \
                 -s createtxg 'pool/a b' pool/c",
            ),
            (
                list_versions(&[ds("p")], VersionTypes::Snapshots),
                "list -H -p -o name,guid,createtxg,creation,userrefs -r -d 1 -t snapshot -s \
                 createtxg p",
            ),
            (
                list_versions(&[ds("p")], VersionTypes::Bookmarks),
                "list -H -p -o name,guid,createtxg,creation,userrefs -r -d 1 -t bookmark -s \
                 createtxg p",
            ),
            (
                list_exact(&[&snap]),
                "list -H -p -o name,guid,createtxg,creation,userrefs -t snapshot,bookmark \
                 'pool/a b@s 1'",
            ),
            (
                get_properties(&[&ObjectName::Version(bm.clone())], &["guid", "createtxg"])
                    .unwrap(),
                "get -Hp -o name,property,value,source guid,createtxg 'pool/a b#m 1'",
            ),
            (
                set_property(&a, "zrepl:placeholder", "off").unwrap(),
                "set zrepl:placeholder=off 'pool/a b'",
            ),
            (
                snapshot(&[snap.clone(), v("pool/c@s 1")]).unwrap(),
                "snapshot 'pool/a b@s 1' 'pool/c@s 1'",
            ),
            (
                bookmark(&snap, &bm).unwrap(),
                "bookmark 'pool/a b@s 1' 'pool/a b#m 1'",
            ),
            (
                hold("zrepl keep", &[snap.clone(), v("pool/a b@t")]).unwrap(),
                "hold 'zrepl keep' 'pool/a b@s 1' 'pool/a b@t'",
            ),
            (
                release("zrepl keep", std::slice::from_ref(&snap)).unwrap(),
                "release 'zrepl keep' 'pool/a b@s 1'",
            ),
            (holds(&snap).unwrap(), "holds -H 'pool/a b@s 1'"),
            (
                destroy_snapshots(&a, &[c("a"), c("b c"), c("d")]),
                "destroy 'pool/a b@a,b c,d'",
            ),
            (destroy_bookmark(&bm).unwrap(), "destroy 'pool/a b#m 1'"),
            (destroy_dataset(&a, true), "destroy -r 'pool/a b'"),
            (destroy_dataset(&a, false), "destroy 'pool/a b'"),
            (
                send(&SendRequest {
                    source: SendSource::Full { to: snap.clone() },
                    flags: SendFlags::default(),
                })
                .unwrap(),
                "send 'pool/a b@s 1'",
            ),
            (
                send(&SendRequest {
                    source: SendSource::Incremental {
                        from: bm.clone(),
                        to: v("pool/a b@s 2"),
                    },
                    flags: flags_all,
                })
                .unwrap(),
                "send -w -p -b -L -c -e -S -i 'pool/a b#m 1' 'pool/a b@s 2'",
            ),
            (
                send(&SendRequest {
                    source: SendSource::IncrementalRange {
                        from: snap.clone(),
                        to: v("pool/a b@s 2"),
                    },
                    flags: SendFlags {
                        large_blocks: true,
                        compressed: true,
                        ..SendFlags::default()
                    },
                })
                .unwrap(),
                "send -L -c -I 'pool/a b@s 1' 'pool/a b@s 2'",
            ),
            (
                send(&SendRequest {
                    source: SendSource::Resume {
                        token: "1-abc-def".into(),
                    },
                    flags: flags_all,
                })
                .unwrap(),
                "send -t 1-abc-def",
            ),
            (
                send_estimate(&SendRequest {
                    source: SendSource::Incremental {
                        from: snap.clone(),
                        to: v("pool/a b@s 2"),
                    },
                    flags: SendFlags {
                        raw: true,
                        ..SendFlags::default()
                    },
                })
                .unwrap(),
                "send -n -v -P -w -i 'pool/a b@s 1' 'pool/a b@s 2'",
            ),
            (
                send_estimate(&SendRequest {
                    source: SendSource::Resume {
                        token: "1-x".into(),
                    },
                    flags: SendFlags::default(),
                })
                .unwrap(),
                "send -n -v -P -t 1-x",
            ),
            (
                receive(&recv).unwrap(),
                "recv -F -s -x keylocation -x zrepl:x -o canmount=off -o mountpoint=none \
                 'back/a b'",
            ),
            (
                receive(&ReceiveRequest {
                    resumable: false,
                    force: false,
                    properties_override: BTreeMap::new(),
                    properties_inherit: Vec::new(),
                    ..recv.clone()
                })
                .unwrap(),
                "recv 'back/a b'",
            ),
            (abort_receive(&a), "recv -A 'pool/a b'"),
            (
                create_placeholder(&a, PlaceholderEncryption::Inherit).unwrap(),
                "create -o zrepl:placeholder=on -o mountpoint=none 'pool/a b'",
            ),
            (
                create_placeholder(&a, PlaceholderEncryption::Off).unwrap(),
                "create -o zrepl:placeholder=on -o mountpoint=none -o encryption=off 'pool/a b'",
            ),
            (rollback(&snap).unwrap(), "rollback -r 'pool/a b@s 1'"),
            (usage("send"), "send"),
            (
                zpool_feature("pool", FEATURE_EXTENSIBLE_DATASET),
                "get -H -p -o value feature@extensible_dataset pool",
            ),
        ];
        for (args, expected) in rows {
            assert_eq!(show(&args), expected);
        }
    }

    #[test]
    fn requests_zfs_would_misread_are_refused() {
        let snap = v("p/a@s");
        let bm = v("p/a#b");
        let refused = [
            send(&SendRequest {
                source: SendSource::IncrementalRange {
                    from: bm.clone(),
                    to: snap.clone(),
                },
                flags: SendFlags::default(),
            }),
            send(&SendRequest {
                source: SendSource::Incremental {
                    from: v("p/other@s"),
                    to: snap.clone(),
                },
                flags: SendFlags::default(),
            }),
            send(&SendRequest {
                source: SendSource::Full { to: bm.clone() },
                flags: SendFlags::default(),
            }),
            hold("a\tb", std::slice::from_ref(&snap)),
            hold("t", std::slice::from_ref(&bm)),
            release("", std::slice::from_ref(&snap)),
            snapshot(std::slice::from_ref(&bm)),
            bookmark(&snap, &snap),
            destroy_bookmark(&snap),
            set_property(&ds("p/a"), "a=b", "c"),
            get_properties(&[&ObjectName::Dataset(ds("p"))], &["guid,name"]),
            create_placeholder(&ds("p"), PlaceholderEncryption::Off),
            rollback(&bm),
        ];
        for r in refused {
            assert!(r.is_err(), "{r:?}");
        }
        assert_eq!(
            create_placeholder(&ds("p"), PlaceholderEncryption::Off)
                .unwrap_err()
                .to_string(),
            "a placeholder cannot be the pool's root dataset `p`"
        );
    }
}
