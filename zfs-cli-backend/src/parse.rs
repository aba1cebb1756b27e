//! Parsers of `zfs`/`zpool` output other than the listings (those are in
//! `zferry_core::listing`).
//!
//! Every malformed line is an error naming the line, never a silently skipped entry.

use std::collections::BTreeMap;

use zferry_core::backend::{Property, PropertySource, ZfsErrorKind};
use zferry_core::name::Component;

use crate::classify::{classify, fold_whitespace};

/// An estimate at or above this many bytes is nonsense (OpenZFS has printed underflowed sizes
/// near 2^64 for resumed and some incremental dry runs, openzfs#12265), and is reported as
/// unknown.
pub const ESTIMATE_BYTES_ABSURD: u64 = 1 << 60;

/// Output that does not have the shape the command promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected output on line {line}: {what} (line: {text:?})")]
pub struct OutputError {
    /// The line number, starting at 1 (0: the output as a whole).
    pub line: usize,
    /// What is wrong.
    pub what: String,
    /// The line, cut to [`OUTPUT_LINE_SHOWN_MAX`] bytes.
    pub text: String,
}

/// How much of a bad line an [`OutputError`] shows, in bytes.
pub const OUTPUT_LINE_SHOWN_MAX: usize = 200;

impl OutputError {
    fn new(line: usize, what: impl Into<String>, text: &str) -> Self {
        let mut end = text.len().min(OUTPUT_LINE_SHOWN_MAX);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            line,
            what: what.into(),
            text: text[..end].to_owned(),
        }
    }
}

/// Properties per object, as `zfs get -Hp -o name,property,value,source` prints them.
pub type PropertiesByObject = BTreeMap<String, BTreeMap<String, Property>>;

/// Parses `zfs get -Hp -o name,property,value,source` output of `objects` and checks that each
/// has every one of `properties`, exactly once, and that no other object is listed.
pub fn parse_properties(
    text: &str,
    objects: &[&str],
    properties: &[&str],
) -> Result<PropertiesByObject, OutputError> {
    let mut out: PropertiesByObject = BTreeMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.is_empty() {
            continue;
        }
        // Names and property names hold no tab, nor does the source; a value might (a user
        // property), so it is whatever lies between the second and the last tab.
        let mut head = raw.splitn(3, '\t');
        let (Some(name), Some(property), Some(rest)) = (head.next(), head.next(), head.next())
        else {
            return Err(OutputError::new(
                line,
                "expected 4 tab-separated fields",
                raw,
            ));
        };
        let Some((value, source)) = rest.rsplit_once('\t') else {
            return Err(OutputError::new(
                line,
                "expected 4 tab-separated fields",
                raw,
            ));
        };
        if !objects.contains(&name) {
            return Err(OutputError::new(
                line,
                format!("`{name}` was not asked for"),
                raw,
            ));
        }
        if !properties.contains(&property) {
            return Err(OutputError::new(
                line,
                format!("property `{property}` was not asked for"),
                raw,
            ));
        }
        let Some(source) = parse_source(source) else {
            return Err(OutputError::new(
                line,
                format!("unknown source `{source}`"),
                raw,
            ));
        };
        let props = out.entry(name.to_owned()).or_default();
        let previous = props.insert(
            property.to_owned(),
            Property {
                value: value.to_owned(),
                source,
            },
        );
        if previous.is_some() {
            return Err(OutputError::new(
                line,
                format!("property `{property}` of `{name}` is listed twice"),
                raw,
            ));
        }
    }
    for object in objects {
        let props = out.get(*object);
        for p in properties {
            if !props.is_some_and(|props| props.contains_key(*p)) {
                return Err(OutputError::new(
                    0,
                    format!("property `{p}` of `{object}` is missing"),
                    "",
                ));
            }
        }
    }
    Ok(out)
}

/// Parses a `source` column: `local`, `default`, `inherited from X`, `received`,
/// `temporary` or `-`.
pub fn parse_source(source: &str) -> Option<PropertySource> {
    Some(match source {
        "local" => PropertySource::Local,
        "default" => PropertySource::Default,
        "received" => PropertySource::Received,
        "temporary" => PropertySource::Temporary,
        "-" | "none" => PropertySource::None,
        other => PropertySource::Inherited {
            from: other.strip_prefix("inherited from ")?.to_owned(),
        },
    })
}

/// Parses `zfs holds -H snap`: `NAME<TAB>TAG<TAB>TIMESTAMP` per hold; returns the tags, sorted.
pub fn parse_holds(text: &str, snapshot: &str) -> Result<Vec<String>, OutputError> {
    let mut tags = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.is_empty() {
            continue;
        }
        let Some((name, rest)) = raw.split_once('\t') else {
            return Err(OutputError::new(
                line,
                "expected 3 tab-separated fields",
                raw,
            ));
        };
        let Some((tag, _timestamp)) = rest.rsplit_once('\t') else {
            return Err(OutputError::new(
                line,
                "expected 3 tab-separated fields",
                raw,
            ));
        };
        if name != snapshot {
            return Err(OutputError::new(
                line,
                format!("hold of `{name}`, not of `{snapshot}`"),
                raw,
            ));
        }
        tags.push(tag.to_owned());
    }
    tags.sort();
    Ok(tags)
}

/// Parses `zfs send -n -v -P` output: the sum of the sizes of its `full\t<to>\t<size>` and
/// `incremental\t<from>\t<to>\t<size>` lines (an `-I` range prints one line per snapshot).
/// `None` when a line has no size (ZoL 0.7 prints none for empty sends) or the total is absurd.
/// The `size\t<total>` line and the resume-token dump of `-t` are ignored.
pub fn parse_send_estimate(text: &str) -> Result<Option<u64>, OutputError> {
    let mut total: Option<u64> = Some(0);
    let mut seen = false;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let fields: Vec<&str> = raw.split('\t').collect();
        let size = match fields[..] {
            ["full", _to] | ["incremental", _, _to] => None,
            ["full", _to, size] | ["incremental", _, _to, size] => Some(size),
            _ => continue,
        };
        seen = true;
        let Some(size) = size.filter(|s| !s.is_empty()) else {
            total = None;
            continue;
        };
        if !size.bytes().all(|b| b.is_ascii_digit()) {
            return Err(OutputError::new(line, "the size is not a number", raw));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| OutputError::new(line, "the size does not fit 64 bits", raw))?;
        total = total.map(|t| t.saturating_add(size));
    }
    if !seen {
        return Err(OutputError::new(
            0,
            "no `full` or `incremental` line in the dry run's output",
            text,
        ));
    }
    Ok(total.filter(|t| *t < ESTIMATE_BYTES_ABSURD))
}

/// Parses `zpool get -H -p -o value feature@...`: `active` or `enabled` means usable.
pub fn parse_pool_feature(text: &str) -> Result<bool, OutputError> {
    match text.trim() {
        "active" | "enabled" => Ok(true),
        "disabled" | "-" => Ok(false),
        other => Err(OutputError::new(1, "unknown feature state", other)),
    }
}

/// Features of the `zfs` CLI, read from usage texts (reference §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CliFeatures {
    /// `zfs send` usage mentions `receive_resume_token`.
    pub resumable_send: bool,
    /// `zfs receive` usage has `-A <filesystem|volume>`.
    pub resumable_receive: bool,
    /// `zfs load-key` usage mentions `load-key` and `keylocation`.
    pub encryption: bool,
    /// `zfs destroy` usage has the comma syntax.
    pub batch_destroy: bool,
}

/// Reads the CLI features from the usage texts of `zfs send`, `receive`, `load-key`, `destroy`.
pub fn parse_usage(send: &str, receive: &str, load_key: &str, destroy: &str) -> CliFeatures {
    CliFeatures {
        resumable_send: send.contains("receive_resume_token"),
        resumable_receive: receive.contains("-A <filesystem|volume>"),
        encryption: load_key.contains("load-key") && load_key.contains("keylocation"),
        batch_destroy: destroy.contains("<filesystem|volume>@<snap>[%<snap>][,...]"),
    }
}

/// One line of `zfs destroy fs@a,b,c` stderr about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndestroyedSnapshot {
    /// The snapshot's short name.
    pub snapshot: Component,
    /// Why it was not destroyed.
    pub kind: ZfsErrorKind,
}

/// Parses the per-snapshot lines of a batched destroy of `requested`:
/// `cannot destroy snapshot <dataset>@<snap>: <reason>` (held, busy) and
/// `cannot destroy '<dataset>@<snap>': <reason>` (dependent clones). Names may hold spaces and
/// colons, so each line is matched against the requested names (the longest match wins).
/// Lines of other shapes are ignored.
pub fn parse_undestroyed(
    stderr: &str,
    dataset: &str,
    requested: &[Component],
) -> Vec<UndestroyedSnapshot> {
    let shapes = [
        (format!("cannot destroy snapshot {dataset}@"), ": "),
        (format!("cannot destroy '{dataset}@"), "': "),
    ];
    let mut out: Vec<UndestroyedSnapshot> = Vec::new();
    for raw in stderr.lines() {
        let Some((rest, separator)) = shapes
            .iter()
            .find_map(|(prefix, sep)| raw.strip_prefix(prefix.as_str()).map(|r| (r, *sep)))
        else {
            continue;
        };
        let best = requested
            .iter()
            .filter(|c| {
                rest.strip_prefix(c.as_str())
                    .is_some_and(|r| r.starts_with(separator))
            })
            .max_by_key(|c| c.as_str().len());
        let Some(snapshot) = best else {
            continue;
        };
        let reason = &rest[snapshot.as_str().len() + separator.len()..];
        let kind = classify(reason).unwrap_or_else(|| ZfsErrorKind::Other {
            detail: fold_whitespace(reason),
        });
        if !out.iter().any(|u| &u.snapshot == snapshot) {
            out.push(UndestroyedSnapshot {
                snapshot: snapshot.clone(),
                kind,
            });
        }
    }
    out
}

/// One line of `zfs hold`/`zfs release` stderr: `cannot hold snapshot '<snap>': <reason>` or
/// `cannot release hold from snapshot '<snap>': <reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldLine {
    /// The snapshot named.
    pub snapshot: String,
    /// The reason after the colon.
    pub reason: String,
}

/// Splits `zfs hold`/`release` stderr into per-snapshot lines and the rest.
pub fn parse_hold_lines(stderr: &str) -> (Vec<HoldLine>, Vec<&str>) {
    let mut lines = Vec::new();
    let mut rest = Vec::new();
    for raw in stderr.lines() {
        let after = raw
            .strip_prefix("cannot hold snapshot '")
            .or_else(|| raw.strip_prefix("cannot release hold from snapshot '"));
        match after.and_then(|a| a.split_once("': ")) {
            Some((snapshot, reason)) => lines.push(HoldLine {
                snapshot: snapshot.to_owned(),
                reason: reason.to_owned(),
            }),
            None if raw.trim().is_empty() => {}
            None => rest.push(raw),
        }
    }
    (lines, rest)
}

/// The first name `zfs` quoted in stderr (`cannot open 'p/a': ...`), to say which object of a
/// batch failed.
pub fn first_quoted(stderr: &str) -> Option<&str> {
    let start = stderr.find('\'')? + 1;
    let len = stderr[start..].find('\'')?;
    Some(&stderr[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Fixture;

    fn c(s: &str) -> Component {
        Component::parse(s).unwrap()
    }

    #[test]
    fn properties_from_real_output() {
        let f = Fixture::load("get_props");
        let objects = f.args_after(6);
        let objects: Vec<&str> = objects.iter().map(String::as_str).collect();
        let props: Vec<&str> = f.args[5].split(',').collect();
        let got = parse_properties(&f.stdout, &objects, &props).unwrap();
        let kid = &got["tank/props parent/kid"];
        assert_eq!(kid["zferry:note"].value, "set here");
        assert_eq!(
            kid["zferry:note"].source,
            PropertySource::Inherited {
                from: "tank/props parent".into()
            }
        );
        assert_eq!(kid["zferry:own"].source, PropertySource::Local);
        assert_eq!(kid["zferry:absent"].value, "-");
        assert_eq!(kid["zferry:absent"].source, PropertySource::None);
        assert_eq!(kid["compression"].source, PropertySource::Default);
        assert!(
            got["tank/rpart"]["receive_resume_token"]
                .value
                .starts_with("1-")
        );
        assert_eq!(got["tank/enc target"]["keystatus"].value, "available");
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn property_output_must_match_the_question() {
        let ok = "p/a\tguid\t1\t-\n";
        assert!(parse_properties(ok, &["p/a"], &["guid"]).is_ok());
        let cases: &[(&str, &[&str], &[&str], usize)] = &[
            ("p/a\tguid\t1\n", &["p/a"], &["guid"], 1),
            ("p/b\tguid\t1\t-\n", &["p/a"], &["guid"], 1),
            ("p/a\tname\tp/a\t-\n", &["p/a"], &["guid"], 1),
            ("p/a\tguid\t1\t-\np/a\tguid\t1\t-\n", &["p/a"], &["guid"], 2),
            ("p/a\tguid\t1\tsomewhere\n", &["p/a"], &["guid"], 1),
            ("p/a\tguid\t1\t-\n", &["p/a"], &["guid", "createtxg"], 0),
            ("", &["p/a"], &["guid"], 0),
        ];
        for (text, objects, props, line) in cases {
            let e = parse_properties(text, objects, props).unwrap_err();
            assert_eq!(e.line, *line, "{text:?}: {e}");
        }
        // A value with a tab in it (user properties may hold one) stays whole.
        let got = parse_properties("p/a\tx:y\ta\tb\tlocal\n", &["p/a"], &["x:y"]).unwrap();
        assert_eq!(got["p/a"]["x:y"].value, "a\tb");
    }

    #[test]
    fn holds_from_real_output() {
        let f = Fixture::load("holds");
        let snap = f.args.last().unwrap();
        assert_eq!(
            parse_holds(&f.stdout, snap).unwrap(),
            ["zferry keep A", "zferry keep B"]
        );
        let none = Fixture::load("holds_none");
        assert!(
            parse_holds(&none.stdout, none.args.last().unwrap())
                .unwrap()
                .is_empty()
        );
        assert_eq!(parse_holds(&f.stdout, "tank/other@b").unwrap_err().line, 1);
        assert_eq!(
            parse_holds("tank/x@b\tt\n", "tank/x@b").unwrap_err().line,
            1
        );
    }

    #[test]
    fn send_estimates_from_real_output() {
        let table = [
            ("send_dry_full", Some(12912)),
            ("send_dry_incremental", Some(1_058_864)),
            ("send_dry_range", Some(2_118_240)),
            ("send_dry_from_bookmark", Some(1_059_376)),
            ("send_dry_token", Some(141_736)),
        ];
        for (case, expected) in table {
            assert_eq!(
                parse_send_estimate(&Fixture::load(case).stdout).unwrap(),
                expected,
                "{case}"
            );
        }
    }

    #[test]
    fn send_estimate_edge_cases() {
        let table: &[(&str, Result<Option<u64>, usize>)] = &[
            // ZoL 0.7 prints no size for an empty incremental.
            ("incremental\tp/a b@1\tp/a b@2\n", Ok(None)),
            ("incremental\tp/a b@1\tp/a b@2\t\n", Ok(None)),
            ("full\tp/a b@1\n", Ok(None)),
            ("full\tp/a b@1\t10\nsize\t10\n", Ok(Some(10))),
            // Resume-token header lines are skipped, even ones that look like fields.
            (
                "resume token contents:\nnvlist version: 0\n\tobject = 0x2\n\ttoname = p/a@1\n\
                 full\tp/a@1\t5\n",
                Ok(Some(5)),
            ),
            ("full\tp/a@1\t18446744073709551000\n", Ok(None)),
            ("full\tp/a@1\t1e3\n", Err(1)),
            ("size\t10\n", Err(0)),
            ("", Err(0)),
        ];
        for (text, expected) in table {
            let got = parse_send_estimate(text).map_err(|e| e.line);
            assert_eq!(&got, expected, "{text:?}");
        }
    }

    #[test]
    fn undestroyed_snapshots_from_real_output() {
        let f = Fixture::load("destroy_held_in_list");
        let got = parse_undestroyed(&f.stderr, "tank/destroy me", &[c("a"), c("b"), c("c")]);
        assert_eq!(
            got,
            [UndestroyedSnapshot {
                snapshot: c("b"),
                kind: ZfsErrorKind::Busy
            }]
        );
        // A clone's origin (OpenZFS 2.3.2, probe run): another shape, and Busy.
        let stderr = "cannot destroy 'tank/o@1': snapshot has dependent clones\n\
                      use '-R' to destroy the following datasets:\ntank/cl\n";
        crate::fixtures::assert_probed(stderr);
        assert_eq!(
            parse_undestroyed(stderr, "tank/o", &[c("1"), c("2")]),
            [UndestroyedSnapshot {
                snapshot: c("1"),
                kind: ZfsErrorKind::Busy
            }]
        );
        // Older ZFS says "dataset is busy"; names may hold ": ".
        let stderr = "cannot destroy snapshot p/a b@x: y: dataset is busy\n\
                      cannot destroy snapshot p/a b@x: dataset is busy\n\
                      cannot destroy snapshot p/other@x: dataset is busy\n\
                      cannot destroy snapshot p/a b@z: something new\n";
        let got = parse_undestroyed(stderr, "p/a b", &[c("x"), c("x: y"), c("z")]);
        assert_eq!(
            got,
            [
                UndestroyedSnapshot {
                    snapshot: c("x: y"),
                    kind: ZfsErrorKind::Busy
                },
                UndestroyedSnapshot {
                    snapshot: c("x"),
                    kind: ZfsErrorKind::Busy
                },
                UndestroyedSnapshot {
                    snapshot: c("z"),
                    kind: ZfsErrorKind::Other {
                        detail: "something new".into()
                    }
                },
            ]
        );
    }

    #[test]
    fn hold_lines_from_real_output() {
        let hold_exists = Fixture::load("hold_exists").stderr;
        let (lines, rest) = parse_hold_lines(&hold_exists);
        assert_eq!(lines[0].snapshot, "tank/list me@b");
        assert_eq!(lines[0].reason, "tag already exists on this dataset");
        assert!(rest.is_empty());
        let release_missing = Fixture::load("release_missing").stderr;
        let (lines, _) = parse_hold_lines(&release_missing);
        assert_eq!(lines[0].reason, "no such tag on this dataset");
        // Several snapshots in one call (probe run against OpenZFS 2.3.2).
        let stderr = "cannot release hold from snapshot 'tank/src@c': no such tag on this dataset\n\
                      cannot release hold from snapshot 'tank/src@nosuch': dataset does not exist\n";
        crate::fixtures::assert_probed(stderr);
        let (lines, rest) = parse_hold_lines(stderr);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].snapshot, "tank/src@nosuch");
        assert!(rest.is_empty());
        let (lines, rest) = parse_hold_lines("cannot open 'tank/x': dataset does not exist\n");
        assert!(lines.is_empty());
        assert_eq!(rest.len(), 1);
    }

    #[test]
    fn features_from_real_usage_texts() {
        let f = |c: &str| Fixture::load(c).stderr;
        let got = parse_usage(
            &f("usage_send"),
            &f("usage_receive"),
            &f("usage_load_key"),
            &f("usage_destroy"),
        );
        assert_eq!(
            got,
            CliFeatures {
                resumable_send: true,
                resumable_receive: true,
                encryption: true,
                batch_destroy: true
            }
        );
        assert_eq!(parse_usage("", "", "", ""), CliFeatures::default());
        assert_eq!(
            parse_pool_feature(&Fixture::load("zpool_get_feature").stdout),
            Ok(true)
        );
        assert_eq!(parse_pool_feature("enabled\n"), Ok(true));
        assert_eq!(parse_pool_feature("disabled\n"), Ok(false));
        assert!(parse_pool_feature("what\n").is_err());
    }

    #[test]
    fn first_quoted_names_the_object() {
        assert_eq!(
            first_quoted(&Fixture::load("list_versions_missing").stderr),
            Some("tank/missing")
        );
        assert_eq!(first_quoted("no quotes"), None);
    }
}
