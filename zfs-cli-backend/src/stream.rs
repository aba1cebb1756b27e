//! The send stream (the stdout of `zfs send` as a [`ByteStream`]) and the feeding of a stream
//! into `zfs recv`.
//!
//! Shutting a sender down follows zrepl (#495, openzfs#12500): kill it, CLOSE THE PIPE, and
//! only then wait. A `zfs send` blocked in a kernel write to a full pipe may never notice the
//! kill while the pipe is open, so waiting first can hang forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;
use zferry_core::backend::{ByteStream, Operation, ZfsError, ZfsErrorKind};

use crate::classify::classify;

/// The copy buffer between a stream and `zfs recv`'s stdin, in bytes (tokio's default is
/// 8 KiB, far too small for replication).
pub const FEED_CHUNK_BYTES: usize = 1024 * 1024;

/// The stdout of a running `zfs send`.
pub struct SendStream {
    object: String,
    state: State,
}

enum State {
    /// Streaming: the process, its stdout and the task collecting its stderr tail.
    Reading {
        child: Child,
        stdout: ChildStdout,
        stderr: JoinHandle<String>,
    },
    /// EOF or a read error seen; waiting for the process.
    Finishing(Pin<Box<dyn Future<Output = Result<(), ZfsError>> + Send>>),
    /// The process exited successfully after EOF: every read is EOF.
    Done,
    /// The sender failed: every read is this error.
    Failed(ZfsError),
}

impl std::fmt::Debug for SendStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Reading { .. } => "reading",
            State::Finishing(_) => "finishing",
            State::Done => "done",
            State::Failed(_) => "failed",
        };
        f.debug_struct("SendStream")
            .field("object", &self.object)
            .field("state", &state)
            .finish()
    }
}

impl SendStream {
    /// Wraps a spawned `zfs send` (stdout and stderr piped); `object` names it in errors.
    pub fn new(mut child: Child, object: String) -> Result<Self, ZfsError> {
        let missing = || {
            ZfsError::new(
                Operation::Send,
                &object,
                ZfsErrorKind::Other {
                    detail: "zfs send was started without piped stdout/stderr".into(),
                },
            )
        };
        let stdout = child.stdout.take().ok_or_else(missing)?;
        let stderr = child.stderr.take().ok_or_else(missing)?;
        crate::process::enlarge_pipe(&stdout);
        let stderr = tokio::spawn(crate::process::read_tail(Some(stderr)));
        Ok(Self {
            object,
            state: State::Reading {
                child,
                stdout,
                stderr,
            },
        })
    }

    /// Boxes the stream as the backend trait returns it.
    pub fn boxed(self) -> ByteStream {
        Box::pin(self)
    }
}

impl AsyncRead for SendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(Ok(())),
                State::Failed(e) => return Poll::Ready(Err(e.clone().into_io())),
                State::Finishing(fut) => {
                    let result = ready!(fut.as_mut().poll(cx));
                    this.state = match result {
                        Ok(()) => State::Done,
                        Err(e) => State::Failed(e),
                    };
                }
                State::Reading { stdout, .. } => {
                    if buf.remaining() == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    let before = buf.filled().len();
                    let result = ready!(Pin::new(stdout).poll_read(cx, buf));
                    let eof = match result {
                        Ok(()) if buf.filled().len() > before => return Poll::Ready(Ok(())),
                        Ok(()) => None,
                        Err(e) => Some(e),
                    };
                    let State::Reading {
                        child,
                        stdout,
                        stderr,
                    } = std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!("matched Reading above")
                    };
                    let object = this.object.clone();
                    this.state =
                        State::Finishing(Box::pin(finish(child, stdout, stderr, eof, object)));
                }
            }
        }
    }
}

/// Ends a send: after EOF, waits and turns a failure into an error; after a read error, kills
/// the sender, closes the pipe, then waits.
async fn finish(
    mut child: Child,
    stdout: ChildStdout,
    stderr: JoinHandle<String>,
    read_error: Option<io::Error>,
    object: String,
) -> Result<(), ZfsError> {
    if read_error.is_some() {
        let _ = child.start_kill();
    }
    // Closing before waiting, always (see the module doc).
    drop(stdout);
    let status = child.wait().await;
    let tail = stderr.await.unwrap_or_default();
    if let Some(e) = read_error {
        let detail = format!("reading the output of zfs send failed: {e}");
        return Err(
            ZfsError::new(Operation::Send, object, ZfsErrorKind::Other { detail })
                .with_stderr(&tail),
        );
    }
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(exit_error(Operation::Send, &object, status, &tail)),
        Err(e) => Err(ZfsError::new(
            Operation::Send,
            object,
            ZfsErrorKind::Other {
                detail: format!("waiting for zfs send failed: {e}"),
            },
        )
        .with_stderr(&tail)),
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        let State::Reading {
            mut child,
            stdout,
            stderr,
        } = std::mem::replace(&mut self.state, State::Done)
        else {
            // Finishing owns a process with kill_on_drop; the others own none.
            return;
        };
        let _ = child.start_kill();
        drop(stdout);
        stderr.abort();
        // Reap it in the background when a runtime is there; otherwise tokio's orphan queue
        // reaps it (the child was spawned with kill_on_drop).
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}

/// The error for a process that exited unsuccessfully: the kind from its stderr, else its exit
/// status, with the stderr tail.
pub fn exit_error(
    operation: Operation,
    object: &str,
    status: std::process::ExitStatus,
    stderr: &str,
) -> ZfsError {
    let kind = classify(stderr).unwrap_or_else(|| ZfsErrorKind::Other {
        detail: describe_status(status),
    });
    ZfsError::new(operation, object, kind).with_stderr(stderr)
}

/// "exit status 1" or "killed by signal 9".
pub fn describe_status(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => status.to_string(),
    }
}

/// Why feeding `zfs recv` stopped early.
#[derive(Debug)]
pub enum FeedError {
    /// Reading the stream failed: the sender or the network broke.
    Read(io::Error),
    /// Writing to `zfs recv` failed: it exited (its stderr says why).
    Write(io::Error),
}

/// Copies `stream` into `zfs recv`'s stdin until EOF, then closes stdin. Returns the bytes
/// copied.
pub async fn feed(mut stream: ByteStream, mut stdin: ChildStdin) -> Result<u64, FeedError> {
    crate::process::enlarge_pipe(&stdin);
    let mut buf = vec![0u8; FEED_CHUNK_BYTES];
    let mut total: u64 = 0;
    loop {
        let n = stream.read(&mut buf).await.map_err(FeedError::Read)?;
        if n == 0 {
            break;
        }
        stdin.write_all(&buf[..n]).await.map_err(FeedError::Write)?;
        total = total.saturating_add(n as u64);
    }
    stdin.shutdown().await.map_err(FeedError::Write)?;
    Ok(total)
}
