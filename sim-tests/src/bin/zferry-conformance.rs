//! `zferry-conformance`: the backend conformance suite against real OpenZFS, through the `zfs`
//! CLI backend (`zferry-zfs-cli`), run inside the test VM by `scripts/real-zfs-test.sh`.
//!
//! It creates and destroys datasets and pools, so it refuses to run unless
//! `ZFERRY_REAL_ZFS=1` says that this machine is a throw-away one. Usage:
//!
//! ```text
//! ZFERRY_REAL_ZFS=1 zferry-conformance [--pool POOL] [--filter SUBSTRING] [--suite SUITE]
//! ```
//!
//! SUITE is `backend` (the backend conformance suite), `replication` (the replication platform
//! suite, `zferry_sim_tests::replication_suite`) or `all` (the default: both, one after the
//! other, each with its own `N passed, N failed` line). POOL (default `zferry`, or
//! `$ZFERRY_CONFORMANCE_POOL`) must exist; every case works under `POOL/case <name>`. Exit
//! status: 0 all passed, 1 some failed, 2 refused or bad arguments.

use std::process::ExitCode;

/// The environment variable that allows running against the machine's ZFS.
const ENABLE_VAR: &str = "ZFERRY_REAL_ZFS";

/// The environment variable naming the pool to work in.
const POOL_VAR: &str = "ZFERRY_CONFORMANCE_POOL";

/// The pool used when none is named.
const POOL_DEFAULT: &str = "zferry";

/// Which suites to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suites {
    Backend,
    Replication,
    All,
}

impl Suites {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "backend" => Ok(Self::Backend),
            "replication" => Ok(Self::Replication),
            "all" => Ok(Self::All),
            other => Err(format!(
                "unknown suite `{other}`; choose backend, replication or all"
            )),
        }
    }

    fn backend(self) -> bool {
        self != Self::Replication
    }

    fn replication(self) -> bool {
        self != Self::Backend
    }
}

/// The command line.
#[derive(Debug)]
struct Args {
    pool: String,
    filter: Option<String>,
    suites: Suites,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        pool: std::env::var(POOL_VAR).unwrap_or_else(|_| POOL_DEFAULT.to_owned()),
        filter: None,
        suites: Suites::All,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--pool" => parsed.pool = args.next().ok_or("--pool needs a pool name")?,
            "--filter" => parsed.filter = Some(args.next().ok_or("--filter needs a substring")?),
            "--suite" => {
                parsed.suites = Suites::parse(&args.next().ok_or("--suite needs a suite name")?)?;
            }
            // Accepted for the libtest-style call in scripts/realzfs.sh's header; cases always
            // run one at a time.
            "--test-threads=1" => {}
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "zferry-conformance: {e}\nusage: {ENABLE_VAR}=1 zferry-conformance [--pool POOL] \
                 [--filter SUBSTRING] [--suite backend|replication|all]"
            );
            return ExitCode::from(2);
        }
    };
    if std::env::var(ENABLE_VAR).as_deref() != Ok("1") {
        eprintln!(
            "zferry-conformance: refusing to run: it creates and destroys ZFS datasets and pools \
             on this machine. Run it in the throw-away VM (scripts/real-zfs-test.sh does), with \
             {ENABLE_VAR}=1."
        );
        return ExitCode::from(2);
    }
    real::main(args)
}

mod real {
    //! [`RealHarness`]: setup with `zfs`, `zpool` and `dd` on the local machine.

    use std::process::ExitCode;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio::process::Command;
    use zferry_core::backend::ZfsBackend;
    use zferry_core::name::DatasetName;
    use zferry_sim_tests::conformance::{self, CaseFailure, DatasetSpec, Harness};
    use zferry_sim_tests::replication_suite;
    use zferry_zfs_cli::{ZfsCli, ZfsCliConfig};

    /// The raw key of every encrypted dataset the harness makes.
    const KEY_FILE: &str = "/var/tmp/zferry-conformance.key";

    /// Where small pools keep their file vdevs.
    const VDEV_DIR: &str = "/var/tmp";

    /// How long to wait for a new volume's device node, in polls of [`DEVICE_POLL`].
    const DEVICE_POLLS_MAX: u32 = 100;

    /// The pause between polls for a device node.
    const DEVICE_POLL: Duration = Duration::from_millis(100);

    /// The block size `dd` writes with.
    const WRITE_BLOCK_BYTES: u64 = 4096;

    pub(crate) fn main(args: super::Args) -> ExitCode {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("zferry-conformance: cannot start the async runtime: {e}");
                return ExitCode::from(2);
            }
        };
        runtime.block_on(async move {
            let harness = match RealHarness::new(&args.pool).await {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("zferry-conformance: setup failed: {e}");
                    return ExitCode::from(2);
                }
            };
            let harness: Arc<dyn Harness> = Arc::new(harness);
            let filter = args.filter.as_deref();
            let mut reports = Vec::new();
            if args.suites.backend() {
                reports.push(conformance::run(Arc::clone(&harness), filter).await);
            }
            if args.suites.replication() {
                reports.push(replication_suite::run(Arc::clone(&harness), filter).await);
            }
            let n_ran: usize = reports.iter().map(|r| r.outcomes.len()).sum();
            let n_failed: usize = reports.iter().map(|r| r.n_failed()).sum();
            if n_failed == 0 && n_ran > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        })
    }

    /// [`Harness`] over the `zfs` CLI backend on this machine.
    #[derive(Debug)]
    struct RealHarness {
        cli: Arc<ZfsCli>,
        pool: String,
        version: String,
        n_writes: AtomicU64,
    }

    impl RealHarness {
        async fn new(pool: &str) -> Result<Self, CaseFailure> {
            run_cmd("zpool", &["list", "-H", "-o", "name", pool])
                .await
                .map_err(|e| {
                    CaseFailure::new(format!(
                        "pool `{pool}` is not there ({e}); create it first, e.g. `truncate -s \
                         4G /var/tmp/{pool}.img && zpool create {pool} /var/tmp/{pool}.img`"
                    ))
                })?;
            let version = run_cmd("zfs", &["version"]).await?;
            let first = version.lines().next().unwrap_or("unknown").to_owned();
            run_cmd(
                "dd",
                &[
                    "if=/dev/urandom",
                    &format!("of={KEY_FILE}"),
                    "bs=32",
                    "count=1",
                    "status=none",
                ],
            )
            .await?;
            Ok(Self {
                cli: Arc::new(ZfsCli::new(ZfsCliConfig::default())),
                pool: pool.to_owned(),
                version: first,
                n_writes: AtomicU64::new(0),
            })
        }
    }

    #[async_trait]
    impl Harness for RealHarness {
        fn backend(&self) -> &dyn ZfsBackend {
            self.cli.as_ref()
        }

        fn shared_backend(&self) -> Arc<dyn ZfsBackend> {
            Arc::clone(&self.cli) as Arc<dyn ZfsBackend>
        }

        fn label(&self) -> String {
            format!("real ZFS ({}), pool {}", self.version, self.pool)
        }

        async fn fresh_root(&self, case: &str) -> Result<DatasetName, CaseFailure> {
            let root = DatasetName::parse(&format!("{}/case {case}", self.pool))
                .map_err(|e| CaseFailure::new(format!("root name: {e}")))?;
            // A leftover of an earlier run (its absence is the normal case), with the holds of
            // a replication case released first.
            conformance::util::destroy_tree(self.cli.as_ref(), &root)
                .await
                .map_err(|e| {
                    CaseFailure::new(format!("setup: remove the leftover `{root}`: {e}"))
                })?;
            run_cmd("zfs", &["create", root.as_str()]).await?;
            Ok(root)
        }

        async fn create_dataset(
            &self,
            name: &DatasetName,
            spec: DatasetSpec,
        ) -> Result<(), CaseFailure> {
            let mut args: Vec<String> = vec!["create".into()];
            if let Some(bytes) = spec.volume_size {
                args.extend(["-V".into(), bytes.to_string()]);
            }
            if spec.encrypted {
                for o in [
                    "encryption=aes-256-gcm".to_owned(),
                    "keyformat=raw".to_owned(),
                    format!("keylocation=file://{KEY_FILE}"),
                ] {
                    args.extend(["-o".into(), o]);
                }
            }
            args.push(name.as_str().into());
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            run_cmd("zfs", &argv).await?;
            if spec.volume_size.is_some() {
                device_of(name).await?;
            }
            Ok(())
        }

        async fn write(&self, dataset: &DatasetName, n_bytes: u64) -> Result<(), CaseFailure> {
            let kind = run_cmd(
                "zfs",
                &["get", "-H", "-o", "value", "type", dataset.as_str()],
            )
            .await?;
            let n = self.n_writes.fetch_add(1, Ordering::Relaxed);
            let target = if kind.trim() == "volume" {
                device_of(dataset).await?
            } else {
                let mnt = run_cmd(
                    "zfs",
                    &["get", "-H", "-o", "value", "mountpoint", dataset.as_str()],
                )
                .await?;
                format!("{}/zferry-data-{n}", mnt.trim_end_matches('\n'))
            };
            let count = n_bytes.div_ceil(WRITE_BLOCK_BYTES);
            run_cmd(
                "dd",
                &[
                    "if=/dev/urandom",
                    &format!("of={target}"),
                    &format!("bs={WRITE_BLOCK_BYTES}"),
                    &format!("count={count}"),
                    "conv=fsync",
                    "status=none",
                ],
            )
            .await?;
            Ok(())
        }

        async fn create_small_pool(&self, name: &str, bytes: u64) -> Result<String, CaseFailure> {
            let vdev = format!("{VDEV_DIR}/{name}.img");
            let _ = run_cmd("zpool", &["destroy", "-f", name]).await;
            let _ = run_cmd("rm", &["-f", &vdev]).await;
            run_cmd("truncate", &["-s", &bytes.to_string(), &vdev]).await?;
            run_cmd("zpool", &["create", "-f", name, &vdev]).await?;
            Ok(name.to_owned())
        }

        async fn destroy_pool(&self, pool: &str) -> Result<(), CaseFailure> {
            run_cmd("zpool", &["destroy", "-f", pool]).await?;
            run_cmd("rm", &["-f", &format!("{VDEV_DIR}/{pool}.img")]).await?;
            Ok(())
        }

        async fn unload_key(&self, dataset: &DatasetName) -> Result<(), CaseFailure> {
            run_cmd("zfs", &["unmount", dataset.as_str()]).await?;
            run_cmd("zfs", &["unload-key", dataset.as_str()]).await?;
            Ok(())
        }
    }

    /// The device node of a volume, once udev has made it. OpenZFS's udev rule writes a space
    /// in a volume's name as `+` (`/dev/zvol/pool/vol+one`).
    async fn device_of(volume: &DatasetName) -> Result<String, CaseFailure> {
        let path = format!("/dev/zvol/{}", volume.as_str().replace(' ', "+"));
        for _ in 0..DEVICE_POLLS_MAX {
            if std::path::Path::new(&path).exists() {
                return Ok(path);
            }
            let _ = run_cmd("udevadm", &["settle"]).await;
            tokio::time::sleep(DEVICE_POLL).await;
        }
        Err(CaseFailure::new(format!(
            "setup: the device `{path}` of the volume did not appear"
        )))
    }

    /// Runs a setup command; its stdout, or a failure with its stderr.
    async fn run_cmd(program: &str, args: &[&str]) -> Result<String, CaseFailure> {
        let out = Command::new(program)
            .args(args)
            .env("LC_ALL", "C")
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| CaseFailure::new(format!("setup: cannot run `{program}`: {e}")))?;
        if !out.status.success() {
            return Err(CaseFailure::new(format!(
                "setup: `{program} {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(list.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn arguments() {
        let a = args(&["--pool", "tank", "--filter", "recv"]).unwrap();
        assert_eq!(
            (a.pool.as_str(), a.filter.as_deref()),
            ("tank", Some("recv"))
        );
        assert!(args(&["--pool"]).is_err());
        assert!(args(&["--bogus"]).unwrap_err().contains("--bogus"));
        assert!(args(&["--test-threads=1"]).unwrap().filter.is_none());
        assert_eq!(args(&[]).unwrap().suites, Suites::All);
        assert_eq!(
            args(&["--suite", "replication"]).unwrap().suites,
            Suites::Replication
        );
        assert!(args(&["--suite", "nope"]).unwrap_err().contains("nope"));
    }
}
