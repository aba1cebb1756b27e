//! The `tcp` transport (zrepl's config keys): a server `listen`s and maps each client's IP
//! address to an identity with `clients`; a client dials `address` within `dial_timeout`.
//! Unencrypted: use [`crate::tls`] on untrusted networks.
//!
//! `clients` maps an IP address or a CIDR prefix to an identity. A prefix's identity contains
//! exactly one `*`, which is replaced by the client's address (`10.0.0.0/24: "host-*"` names
//! 10.0.0.5 `host-10.0.0.5`); a plain address's identity contains none. The most specific
//! entry wins. A client that no entry matches is refused.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use zferry_core::name::NameError;

use crate::error::TransportError;
use crate::identity::{ClientIdentity, parse_client_identity};

/// zrepl's default `dial_timeout`.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The most entries in a `clients` map (a bound on the work per accepted connection).
pub const CLIENT_RULES_MAX: usize = 10_000;

/// The mapping of client addresses to identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMap {
    /// Plain addresses.
    exact: BTreeMap<IpAddr, ClientIdentity>,
    /// Prefixes, most specific first.
    prefixes: Vec<PrefixRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PrefixRule {
    key: String,
    network: IpAddr,
    len: u8,
    before: String,
    after: String,
}

/// Why a `clients` map is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientMapError {
    /// The key is neither an IP address nor a CIDR prefix.
    #[error("clients: `{key}` is not an IP address or CIDR prefix (like 10.0.0.0/24): {detail}")]
    BadKey {
        /// The key.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// A plain address's identity contains `*`.
    #[error(
        "clients: `{key}` is a single address, so its identity `{identity}` must not contain `*`"
    )]
    WildcardForAddress {
        /// The key.
        key: String,
        /// The identity.
        identity: String,
    },
    /// A prefix's identity does not contain exactly one `*`.
    #[error(
        "clients: `{key}` is a prefix, so its identity `{identity}` must contain exactly one `*` (replaced by the client's address)"
    )]
    WildcardCount {
        /// The key.
        key: String,
        /// The identity.
        identity: String,
    },
    /// Two keys name the same address or prefix.
    #[error("clients: `{key}` and `{other}` name the same addresses")]
    Duplicate {
        /// One key.
        key: String,
        /// The other.
        other: String,
    },
    /// The identity is not a valid dataset-name component.
    #[error("clients: the identity of `{key}` is invalid: {source}")]
    BadIdentity {
        /// The key.
        key: String,
        /// The name rule it broke.
        source: NameError,
    },
    /// Too many entries.
    #[error("clients: {n_rules} entries exceed the limit of {CLIENT_RULES_MAX}")]
    TooMany {
        /// How many there are.
        n_rules: usize,
    },
}

/// Why a connecting client was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusedClient {
    /// No entry of `clients` matches its address.
    #[error("connection from {addr} refused: no entry of `clients` matches it")]
    Unknown {
        /// Its address.
        addr: IpAddr,
    },
    /// Its address, put into the prefix's identity, is not a valid identity.
    #[error("connection from {addr} refused: the identity made by `{key}` is invalid: {source}")]
    BadIdentity {
        /// Its address.
        addr: IpAddr,
        /// The matching key.
        key: String,
        /// The name rule it broke.
        source: NameError,
    },
}

impl ClientMap {
    /// Parses zrepl's `clients` mapping.
    pub fn parse(clients: &BTreeMap<String, String>) -> Result<Self, ClientMapError> {
        if clients.len() > CLIENT_RULES_MAX {
            return Err(ClientMapError::TooMany {
                n_rules: clients.len(),
            });
        }
        let mut exact = BTreeMap::new();
        let mut exact_keys: BTreeMap<IpAddr, &str> = BTreeMap::new();
        let mut prefixes: BTreeMap<(IpAddr, u8), PrefixRule> = BTreeMap::new();
        for (key, identity) in clients {
            let bad_key = |detail: String| ClientMapError::BadKey {
                key: key.clone(),
                detail,
            };
            let n_stars = identity.matches('*').count();
            match key.split_once('/') {
                None => {
                    let addr: IpAddr = key.parse().map_err(|e| bad_key(format!("{e}")))?;
                    let addr = addr.to_canonical();
                    if n_stars > 0 {
                        return Err(ClientMapError::WildcardForAddress {
                            key: key.clone(),
                            identity: identity.clone(),
                        });
                    }
                    let id = parse_client_identity(identity).map_err(|source| {
                        ClientMapError::BadIdentity {
                            key: key.clone(),
                            source,
                        }
                    })?;
                    if let Some(other) = exact_keys.insert(addr, key) {
                        return Err(ClientMapError::Duplicate {
                            key: key.clone(),
                            other: other.to_owned(),
                        });
                    }
                    exact.insert(addr, id);
                }
                Some((addr, len)) => {
                    let addr: IpAddr = addr.parse().map_err(|e| bad_key(format!("{e}")))?;
                    let len: u8 = len
                        .parse()
                        .map_err(|_| bad_key(format!("prefix length `{len}` is not a number")))?;
                    let max = if addr.is_ipv4() { 32 } else { 128 };
                    if len > max {
                        return Err(bad_key(format!("prefix length {len} exceeds {max}")));
                    }
                    let Some((before, after)) = identity.split_once('*').filter(|_| n_stars == 1)
                    else {
                        return Err(ClientMapError::WildcardCount {
                            key: key.clone(),
                            identity: identity.clone(),
                        });
                    };
                    // The template must make valid identities; a sample address checks it.
                    parse_client_identity(&format!("{before}0{after}")).map_err(|source| {
                        ClientMapError::BadIdentity {
                            key: key.clone(),
                            source,
                        }
                    })?;
                    let network = mask(addr, len);
                    let rule = PrefixRule {
                        key: key.clone(),
                        network,
                        len,
                        before: before.to_owned(),
                        after: after.to_owned(),
                    };
                    if let Some(other) = prefixes.insert((network, len), rule) {
                        return Err(ClientMapError::Duplicate {
                            key: key.clone(),
                            other: other.key,
                        });
                    }
                }
            }
        }
        let mut prefixes: Vec<PrefixRule> = prefixes.into_values().collect();
        prefixes.sort_by(|a, b| b.len.cmp(&a.len).then_with(|| a.network.cmp(&b.network)));
        Ok(Self { exact, prefixes })
    }

    /// The identity of a client connecting from `addr`.
    pub fn identity(&self, addr: IpAddr) -> Result<ClientIdentity, RefusedClient> {
        let addr = addr.to_canonical();
        if let Some(id) = self.exact.get(&addr) {
            return Ok(id.clone());
        }
        let rule = self
            .prefixes
            .iter()
            .find(|rule| {
                rule.network.is_ipv4() == addr.is_ipv4() && mask(addr, rule.len) == rule.network
            })
            .ok_or(RefusedClient::Unknown { addr })?;
        let id = format!("{}{addr}{}", rule.before, rule.after);
        parse_client_identity(&id).map_err(|source| RefusedClient::BadIdentity {
            addr,
            key: rule.key.clone(),
            source,
        })
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

/// A `tcp` server: accepts connections and names each client.
#[derive(Debug)]
pub struct TcpServer {
    listener: TcpListener,
    clients: ClientMap,
}

/// Why accepting a connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// The client is not allowed; the connection was closed. Keep accepting.
    #[error(transparent)]
    Refused(#[from] RefusedClient),
    /// The listener failed (e.g. out of file descriptors); retry after a pause.
    #[error(transparent)]
    Listener(TransportError),
}

impl TcpServer {
    /// Listens on `listen` (`host:port`).
    pub async fn bind(listen: &str, clients: ClientMap) -> Result<Self, TransportError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| TransportError::io("listen", &e))?;
        Ok(Self { listener, clients })
    }

    /// The address it listens on (for `listen: ":0"` in tests).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts the next connection and names its client.
    pub async fn accept(&self) -> Result<(TcpStream, ClientIdentity), AcceptError> {
        let (stream, peer) = self
            .listener
            .accept()
            .await
            .map_err(|e| AcceptError::Listener(TransportError::io("accept", &e)))?;
        let identity = self.clients.identity(peer.ip())?;
        // Latency of small requests matters more than packet count.
        stream
            .set_nodelay(true)
            .map_err(|e| AcceptError::Listener(TransportError::io("accept", &e)))?;
        Ok((stream, identity))
    }
}

/// Dials `address` (`host:port`) within `dial_timeout`.
pub async fn connect(address: &str, dial_timeout: Duration) -> Result<TcpStream, TransportError> {
    let stream = tokio::time::timeout(dial_timeout, TcpStream::connect(address))
        .await
        .map_err(|_| TransportError::Timeout {
            what: "dial",
            after: dial_timeout,
        })?
        .map_err(|e| TransportError::io("dial", &e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| TransportError::io("dial", &e))?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fixture`: `key = identity` lines; `lookups`: `addr -> identity` or `addr -> refused`.
    fn check(fixture: &str, lookups: &str) {
        let clients: BTreeMap<String, String> = fixture
            .lines()
            .filter_map(|l| l.split_once(" = "))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let map = ClientMap::parse(&clients).unwrap();
        for line in lookups.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (addr, expected) = line.split_once(" -> ").unwrap();
            let got = match map.identity(addr.parse().unwrap()) {
                Ok(id) => id.to_string(),
                Err(RefusedClient::Unknown { .. }) => "refused".to_owned(),
                Err(e) => format!("invalid: {e}"),
            };
            assert_eq!(got, expected, "{addr}");
        }
    }

    #[test]
    fn most_specific_entry_wins() {
        check(
            "
            10.0.0.1 = gateway
            10.0.0.0/24 = lan-*
            10.0.0.0/8 = corp-*
            fd00::/64 = v6-*
            ::1 = localhost
            ",
            "
            10.0.0.1 -> gateway
            10.0.0.7 -> lan-10.0.0.7
            10.9.0.7 -> corp-10.9.0.7
            11.0.0.1 -> refused
            fd00::5 -> v6-fd00::5
            fd01::5 -> refused
            ::1 -> localhost
            ::ffff:10.0.0.1 -> gateway
            ",
        );
    }

    #[test]
    fn zero_length_prefix_matches_everything_of_its_family() {
        check(
            "0.0.0.0/0 = any-*",
            "
            192.168.1.1 -> any-192.168.1.1
            ::2 -> refused
            ",
        );
    }

    #[test]
    fn invalid_maps_are_refused_with_the_key() {
        let cases = [
            ("10.0.0.1", "a*", "must not contain `*`"),
            ("10.0.0.0/24", "host", "exactly one `*`"),
            ("10.0.0.0/24", "a*b*", "exactly one `*`"),
            ("10.0.0.0/33", "a*", "exceeds 32"),
            ("10.0.0.0/x", "a*", "not a number"),
            ("example.com", "a", "not an IP address"),
            ("10.0.0.1", "a/b", "identity of `10.0.0.1` is invalid"),
            ("10.0.0.1", "..", "identity of `10.0.0.1` is invalid"),
            ("10.0.0.0/8", "x@*", "identity of `10.0.0.0/8` is invalid"),
        ];
        for (key, identity, expected) in cases {
            let map = BTreeMap::from([(key.to_owned(), identity.to_owned())]);
            let err = ClientMap::parse(&map).unwrap_err().to_string();
            assert!(err.contains(expected), "{key} = {identity}: {err}");
        }
        let dup = BTreeMap::from([
            ("10.0.0.0/8".to_owned(), "a*".to_owned()),
            ("10.1.0.0/8".to_owned(), "b*".to_owned()),
        ]);
        assert!(matches!(
            ClientMap::parse(&dup),
            Err(ClientMapError::Duplicate { .. })
        ));
    }
}
