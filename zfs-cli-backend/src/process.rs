//! Launching `zfs`/`zpool`: the command line (with an optional prefix such as `ssh host`),
//! concurrent bounded reads of stdout and stderr, and the count of launches per operation.

use std::collections::BTreeMap;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use zferry_core::backend::{Operation, STDERR_TAIL_BYTES_MAX, ZfsError, ZfsErrorKind};

/// The most stdout a command may print, in bytes (a listing of a million snapshots is about
/// 100 MiB); more is an error rather than unbounded memory.
pub const STDOUT_BYTES_MAX: usize = 512 * 1024 * 1024;

/// The read buffer for stdout and stderr, in bytes.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// How a command is run: directly, or through a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandPrefix {
    /// Through a remote shell such as `ssh -p 22 root@host`: the remote side joins the words
    /// with spaces and hands them to a shell, so every word after the prefix is shell-quoted.
    RemoteShell(Vec<String>),
    /// Through a program that executes its arguments as given, such as `sudo` or `doas`.
    Exec(Vec<String>),
}

/// Which program to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// `zfs`.
    Zfs,
    /// `zpool`.
    Zpool,
}

/// What a finished command left.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The exit status.
    pub status: ExitStatus,
    /// All of stdout (lossily decoded; ZFS names are ASCII).
    pub stdout: String,
    /// The last [`STDERR_TAIL_BYTES_MAX`] bytes of stderr.
    pub stderr: String,
}

/// The launcher: program names, prefix and the count of launches.
#[derive(Debug)]
pub struct Launcher {
    zfs: String,
    zpool: String,
    prefix: Option<CommandPrefix>,
    launches: Mutex<BTreeMap<Operation, u64>>,
}

impl Launcher {
    /// A launcher of `zfs` and `zpool` (names or paths) through `prefix`.
    pub fn new(zfs: String, zpool: String, prefix: Option<CommandPrefix>) -> Self {
        Self {
            zfs,
            zpool,
            prefix,
            launches: Mutex::new(BTreeMap::new()),
        }
    }

    /// The full command line (program first) that runs `program args`.
    pub fn command_line(&self, program: Program, args: &[String]) -> Vec<String> {
        let program = match program {
            Program::Zfs => &self.zfs,
            Program::Zpool => &self.zpool,
        };
        // Error messages are scraped in English: force the C locale. Through a prefix the
        // environment does not travel, so `env` sets it on the far side (`env` works under
        // every login shell, `VAR=x cmd` does not under csh).
        let inner = std::iter::once(program.as_str()).chain(args.iter().map(String::as_str));
        match &self.prefix {
            None => inner.map(str::to_owned).collect(),
            Some(CommandPrefix::Exec(prefix)) => prefix
                .iter()
                .map(String::as_str)
                .chain(["env", "LC_ALL=C"])
                .chain(inner)
                .map(str::to_owned)
                .collect(),
            Some(CommandPrefix::RemoteShell(prefix)) => prefix
                .iter()
                .cloned()
                .chain(
                    ["env", "LC_ALL=C"]
                        .into_iter()
                        .chain(inner)
                        .map(shell_quote),
                )
                .collect(),
        }
    }

    /// Spawns `program args` with piped stdout and stderr and the given stdin, counting the
    /// launch under `operation`. The child is killed when dropped.
    pub fn spawn(
        &self,
        operation: Operation,
        object: &str,
        program: Program,
        args: &[String],
        stdin: Stdio,
    ) -> Result<Child, ZfsError> {
        let line = self.command_line(program, args);
        let (first, rest) = line.split_first().ok_or_else(|| {
            ZfsError::new(
                operation,
                object,
                ZfsErrorKind::Other {
                    detail: "empty command line".into(),
                },
            )
        })?;
        let mut command = Command::new(first);
        command
            .args(rest)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if self.prefix.is_none() {
            command.env("LC_ALL", "C");
        }
        let child = command
            .spawn()
            .map_err(|e| spawn_error(operation, object, first, &e))?;
        let mut launches = self
            .launches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *launches.entry(operation).or_default() += 1;
        Ok(child)
    }

    /// Runs `program args` to the end with stdin from `/dev/null`.
    pub async fn run(
        &self,
        operation: Operation,
        object: &str,
        program: Program,
        args: &[String],
    ) -> Result<Finished, ZfsError> {
        let mut child = self.spawn(operation, object, program, args, Stdio::null())?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let (stdout, stderr) = tokio::join!(read_bounded(stdout), read_tail(stderr));
        let status = child.wait().await.map_err(|e| {
            ZfsError::new(
                operation,
                object,
                ZfsErrorKind::Other {
                    detail: format!("waiting for `{}` failed: {e}", args.join(" ")),
                },
            )
        })?;
        let stdout = stdout.map_err(|detail| {
            ZfsError::new(operation, object, ZfsErrorKind::Other { detail }).with_stderr(&stderr)
        })?;
        Ok(Finished {
            status,
            stdout,
            stderr,
        })
    }

    /// How many processes were launched, per operation.
    pub fn launches(&self) -> BTreeMap<Operation, u64> {
        self.launches
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Whether a spawn error is the kernel refusing an over-long argument list (E2BIG).
pub fn is_too_long(err: &ZfsError) -> bool {
    matches!(&err.kind, ZfsErrorKind::Other { detail } if detail.starts_with(TOO_LONG))
}

const TOO_LONG: &str = "argument list too long";

fn spawn_error(operation: Operation, object: &str, program: &str, e: &std::io::Error) -> ZfsError {
    let detail = if e.kind() == std::io::ErrorKind::ArgumentListTooLong {
        format!("{TOO_LONG}: {e}")
    } else {
        format!("cannot start `{program}`: {e}")
    };
    ZfsError::new(operation, object, ZfsErrorKind::Other { detail })
}

/// Quotes a word for a POSIX or csh shell: plain words stay as they are, everything else goes
/// into single quotes (a `'` becomes `'\''`).
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Reads all of `pipe`, at most [`STDOUT_BYTES_MAX`] bytes; more is an error.
pub async fn read_bounded(pipe: Option<impl AsyncRead + Unpin>) -> Result<String, String> {
    let Some(mut pipe) = pipe else {
        return Ok(String::new());
    };
    let mut out = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let n = pipe
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading stdout failed: {e}"))?;
        if n == 0 {
            break;
        }
        if out.len() + n > STDOUT_BYTES_MAX {
            return Err(format!(
                "stdout is longer than {STDOUT_BYTES_MAX} bytes; refusing to buffer more"
            ));
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Reads all of `pipe`, keeping the last [`STDERR_TAIL_BYTES_MAX`] bytes. A read error ends
/// the read and is noted in the tail.
pub async fn read_tail(pipe: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut tail: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => {
                tail.extend_from_slice(&chunk[..n]);
                // Trim only once the buffer is twice the bound, so trimming stays O(n).
                if tail.len() > 2 * STDERR_TAIL_BYTES_MAX {
                    tail.drain(..tail.len() - STDERR_TAIL_BYTES_MAX);
                }
            }
            Err(e) => {
                tail.extend_from_slice(format!("\n(reading stderr failed: {e})").as_bytes());
                break;
            }
        }
    }
    if tail.len() > STDERR_TAIL_BYTES_MAX {
        tail.drain(..tail.len() - STDERR_TAIL_BYTES_MAX);
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// Enlarges a pipe to [`PIPE_BYTES`] where the OS allows it (Linux `F_SETPIPE_SZ`), so that
/// `zfs send`/`recv` move data in large chunks; best effort, failures are ignored.
#[cfg(target_os = "linux")]
pub fn enlarge_pipe(fd: impl std::os::fd::AsFd) {
    // EPERM above /proc/sys/fs/pipe-max-size (1 MiB by default) for unprivileged users: keep
    // the default size then.
    let _ = rustix::pipe::fcntl_setpipe_size(fd, PIPE_BYTES);
}

/// Enlarges a pipe where the OS allows it; nothing to do on this OS.
#[cfg(not(target_os = "linux"))]
pub fn enlarge_pipe<T>(_fd: T) {}

/// The pipe size asked for, in bytes (Linux's default `pipe-max-size`).
pub const PIPE_BYTES: usize = 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_shell_words_are_quoted() {
        let l = Launcher::new(
            "zfs".into(),
            "zpool".into(),
            Some(CommandPrefix::RemoteShell(vec![
                "ssh".into(),
                "-p".into(),
                "10022".into(),
                "root@127.0.0.1".into(),
            ])),
        );
        let line = l.command_line(
            Program::Zfs,
            &[
                "destroy".into(),
                "pool/a b@x,it's;rm -rf".into(),
                "#c".into(),
                String::new(),
            ],
        );
        assert_eq!(
            line,
            [
                "ssh",
                "-p",
                "10022",
                "root@127.0.0.1",
                "env",
                "LC_ALL=C",
                "zfs",
                "destroy",
                r"'pool/a b@x,it'\''s;rm -rf'",
                "'#c'",
                "''"
            ]
        );
        let sudo = Launcher::new(
            "/sbin/zfs".into(),
            "zpool".into(),
            Some(CommandPrefix::Exec(vec!["sudo".into(), "-n".into()])),
        );
        assert_eq!(
            sudo.command_line(Program::Zpool, &["get".into(), "a b".into()]),
            ["sudo", "-n", "env", "LC_ALL=C", "zpool", "get", "a b"]
        );
        let local = Launcher::new("zfs".into(), "zpool".into(), None);
        assert_eq!(
            local.command_line(Program::Zfs, &["list".into()]),
            ["zfs", "list"]
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Whatever a word holds, a POSIX shell gets it back unchanged.
        #[test]
        fn quoted_words_survive_a_shell(word in "[ -~]{0,40}") {
            let quoted = shell_quote(&word);
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("printf %s {quoted}")])
                .output()
                .unwrap();
            proptest::prop_assert_eq!(String::from_utf8_lossy(&out.stdout), word);
        }
    }

    #[tokio::test]
    async fn stdout_and_stderr_are_read_concurrently_and_stderr_is_a_tail() {
        // The shell writes far more than a pipe holds to both streams, interleaved: reading
        // one after the other would deadlock.
        let l = Launcher::new("sh".into(), "zpool".into(), None);
        let script = "i=0; while [ $i -lt 2000 ]; do \
                      printf '%0100d\\n' $i; printf 'err %0100d\\n' $i >&2; i=$((i+1)); done; \
                      echo last-words >&2; exit 3";
        let done = l
            .run(
                Operation::ListVersions,
                "x",
                Program::Zfs,
                &["-c".into(), script.into()],
            )
            .await
            .unwrap();
        assert_eq!(done.status.code(), Some(3));
        assert_eq!(done.stdout.lines().count(), 2000);
        assert!(done.stderr.len() <= STDERR_TAIL_BYTES_MAX);
        assert!(done.stderr.ends_with("last-words\n"));
        assert_eq!(l.launches()[&Operation::ListVersions], 1);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn pipes_are_enlarged() {
        let l = Launcher::new("sleep".into(), "zpool".into(), None);
        let mut child = l
            .spawn(
                Operation::Send,
                "x",
                Program::Zfs,
                &["5".into()],
                Stdio::null(),
            )
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let before = rustix::pipe::fcntl_getpipe_size(&stdout).unwrap();
        enlarge_pipe(&stdout);
        let after = rustix::pipe::fcntl_getpipe_size(&stdout).unwrap();
        // Unprivileged users may be held to pipe-max-size, which is 1 MiB by default too.
        assert!(
            after == PIPE_BYTES || after == before,
            "{before} -> {after}"
        );
        assert!(after >= before);
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_error_and_not_counted() {
        let l = Launcher::new("/nonexistent/zfs".into(), "zpool".into(), None);
        let e = l
            .run(Operation::Hold, "p/a@s", Program::Zfs, &[])
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("cannot start `/nonexistent/zfs`"),
            "{e}"
        );
        assert!(l.launches().is_empty());
    }
}
