//! The `tls` transport (zrepl's config keys), with rustls and the ring provider.
//!
//! Server: `ca` (the CA that signs client certificates), `cert`, `key`, and `client_cns`: a
//! client certificate must chain to `ca` and carry one of these CNs, which becomes the client's
//! identity; any other client is refused during the TLS handshake. Client: `ca` (the CA that
//! signs the server certificate), `cert`, `key`, and `server_cn`: the server certificate must
//! chain to `ca` and carry exactly this CN. As in zrepl, the CN is what is checked, not the
//! host name: webpki only checks SANs, so the server check is a verifier of our own (chain
//! first, with rustls' own function, then the CN).
//!
//! Both ends are generic over the underlying stream, so TLS also runs over turmoil.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use zferry_core::name::NameError;

use crate::error::TransportError;
use crate::identity::{ClientIdentity, parse_client_identity};

/// zrepl's default `handshake_timeout`.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most certificates read from one PEM file (a CA bundle is a few dozen at most).
pub const PEM_CERTS_MAX: usize = 1000;

/// Why a TLS configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsConfigError {
    /// A PEM file or text could not be read.
    #[error("cannot read the {what} from {source_name}: {detail}")]
    Pem {
        /// "CA", "certificate", "key".
        what: &'static str,
        /// The file, or "inline PEM".
        source_name: String,
        /// What failed.
        detail: String,
    },
    /// A PEM file holds no certificate.
    #[error("the {what} in {source_name} contains no certificate")]
    NoCertificate {
        /// "CA", "certificate".
        what: &'static str,
        /// The file, or "inline PEM".
        source_name: String,
    },
    /// A `client_cns` entry is not a valid client identity.
    #[error("client_cns: `{cn}` cannot be a client identity: {source}")]
    BadClientCn {
        /// The entry.
        cn: String,
        /// The name rule it broke.
        source: NameError,
    },
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS configuration refused: {detail}")]
    Rustls {
        /// rustls' message.
        detail: String,
    },
}

/// PEM-encoded certificates and key, from files or from memory.
#[derive(Debug, Clone, Copy)]
pub enum Pem<'a> {
    /// PEM files.
    Files {
        /// The CA certificate(s).
        ca: &'a Path,
        /// This side's certificate chain.
        cert: &'a Path,
        /// This side's private key.
        key: &'a Path,
    },
    /// PEM text (tests, or a secret store).
    Inline {
        /// The CA certificate(s).
        ca: &'a [u8],
        /// This side's certificate chain.
        cert: &'a [u8],
        /// This side's private key.
        key: &'a [u8],
    },
}

struct Material {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Pem<'_> {
    fn load(&self) -> Result<Material, TlsConfigError> {
        let (ca, chain, key) = match *self {
            Pem::Files { ca, cert, key } => (
                certs_from_file("CA", ca)?,
                certs_from_file("certificate", cert)?,
                PrivateKeyDer::from_pem_file(key).map_err(|e| TlsConfigError::Pem {
                    what: "key",
                    source_name: key.display().to_string(),
                    detail: e.to_string(),
                })?,
            ),
            Pem::Inline { ca, cert, key } => (
                certs_from_slice("CA", ca)?,
                certs_from_slice("certificate", cert)?,
                PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsConfigError::Pem {
                    what: "key",
                    source_name: "inline PEM".to_owned(),
                    detail: e.to_string(),
                })?,
            ),
        };
        let mut roots = RootCertStore::empty();
        for cert in ca {
            roots.add(cert).map_err(rustls_error)?;
        }
        Ok(Material {
            roots: Arc::new(roots),
            chain,
            key,
        })
    }
}

fn certs_from_file(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let source_name = path.display().to_string();
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| TlsConfigError::Pem {
        what,
        source_name: source_name.clone(),
        detail: e.to_string(),
    })?;
    collect_certs(what, source_name, iter)
}

fn certs_from_slice(
    what: &'static str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    collect_certs(
        what,
        "inline PEM".to_owned(),
        CertificateDer::pem_slice_iter(pem),
    )
}

fn collect_certs(
    what: &'static str,
    source_name: String,
    iter: impl Iterator<Item = Result<CertificateDer<'static>, rustls::pki_types::pem::Error>>,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let mut certs = Vec::new();
    for cert in iter.take(PEM_CERTS_MAX) {
        certs.push(cert.map_err(|e| TlsConfigError::Pem {
            what,
            source_name: source_name.clone(),
            detail: e.to_string(),
        })?);
    }
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate { what, source_name });
    }
    Ok(certs)
}

fn rustls_error(e: impl fmt::Display) -> TlsConfigError {
    TlsConfigError::Rustls {
        detail: e.to_string(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CN of a DER certificate.
pub fn common_name(cert: &CertificateDer<'_>) -> Result<String, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("unparsable certificate: {e}"))?;
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()
        .ok_or_else(|| "the certificate has no CN".to_owned())?;
    cn.as_str()
        .map(str::to_owned)
        .map_err(|e| format!("the certificate's CN is not text: {e}"))
}

/// A `tls` server: completes the TLS handshake and names the client by its certificate's CN.
#[derive(Clone)]
pub struct TlsServer {
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Builds the server side from `ca`, `cert`, `key` and `client_cns`.
    pub fn new(pem: Pem<'_>, client_cns: &[String]) -> Result<Self, TlsConfigError> {
        let mut allowed = BTreeSet::new();
        for cn in client_cns {
            let id = parse_client_identity(cn).map_err(|source| TlsConfigError::BadClientCn {
                cn: cn.clone(),
                source,
            })?;
            allowed.insert(id.as_str().to_owned());
        }
        let material = pem.load()?;
        let provider = provider();
        let inner = WebPkiClientVerifier::builder_with_provider(material.roots, provider.clone())
            .build()
            .map_err(rustls_error)?;
        let verifier = Arc::new(CnClientVerifier { inner, allowed });
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(rustls_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(material.chain, material.key)
            .map_err(rustls_error)?;
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
        })
    }

    /// Changes the handshake deadline (zrepl's `handshake_timeout`).
    pub fn with_handshake_timeout(mut self, deadline: Duration) -> Self {
        self.handshake_timeout = deadline;
        self
    }

    /// Runs the TLS handshake on an accepted stream; returns the encrypted stream and the
    /// client's identity (its certificate's CN, which the handshake checked).
    pub async fn accept<S>(
        &self,
        stream: S,
    ) -> Result<(tokio_rustls::server::TlsStream<S>, ClientIdentity), TransportError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let tls = tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream))
            .await
            .map_err(|_| TransportError::Timeout {
                what: "TLS handshake",
                after: self.handshake_timeout,
            })?
            .map_err(|e| TransportError::io("TLS handshake", &e))?;
        let refused = |detail: String| TransportError::Io {
            op: "TLS handshake",
            kind: std::io::ErrorKind::PermissionDenied,
            detail,
        };
        let cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .ok_or_else(|| refused("the client sent no certificate".to_owned()))?;
        let cn = common_name(cert).map_err(refused)?;
        let identity = parse_client_identity(&cn).map_err(|e| refused(e.to_string()))?;
        Ok((tls, identity))
    }
}

/// A `tls` client: checks the server's certificate against `ca` and `server_cn`.
#[derive(Clone)]
pub struct TlsClient {
    connector: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    handshake_timeout: Duration,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Builds the client side from `ca`, `cert`, `key` and `server_cn`.
    pub fn new(pem: Pem<'_>, server_cn: &str) -> Result<Self, TlsConfigError> {
        let material = pem.load()?;
        let provider = provider();
        let verifier = Arc::new(CnServerVerifier {
            roots: material.roots,
            server_cn: server_cn.to_owned(),
            provider: provider.clone(),
        });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(rustls_error)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(material.chain, material.key)
            .map_err(rustls_error)?;
        // The name only goes into SNI; the verifier checks the CN. A CN that is no DNS name
        // (zrepl allows any) is sent as a neutral name.
        let server_name = ServerName::try_from(server_cn.to_owned())
            .or_else(|_| ServerName::try_from("zferry.invalid"))
            .map_err(rustls_error)?;
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
            handshake_timeout: TLS_HANDSHAKE_TIMEOUT,
        })
    }

    /// Changes the handshake deadline.
    pub fn with_handshake_timeout(mut self, deadline: Duration) -> Self {
        self.handshake_timeout = deadline;
        self
    }

    /// Runs the TLS handshake on a dialed stream.
    pub async fn connect<S>(
        &self,
        stream: S,
    ) -> Result<tokio_rustls::client::TlsStream<S>, TransportError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        tokio::time::timeout(
            self.handshake_timeout,
            self.connector.connect(self.server_name.clone(), stream),
        )
        .await
        .map_err(|_| TransportError::Timeout {
            what: "TLS handshake",
            after: self.handshake_timeout,
        })?
        .map_err(|e| TransportError::io("TLS handshake", &e))
    }
}

/// webpki's client verification, then the CN must be one of `client_cns`.
#[derive(Debug)]
struct CnClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: BTreeSet<String>,
}

impl ClientCertVerifier for CnClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cn = common_name(end_entity).map_err(rustls::Error::General)?;
        if !self.allowed.contains(&cn) {
            return Err(rustls::Error::General(format!(
                "client certificate CN `{cn}` is not in client_cns"
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The chain must lead to `ca` and the CN must be `server_cn` (webpki would check SANs
/// against the host name instead).
#[derive(Debug)]
struct CnServerVerifier {
    roots: Arc<RootCertStore>,
    server_cn: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CnServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let cn = common_name(end_entity).map_err(rustls::Error::General)?;
        if cn != self.server_cn {
            return Err(rustls::Error::General(format!(
                "server certificate CN `{cn}` is not the expected server_cn `{}`",
                self.server_cn
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
