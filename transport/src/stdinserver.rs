//! The daemon's side of the `ssh+stdinserver` transport (zrepl's `serve: type: stdinserver`).
//!
//! A client runs `ssh` ([`crate::ssh`]); the server's `authorized_keys` forces the command
//! `zferry stdinserver --socket PATH IDENTITY` for that key. That command connects to the
//! daemon's Unix socket, sends a [`header`] naming the identity, and then copies its stdin to
//! the socket and the socket to its stdout. The daemon ([`StdinserverListener`]) reads and
//! validates the header within [`HEADER_TIMEOUT`], answers [`READY_BANNER`] (which travels back
//! through ssh and tells the client the tunnel reaches a daemon), and hands the stream and the
//! identity to the transport.
//!
//! Trust: the identity comes from the `authorized_keys` line, which only the server's
//! administrator writes; the socket is the only other way in, so it is created with mode 0600
//! in a directory the daemon owns that no one else may write to (checked on bind). Only the
//! daemon's user (and root) can connect, and so only a command that user runs, such as the
//! forced command, can claim an identity. Unlike zrepl (one socket per identity, file
//! descriptors passed with SCM_RIGHTS), zferry uses one socket and copies bytes; the identity
//! is in the header.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use zferry_core::name::NameError;

use crate::identity::{ClientIdentity, parse_client_identity};

/// Where `zferry stdinserver` connects unless `--socket` says otherwise (zrepl used
/// `/var/run/zrepl/stdinserver/<identity>`). The daemon creates `/var/run/zferry` with mode 0700.
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/zferry/stdinserver.sock";

/// The first bytes of the header the forced command sends; the version is part of it.
pub const HEADER_MAGIC: &str = "ZFERRY-STDINSERVER 1 ";

/// The most bytes a header may have, newline included (a bound on the daemon's read).
pub const HEADER_BYTES_MAX: usize = 512;

/// How long the daemon waits for a connected forced command's header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the daemon answers a valid header with; the client waits for exactly these bytes
/// before it starts the transport's handshake.
pub const READY_BANNER: &[u8] = b"ZFERRY-STDINSERVER-READY 1\n";

/// The header the forced command sends for `identity`: magic, identity, newline.
pub fn header(identity: &ClientIdentity) -> Vec<u8> {
    format!("{HEADER_MAGIC}{identity}\n").into_bytes()
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// It does not start with [`HEADER_MAGIC`] (another program, or another version).
    #[error(
        "the header does not start with `{}` (another program or another zferry version on the socket): {got:?}",
        HEADER_MAGIC.trim_end()
    )]
    BadMagic {
        /// The start of what arrived.
        got: String,
    },
    /// No newline within [`HEADER_BYTES_MAX`] bytes.
    #[error("the header has no newline within {HEADER_BYTES_MAX} bytes")]
    TooLong,
    /// The stream ended before the newline.
    #[error("the connection closed after {n_bytes} bytes, before the header was complete")]
    Truncated {
        /// How many bytes arrived.
        n_bytes: usize,
    },
    /// The identity is not valid UTF-8 or not a dataset-name component.
    #[error("the header's client identity is invalid: {0}")]
    BadIdentity(#[from] NameError),
    /// The identity is not valid UTF-8.
    #[error("the header's client identity is not UTF-8")]
    NotUtf8,
}

/// Parses one header line (without its newline).
pub fn parse_header(line: &[u8]) -> Result<ClientIdentity, HeaderError> {
    let Some(rest) = line.strip_prefix(HEADER_MAGIC.as_bytes()) else {
        let got = String::from_utf8_lossy(&line[..line.len().min(HEADER_MAGIC.len() + 16)]);
        return Err(HeaderError::BadMagic {
            got: got.into_owned(),
        });
    };
    let identity = std::str::from_utf8(rest).map_err(|_| HeaderError::NotUtf8)?;
    Ok(parse_client_identity(identity)?)
}

/// Why binding or accepting failed.
#[derive(Debug, thiserror::Error)]
pub enum StdinserverError {
    /// The socket's directory is missing, or others may write to it.
    #[error("stdinserver socket directory {dir}: {detail}")]
    UnsafeDirectory {
        /// The directory.
        dir: PathBuf,
        /// What is wrong and what to do.
        detail: String,
    },
    /// Something that is not a socket is in the way.
    #[error("{path} exists and is not a socket; remove it or choose another `--socket` path")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Another process listens on the socket.
    #[error("{path} is in use by another running daemon")]
    InUse {
        /// The path.
        path: PathBuf,
    },
    /// A file-system or socket operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A connected forced command sent a bad header (or none in time); the connection was
    /// closed. Keep accepting.
    #[error("stdinserver connection refused: {0}")]
    Refused(#[from] HeaderError),
    /// A connected forced command sent no header within [`HEADER_TIMEOUT`]. Keep accepting.
    #[error("stdinserver connection refused: no header within {HEADER_TIMEOUT:?}")]
    HeaderTimeout,
}

impl StdinserverError {
    /// Whether the listener should keep accepting after this error (one bad client).
    pub fn is_per_connection(&self) -> bool {
        matches!(
            self,
            Self::Refused(_) | Self::HeaderTimeout | Self::Io { op: "header", .. }
        )
    }
}

/// The daemon's listener on the stdinserver socket.
#[derive(Debug)]
pub struct StdinserverListener {
    listener: UnixListener,
    path: PathBuf,
}

impl StdinserverListener {
    /// Listens on `path`. Its directory must exist, belong to this process's user and not be
    /// writable by group or others (so no one else can replace the socket); a stale socket
    /// left by a previous daemon is removed, a live one is an error. The socket gets mode
    /// 0600.
    pub async fn bind(path: &Path) -> Result<Self, StdinserverError> {
        let io_err = |op, source| StdinserverError::Io {
            op,
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let dir_meta = std::fs::metadata(dir).map_err(|e| StdinserverError::UnsafeDirectory {
            dir: dir.to_owned(),
            detail: format!("{e}; create it with mode 0700, owned by the daemon's user"),
        })?;
        if dir_meta.mode() & 0o022 != 0 {
            return Err(StdinserverError::UnsafeDirectory {
                dir: dir.to_owned(),
                detail: format!(
                    "mode {:o} lets others write to it; run `chmod 0700` on it",
                    dir_meta.mode() & 0o7777
                ),
            });
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if UnixStream::connect(path).await.is_ok() {
                    return Err(StdinserverError::InUse {
                        path: path.to_owned(),
                    });
                }
                std::fs::remove_file(path).map_err(|e| io_err("remove stale socket", e))?;
            }
            Ok(_) => {
                return Err(StdinserverError::NotASocket {
                    path: path.to_owned(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", e)),
        }
        let listener = UnixListener::bind(path).map_err(|e| io_err("bind", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_err("chmod 0600", e))?;
        // The socket belongs to us, so its owner is our user: the directory must be ours too.
        let sock_meta = std::fs::symlink_metadata(path).map_err(|e| io_err("inspect", e))?;
        if sock_meta.uid() != dir_meta.uid() {
            let _ = std::fs::remove_file(path);
            return Err(StdinserverError::UnsafeDirectory {
                dir: dir.to_owned(),
                detail: format!(
                    "it belongs to uid {}, not to the daemon's uid {}",
                    dir_meta.uid(),
                    sock_meta.uid()
                ),
            });
        }
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts the next forced command, reads its header within [`HEADER_TIMEOUT`] and answers
    /// [`READY_BANNER`]. An error for which [`StdinserverError::is_per_connection`] holds
    /// concerns one connection only: log it and keep accepting.
    ///
    /// The header is read here, so a connected process that stays silent delays the next
    /// accept by up to [`HEADER_TIMEOUT`]; only the daemon's own user can connect.
    pub async fn accept(&self) -> Result<(UnixStream, ClientIdentity), StdinserverError> {
        let (mut stream, _) =
            self.listener
                .accept()
                .await
                .map_err(|source| StdinserverError::Io {
                    op: "accept on",
                    path: self.path.clone(),
                    source,
                })?;
        let identity = tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut stream))
            .await
            .map_err(|_| StdinserverError::HeaderTimeout)?
            .map_err(|e| match e {
                ReadHeader::Io(source) => StdinserverError::Io {
                    op: "header",
                    path: self.path.clone(),
                    source,
                },
                ReadHeader::Bad(h) => StdinserverError::Refused(h),
            })?;
        stream
            .write_all(READY_BANNER)
            .await
            .map_err(|source| StdinserverError::Io {
                op: "header",
                path: self.path.clone(),
                source,
            })?;
        Ok((stream, identity))
    }
}

enum ReadHeader {
    Io(io::Error),
    Bad(HeaderError),
}

/// Reads up to the newline, one byte at a time, so no byte after the header is consumed.
async fn read_header(stream: &mut UnixStream) -> Result<ClientIdentity, ReadHeader> {
    let mut line = Vec::with_capacity(64);
    loop {
        let mut byte = [0u8; 1];
        let n = stream.read(&mut byte).await.map_err(ReadHeader::Io)?;
        if n == 0 {
            return Err(ReadHeader::Bad(HeaderError::Truncated {
                n_bytes: line.len(),
            }));
        }
        if byte[0] == b'\n' {
            return parse_header(&line).map_err(ReadHeader::Bad);
        }
        if line.len() + 1 >= HEADER_BYTES_MAX {
            return Err(ReadHeader::Bad(HeaderError::TooLong));
        }
        // Refuse a foreign talker early rather than after 512 bytes.
        if line.len() < HEADER_MAGIC.len() && byte[0] != HEADER_MAGIC.as_bytes()[line.len()] {
            line.push(byte[0]);
            return parse_header(&line).map_err(ReadHeader::Bad);
        }
        line.push(byte[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_refuses_bad_input() {
        let id = parse_client_identity("host1").unwrap();
        let h = header(&id);
        assert_eq!(h, b"ZFERRY-STDINSERVER 1 host1\n");
        assert_eq!(parse_header(&h[..h.len() - 1]).unwrap(), id);
        let cases: [(&[u8], &str); 6] = [
            (b"ZFERRY-STDINSERVER 2 host1", "does not start with"),
            (b"SSH-2.0-OpenSSH", "does not start with"),
            (b"ZFERRY-STDINSERVER 1 a/b", "identity is invalid"),
            (b"ZFERRY-STDINSERVER 1 ..", "identity is invalid"),
            (b"ZFERRY-STDINSERVER 1 ", "identity is invalid"),
            (b"ZFERRY-STDINSERVER 1 \xff", "not UTF-8"),
        ];
        for (line, expected) in cases {
            let err = parse_header(line).unwrap_err().to_string();
            assert!(err.contains(expected), "{line:?}: {err}");
        }
    }

    async fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("zferry-stdinserver-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    async fn send(path: &Path, bytes: &[u8]) -> UnixStream {
        let mut s = UnixStream::connect(path).await.unwrap();
        s.write_all(bytes).await.unwrap();
        s
    }

    #[tokio::test]
    async fn accepts_a_header_answers_ready_and_keeps_later_bytes() {
        let dir = temp_dir("accept").await;
        let path = dir.join("sock");
        let listener = StdinserverListener::bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let id = parse_client_identity("host 1").unwrap();
        let mut payload = header(&id);
        payload.extend_from_slice(b"rest");
        let mut client = send(&path, &payload).await;
        let (mut stream, got) = listener.accept().await.unwrap();
        assert_eq!(got.as_str(), "host 1");
        let mut rest = [0u8; 4];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"rest");
        let mut banner = vec![0u8; READY_BANNER.len()];
        client.read_exact(&mut banner).await.unwrap();
        assert_eq!(banner, READY_BANNER);

        // A bad header is refused and the listener keeps working.
        let _bad = send(&path, b"GET / HTTP/1.1\r\n").await;
        let err = listener.accept().await.unwrap_err();
        assert!(err.is_per_connection(), "{err}");
        assert!(err.to_string().contains("does not start with"), "{err}");
        let _long = send(&path, &[b'Z'; 1]).await;
        drop(_long);
        let err = listener.accept().await.unwrap_err();
        assert!(
            matches!(
                err,
                StdinserverError::Refused(HeaderError::Truncated { n_bytes: 1 })
            ),
            "{err}"
        );

        // A second daemon on the same path is refused while the first listens.
        let err = StdinserverListener::bind(&path).await.unwrap_err();
        assert!(matches!(err, StdinserverError::InUse { .. }), "{err}");
        drop(listener);
        // A stale socket is replaced.
        let again = StdinserverListener::bind(&path).await.unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_overlong_header_is_refused() {
        let dir = temp_dir("long").await;
        let path = dir.join("sock");
        let listener = StdinserverListener::bind(&path).await.unwrap();
        let mut long = HEADER_MAGIC.as_bytes().to_vec();
        long.extend(std::iter::repeat_n(b'a', HEADER_BYTES_MAX));
        let _c = send(&path, &long).await;
        let err = listener.accept().await.unwrap_err();
        assert!(
            matches!(err, StdinserverError::Refused(HeaderError::TooLong)),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn unsafe_places_are_refused() {
        let dir = temp_dir("unsafe").await;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = StdinserverListener::bind(&dir.join("sock"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("chmod 0700"), "{err}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let file = dir.join("file");
        std::fs::write(&file, b"keep me").unwrap();
        let err = StdinserverListener::bind(&file).await.unwrap_err();
        assert!(matches!(err, StdinserverError::NotASocket { .. }), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        let err = StdinserverListener::bind(&dir.join("missing/sock"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StdinserverError::UnsafeDirectory { .. }),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
