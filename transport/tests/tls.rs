//! The TLS transport: CN-based identities both ways, with certificates made by rcgen.
#![allow(clippy::unwrap_used)] // Test helpers may panic on broken fixtures.

mod common;

use std::sync::Arc;

use common::{Req, Resp, TestService, fast_config};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use zferry_transport::tls::{Pem, TlsClient, TlsConfigError, TlsServer};
use zferry_transport::{Client, TransportError, serve};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A certificate with CN (and SAN) `cn` signed by `ca`: (cert PEM, key PEM).
fn leaf(ca: &Ca, cn: &str) -> (String, String) {
    let mut params = CertificateParams::new(vec![cn.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

struct Setup {
    server: TlsServer,
    client: TlsClient,
}

/// One CA for everything; the server is `server.example`, the client `client_cn`.
fn setup(client_cn: &str, client_cns: &[&str], server_cn: &str) -> Setup {
    let ca = ca("zferry test CA");
    let (server_cert, server_key) = leaf(&ca, "server.example");
    let (client_cert, client_key) = leaf(&ca, client_cn);
    let cns: Vec<String> = client_cns.iter().map(|s| s.to_string()).collect();
    let server = TlsServer::new(
        Pem::Inline {
            ca: ca.pem.as_bytes(),
            cert: server_cert.as_bytes(),
            key: server_key.as_bytes(),
        },
        &cns,
    )
    .unwrap();
    let client = TlsClient::new(
        Pem::Inline {
            ca: ca.pem.as_bytes(),
            cert: client_cert.as_bytes(),
            key: client_key.as_bytes(),
        },
        server_cn,
    )
    .unwrap();
    Setup { server, client }
}

type Outcome = (
    Result<zferry_core::name::Component, TransportError>,
    Result<Resp, TransportError>,
);

/// Runs TLS and then the zferry protocol over an in-memory pipe; returns what each side saw.
async fn run(setup: Setup) -> Outcome {
    let (a, b) = tokio::io::duplex(1 << 16);
    let server = tokio::spawn(async move {
        let (tls, identity) = setup.server.accept(b).await?;
        let served = tokio::spawn(serve(tls, Arc::new(TestService::default()), fast_config()));
        drop(served);
        Ok(identity)
    });
    let client = async {
        let tls = setup.client.connect(a).await?;
        let client: Client<Req, Resp> = Client::connect(tls, fast_config()).await?;
        client.call(&Req::Echo("over tls".to_owned())).await
    }
    .await;
    (server.await.unwrap(), client)
}

#[tokio::test(start_paused = true)]
async fn a_known_client_cn_is_the_identity() {
    let (identity, answer) = run(setup(
        "backup-host",
        &["backup-host", "other"],
        "server.example",
    ))
    .await;
    assert_eq!(identity.unwrap().as_str(), "backup-host");
    assert_eq!(answer.unwrap(), Resp::Echo("over tls".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn an_unknown_client_cn_is_refused() {
    let (identity, answer) = run(setup("intruder", &["backup-host"], "server.example")).await;
    let err = identity.unwrap_err().to_string();
    assert!(err.contains("`intruder` is not in client_cns"), "{err}");
    assert!(answer.is_err(), "{answer:?}");
}

#[tokio::test(start_paused = true)]
async fn a_server_with_another_cn_is_refused_by_the_client() {
    let (identity, answer) = run(setup("backup-host", &["backup-host"], "expected.example")).await;
    let err = answer.unwrap_err().to_string();
    assert!(
        err.contains("server certificate CN `server.example` is not the expected server_cn `expected.example`"),
        "{err}"
    );
    assert!(identity.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_client_certificate_from_another_ca_is_refused() {
    let mut s = setup("backup-host", &["backup-host"], "server.example");
    let rogue = ca("rogue CA");
    let (cert, key) = leaf(&rogue, "backup-host");
    let ca_pem = ca("any").pem;
    // The client trusts nothing useful either; only the server's verdict matters here.
    s.client = TlsClient::new(
        Pem::Inline {
            ca: ca_pem.as_bytes(),
            cert: cert.as_bytes(),
            key: key.as_bytes(),
        },
        "server.example",
    )
    .unwrap();
    let (identity, answer) = run(s).await;
    assert!(identity.is_err());
    assert!(answer.is_err());
}

#[test]
fn client_cns_must_be_identities_and_pem_must_parse() {
    let ca = ca("c");
    let (cert, key) = leaf(&ca, "s");
    let pem = Pem::Inline {
        ca: ca.pem.as_bytes(),
        cert: cert.as_bytes(),
        key: key.as_bytes(),
    };
    let err = TlsServer::new(pem, &["a/b".to_owned()]).unwrap_err();
    assert!(matches!(err, TlsConfigError::BadClientCn { .. }), "{err}");
    let err = TlsServer::new(
        Pem::Inline {
            ca: b"not pem",
            cert: cert.as_bytes(),
            key: key.as_bytes(),
        },
        &[],
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("CA in inline PEM contains no certificate"),
        "{err}"
    );
    let err = TlsClient::new(
        Pem::Files {
            ca: "/nonexistent/ca.pem".as_ref(),
            cert: "/nonexistent/c.pem".as_ref(),
            key: "/nonexistent/k.pem".as_ref(),
        },
        "s",
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}
