//! A test service and helpers shared by the transport's integration tests.
// Test helpers: a failure here is a test failure, so unwrap is the clearest report.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use zferry_transport::{ByteReader, Client, Config, Reply, Service, TransportError, serve};

/// What the test service understands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Req {
    Echo(String),
    /// Answers after this many milliseconds.
    Sleep(u64),
    /// Answers with a stream of `len` pattern bytes that fails after `fail_at` bytes.
    Download {
        len: u64,
        fail_at: Option<u64>,
    },
    /// Reads the upload to the end and answers with its length and checksum.
    Upload,
    /// Reads `n` bytes of the upload and answers (dropping the rest).
    UploadPrefix(u64),
}

/// Its answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resp {
    Echo(String),
    Slept,
    Download,
    Uploaded { len: u64, sum: u64 },
    UploadFailed(String),
}

/// Records what handlers saw, for assertions on the server side.
#[derive(Debug, Default)]
pub struct TestService {
    pub upload_errors: Mutex<Vec<String>>,
}

impl Service for TestService {
    type Request = Req;
    type Response = Resp;

    async fn call(&self, request: Req, upload: Option<ByteReader>) -> Reply<Resp> {
        match request {
            Req::Echo(s) => Reply::new(Resp::Echo(s)),
            Req::Sleep(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Reply::new(Resp::Slept)
            }
            Req::Download { len, fail_at } => {
                Reply::with_download(Resp::Download, Box::pin(Pattern::new(len, fail_at)))
            }
            Req::Upload => match upload {
                None => Reply::new(Resp::UploadFailed("no upload".to_owned())),
                Some(mut r) => match drain(&mut r, u64::MAX).await {
                    Ok((len, sum)) => Reply::new(Resp::Uploaded { len, sum }),
                    Err(e) => {
                        let typed = TransportError::from_io(&e)
                            .map(|t| format!("{t:?}"))
                            .unwrap_or_else(|| format!("untyped: {e}"));
                        self.upload_errors.lock().unwrap().push(typed.clone());
                        Reply::new(Resp::UploadFailed(typed))
                    }
                },
            },
            Req::UploadPrefix(n) => match upload {
                None => Reply::new(Resp::UploadFailed("no upload".to_owned())),
                Some(mut r) => {
                    let (len, sum) = drain(&mut r, n).await.unwrap();
                    Reply::new(Resp::Uploaded { len, sum })
                }
            },
        }
    }
}

/// Reads up to `max` bytes; returns their count and a position-sensitive checksum.
pub async fn drain<R: AsyncRead + Unpin>(r: &mut R, max: u64) -> io::Result<(u64, u64)> {
    let mut buf = vec![0u8; 64 << 10];
    let (mut len, mut sum) = (0u64, 0u64);
    while len < max {
        let want = buf.len().min((max - len) as usize);
        let n = r.read(&mut buf[..want]).await?;
        if n == 0 {
            break;
        }
        for b in &buf[..n] {
            sum = sum.wrapping_mul(31).wrapping_add(u64::from(*b));
        }
        len += n as u64;
    }
    Ok((len, sum))
}

/// The checksum `drain` computes over `Pattern::new(len, None)`.
pub fn pattern_sum(len: u64) -> u64 {
    (0..len).fold(0u64, |sum, i| {
        sum.wrapping_mul(31)
            .wrapping_add(u64::from(pattern_byte(i)))
    })
}

fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// `len` bytes of a fixed pattern, failing after `fail_at` bytes if set.
pub struct Pattern {
    pos: u64,
    len: u64,
    fail_at: Option<u64>,
}

impl Pattern {
    pub fn new(len: u64, fail_at: Option<u64>) -> Self {
        Self {
            pos: 0,
            len,
            fail_at,
        }
    }
}

impl AsyncRead for Pattern {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(at) = self.fail_at
            && self.pos >= at
        {
            return Poll::Ready(Err(io::Error::other("zfs send exited with status 1")));
        }
        let end = self.fail_at.unwrap_or(u64::MAX).min(self.len);
        let n = (end - self.pos).min(buf.remaining() as u64).min(100_000);
        for i in 0..n {
            buf.put_slice(&[pattern_byte(self.pos + i)]);
        }
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Short deadlines, so that timeout tests take little virtual time.
pub fn fast_config() -> Config {
    Config {
        heartbeat_interval: Duration::from_millis(500),
        peer_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(2),
        stream_window_bytes: 1 << 20,
    }
}

pub type Server = tokio::task::JoinHandle<Result<(), TransportError>>;

/// A client connected to a served `TestService` over an in-memory pipe.
pub async fn pair(config: Config) -> (Client<Req, Resp>, Server, Arc<TestService>) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let service = Arc::new(TestService::default());
    let server = tokio::spawn(serve(b, service.clone(), config));
    let client = Client::connect(a, config).await.unwrap();
    (client, server, service)
}
