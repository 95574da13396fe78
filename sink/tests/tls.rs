//! HTTPS destinations: the webhook client speaks TLS (rustls with the ring provider) and
//! verifies the server's certificate against trusted roots; `ca_file` adds a private CA.
//! The server is a local TLS listener with a certificate made for the test.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::Arc;

use chainwatch_config::service::WebhookConfig;
use chainwatch_model::Alert;
use chainwatch_sink::Outcome;
use chainwatch_sink::webhook::Webhook;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

/// Serves `HTTP/1.1 201` to every request over TLS with `cert`; returns the port.
async fn https_server(cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> u16 {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to serve.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

fn webhook(port: u16, extra: &str, dir: &std::path::Path) -> Webhook {
    let config: WebhookConfig = toml::from_str(&format!(
        "name = \"tls\"\nurl = \"https://localhost:{port}/api\"\ntimeout = \"5s\"\n{extra}"
    ))
    .unwrap();
    Webhook::new(&config, dir).unwrap()
}

#[tokio::test]
async fn https_is_verified_against_trusted_roots_and_a_private_ca() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let port = https_server(&cert).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), cert.cert.pem()).unwrap();
    let alert: Alert = serde_json::from_str(include_str!("fixtures/chain-alert.json")).unwrap();

    let trusting = webhook(port, "ca_file = \"ca.pem\"", dir.path());
    assert_eq!(
        trusting.attempt(&alert).await,
        Outcome::Delivered { duplicate: false }
    );

    // Without the CA the certificate is unknown: the request fails (and would be retried),
    // it is never sent in the clear or unverified.
    let strict = webhook(port, "", dir.path());
    match strict.attempt(&alert).await {
        Outcome::Retry { error, .. } => {
            assert!(error.to_lowercase().contains("certificate"), "{error}");
            assert!(
                !error.contains("localhost:"),
                "the URL stays out of errors: {error}"
            );
        }
        other => panic!("{other:?}"),
    }
}
