//! The real [`HookRunner`]: runs a snapshot hook's program with tokio's process support.
//!
//! The program runs with no arguments, stdin from `/dev/null`, the daemon's environment plus
//! the hook's variables, and in a process group of its own, so that a timeout kills whatever
//! it started too (a shell script's `sleep`, say) and no child outlives it holding the output
//! pipes. Each of stdout and stderr is read as it comes (a hook never blocks on a full pipe)
//! and its first [`HOOK_OUTPUT_BYTES_MAX`] bytes are kept; the rest is read and discarded.
//! After the program exits, output still buffered is collected for at most
//! [`OUTPUT_DRAIN_GRACE`], in case a background process it left behind holds the pipes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use zferry_core::engine::snapper::{HOOK_OUTPUT_BYTES_MAX, HookExit, HookResult, HookRunner};

/// How long output is still collected after the program exited or was killed.
pub const OUTPUT_DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The read buffer for a hook's output, in bytes.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// Runs hooks as processes, directly or through a prefix.
#[derive(Debug, Clone, Default)]
pub struct CommandHookRunner {
    prefix: Vec<OsString>,
}

impl CommandHookRunner {
    /// Runs each hook's program directly, as zrepl does.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs each hook as `prefix... path`, e.g. `["sh"]` to run a script that is not
    /// executable, or `["sudo", "-u", "postgres"]`.
    pub fn through(prefix: Vec<OsString>) -> Self {
        Self { prefix }
    }
}

#[async_trait]
impl HookRunner for CommandHookRunner {
    async fn run(
        &self,
        command: &Path,
        env: BTreeMap<String, String>,
        timeout: Duration,
    ) -> HookResult {
        let mut cmd = match self.prefix.split_first() {
            None => Command::new(command),
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(command);
                cmd
            }
        };
        cmd.envs(&env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                return HookResult::new(HookExit::SpawnFailed {
                    reason: e.to_string(),
                });
            }
        };
        let stdout = Capture::spawn(child.stdout.take());
        let stderr = Capture::spawn(child.stderr.take());
        let exit = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => exit_of(status),
            Ok(Err(e)) => HookExit::SpawnFailed {
                reason: format!("waiting for it failed: {e}"),
            },
            Err(_) => {
                kill(&mut child).await;
                HookExit::TimedOut
            }
        };
        let (stdout, out_truncated) = stdout.finish().await;
        let (stderr, err_truncated) = stderr.finish().await;
        HookResult {
            exit,
            stdout,
            stderr,
            output_truncated: out_truncated || err_truncated,
        }
    }
}

fn exit_of(status: ExitStatus) -> HookExit {
    match status.code() {
        Some(code) => HookExit::Exited { code },
        None => HookExit::Signaled,
    }
}

/// Kills the hook's process group (everything it started), then the hook itself, and reaps it.
async fn kill(child: &mut Child) {
    #[cfg(target_os = "linux")]
    if let Some(pid) = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw)
    {
        // The group was created with the hook (`process_group(0)`): its id is the hook's pid.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill().await;
}

/// One output stream being read into a bounded buffer by a task of its own.
struct Capture {
    buffer: Arc<Mutex<(Vec<u8>, bool)>>,
    task: Option<JoinHandle<()>>,
}

impl Capture {
    fn spawn(stream: Option<impl AsyncRead + Unpin + Send + 'static>) -> Self {
        let buffer = Arc::new(Mutex::new((Vec::new(), false)));
        let task = stream.map(|mut stream| {
            let buffer = buffer.clone();
            tokio::spawn(async move {
                let mut chunk = vec![0u8; READ_CHUNK_BYTES];
                // Each turn reads at least one byte; it ends at EOF or a read error.
                while let Ok(n @ 1..) = stream.read(&mut chunk).await {
                    let mut guard = buffer.lock().unwrap_or_else(PoisonError::into_inner);
                    let (kept, truncated) = &mut *guard;
                    let room = HOOK_OUTPUT_BYTES_MAX.saturating_sub(kept.len());
                    kept.extend_from_slice(&chunk[..n.min(room)]);
                    *truncated |= n > room;
                }
            })
        });
        Self { buffer, task }
    }

    /// What was read, lossily decoded, and whether some was discarded; waits at most
    /// [`OUTPUT_DRAIN_GRACE`] for the rest.
    async fn finish(mut self) -> (String, bool) {
        if let Some(task) = self.task.as_mut() {
            let _ = tokio::time::timeout(OUTPUT_DRAIN_GRACE, &mut *task).await;
            task.abort();
        }
        let guard = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        (String::from_utf8_lossy(&guard.0).into_owned(), guard.1)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// Writes `script` to a fresh file; the runner runs it through `sh`, never by exec (a file
    /// just written may still be open for writing elsewhere: ETXTBSY).
    fn script(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        path
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("zferry-hooks-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn env() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("ZREPL_HOOKTYPE".to_owned(), "pre_snapshot".to_owned()),
            ("ZREPL_FS".to_owned(), "tank/my data".to_owned()),
            ("ZREPL_SNAPNAME".to_owned(), "zrepl_1".to_owned()),
        ])
    }

    async fn run(name: &str, text: &str, timeout: Duration) -> HookResult {
        let dir = temp_dir(name);
        let path = script(&dir, "hook.sh", text);
        let result = CommandHookRunner::through(vec!["sh".into()])
            .run(&path, env(), timeout)
            .await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    #[tokio::test]
    async fn success_sees_the_environment_and_keeps_both_streams() {
        let r = run(
            "env",
            "echo \"$ZREPL_HOOKTYPE $ZREPL_FS@$ZREPL_SNAPNAME\"; echo oops >&2",
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(r.exit, HookExit::Exited { code: 0 });
        assert!(r.succeeded());
        assert_eq!(r.stdout, "pre_snapshot tank/my data@zrepl_1\n");
        assert_eq!(r.stderr, "oops\n");
        assert!(!r.output_truncated);
    }

    #[tokio::test]
    async fn a_failing_exit_code_is_reported() {
        let r = run("fail", "echo no >&2; exit 3", Duration::from_secs(30)).await;
        assert_eq!(r.exit, HookExit::Exited { code: 3 });
        assert!(!r.succeeded());
        assert_eq!(r.stderr, "no\n");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_hook_and_what_it_started() {
        let dir = temp_dir("timeout");
        let pid_file = dir.join("pid");
        let text = format!(
            "echo started; sleep 30 & echo $! > '{}'; wait; echo never",
            pid_file.display()
        );
        let path = script(&dir, "hook.sh", &text);
        let start = tokio::time::Instant::now();
        let r = CommandHookRunner::through(vec!["sh".into()])
            .run(&path, env(), Duration::from_millis(300))
            .await;
        assert_eq!(r.exit, HookExit::TimedOut);
        assert_eq!(r.stdout, "started\n");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        // The `sleep` the script started was killed with the hook's process group.
        #[cfg(target_os = "linux")]
        {
            let pid = std::fs::read_to_string(&pid_file).unwrap();
            let stat = format!("/proc/{}/stat", pid.trim());
            let running = || {
                std::fs::read_to_string(&stat).is_ok_and(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|state| !state.trim_start().starts_with('Z'))
                })
            };
            let mut alive = running();
            for _ in 0..50 {
                if !alive {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                alive = running();
            }
            assert!(
                !alive,
                "the hook's child {} survived the timeout",
                pid.trim()
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn output_beyond_the_cap_is_read_and_discarded() {
        let r = run(
            "cap",
            "head -c 3000000 /dev/zero | tr '\\0' x",
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(r.exit, HookExit::Exited { code: 0 });
        assert_eq!(r.stdout.len(), HOOK_OUTPUT_BYTES_MAX);
        assert!(r.output_truncated);
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_failure() {
        let r = CommandHookRunner::new()
            .run(
                Path::new("/nonexistent/zferry-hook"),
                env(),
                Duration::from_secs(1),
            )
            .await;
        assert!(matches!(r.exit, HookExit::SpawnFailed { .. }), "{r:?}");
        assert!(!r.succeeded());
    }
}
