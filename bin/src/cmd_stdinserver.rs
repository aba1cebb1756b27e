//! `zferry stdinserver`: the forced command of the `ssh+stdinserver` transport.
//!
//! The server's `authorized_keys` runs it for a client's key:
//! `command="zferry stdinserver --socket /var/run/zferry/stdinserver.sock host1",restrict KEY`.
//! It connects to the daemon's socket, names the identity in a header (the daemon answers with a
//! ready banner, which travels back to the client), then copies stdin to the socket and the
//! socket to stdout until the daemon closes the connection. See
//! `zferry_transport::stdinserver` for the trust model.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

use zferry_transport::identity::parse_client_identity;
use zferry_transport::stdinserver::{DEFAULT_SOCKET_PATH, header};

/// The relay's buffer per direction: the transport's data chunks are 1 MiB, so large reads
/// and writes keep the system calls per byte low.
const COPY_BUFFER_BYTES: usize = 256 << 10;

/// Arguments of `zferry stdinserver`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The daemon's stdinserver socket.
    #[arg(long, default_value = DEFAULT_SOCKET_PATH)]
    socket: PathBuf,
    /// The client's identity (one dataset-name component); the daemon receives its datasets
    /// below `root_fs/IDENTITY`.
    identity: String,
}

/// Runs the forced command; stdin and stdout are the ssh session's.
pub(crate) fn run(args: Args) -> ExitCode {
    let identity = match parse_client_identity(&args.identity) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("zferry stdinserver: {e}; fix the forced command in authorized_keys");
            return ExitCode::from(2);
        }
    };
    match relay(&args, &header(&identity)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zferry stdinserver: {e}");
            ExitCode::from(1)
        }
    }
}

fn relay(args: &Args, header: &[u8]) -> Result<(), String> {
    let socket = args.socket.display();
    let mut sock = UnixStream::connect(&args.socket).map_err(|e| {
        format!(
            "cannot connect to the zferry daemon at {socket}: {e}; is it running with a stdinserver listener on that path?"
        )
    })?;
    sock.write_all(header)
        .map_err(|e| format!("sending the header to {socket}: {e}"))?;
    // Duplicates of fds 0 and 1, as files: unbuffered, so each read is passed on at once.
    let mut stdin = std::fs::File::from(
        io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("duplicating stdin: {e}"))?,
    );
    let mut stdout = std::fs::File::from(
        io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("duplicating stdout: {e}"))?,
    );
    let mut up = sock
        .try_clone()
        .map_err(|e| format!("duplicating the socket: {e}"))?;
    // The client closing ssh ends stdin: pass the end on so the daemon closes its side.
    // This thread is not joined: the process exits when the daemon's side ends.
    std::thread::spawn(move || {
        if let Err(e) = relay_copy(&mut stdin, &mut up) {
            eprintln!("zferry stdinserver: copying from ssh to the daemon: {e}");
        }
        let _ = up.shutdown(Shutdown::Write);
    });
    relay_copy(&mut sock, &mut stdout)
        .map_err(|e| format!("copying from the daemon at {socket} to ssh: {e}"))?;
    Ok(())
}

/// Copies until `from` ends, writing each read at once. (`io::copy` may splice pipes into
/// the socket on Linux, which held back a small write behind the next one over sshd.)
fn relay_copy(from: &mut impl Read, to: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    let mut n_bytes = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(n_bytes),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        n_bytes += n as u64;
    }
}
