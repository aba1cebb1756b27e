//! The `snapshotting:` section as zrepl writes it, and the errors a user reads. The driver runs
//! over the simulated ZFS in `sim-tests/tests/snapper.rs`.

use super::*;

fn build(yaml: &str) -> Result<Snapshotting, String> {
    let config: SnapshottingConfig = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
    config.build().map_err(|e| e.to_string())
}

fn auto(yaml: &str) -> AutoSnapshotting {
    match build(yaml) {
        Ok(Snapshotting::Automatic(a)) => a,
        other => panic!("{yaml}: {other:?}"),
    }
}

#[test]
fn periodic_with_defaults_and_hooks() {
    let a = auto(
        "type: periodic
prefix: zrepl_
interval: 10m
hooks:
  - type: command
    path: /etc/zrepl/hooks/notify.sh
  - type: command
    path: /usr/local/bin/lock
    timeout: 5s
    err_is_fatal: true
    filesystems: {\"tank/db<\": true}
",
    );
    assert_eq!(
        a.schedule,
        Schedule::Periodic {
            interval: Interval::parse("10m").unwrap()
        }
    );
    let ts = Timestamp::from_second(2_147_483_647).unwrap();
    assert_eq!(
        a.namer.name(ts).unwrap().as_str(),
        "zrepl_20380119_031407_000"
    );
    assert_eq!(a.hooks.len(), 2);
    assert_eq!(a.hooks[0].hook.timeout, HOOK_TIMEOUT_DEFAULT);
    assert!(!a.hooks[0].hook.err_is_fatal);
    let any = DatasetName::parse("zroot/x").unwrap();
    assert!(a.hooks[0].hook.filesystems.accepts(&any));
    assert!(!a.hooks[1].hook.filesystems.accepts(&any));
    assert!(a.hooks[1].hook.err_is_fatal);
    assert_eq!(a.hooks[1].hook.timeout, jiff::SignedDuration::from_secs(5));
    assert_eq!(a.hooks[1].path, PathBuf::from("/usr/local/bin/lock"));
}

#[test]
fn cron_zone_defaults_to_the_timestamp_location() {
    let a = auto(
        "type: cron
prefix: zrepl_
cron: \"0 3 * * *\"
timestamp_format: iso-8601
timestamp_location: Europe/Berlin
",
    );
    let Schedule::Cron { schedule, zone } = &a.schedule else {
        panic!("{a:?}");
    };
    assert_eq!(schedule.as_str(), "0 3 * * *");
    assert_eq!(zone.iana_name(), Some("Europe/Berlin"));
    let b = auto(
        "type: cron
prefix: zrepl_
cron: \"0 3 * * *\"
cron_location: Asia/Kolkata
",
    );
    let Schedule::Cron { zone, .. } = &b.schedule else {
        panic!("{b:?}");
    };
    assert_eq!(zone.iana_name(), Some("Asia/Kolkata"));
    // zrepl accepts an empty prefix for cron (quirk 4), and so does zferry.
    assert!(build("type: cron\ncron: \"0 3 * * *\"\n").is_ok());
}

#[test]
fn manual_has_no_keys() {
    assert_eq!(build("type: manual\n"), Ok(Snapshotting::Manual));
    let e = build("type: manual\nprefix: zrepl_\n").unwrap_err();
    assert!(e.contains("prefix"), "{e}");
}

/// `yaml | a fragment of the error`.
const ERRORS: &str = "
type: periodic\\ninterval: 10m\\nprefix: ''                         | `prefix` must not be empty
type: periodic\\ninterval: 0s\\nprefix: z_                          | interval must be a positive duration
type: periodic\\ninterval: 10m\\nprefix: z_\\nbogus: 1              | bogus
type: periodic\\ninterval: 10m\\nprefix: 'a@'                       | invalid snapshot name
type: periodic\\ninterval: 10m\\nprefix: z_\\ntimestamp_location: Europe/Berlin | requires `timestamp_location: UTC`
type: periodic\\ninterval: 10m\\nprefix: z_\\ntimestamp_location: Local | `Local` is not supported
type: cron\\ncron: '@daily'                                          | descriptors
type: cron\\ncron: '0 3 * * *'\\ncron_location: Mars/Base            | cron_location
type: hourly                                                          | hourly
type: periodic\\ninterval: 1h\\nprefix: z_\\nhooks: [{type: postgres-checkpoint, dsn: x}] | hooks[0]: hook type `postgres-checkpoint` is not supported
type: periodic\\ninterval: 1h\\nprefix: z_\\nhooks: [{type: shell, path: /x}]         | unknown hook type `shell`
type: periodic\\ninterval: 1h\\nprefix: z_\\nhooks: [{type: command}]                 | needs `path`
type: periodic\\ninterval: 1h\\nprefix: z_\\nhooks: [{type: command, path: x.sh}]     | must be absolute
type: periodic\\ninterval: 1h\\nprefix: z_\\nhooks: [{type: command, path: /x, timeout: 0s}] | timeout must be a positive duration
type: periodic\\ninterval: 1h\\nprefix: z_\\nhooks: [{type: command, path: /x, dsn: 'host=db'}] | `dsn` is only for database hooks
";

#[test]
fn config_errors_say_what_to_fix() {
    for line in ERRORS.lines().filter(|l| !l.trim().is_empty()) {
        let (yaml, want) = line.rsplit_once('|').unwrap();
        let yaml = yaml.trim().replace("\\n", "\n");
        let err = build(&yaml).expect_err(&yaml);
        assert!(
            err.contains(want.trim()),
            "{yaml:?}: got {err:?}, want {:?}",
            want.trim()
        );
    }
}

#[test]
fn hook_results_and_exits_read_well() {
    assert!(HookResult::new(HookExit::Exited { code: 0 }).succeeded());
    for exit in [
        HookExit::Exited { code: 1 },
        HookExit::Signaled,
        HookExit::TimedOut,
        HookExit::SpawnFailed { reason: "x".into() },
    ] {
        assert!(!HookResult::new(exit).succeeded());
    }
    assert_eq!(
        HookExit::Exited { code: 3 }.to_string(),
        "exited with code 3"
    );
    assert_eq!(HookExit::TimedOut.to_string(), "timed out and was killed");
}

#[test]
fn the_report_keeps_the_end_of_long_hook_output() {
    let mut result = HookResult::new(HookExit::Exited { code: 1 });
    result.stdout = format!(
        "{}é{}",
        "x".repeat(HOOK_REPORT_OUTPUT_BYTES_MAX),
        "the reason"
    );
    result.stderr = "short".into();
    let short = shorten_for_report(result);
    assert!(short.stdout.len() <= HOOK_REPORT_OUTPUT_BYTES_MAX);
    assert!(short.stdout.ends_with("the reason"));
    assert_eq!(short.stderr, "short");
    assert!(short.output_truncated);
    let kept = shorten_for_report(HookResult::new(HookExit::Signaled));
    assert!(!kept.output_truncated);
}
