//! The client's side of the `ssh+stdinserver` transport (zrepl's `connect: type:
//! ssh+stdinserver`): runs the system `ssh` and talks over its stdin and stdout.
//!
//! The command line is zrepl's: `ssh -p PORT -T -i IDENTITY_FILE -o BatchMode=yes [-o OPTION]...
//! -- USER@HOST`, built as an argument vector (never through a shell, so names with spaces or
//! quotes stay one argument). No remote command is given: the server's `authorized_keys`
//! forces `zferry stdinserver` for this key (see [`crate::stdinserver`]).
//!
//! Environment: `ssh` starts with an **empty** environment, as zrepl does. OpenSSH finds the
//! user's home (`~/.ssh/known_hosts`, `~/.ssh/config`) from the password database, not from
//! `HOME`, so nothing is inherited: no `SSH_AUTH_SOCK` (the agent is never asked, only
//! `identity_file` is used), no `DISPLAY` (no askpass), no locale, and no `PATH` (the `ssh`
//! program is located here, with this process's `PATH`, before it starts). `BatchMode=yes`
//! makes ssh fail instead of prompting for a password or a host key.
//!
//! [`connect`] waits within `dial_timeout` until the daemon's
//! [`READY_BANNER`](crate::stdinserver::READY_BANNER) arrives, so a refused key, an unknown host
//! key or a daemon that is not running is reported at dial time, with the tail of ssh's stderr
//! ("Permission denied (publickey)"). The child is killed when the stream is dropped.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use zferry_core::error_class::{Classify, ErrorClass, FailureKind};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::TransportError;
use crate::stdinserver::READY_BANNER;
use crate::{Client, Config};

/// zrepl's default `dial_timeout`.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How many bytes of ssh's stderr are kept (the newest ones) for error messages.
pub const STDERR_TAIL_BYTES_MAX: usize = 4096;

/// How long to wait for ssh to exit (and for its stderr) after its stdout closed at dial time.
pub const EXIT_WAIT: Duration = Duration::from_secs(2);

/// How long a dropped stream's ssh may take to pass on the last bytes (the transport's close
/// notice) and exit after its stdin closed, before it is killed.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The most `options` (a bound on the command line).
pub const OPTIONS_MAX: usize = 256;

/// zrepl's `connect` keys for `ssh+stdinserver`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConnect {
    /// The server's host name or address.
    pub host: String,
    /// The user to log in as.
    pub user: String,
    /// The server's ssh port.
    pub port: u16,
    /// The private key (its `authorized_keys` entry forces `zferry stdinserver`).
    pub identity_file: PathBuf,
    /// Extra ssh options, each passed as `-o OPTION` (`"Compression=yes"`).
    pub options: Vec<String>,
    /// How long connecting may take, up to the daemon's ready banner.
    pub dial_timeout: Duration,
    /// The ssh program: a path, or a name looked up in `PATH` (`"ssh"`).
    pub ssh_program: PathBuf,
}

impl SshConnect {
    /// A configuration with zrepl's defaults: port 22, no options, [`DIAL_TIMEOUT`], `ssh`.
    pub fn new(host: &str, user: &str, identity_file: &Path) -> Self {
        Self {
            host: host.to_owned(),
            user: user.to_owned(),
            port: 22,
            identity_file: identity_file.to_owned(),
            options: Vec::new(),
            dial_timeout: DIAL_TIMEOUT,
            ssh_program: PathBuf::from("ssh"),
        }
    }
}

/// Why an ssh connection failed. The messages carry the tail of ssh's stderr.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshError {
    /// The configuration cannot be turned into a safe command line.
    #[error("ssh+stdinserver config: {0}")]
    Config(String),
    /// The ssh program could not be started.
    #[error("cannot start `{program}`: {detail}; install OpenSSH's client or set its path")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        detail: String,
    },
    /// ssh ended (or closed its stdout) before the daemon answered.
    #[error("ssh to {target} ended before the zferry daemon answered ({status}): {stderr}")]
    Exited {
        /// `user@host:port`.
        target: String,
        /// How it ended ("exit status: 255", "still running").
        status: String,
        /// The tail of ssh's stderr (the remote command's stderr included).
        stderr: String,
    },
    /// Something other than the daemon's banner arrived.
    #[error(
        "ssh to {target}: expected the zferry daemon's banner, got {got:?}; is the key's forced command `zferry stdinserver`? stderr: {stderr}"
    )]
    BadBanner {
        /// `user@host:port`.
        target: String,
        /// What arrived.
        got: String,
        /// The tail of ssh's stderr.
        stderr: String,
    },
    /// The daemon did not answer within `dial_timeout`.
    #[error("ssh to {target}: no answer from the zferry daemon within {after:?}; stderr: {stderr}")]
    Timeout {
        /// `user@host:port`.
        target: String,
        /// The deadline.
        after: Duration,
        /// The tail of ssh's stderr.
        stderr: String,
    },
}

impl Classify for SshError {
    /// A configuration that cannot work, or a missing ssh, stays so until someone fixes it;
    /// everything else may be the network or a restarting daemon.
    fn class(&self) -> ErrorClass {
        match self {
            Self::Config(_) | Self::Spawn { .. } => ErrorClass::FATAL,
            Self::Timeout { .. } => FailureKind::NetworkTimeout.class(),
            Self::Exited { .. } | Self::BadBanner { .. } => FailureKind::ConnectionLost.class(),
        }
    }
}

impl From<SshError> for TransportError {
    /// A dial failure as a transport error (its message keeps ssh's stderr).
    fn from(e: SshError) -> Self {
        match e {
            SshError::Timeout { after, .. } => TransportError::Timeout {
                what: "ssh dial",
                after,
            },
            other => TransportError::Io {
                op: "ssh dial",
                kind: io::ErrorKind::ConnectionRefused,
                detail: other.to_string(),
            },
        }
    }
}

/// The arguments given to ssh (without the program), as zrepl builds them.
pub fn ssh_args(config: &SshConnect) -> Result<Vec<OsString>, SshError> {
    // ssh would read a leading `-` as an option; `--` guards the destination, and the other
    // values follow their option letter as separate arguments.
    if config.host.is_empty() || config.host.starts_with('-') {
        return Err(SshError::Config(format!(
            "host `{}` must not be empty or start with `-`",
            config.host
        )));
    }
    if config.user.is_empty() || config.user.starts_with('-') || config.user.contains('@') {
        return Err(SshError::Config(format!(
            "user `{}` must not be empty, start with `-` or contain `@`",
            config.user
        )));
    }
    if config.options.len() > OPTIONS_MAX {
        return Err(SshError::Config(format!(
            "{} options exceed the limit of {OPTIONS_MAX}",
            config.options.len()
        )));
    }
    if let Some(bad) = config.options.iter().find(|o| o.trim().is_empty()) {
        return Err(SshError::Config(format!("option `{bad}` is empty")));
    }
    let mut args: Vec<OsString> = vec![
        "-p".into(),
        config.port.to_string().into(),
        "-T".into(),
        "-i".into(),
        config.identity_file.clone().into_os_string(),
        "-o".into(),
        "BatchMode=yes".into(),
    ];
    for option in &config.options {
        args.push("-o".into());
        args.push(option.into());
    }
    args.push("--".into());
    args.push(format!("{}@{}", config.user, config.host).into());
    Ok(args)
}

/// Starts ssh and waits for the daemon's ready banner within `config.dial_timeout`.
pub async fn connect(config: &SshConnect) -> Result<SshStream, SshError> {
    let target = format!("{}@{}:{}", config.user, config.host, config.port);
    let args = ssh_args(config)?;
    let program = resolve_program(&config.ssh_program, std::env::var_os("PATH").as_deref())
        .ok_or_else(|| SshError::Spawn {
            program: config.ssh_program.clone(),
            detail: "not found in PATH".to_owned(),
        })?;
    let mut child = Command::new(&program)
        .args(&args)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SshError::Spawn {
            program: program.clone(),
            detail: e.to_string(),
        })?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(SshError::Spawn {
            program,
            detail: "its pipes were not created".to_owned(),
        });
    };
    let tail = StderrTail::default();
    let stderr_task = tokio::spawn(tail.clone().collect(stderr));
    let mut stream = SshStream {
        stdout,
        stdin,
        child: Some(child),
        stderr: tail,
    };
    let mut banner = vec![0u8; READY_BANNER.len()];
    match tokio::time::timeout(
        config.dial_timeout,
        read_up_to(&mut stream.stdout, &mut banner),
    )
    .await
    {
        Err(_) => Err(SshError::Timeout {
            target,
            after: config.dial_timeout,
            stderr: stream.stderr.text(),
        }),
        Ok(Ok(n)) if n == banner.len() && banner == READY_BANNER => Ok(stream),
        Ok(Ok(n)) if n == banner.len() => Err(SshError::BadBanner {
            target,
            got: String::from_utf8_lossy(&banner).into_owned(),
            stderr: stream.stderr.text(),
        }),
        Ok(_) => {
            // Closed early (or a read error): let ssh exit and its stderr drain, briefly.
            let status = match stream.child.as_mut() {
                None => "gone".to_owned(),
                Some(child) => match tokio::time::timeout(EXIT_WAIT, child.wait()).await {
                    Ok(Ok(status)) => status.to_string(),
                    Ok(Err(e)) => format!("wait failed: {e}"),
                    Err(_) => "still running".to_owned(),
                },
            };
            let _ = tokio::time::timeout(EXIT_WAIT, stderr_task).await;
            Err(SshError::Exited {
                target,
                status,
                stderr: stream.stderr.text(),
            })
        }
    }
}

/// Connects through ssh and runs the transport's handshake: a [`Client`] ready for requests.
/// A failed handshake keeps ssh's stderr in the message (a remote `zferry` too old, or a
/// daemon that closed the connection, says so there).
pub async fn connect_client<Req, Resp>(
    config: &SshConnect,
    transport: Config,
) -> Result<Client<Req, Resp>, TransportError>
where
    Req: Serialize,
    Resp: DeserializeOwned,
{
    let stream = connect(config).await?;
    let stderr = stream.stderr_handle();
    Client::connect(stream, transport)
        .await
        .map_err(|e| match e {
            TransportError::Handshake(_) | TransportError::Timeout { .. } => e,
            other => TransportError::Io {
                op: "ssh handshake",
                kind: io::ErrorKind::ConnectionAborted,
                detail: format!("{other}; ssh's stderr: {}", stderr.text()),
            },
        })
}

/// ssh's stdout and stdin as one stream. Dropping it closes ssh's stdin, so ssh passes on
/// what it still holds (the transport's close notice) and exits; it is killed if it has not
/// exited within [`CLOSE_GRACE`] (or at once when no tokio runtime is left to wait).
#[derive(Debug)]
pub struct SshStream {
    stdout: ChildStdout,
    stdin: ChildStdin,
    child: Option<Child>,
    stderr: StderrTail,
}

impl Drop for SshStream {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The stdin field is dropped right after this, which closes the pipe.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if tokio::time::timeout(CLOSE_GRACE, child.wait())
                        .await
                        .is_err()
                    {
                        let _ = child.kill().await;
                    }
                });
            }
            Err(_) => {
                let _ = child.start_kill();
            }
        }
    }
}

impl SshStream {
    /// The newest bytes of ssh's stderr (up to [`STDERR_TAIL_BYTES_MAX`]), for an error
    /// message after the connection broke.
    pub fn stderr_tail(&self) -> String {
        self.stderr.text()
    }

    /// A handle that reads the stderr tail after the stream moved into a transport.
    pub fn stderr_handle(&self) -> StderrTail {
        self.stderr.clone()
    }

    /// ssh's process id, if it is still running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
}

impl AsyncRead for SshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for SshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stdin.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}

/// The newest [`STDERR_TAIL_BYTES_MAX`] bytes of ssh's stderr, shared with the task that
/// reads it.
#[derive(Debug, Clone, Default)]
pub struct StderrTail {
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl StderrTail {
    /// The tail as text, trimmed; "(empty)" if ssh wrote nothing.
    pub fn text(&self) -> String {
        let bytes = match self.bytes.lock() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let text = String::from_utf8_lossy(&bytes).trim().to_owned();
        if text.is_empty() {
            "(empty)".to_owned()
        } else {
            text
        }
    }

    fn push(&self, chunk: &[u8]) {
        let mut bytes = match self.bytes.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        bytes.extend_from_slice(chunk);
        if bytes.len() > STDERR_TAIL_BYTES_MAX {
            let excess = bytes.len() - STDERR_TAIL_BYTES_MAX;
            bytes.drain(..excess);
        }
    }

    async fn collect(self, mut stderr: ChildStderr) {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            self.push(&buf[..n]);
        }
    }
}

/// Reads until `buf` is full or the stream ends; returns how many bytes arrived.
async fn read_up_to(r: &mut ChildStdout, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let got = r.read(&mut buf[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok(n)
}

/// `program` itself if it names a path, else the first executable file of that name in
/// `path` (the child gets an empty environment, so it cannot search on its own).
fn resolve_program(program: &Path, path: Option<&OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.components().count() > 1 || program.is_absolute() {
        return Some(program.to_owned());
    }
    std::env::split_paths(path?)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[OsString]) -> Vec<&str> {
        args.iter().map(|a| a.to_str().unwrap()).collect()
    }

    #[test]
    fn arguments_are_zrepls_and_keep_spaces_in_one_argument() {
        let mut config = SshConnect::new("backup host", "zferry user", Path::new("/keys/my key"));
        config.port = 2222;
        config.options = vec![
            "Compression=yes".to_owned(),
            "UserKnownHostsFile=/a b/known hosts".to_owned(),
        ];
        let args = ssh_args(&config).unwrap();
        assert_eq!(
            strings(&args),
            [
                "-p",
                "2222",
                "-T",
                "-i",
                "/keys/my key",
                "-o",
                "BatchMode=yes",
                "-o",
                "Compression=yes",
                "-o",
                "UserKnownHostsFile=/a b/known hosts",
                "--",
                "zferry user@backup host",
            ]
        );
    }

    #[test]
    fn unsafe_configs_are_refused() {
        let base = SshConnect::new("h", "u", Path::new("/k"));
        type Change = fn(&mut SshConnect);
        let cases: [(Change, &str); 5] = [
            (|c| c.host = "-oProxyCommand=evil".to_owned(), "host"),
            (|c| c.host = String::new(), "host"),
            (|c| c.user = "-x".to_owned(), "user"),
            (|c| c.user = "a@b".to_owned(), "user"),
            (|c| c.options = vec![" ".to_owned()], "empty"),
        ];
        for (change, expected) in cases {
            let mut c = base.clone();
            change(&mut c);
            let err = ssh_args(&c).unwrap_err().to_string();
            assert!(err.contains(expected), "{c:?}: {err}");
        }
    }

    #[test]
    fn the_stderr_tail_keeps_the_newest_bytes() {
        let tail = StderrTail::default();
        assert_eq!(tail.text(), "(empty)");
        tail.push(&vec![b'x'; STDERR_TAIL_BYTES_MAX]);
        tail.push(b"Permission denied (publickey).\n");
        let text = tail.text();
        assert_eq!(text.len(), STDERR_TAIL_BYTES_MAX - 1);
        assert!(text.ends_with("Permission denied (publickey)."), "{text}");
    }

    #[test]
    fn the_program_is_found_in_path_or_taken_as_given() {
        assert_eq!(
            resolve_program(Path::new("/opt/ssh"), None),
            Some(PathBuf::from("/opt/ssh"))
        );
        assert_eq!(resolve_program(Path::new("sh"), None), None);
        let found = resolve_program(
            Path::new("sh"),
            Some(OsStr::new("relative:/nonexistent:/bin")),
        );
        assert_eq!(found, Some(PathBuf::from("/bin/sh")));
    }

    #[tokio::test]
    async fn a_failing_ssh_is_reported_with_its_stderr() {
        let dir = std::env::temp_dir().join(format!("zferry-fake-ssh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("ssh");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'root@h: Permission denied (publickey).' >&2\nexit 255\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut config = SshConnect::new("h", "root", Path::new("/k"));
        config.ssh_program = fake.clone();
        let err = connect(&config).await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, SshError::Exited { .. }), "{text}");
        assert!(text.contains("Permission denied (publickey)"), "{text}");
        assert!(text.contains("255"), "{text}");

        // The environment is empty and the banner must match exactly.
        std::fs::write(&fake, "#!/bin/sh\necho \"env:[$(env | tr '\\n' ' ')]\" >&2\nsleep 0.2\necho 'SSH-2.0-hello-there-not-zferry'\nsleep 5\n")
            .unwrap();
        let err = connect(&config).await.unwrap_err();
        let SshError::BadBanner { stderr, .. } = &err else {
            panic!("{err}");
        };
        assert!(stderr.contains("env:["), "{stderr}");
        assert!(
            !stderr.contains("HOME=") && !stderr.contains("PATH=/"),
            "{stderr}"
        );

        // Silence until the deadline is a timeout.
        std::fs::write(&fake, "#!/bin/sh\necho waiting >&2\nsleep 5\n").unwrap();
        config.dial_timeout = Duration::from_millis(300);
        let err = connect(&config).await.unwrap_err();
        assert!(matches!(err, SshError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("waiting"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
