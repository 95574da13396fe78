//! The webhook deliverer: one HTTP POST per finding, and what the response means.
//!
//! Every request carries the alert id twice: `Idempotency-Key` (the IETF draft header, honoured
//! by APIs that support idempotent POSTs) and `X-Chainwatch-Alert-Id`. Presets also put it in
//! the body where the tool deduplicates on its own ([`crate::presets`]).
//!
//! [`classify`] is the pure decision: 2xx is delivered; 408, 425, 429 and 5xx are worth
//! retrying (with the `Retry-After` the destination sent); any other status is a rejection,
//! dead-lettered with the response. Redirects are not followed (a POST must not turn into a
//! GET): a 3xx is a rejection that says to fix the URL.
//!
//! Secrets stay out of logs: a URL from a secret is never printed, client errors are stripped
//! of their URL, and credential headers are marked sensitive.

use std::path::Path;
use std::sync::Once;
use std::time::{Duration, SystemTime};

use chainwatch_config::service::{Auth, WebhookConfig};
use chainwatch_model::Alert;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::deliver::{Outcome, SinkError};
use crate::presets::PayloadBuilder;
use crate::retry::parse_retry_after;

/// The header that carries the alert id as an idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// The header that carries the alert id for receivers that look for it by name.
pub const ALERT_ID_HEADER: &str = "X-Chainwatch-Alert-Id";
/// Most bytes of a response body kept for logs and dead letters.
pub const MAX_BODY_KEPT: usize = 4096;

/// What the preset knows about the tool's duplicate answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duplicates {
    /// The tool has no duplicate answer of its own.
    Plain,
    /// TheHive refuses an alert whose (type, source, sourceRef) exists with a 400 (older
    /// releases) or 409 saying it "already exists": the finding is already there.
    TheHive,
}

/// What a response means for the finding.
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
    duplicates: Duplicates,
) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Delivered { duplicate: false };
    }
    if duplicates == Duplicates::TheHive
        && matches!(status, 400 | 409)
        && body.to_ascii_lowercase().contains("already exists")
    {
        return Outcome::Delivered { duplicate: true };
    }
    if matches!(status, 408 | 425 | 429) || (500..600).contains(&status) {
        return Outcome::Retry {
            after: retry_after,
            error: format!("HTTP {status}: {}", first_line(body)),
        };
    }
    let error = if (300..400).contains(&status) {
        format!("HTTP {status}: the endpoint redirects; configure the final URL")
    } else {
        format!("HTTP {status}: {}", first_line(body))
    };
    Outcome::Reject {
        status: Some(status),
        body: body.to_owned(),
        error,
    }
}

fn first_line(body: &str) -> String {
    let line = body.lines().next().unwrap_or_default();
    line.chars().take(200).collect()
}

/// A webhook destination.
#[derive(Debug)]
pub struct Webhook {
    name: String,
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    basic: Option<(String, chainwatch_config::Secret)>,
    payload: PayloadBuilder,
    duplicates: Duplicates,
}

fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    // reqwest is built without a TLS provider of its own: rustls with `ring` is the process's
    // provider (it builds with cc only; aws-lc-rs would need cmake on these machines).
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Webhook {
    /// Builds the client for `config` (secrets already read); relative paths under `base_dir`.
    pub fn new(config: &WebhookConfig, base_dir: &Path) -> Result<Self, SinkError> {
        install_crypto_provider();
        let name = config.name.clone();
        let setup = |message: String| SinkError::Setup {
            sink: name.clone(),
            message,
        };
        let url = reqwest::Url::parse(config.url.expose()).map_err(|e| {
            setup(if config.url.is_secret() {
                format!("the url from {} is not a URL ({e})", config.url)
            } else {
                format!("url {:?} is not a URL ({e})", config.url.expose())
            })
        })?;
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| setup(format!("header {k:?}: {e}")))?;
            let mut value = HeaderValue::from_str(v.expose()).map_err(|_| {
                setup(format!(
                    "header {k:?}: the value is not a valid header value"
                ))
            })?;
            value.set_sensitive(v.is_secret());
            headers.insert(name, value);
        }
        match &config.auth {
            Some(Auth::Bearer(token)) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| setup(format!("auth: {token} is not a valid header value")))?;
                v.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, v);
            }
            // Basic credentials are added per request by reqwest (encoded, marked sensitive).
            Some(Auth::Basic { .. }) => {}
            Some(Auth::Header { name: h, value }) => {
                let hn = HeaderName::from_bytes(h.as_bytes())
                    .map_err(|e| setup(format!("auth header {h:?}: {e}")))?;
                let mut v = HeaderValue::from_str(value.expose())
                    .map_err(|_| setup(format!("auth: {value} is not a valid header value")))?;
                v.set_sensitive(true);
                headers.insert(hn, v);
            }
            None => {}
        }
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("chainwatch/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_file {
            let path = if ca.is_absolute() {
                ca.clone()
            } else {
                base_dir.join(ca)
            };
            let pem = std::fs::read(&path)
                .map_err(|e| setup(format!("ca_file {}: {e}", path.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| setup(format!("ca_file {}: {e}", path.display())))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| setup(format!("HTTP client: {}", e.without_url())))?;
        let payload = PayloadBuilder::new(&config.payload).map_err(|e| setup(e.to_string()))?;
        let duplicates = match config.payload {
            chainwatch_config::service::Payload::TheHive { .. } => Duplicates::TheHive,
            _ => Duplicates::Plain,
        };
        Ok(Self {
            name: config.name.clone(),
            client,
            url,
            headers,
            basic: match &config.auth {
                Some(Auth::Basic { user, password }) => Some((user.clone(), password.clone())),
                _ => None,
            },
            payload,
            duplicates,
        })
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// One attempt to deliver `alert`.
    pub async fn attempt(&self, alert: &Alert) -> Outcome {
        let body = match self.payload.build(alert) {
            Ok(b) => b,
            Err(e) => {
                return Outcome::Reject {
                    status: None,
                    body: String::new(),
                    error: format!("cannot build the {} payload: {e}", self.payload.preset()),
                };
            }
        };
        let id = alert.id.to_string();
        let mut request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, body.content_type)
            .header(IDEMPOTENCY_HEADER, &id)
            .header(ALERT_ID_HEADER, &id)
            .body(body.bytes);
        if let Some((user, password)) = &self.basic {
            request = request.basic_auth(user, Some(password.expose()));
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                // Timeouts, refused connections, TLS failures: all may pass. The URL is cut
                // from the message: it may be a credential.
                return Outcome::Retry {
                    after: None,
                    error: describe_error(&e),
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = match response.bytes().await {
            Ok(b) => String::from_utf8_lossy(&b[..b.len().min(MAX_BODY_KEPT)]).into_owned(),
            Err(e) if (200..300).contains(&status) => {
                // The destination said yes; a body cut short does not change that.
                tracing::debug!(sink = %self.name, error = %describe_error(&e), "response body lost");
                String::new()
            }
            Err(e) => {
                return Outcome::Retry {
                    after: retry_after,
                    error: format!("HTTP {status}, then {}", describe_error(&e)),
                };
            }
        };
        classify(status, retry_after, &body, self.duplicates)
    }
}

/// A client error without its URL, with its causes.
pub fn describe_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut out = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        let d = Duplicates::Plain;
        assert_eq!(
            classify(200, None, "", d),
            Outcome::Delivered { duplicate: false }
        );
        assert_eq!(
            classify(202, None, "", d),
            Outcome::Delivered { duplicate: false }
        );
        for status in [408, 425, 429, 500, 502, 503, 504] {
            assert!(
                matches!(classify(status, None, "busy", d), Outcome::Retry { .. }),
                "{status}"
            );
        }
        let ra = Some(Duration::from_secs(3));
        assert!(matches!(
            classify(429, ra, "", d),
            Outcome::Retry { after: Some(a), .. } if a == Duration::from_secs(3)
        ));
        for status in [301, 400, 401, 403, 404, 409, 422] {
            match classify(status, None, "{\"error\":\"bad field\"}", d) {
                Outcome::Reject {
                    status: Some(s),
                    body,
                    ..
                } => {
                    assert_eq!(s, status);
                    assert!(body.contains("bad field"));
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn thehive_duplicates_count_as_delivered() {
        let body =
            r#"{"type":"CreateError","message":"Alert chainwatch:chainwatch:abc already exists"}"#;
        assert_eq!(
            classify(400, None, body, Duplicates::TheHive),
            Outcome::Delivered { duplicate: true }
        );
        assert!(matches!(
            classify(
                400,
                None,
                "{\"message\":\"invalid severity\"}",
                Duplicates::TheHive
            ),
            Outcome::Reject { .. }
        ));
        assert!(matches!(
            classify(400, None, body, Duplicates::Plain),
            Outcome::Reject { .. }
        ));
    }
}
