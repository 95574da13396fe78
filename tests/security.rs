//! Kafka security settings reach librdkafka: the whole pipeline over TLS with a private CA, a
//! broker certificate from another CA refused and reported, a CA file that does not exist
//! refused at start-up, and SASL credentials from `[kafka.secrets]` passed on but never shown
//! in logs, `/metrics` or `/readyz`.
//!
//! Tansu 0.6.0 does not speak TLS, so the tests put a TLS front of their own (rustls, a
//! certificate made for the test) before a Tansu of their own that advertises the front's
//! address: every connection the clients make goes through TLS.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chainwatch_model::Alert;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::http::*;
use support::tansu::Tansu;
use support::*;
use tokio_rustls::rustls;

const LIMIT: Duration = Duration::from_secs(120);

/// A certificate for 127.0.0.1 and localhost, its own CA; the PEM file of the CA is written
/// to `dir/name`.
fn certificate(dir: &Path, name: &str) -> rcgen::CertifiedKey<rcgen::KeyPair> {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    std::fs::write(dir.join(name), cert.cert.pem()).unwrap();
    cert
}

/// Listens on a free port; each connection is TLS with `cert`, forwarded in clear to
/// `upstream`. Returns the port, bound before any client needs it.
async fn tls_front(
    listener: tokio::net::TcpListener,
    cert: &rcgen::CertifiedKey<rcgen::KeyPair>,
    upstream: u16,
) {
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
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake: nothing to forward.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut broker) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            });
        }
    });
}

/// Tansu behind a TLS front with `cert`: the brokers address to give clients.
async fn broker_over_tls(cert: &rcgen::CertifiedKey<rcgen::KeyPair>) -> (Tansu, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = listener.local_addr().unwrap().port();
    let tansu = Tansu::start_advertising(Some(front));
    tls_front(listener, cert, tansu.port()).await;
    (tansu, format!("127.0.0.1:{front}"))
}

/// A client config for the TLS brokers, trusting `ca`.
fn tls_client(brokers: &str, ca: &Path) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("security.protocol", "ssl")
        .set("ssl.ca.location", ca.to_str().unwrap());
    c
}

fn config_text(names: &Names, brokers: &str, kafka: &str, extra: &str) -> String {
    names.config_text(&ConfigParts {
        brokers: Some(brokers),
        partitions: Some(1),
        options: kafka,
        http: Some(free_port()),
        extra,
        ..ConfigParts::default()
    })
}

fn http_port(config: &str) -> u16 {
    let line = config
        .lines()
        .find(|l| l.starts_with("listen = \"127.0.0.1:"))
        .unwrap();
    line.trim_end_matches('"')
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cert = certificate(dir.path(), "ca.pem");
    let ca = dir.path().join("ca.pem");
    let (_tansu, brokers) = broker_over_tls(&cert).await;
    let names = Names::new();
    let raw = names.raw("acme");

    let admin: AdminClient<DefaultClientContext> = tls_client(&brokers, &ca).create().unwrap();
    for r in admin
        .create_topics(
            [&NewTopic::new(&raw, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let alerts_file = dir.path().join("alerts.jsonl");
    let text = config_text(
        &names,
        &brokers,
        &format!(
            "\"security.protocol\" = \"ssl\"\n\"ssl.ca.location\" = \"{}\"",
            ca.display()
        ),
        &format!(
            "[[sinks]]\nkind = \"file\"\nname = \"archive\"\npath = \"{}\"\n",
            alerts_file.display()
        ),
    );
    let cfg = dir.path().join("chainwatch.toml");
    std::fs::write(&cfg, &text).unwrap();
    let cw = Chainwatch::run(&cfg, &[]);

    let producer: FutureProducer = tls_client(&brokers, &ca).create().unwrap();
    let records: Vec<Vec<u8>> = stages("EXCH01", 0).into_iter().map(|(_, r)| r).collect();
    for r in &records {
        producer
            .send(
                FutureRecord::to(&raw).key("x").payload(r),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    // The findings a replay of the same records raises, all delivered through TLS.
    let replay = std::process::Command::new(env!("CARGO_BIN_EXE_chainwatch"))
        .args(["replay", "--output", "json", "--tenant", "acme"])
        .arg({
            let f = dir.path().join("records.jsonl");
            let mut text = records.join(&b'\n');
            text.push(b'\n');
            std::fs::write(&f, text).unwrap();
            f
        })
        .output()
        .unwrap();
    let expected: BTreeSet<(String, u32)> = String::from_utf8(replay.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Alert>(l).unwrap())
        .map(|a| (a.id.to_string(), a.revision))
        .collect();
    assert!(expected.len() >= 2, "{expected:?}");
    wait_for("every finding delivered over TLS", LIMIT, || {
        let got: BTreeSet<(String, u32)> = std::fs::read_to_string(&alerts_file)
            .ok()?
            .lines()
            .map(|l| serde_json::from_str::<Alert>(l).unwrap())
            .map(|a| (a.id.to_string(), a.revision))
            .collect();
        (got == expected).then_some(())
    });
    let (status, _) = http_get(http_port(&text), "/readyz").unwrap();
    assert_eq!(status, 200);
    assert!(cw.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_from_another_ca_is_refused_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cert = certificate(dir.path(), "broker-ca.pem");
    let _other = certificate(dir.path(), "other-ca.pem");
    let (_tansu, brokers) = broker_over_tls(&cert).await;
    let names = Names::new();
    let text = config_text(
        &names,
        &brokers,
        &format!(
            "\"security.protocol\" = \"ssl\"\n\"ssl.ca.location\" = \"{}\"",
            dir.path().join("other-ca.pem").display()
        ),
        "",
    );
    // Topics are not created at start-up: the stage keeps trying to reach the broker.
    let text = text.replace("partitions = 1", "partitions = 1\ncreate_topics = false");
    let cfg = dir.path().join("chainwatch.toml");
    std::fs::write(&cfg, &text).unwrap();
    let cw = Chainwatch::run_logging(&cfg, &["--stages", "correlate"], "info,rdkafka=warn");
    let line = cw.await_line("about the certificate", LIMIT, |l| {
        l.contains("certificate verify failed")
    });
    assert!(line.contains(&brokers) || line.contains("SSL"), "{line}");
    let v = wait_for("/readyz to say the broker is unreachable", LIMIT, || {
        let (status, body) = http_get(http_port(&text), "/readyz")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (status == 503 && v["broker_reachable"] == false).then_some(v)
    });
    assert_eq!(v["ready"], false, "{v}");
    assert!(cw.stop().success());
}

#[test]
fn a_ca_file_that_does_not_exist_is_a_config_problem() {
    let dir = tempfile::tempdir().unwrap();
    let names = Names::new();
    let text = config_text(
        &names,
        "127.0.0.1:9",
        "\"security.protocol\" = \"ssl\"\n\"ssl.ca.location\" = \"/nonexistent/ca.pem\"",
        "",
    );
    let cfg = dir.path().join("chainwatch.toml");
    std::fs::write(&cfg, &text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chainwatch"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ssl.ca.location") && stderr.contains("/nonexistent/ca.pem"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_credentials_from_secrets_reach_librdkafka_and_never_show() {
    const PASSWORD: &str = "canary-sasl-pa55word-never-shown";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kafka-password"), format!("{PASSWORD}\n")).unwrap();
    let names = Names::new();
    let brokers = support::brokers();
    let text = config_text(
        &names,
        &brokers,
        "\"security.protocol\" = \"sasl_plaintext\"\n\"sasl.mechanisms\" = \"PLAIN\"\n\"sasl.username\" = \"chainwatch\"\n\"debug\" = \"conf,security\"\n\n[kafka.secrets]\n\"sasl.password\" = { file = \"kafka-password\" }",
        "",
    );
    let text = text.replace("partitions = 1", "partitions = 1\ncreate_topics = false");
    let cfg = dir.path().join("chainwatch.toml");
    std::fs::write(&cfg, &text).unwrap();
    let log = dir.path().join("chainwatch.log");
    let cw = Chainwatch::run_logged(&cfg, &["--stages", "correlate"], &log, "debug");
    let port = http_port(&text);
    // librdkafka has its configuration, the password among it, and tries SASL with it.
    wait_for("librdkafka to use SASL", LIMIT, || {
        let text = std::fs::read_to_string(&log).ok()?;
        (text.contains("sasl.password") && text.contains("SASL")).then_some(())
    });
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    let (_, readyz) = http_get(port, "/readyz").unwrap();
    assert!(cw.stop().success());
    let logged = std::fs::read_to_string(&log).unwrap();
    for (what, text) in [
        ("log", &logged),
        ("/metrics", &metrics),
        ("/readyz", &readyz),
    ] {
        assert!(
            !text.contains(PASSWORD),
            "the SASL password is in the {what}"
        );
    }
}
