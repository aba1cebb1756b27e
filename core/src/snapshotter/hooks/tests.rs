//! zrepl's `hooks_test.go` ordering cases as tables, driven through the pure state machine.

use super::*;
use proptest::prelude::*;

fn all() -> Filter {
    Filter::from_entries([("<", true)]).unwrap()
}

/// Hooks from `a! b c`: one per word, `!` marks `err_is_fatal`, every hook applies to all.
fn hooks(spec: &str) -> Vec<Hook> {
    spec.split_whitespace()
        .map(|word| Hook {
            name: word.trim_end_matches('!').to_owned(),
            filesystems: all(),
            err_is_fatal: word.ends_with('!'),
            timeout: HOOK_TIMEOUT_DEFAULT,
        })
        .collect()
}

fn render(plan: &HookPlan, hooks: &[Hook]) -> String {
    let name = |i: usize| hooks[i].name.as_str();
    let mut parts: Vec<String> = plan
        .steps()
        .iter()
        .map(|(step, status)| {
            let step = match step {
                Step::Pre { hook } => format!("pre:{}", name(*hook)),
                Step::Snapshot => "snap".to_owned(),
                Step::Post { hook } => format!("post:{}", name(*hook)),
            };
            let status = match status {
                StepStatus::Pending => "pending",
                StepStatus::Ok => "ok",
                StepStatus::Err => "err",
                StepStatus::SkippedDueToFatalErr => "skip-fatal",
                StepStatus::SkippedDueToPreErr => "skip-pre",
            };
            format!("{step}={status}")
        })
        .collect();
    if plan.had_error() {
        parts.push("| error".to_owned());
    }
    if plan.snapshot_skipped() {
        parts.push("| no-snapshot".to_owned());
    }
    parts.join(" ")
}

/// Feeds `outcomes` (`ok`/`fail`) to the plan one step at a time, and checks that exactly
/// those steps ran and the final statuses render as `expected`.
fn check(hook_spec: &str, outcomes: &str, expected: &str) {
    let hooks = hooks(hook_spec);
    let fs = DatasetName::parse("pool/fs").unwrap();
    let mut plan = HookPlan::new(&hooks, &fs).unwrap();
    for outcome in outcomes.split_whitespace() {
        assert!(
            plan.next().is_some(),
            "{hook_spec}: plan finished before `{outcome}`"
        );
        let outcome = match outcome {
            "ok" => Outcome::Succeeded,
            "fail" => Outcome::Failed,
            other => panic!("bad outcome {other}"),
        };
        plan.record(outcome).unwrap();
    }
    assert!(
        plan.is_finished(),
        "{hook_spec}: steps left after {outcomes:?}"
    );
    assert_eq!(plan.next(), None);
    assert_eq!(
        render(&plan, &hooks),
        expected,
        "{hook_spec} with {outcomes:?}"
    );
    assert!(matches!(
        plan.record(Outcome::Succeeded),
        Err(HookPlanError::Finished { .. })
    ));
}

/// `hooks | outcomes fed in order | final statuses`.
const PLAN_CASES: &str = "
             | ok                | snap=ok
             | fail              | snap=err | error
a b          | ok ok ok ok ok    | pre:a=ok pre:b=ok snap=ok post:b=ok post:a=ok
a b          | fail ok ok ok     | pre:a=err pre:b=ok snap=ok post:b=ok post:a=skip-pre | error
a b! c       | ok fail ok        | pre:a=ok pre:b=err pre:c=skip-fatal snap=skip-fatal post:c=skip-fatal post:b=skip-fatal post:a=ok | error | no-snapshot
a! b         | fail              | pre:a=err pre:b=skip-fatal snap=skip-fatal post:b=skip-fatal post:a=skip-fatal | error | no-snapshot
a! b         | ok fail ok ok     | pre:a=ok pre:b=err snap=ok post:b=skip-pre post:a=ok | error
a b          | ok ok fail ok ok  | pre:a=ok pre:b=ok snap=err post:b=ok post:a=ok | error
a b          | ok ok ok fail ok  | pre:a=ok pre:b=ok snap=ok post:b=err post:a=ok | error
a! b! c!     | ok ok fail ok ok  | pre:a=ok pre:b=ok pre:c=err snap=skip-fatal post:c=skip-fatal post:b=ok post:a=ok | error | no-snapshot
";

#[test]
fn plan_table() {
    for line in PLAN_CASES.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.splitn(3, '|').map(str::trim);
        let (Some(hook_spec), Some(outcomes), Some(expected)) =
            (fields.next(), fields.next(), fields.next())
        else {
            panic!("bad fixture line {line:?}");
        };
        check(hook_spec, outcomes, expected);
    }
}

#[test]
fn next_names_config_indices() {
    let hooks = hooks("a b");
    let fs = DatasetName::parse("pool/fs").unwrap();
    let mut plan = HookPlan::new(&hooks, &fs).unwrap();
    let mut order = Vec::new();
    while let Some(step) = plan.next() {
        order.push(step);
        plan.record(Outcome::Succeeded).unwrap();
    }
    assert_eq!(
        order,
        [
            Step::Pre { hook: 0 },
            Step::Pre { hook: 1 },
            Step::Snapshot,
            Step::Post { hook: 1 },
            Step::Post { hook: 0 },
        ]
    );
}

fn hook_with_filter(name: &str, entries: &[(&str, bool)]) -> Hook {
    Hook {
        name: name.to_owned(),
        filesystems: Filter::from_entries(entries.iter().copied()).unwrap(),
        err_is_fatal: false,
        timeout: HOOK_TIMEOUT_DEFAULT,
    }
}

#[test]
fn only_hooks_whose_filter_accepts_the_fs_apply() {
    let hooks = vec![
        hook_with_filter("db", &[("pool/db<", true)]),
        hook_with_filter("all", &[("<", true), ("pool/tmp<", false)]),
        hook_with_filter("elsewhere", &[("other<", true)]),
    ];
    let db = DatasetName::parse("pool/db/data").unwrap();
    let tmp = DatasetName::parse("pool/tmp").unwrap();
    assert_eq!(hooks_for_fs(&hooks, &db), [0, 1]);
    assert_eq!(hooks_for_fs(&hooks, &tmp), Vec::<usize>::new());
    assert_eq!(
        hooks_matching_nothing(&hooks, &[db.clone(), tmp.clone()]),
        [2]
    );
    let plan = HookPlan::new(&hooks, &db).unwrap();
    assert_eq!(plan.steps().len(), 5);
    let plan = HookPlan::new(&hooks, &tmp).unwrap();
    assert_eq!(plan.steps(), [(Step::Snapshot, StepStatus::Pending)]);
}

#[test]
fn too_many_hooks_are_refused() {
    let hooks = hooks(&"h ".repeat(HOOKS_MAX + 1));
    let fs = DatasetName::parse("pool/fs").unwrap();
    assert!(matches!(
        HookPlan::new(&hooks, &fs),
        Err(HookPlanError::TooManyHooks { .. })
    ));
}

/// `type | dry_run | timeout (ms) | expected environment`.
const ENV_CASES: &str = "
pre  | false | 30000 | ZREPL_DRYRUN= ZREPL_FS=pool/my fs ZREPL_HOOKTYPE=pre_snapshot ZREPL_SNAPNAME=zrepl_1 ZREPL_TIMEOUT=30
post | true  | 1999  | ZREPL_DRYRUN=true ZREPL_FS=pool/my fs ZREPL_HOOKTYPE=post_snapshot ZREPL_SNAPNAME=zrepl_1 ZREPL_TIMEOUT=1
pre  | false | 500   | ZREPL_DRYRUN= ZREPL_FS=pool/my fs ZREPL_HOOKTYPE=pre_snapshot ZREPL_SNAPNAME=zrepl_1 ZREPL_TIMEOUT=0
";

#[test]
fn env_table() {
    let fs = DatasetName::parse("pool/my fs").unwrap();
    let snap = Component::parse("zrepl_1").unwrap();
    for line in ENV_CASES.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        let [hook_type, dry_run, timeout_ms, expected] = fields[..] else {
            panic!("bad fixture line {line:?}");
        };
        let hook_type = match hook_type {
            "pre" => HookType::PreSnapshot,
            _ => HookType::PostSnapshot,
        };
        let timeout = SignedDuration::from_millis(timeout_ms.parse().unwrap());
        let env = hook_env(hook_type, &fs, &snap, dry_run == "true", timeout);
        let got: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(got.join(" "), expected);
    }
}

proptest! {
    /// Whatever the fatal flags and outcomes: pre edges run in config order, post edges in
    /// reverse and only after a successful pre edge, and the snapshot is skipped exactly when a
    /// fatal pre edge failed.
    #[test]
    fn plan_invariants(
        fatal in prop::collection::vec(any::<bool>(), 0..6),
        outcomes in prop::collection::vec(any::<bool>(), 13),
    ) {
        let hooks: Vec<Hook> = fatal
            .iter()
            .enumerate()
            .map(|(i, &f)| Hook {
                name: format!("h{i}"),
                filesystems: all(),
                err_is_fatal: f,
                timeout: HOOK_TIMEOUT_DEFAULT,
            })
            .collect();
        let fs = DatasetName::parse("pool/fs").unwrap();
        let mut plan = HookPlan::new(&hooks, &fs).unwrap();
        let mut ran = Vec::new();
        let mut fatal_failed = false;
        for &ok in &outcomes {
            let Some(step) = plan.next() else { break };
            if let Step::Pre { hook } = step {
                fatal_failed |= !ok && fatal[hook];
            }
            ran.push((step, ok));
            plan.record(if ok { Outcome::Succeeded } else { Outcome::Failed }).unwrap();
        }
        prop_assert!(plan.is_finished());
        let pres: Vec<usize> = ran.iter().filter_map(|(s, _)| match s {
            Step::Pre { hook } => Some(*hook),
            _ => None,
        }).collect();
        prop_assert!(pres.windows(2).all(|w| w[0] < w[1]));
        let posts: Vec<usize> = ran.iter().filter_map(|(s, _)| match s {
            Step::Post { hook } => Some(*hook),
            _ => None,
        }).collect();
        prop_assert!(posts.windows(2).all(|w| w[0] > w[1]));
        for post in &posts {
            let pre_ok = (Step::Pre { hook: *post }, true);
            prop_assert!(ran.contains(&pre_ok), "post edge {} ran after a failed pre edge", post);
        }
        let snapshot_ran = ran.iter().any(|(s, _)| *s == Step::Snapshot);
        prop_assert_eq!(snapshot_ran, !fatal_failed);
        prop_assert_eq!(plan.snapshot_skipped(), fatal_failed);
    }
}
