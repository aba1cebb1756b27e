//! Pruning tests: zrepl's own cases as data tables, plan fixtures in `zfs list` style, rule
//! deserialization, and properties.

use proptest::prelude::*;

use super::*;
use crate::name::VersionKind;
use crate::version::Txg;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Reads rules from zrepl's YAML shape.
fn rules(yaml: &str) -> KeepRules {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("rules {yaml:?}: {e}"))
}

/// The error message of rules that do not parse.
fn rules_error(yaml: &str) -> String {
    match serde_saphyr::from_str::<KeepRules>(yaml) {
        Ok(r) => panic!("rules {yaml:?} parsed: {r:?}"),
        Err(e) => e.to_string(),
    }
}

/// A time such as `30`, `30s`, `10m` or `2h`, in seconds.
fn seconds(text: &str) -> i64 {
    let (digits, factor) = match text.as_bytes().last() {
        Some(b'm') => (&text[..text.len() - 1], 60),
        Some(b'h') => (&text[..text.len() - 1], 3600),
        Some(b's') => (&text[..text.len() - 1], 1),
        _ => (text, 1),
    };
    digits
        .parse::<i64>()
        .unwrap_or_else(|_| panic!("time {text:?}"))
        * factor
}

/// Snapshots, one a line: `name creation [replicated]`.
fn snapshots(fixture: &str) -> Vec<PruneSnapshot> {
    fixture
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let replicated = match fields.get(2) {
                None => false,
                Some(&"replicated") => true,
                Some(other) => panic!("unknown flag {other:?} in {line:?}"),
            };
            PruneSnapshot {
                name: Component::parse(fields[0]).unwrap(),
                creation_unix: seconds(fields[1]),
                replicated,
            }
        })
        .collect()
}

/// Runs `rules` over `fixture` and compares `name verdict` lines, in input order.
fn check(rules_yaml: &str, fixture: &str, expected: &str) {
    let rules = rules(rules_yaml);
    let snapshots = snapshots(fixture);
    let verdicts = decide(&rules, &snapshots);
    let got: Vec<String> = snapshots
        .iter()
        .zip(&verdicts)
        .map(|(s, v)| format!("{} {}", s.name, rules.describe(v)))
        .collect();
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(got, expected, "rules:\n{rules_yaml}\nsnapshots:\n{fixture}");
}

/// Like [`check`] but compares only the destroyed names (zrepl's tests state destroy sets).
fn check_destroyed(rules_yaml: &str, fixture: &str, expected: &[&str]) {
    let rules = rules(rules_yaml);
    let snapshots = snapshots(fixture);
    let verdicts = decide(&rules, &snapshots);
    let mut got: Vec<&str> = snapshots
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| **v == Verdict::Destroy)
        .map(|(s, _)| s.name.as_str())
        .collect();
    got.sort_unstable();
    let mut expected = expected.to_vec();
    expected.sort_unstable();
    assert_eq!(got, expected, "rules:\n{rules_yaml}\nsnapshots:\n{fixture}");
}

// ---------------------------------------------------------------------------------------------
// zrepl's keep_last_n_test.go

const LAST_N_S1: &str = "1 10m\n2 20m\n3 15m\n4 30m\n5 30m";

#[test]
fn zrepl_last_n() {
    // (case, rules, snapshots, destroyed)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "keep2",
            "- {type: last_n, count: 2}",
            LAST_N_S1,
            &["1", "2", "3"],
        ),
        // 4 and 5 share a time: the greater name is the newer.
        (
            "keep1OfTwoWithSameTime",
            "- {type: last_n, count: 1}",
            LAST_N_S1,
            &["1", "2", "3", "4"],
        ),
        ("keepMany", "- {type: last_n, count: 100}", LAST_N_S1, &[]),
        ("empty_input", "- {type: last_n, count: 100}", "", &[]),
        (
            "empty_regex",
            "- {type: last_n, count: 4, regex: ''}",
            LAST_N_S1,
            &["1"],
        ),
        (
            "multiple_regexes",
            "- {type: last_n, count: 2, regex: '^a'}\n- {type: last_n, count: 2, regex: '^b'}",
            "a1 10m\nb1 11m\na2 20m\nb2 21m\na3 30m\nb3 31m",
            &["a1", "b1"],
        ),
        (
            "keep_more_than_matching",
            "- {type: last_n, count: 4, regex: 'a'}",
            "a1 10m\nb1 11m\na2 12m",
            &["b1"],
        ),
    ];
    for (case, rules, fixture, destroyed) in cases {
        eprintln!("case {case}");
        check_destroyed(rules, fixture, destroyed);
    }
}

#[test]
fn zrepl_last_n_count_must_be_positive() {
    for count in ["0", "-5"] {
        let e = rules_error(&format!("- {{type: last_n, count: {count}, regex: foo}}"));
        assert!(
            e.contains(&format!("`count` must be a positive number, found {count}")),
            "{e}"
        );
    }
    // zrepl's emptyRegexAllowed.
    assert_eq!(
        rules("- {type: last_n, count: 23, regex: ''}")
            .rules()
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// zrepl's keep_regex_test.go

#[test]
fn zrepl_regex_negation() {
    let fixture = "zrepl_foobar 0\nzrepl 0\nbarfoo 0";
    check_destroyed(
        "- {type: regex, regex: '^zrepl_'}",
        fixture,
        &["zrepl", "barfoo"],
    );
    check_destroyed(
        "- {type: regex, regex: '^zrepl_', negate: true}",
        fixture,
        &["zrepl_foobar"],
    );
}

// ---------------------------------------------------------------------------------------------
// zrepl's keep_not_replicated_test.go

#[test]
fn zrepl_not_replicated() {
    check_destroyed(
        "- type: not_replicated",
        "1 0 replicated\n2 0\n3 0 replicated",
        &["1", "3"],
    );
    check_destroyed("- type: not_replicated", "", &[]);
}

// ---------------------------------------------------------------------------------------------
// zrepl's pruning_test.go (PruneSnapshots)

const PRUNE_S1: &str = "foo_123 0\nfoo_456 0\nbar_123 0";

#[test]
fn zrepl_prune_snapshots() {
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "simple",
            "- {type: regex, regex: foo_}",
            PRUNE_S1,
            &["bar_123"],
        ),
        (
            "multipleRules",
            "- {type: regex, regex: foo_}\n- {type: regex, regex: bar_}",
            PRUNE_S1,
            &[],
        ),
        (
            "onlyThoseRemovedByAllAreRemoved",
            "- {type: regex, regex: notInS1}\n- {type: regex, regex: bar_}",
            PRUNE_S1,
            &["foo_123", "foo_456"],
        ),
        ("noRulesKeepsAll", "[]", PRUNE_S1, &[]),
        ("noSnaps", "- {type: regex, regex: foo_}", "", &[]),
        (
            "multiple_grids_with_disjoint_regexes",
            "- {type: grid, regex: '^p1_', grid: '1x10s | 1x10s'}\n\
             - {type: grid, regex: '^p2_', grid: '1x10s | 1x10s'}",
            "p1_a 4\np2_a 5\np1_b 14\np2_b 15\np1_c 29\np2_c 30",
            &["p1_a", "p2_a"],
        ),
    ];
    for (case, rules, fixture, destroyed) in cases {
        eprintln!("case {case}");
        check_destroyed(rules, fixture, destroyed);
    }
}

#[test]
fn no_rules_keeps_all_and_says_so() {
    // zrepl's nilRulesKeepsAll: an empty list (as YAML `[]`) and a list built empty.
    check(
        "[]",
        PRUNE_S1,
        "foo_123 keep (no keep rules)\nfoo_456 keep (no keep rules)\nbar_123 keep (no keep rules)",
    );
    let empty = KeepRules::new(Vec::new()).unwrap();
    assert_eq!(
        decide(&empty, &snapshots(PRUNE_S1)),
        vec![Verdict::Keep(KeepReason::NoRules); 3]
    );
}

// ---------------------------------------------------------------------------------------------
// Verdicts name every rule that keeps a snapshot.

#[test]
fn verdicts_list_the_keeping_rules() {
    check(
        "- type: not_replicated\n\
         - {type: last_n, count: 2, regex: '^zrepl_'}\n\
         - {type: grid, regex: '^zrepl_', grid: '1x1h(keep=all) | 2x1h'}\n\
         - {type: regex, regex: '^manual'}",
        "zrepl_1 0 replicated
         zrepl_2 1h replicated
         manual_1 90m replicated
         zrepl_3 2h replicated
         zrepl_4 3h
         zrepl_5 190m",
        "zrepl_1 destroy
         zrepl_2 keep (grid)
         manual_1 keep (regex)
         zrepl_3 keep (grid)
         zrepl_4 keep (not_replicated, last_n, grid)
         zrepl_5 keep (not_replicated, last_n, grid)",
    );
    // Several rules of one type are told apart by position.
    check(
        "- {type: last_n, count: 1, regex: a}\n- {type: last_n, count: 1, regex: b}\n- type: not_replicated",
        "a1 0 replicated\nab 1\nb1 0 replicated",
        "a1 destroy\nab keep (last_n#1, last_n#2, not_replicated)\nb1 destroy",
    );
}

#[test]
fn grid_only_looks_at_matching_snapshots() {
    // "now" is the youngest *matching* snapshot: `other` is newer but does not move the grid.
    check(
        "- {type: grid, regex: '^z', grid: '1x1h'}",
        "z1 0\nz2 30m\nother 10h",
        "z1 keep (grid)\nz2 destroy\nother destroy",
    );
}

// ---------------------------------------------------------------------------------------------
// Plans of listed filesystems: the replicated attribute and the cursor errors.

/// Versions, one a line: `@name txg creation [guid]` or `#name txg creation [guid]`; the guid
/// defaults to the txg, so that a bookmark made from a snapshot shares its guid.
fn versions(fixture: &str) -> Vec<Version> {
    fixture
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (kind, name) = match fields[0].split_at(1) {
                ("@", name) => (VersionKind::Snapshot, name),
                ("#", name) => (VersionKind::Bookmark, name),
                _ => panic!("bad version {line:?}"),
            };
            let txg: u64 = fields[1].parse().unwrap();
            let guid = fields.get(3).map_or(txg, |g| g.parse().unwrap());
            let name = Component::parse(name).unwrap();
            match kind {
                VersionKind::Snapshot => {
                    Version::snapshot(name, Guid(guid), Txg(txg), seconds(fields[2]))
                }
                VersionKind::Bookmark => {
                    Version::bookmark(name, Guid(guid), Txg(txg), seconds(fields[2]))
                }
            }
        })
        .collect()
}

fn dataset() -> DatasetName {
    DatasetName::parse("pool/data").unwrap()
}

/// Plans `fixture` and renders `@name replicated|not-replicated|unknown verdict` lines in
/// createtxg order, or the error.
fn check_plan(rules_yaml: &str, fixture: &str, cursor: ReplicationCursor, expected: &str) {
    let rules = rules(rules_yaml);
    let got = match plan_filesystem(&dataset(), &versions(fixture), &rules, cursor) {
        Ok(plan) => plan
            .snapshots
            .iter()
            .map(|s| {
                let replicated = match s.replicated {
                    Some(true) => "replicated",
                    Some(false) => "not-replicated",
                    None => "unknown",
                };
                format!(
                    "@{} {replicated} {}",
                    s.version.name,
                    rules.describe(&s.verdict)
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("error: {e}"),
    };
    let expected: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        got,
        expected.join("\n"),
        "rules:\n{rules_yaml}\nversions:\n{fixture}"
    );
}

const HISTORY: &str = "
    @s3 30 3h
    #s2 20 2h
    @s1 10 1h
    @s2 20 2h
    @s4 40 4h
    #cursor_like 25 150m 99
";

#[test]
fn replicated_is_older_than_the_cursor_snapshot() {
    check_plan(
        "- type: not_replicated",
        HISTORY,
        ReplicationCursor::At(Guid(20)),
        "@s1 replicated destroy
         @s2 not-replicated keep (not_replicated)
         @s3 not-replicated keep (not_replicated)
         @s4 not-replicated keep (not_replicated)",
    );
    // keep_snapshot_at_cursor: false makes the cursor's snapshot replicated.
    check_plan(
        "- {type: not_replicated, keep_snapshot_at_cursor: false}",
        HISTORY,
        ReplicationCursor::At(Guid(20)),
        "@s1 replicated destroy
         @s2 replicated destroy
         @s3 not-replicated keep (not_replicated)
         @s4 not-replicated keep (not_replicated)",
    );
    // One rule with `false` is enough, even next to one with the default.
    check_plan(
        "- type: not_replicated\n- {type: not_replicated, keep_snapshot_at_cursor: false}",
        HISTORY,
        ReplicationCursor::At(Guid(40)),
        "@s1 replicated destroy
         @s2 replicated destroy
         @s3 replicated destroy
         @s4 replicated destroy",
    );
}

#[test]
fn the_cursor_is_found_by_guid_among_snapshots_only() {
    // Guid 99 is only a bookmark's: the target has no snapshot for it.
    check_plan(
        "- type: not_replicated",
        HISTORY,
        ReplicationCursor::At(Guid(99)),
        "error: `pool/data` is not pruned: none of its snapshots has guid 99, the snapshot the \
         sender's replication cursor points at (it was destroyed here, or this is not the \
         filesystem the sender replicates to); the next successful replication moves the cursor",
    );
    // The same, even when no rule reads `replicated`: never a silent keep-all or destroy-all.
    check_plan(
        "- {type: last_n, count: 1}",
        HISTORY,
        ReplicationCursor::At(Guid(12345)),
        "error: `pool/data` is not pruned: none of its snapshots has guid 12345, the snapshot \
         the sender's replication cursor points at (it was destroyed here, or this is not the \
         filesystem the sender replicates to); the next successful replication moves the cursor",
    );
}

#[test]
fn a_missing_cursor_is_an_error_for_the_filesystem() {
    let missing = "error: `pool/data` is not pruned: the sender has no replication cursor for \
                   it, so it cannot tell replicated snapshots from new ones; pruning starts \
                   after the first successful replication";
    check_plan(
        "- type: not_replicated",
        HISTORY,
        ReplicationCursor::Missing,
        missing,
    );
    // zrepl refuses even when no rule reads `replicated`.
    check_plan(
        "- {type: last_n, count: 1}",
        HISTORY,
        ReplicationCursor::Missing,
        missing,
    );
    check_plan(
        "- type: not_replicated",
        HISTORY,
        ReplicationCursor::Unknown,
        "error: `pool/data` is not pruned: a `not_replicated` rule needs the sender's \
         replication cursor to tell replicated snapshots from new ones, and none was given",
    );
    // Unknown is fine when no rule needs it.
    check_plan(
        "- {type: last_n, count: 2}",
        HISTORY,
        ReplicationCursor::Unknown,
        "@s1 unknown destroy
         @s2 unknown destroy
         @s3 unknown keep (last_n)
         @s4 unknown keep (last_n)",
    );
}

#[test]
fn bookmarks_are_never_candidates() {
    check_plan(
        "- {type: regex, regex: nothing}",
        "#b1 1 0\n#b2 2 0\n@s 3 0",
        ReplicationCursor::Unknown,
        "@s unknown destroy",
    );
    check_plan(
        "- {type: regex, regex: x}",
        "#b1 1 0",
        ReplicationCursor::Unknown,
        "",
    );
}

#[test]
fn duplicate_snapshot_names_are_refused() {
    check_plan(
        "[]",
        "@s 1 0\n@s 2 0",
        ReplicationCursor::Unknown,
        "error: `pool/data` is not pruned: the snapshot `@s` is listed twice",
    );
}

#[test]
fn the_cursor_is_the_jobs_newest_cursor_bookmark() {
    let job = crate::job_id::JobId::parse("push").unwrap();
    let cursor = |guid: u64, job: &str| format!("zrepl_CURSOR_G_{guid:016x}_J_{job}");
    let fixture = format!(
        "@s1 10 0\n@s2 20 0\n@s3 30 0\n\
         #{} 10 0\n#{} 20 0\n#{} 30 0\n\
         #zrepl_CURSORTENTATIVE__G_{:016x}_J_push 30 0\n#{} 25 0 99\n#zrepl_replication_cursor 30 0",
        cursor(10, "push"),
        cursor(20, "push"),
        cursor(30, "other"),
        30,
        cursor(30, "push"), // names guid 30 but the bookmark's guid is 99: tinkered
    );
    let v = versions(&fixture);
    assert_eq!(
        cursor_from_bookmarks(&v, &job),
        ReplicationCursor::At(Guid(20))
    );
    let none = crate::job_id::JobId::parse("pull").unwrap();
    assert_eq!(cursor_from_bookmarks(&v, &none), ReplicationCursor::Missing);
}

#[test]
fn replicated_flags_skip_bookmarks() {
    let v = versions("@a 1 0\n#b 2 0\n@c 3 0\n@d 4 0");
    assert_eq!(
        replicated_flags(&v, Guid(3), false),
        Some(vec![true, false, false])
    );
    assert_eq!(
        replicated_flags(&v, Guid(3), true),
        Some(vec![true, true, false])
    );
    assert_eq!(replicated_flags(&v, Guid(2), true), None);
}

// ---------------------------------------------------------------------------------------------
// Rule definitions in zrepl's YAML shape.

#[test]
fn rules_deserialize_from_zrepls_shape() {
    let r = rules(
        "- type: grid\n  grid: 1x1h(keep=all) | 24x1h | 35x1d | 6x30d\n  regex: ^zrepl_\n\
         - type: last_n\n  count: 10\n\
         - type: last_n\n  count: 3\n  regex: ^manual\n\
         - type: regex\n  regex: ^keep\n  negate: true\n\
         - type: not_replicated\n\
         - type: not_replicated\n  keep_snapshot_at_cursor: false\n\
         - regex: any order\n  type: regex\n",
    );
    let kinds: Vec<RuleKind> = r.rules().iter().map(KeepRule::kind).collect();
    use RuleKind::*;
    assert_eq!(
        kinds,
        [
            Grid,
            LastN,
            LastN,
            Regex,
            NotReplicated,
            NotReplicated,
            Regex
        ]
    );
    let KeepRule::Grid(g) = &r.rules()[0] else {
        panic!()
    };
    assert_eq!(g.grid.to_string(), "1x1h(keep=all) | 24x1h | 35x1d | 6x30d");
    assert_eq!(g.regex.as_str(), "^zrepl_");
    assert_eq!(
        r.rules()[1],
        KeepRule::LastN(LastNRule {
            count: NonZeroU32::new(10).unwrap(),
            regex: None
        })
    );
    let KeepRule::Regex(re) = &r.rules()[3] else {
        panic!()
    };
    assert!(re.negate);
    assert_eq!(
        r.rules()[4],
        KeepRule::NotReplicated(NotReplicatedRule {
            keep_snapshot_at_cursor: true
        })
    );
    assert!(r.cursor_snapshot_counts_as_replicated());
    assert!(r.reads_replicated());
    assert!(!rules("- {type: regex, regex: a}").reads_replicated());
}

use std::num::NonZeroU32;

#[test]
fn rule_errors_name_the_key_and_the_line() {
    let cases: &[(&str, &str)] = &[
        (
            "- {type: grid, regex: a, grid: '1x1h(keep=0)'}",
            "invalid grid: interval group 1 of 1 (`1x1h(keep=0)`): `keep=0` would keep nothing",
        ),
        (
            "- {type: grid, regex: a, grid: '1x1h(keep=-1)'}",
            "`keep` must be a positive number or `all`, found `-1`; write `keep=all`",
        ),
        (
            "- {type: grid, regex: a, grid: '24x1h | 1x1m'}",
            "interval lengths must not decrease",
        ),
        (
            "- {type: grid, regex: a, grid: '1x1h trailing'}",
            "unexpected `trailing` after the group",
        ),
        (
            "- {type: grid, grid: '1x1h'}",
            "a `grid` rule needs `regex`",
        ),
        ("- {type: grid, regex: a}", "a `grid` rule needs `grid`"),
        (
            "- {type: grid, regex: '', grid: 1x1h}",
            "the `regex` of a `grid` rule must not be empty",
        ),
        ("- {type: last_n}", "a `last_n` rule needs `count`"),
        ("- {type: regex}", "a `regex` rule needs `regex`"),
        (
            "- {type: regex, regex: '('}",
            "invalid regex `(`: unclosed group",
        ),
        (
            "- {type: last_n, count: 1, negate: true}",
            "`negate` does not belong to a `last_n` rule, which takes `count` and optionally `regex`",
        ),
        (
            "- {count: 1, type: grid, grid: 1x1h, regex: a}",
            "`count` does not belong to a `grid` rule",
        ),
        (
            "- {type: not_replicated, keep_snapshot_at_cursor: false, regex: a}",
            "`regex` does not belong to a `not_replicated` rule",
        ),
        (
            "- {type: regex, regex: a, colour: blue}",
            "unknown field `colour`",
        ),
        ("- {type: everything}", "unknown variant `everything`"),
        ("- {regex: a}", "a keep rule needs `type`"),
        (
            "- {type: last_n, count: many}",
            "invalid type: string \"many\", expected a positive whole number for `count`",
        ),
        (
            "- {type: last_n, count: 99999999999}",
            "`count` must be a positive number, found 99999999999",
        ),
        ("- {type: regex, regex: a, negate: maybe}", "negate"),
        ("type: regex", "expected sequence start"),
    ];
    for (yaml, expected) in cases {
        let e = rules_error(yaml);
        assert!(
            e.contains(expected),
            "{yaml}\n  gave: {e}\n  expected to contain: {expected}"
        );
    }
    // The position points at the offending line of a block-style list.
    let e = serde_saphyr::from_str::<KeepRules>(
        "- type: last_n\n  count: 3\n- type: grid\n  regex: x\n  grid: 1x1h(keep=0)\n",
    )
    .unwrap_err();
    assert_eq!(e.location().map(|l| l.line()), Some(5), "{e}");
}

#[test]
fn too_many_rules_are_refused() {
    let yaml = "- {type: regex, regex: a}\n".repeat(KEEP_RULES_MAX + 1);
    assert!(rules_error(&yaml).contains("101 keep rules are given; at most 100"));
    assert_eq!(
        rules(&"- {type: regex, regex: a}\n".repeat(KEEP_RULES_MAX))
            .rules()
            .len(),
        100
    );
    let many = vec![
        KeepRule::NotReplicated(NotReplicatedRule {
            keep_snapshot_at_cursor: true
        });
        101
    ];
    assert_eq!(
        KeepRules::new(many),
        Err(RulesError::TooMany { n_rules: 101 })
    );
}

#[test]
fn regexes_are_unanchored_and_bounded() {
    check_destroyed("- {type: regex, regex: 'oo'}", "foo 0\nbar 0", &["bar"]);
    assert!(matches!(
        Pattern::new(&"a".repeat(REGEX_LEN_MAX_BYTES + 1)),
        Err(PatternError::TooLong { .. })
    ));
    // A pattern whose compiled form exceeds the size limit is refused, not built.
    assert!(matches!(
        Pattern::new("(\\w{1000}){1000}"),
        Err(PatternError::Invalid { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Properties

const NAMES: &[&str] = &[
    "zrepl_a", "zrepl_b", "zrepl_c", "manual_a", "manual_b", "other", "zrepl_d", "x",
];

fn arb_rule() -> impl Strategy<Value = KeepRule> {
    let pattern = prop::sample::select(vec!["^zrepl_", "^manual", "a", "", "^x$", "_"]);
    let grid = prop::sample::select(vec![
        "1x10s(keep=all) | 3x10s | 2x1m(keep=2)",
        "2x5s",
        "1x1m(keep=all)",
        "4x7s(keep=3) | 1x1h",
    ]);
    prop_oneof![
        (grid, pattern.clone()).prop_filter_map("grid regex must not be empty", |(g, p)| {
            (!p.is_empty()).then(|| {
                KeepRule::Grid(GridRule {
                    grid: GridSpec::parse(g).unwrap(),
                    regex: Pattern::new(p).unwrap(),
                })
            })
        }),
        (1u32..5, prop::option::of(pattern.clone())).prop_map(|(n, p)| KeepRule::LastN(
            LastNRule {
                count: NonZeroU32::new(n).unwrap(),
                regex: p.map(|p| Pattern::new(p).unwrap()),
            }
        )),
        (pattern, any::<bool>()).prop_map(|(p, negate)| KeepRule::Regex(RegexRule {
            regex: Pattern::new(p).unwrap(),
            negate
        })),
        any::<bool>().prop_map(|k| KeepRule::NotReplicated(NotReplicatedRule {
            keep_snapshot_at_cursor: k
        })),
    ]
}

fn arb_snapshots() -> impl Strategy<Value = Vec<PruneSnapshot>> {
    // Unique names (a subset of NAMES with numeric suffixes), times in a narrow range so that
    // ties and shared grid intervals are common.
    prop::collection::btree_map((0..NAMES.len(), 0u8..3), (0i64..120, any::<bool>()), 0..16)
        .prop_map(|m| {
            m.into_iter()
                .map(|((n, suffix), (creation_unix, replicated))| PruneSnapshot {
                    name: Component::parse(&format!("{}{suffix}", NAMES[n])).unwrap(),
                    creation_unix,
                    replicated,
                })
                .collect()
        })
}

proptest! {
    #[test]
    fn verdicts_do_not_depend_on_input_order(
        rule_list in prop::collection::vec(arb_rule(), 0..5),
        (snaps, shuffled) in arb_snapshots().prop_flat_map(|s| (Just(s.clone()), Just(s).prop_shuffle())),
    ) {
        let rules = KeepRules::new(rule_list).unwrap();
        let by_name = |snaps: &[PruneSnapshot]| {
            let verdicts = decide(&rules, snaps);
            snaps.iter().map(|s| s.name.clone()).zip(verdicts).collect::<std::collections::BTreeMap<_, _>>()
        };
        prop_assert_eq!(by_name(&snaps), by_name(&shuffled));
    }

    #[test]
    fn destroyed_iff_every_rule_destroys(
        rule_list in prop::collection::vec(arb_rule(), 0..5),
        snaps in arb_snapshots(),
    ) {
        let rules = KeepRules::new(rule_list).unwrap();
        let verdicts = decide(&rules, &snaps);
        let per_rule: Vec<Vec<bool>> = rules.rules().iter().map(|r| keeps(r, &snaps)).collect();
        for (i, verdict) in verdicts.iter().enumerate() {
            let keeping: Vec<usize> = (0..per_rule.len()).filter(|r| per_rule[*r][i]).collect();
            match verdict {
                Verdict::Destroy => {
                    prop_assert!(!rules.is_empty());
                    prop_assert!(keeping.is_empty(), "destroyed although kept by {:?}", keeping);
                }
                Verdict::Keep(KeepReason::NoRules) => prop_assert!(rules.is_empty()),
                Verdict::Keep(KeepReason::KeptBy(by)) => {
                    prop_assert!(!by.is_empty());
                    prop_assert_eq!(by, &keeping);
                }
            }
        }
    }

    #[test]
    fn plans_do_not_depend_on_listing_order(
        rule_list in prop::collection::vec(arb_rule(), 0..5),
        n in 1usize..12,
        cursor_at in 0usize..12,
        seed in any::<u64>(),
    ) {
        let rules = KeepRules::new(rule_list).unwrap();
        // A history with a bookmark for every other snapshot; creation times collide often.
        let mut history = Vec::new();
        for i in 0..n {
            let txg = 10 * (i as u64 + 1);
            let name = Component::parse(&format!("{}{i}", NAMES[i % NAMES.len()])).unwrap();
            let creation = (i as i64 / 2) * 7;
            history.push(Version::snapshot(name.clone(), Guid(txg), Txg(txg), creation));
            if i % 2 == 0 {
                history.push(Version::bookmark(name, Guid(txg), Txg(txg), creation));
            }
        }
        let cursor = ReplicationCursor::At(Guid(10 * (cursor_at.min(n - 1) as u64 + 1)));
        let mut rotated = history.clone();
        rotated.rotate_left((seed % history.len() as u64) as usize);
        rotated.reverse();
        let a = plan_filesystem(&dataset(), &history, &rules, cursor).unwrap();
        let b = plan_filesystem(&dataset(), &rotated, &rules, cursor).unwrap();
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.snapshots.len(), n);
        // The replicated attribute is a prefix: true up to the cursor, false after it.
        let flags: Vec<bool> = a.snapshots.iter().map(|s| s.replicated == Some(true)).collect();
        let first_false = flags.iter().position(|f| !f).unwrap_or(flags.len());
        prop_assert!(flags[first_false..].iter().all(|f| !f));
    }
}
