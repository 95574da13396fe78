//! The operations sections of the service config: `[http]` (metrics and health endpoints),
//! `[log]` (log lines), `[metrics]` (label limits) and `[shutdown]` (how long a stop may
//! take). All optional, with named defaults.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

/// `[http]`: the HTTP server for `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the server listens on, `host:port`. The default, `127.0.0.1:9464`, is reachable
    /// from this machine only; use `0.0.0.0:9464` for a Prometheus on another host or container.
    /// Port 0 picks a free port (the address is logged at start-up).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Whether to run the server at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            enabled: true,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `[log]`: log lines, on standard error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`. The `--log-json` flag forces `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// Which lines are written: a level (`info`) or filter directives
    /// (`info,librdkafka=warn`: a target per line, `librdkafka` for the client library's own).
    /// The `RUST_LOG` variable overrides it.
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: default_level(),
        }
    }
}

/// `[metrics]`: what metrics are labelled with. Labels stay bounded: tenant, stage, source,
/// playbook, sink, reason; never host, user or event id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Label per-tenant metrics (records, events, alerts) with the tenant. `false` puts every
    /// tenant under the one value `(all)`, for very large fleets.
    #[serde(default = "default_true")]
    pub tenant_labels: bool,
    /// Most tenants with a label value of their own; tenants first seen after this many are
    /// counted under `(other)`. Keeps the number of series bounded whatever the input.
    #[serde(default = "default_max_tenant_labels")]
    pub max_tenant_labels: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            tenant_labels: true,
            max_tenant_labels: default_max_tenant_labels(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464)
}
fn default_true() -> bool {
    true
}
fn default_level() -> String {
    "info".into()
}
fn default_max_tenant_labels() -> usize {
    200
}

#[cfg(test)]
mod tests {
    use crate::ServiceConfig;

    use super::*;

    fn load(extra: &str) -> Result<ServiceConfig, crate::Diagnostics> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("playbooks")).unwrap();
        let text = format!(
            "[kafka]\nbrokers = \"127.0.0.1:9092\"\n\n[correlate]\nrules = [\"playbooks\"]\n{extra}"
        );
        ServiceConfig::from_text(&dir.path().join("chainwatch.toml"), &text)
    }

    #[test]
    fn sections_are_optional_with_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.http, HttpConfig::default());
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:9464");
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.log.level, "info");
        assert!(c.metrics.tenant_labels);
    }

    #[test]
    fn reads_the_sections() {
        let c = load(
            "[http]\nlisten = \"0.0.0.0:9000\"\n[log]\nformat = \"json\"\nlevel = \"debug\"\n\
             [metrics]\ntenant_labels = false\nmax_tenant_labels = 5\n",
        )
        .unwrap();
        assert_eq!(c.http.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "debug");
        assert!(!c.metrics.tenant_labels);
        assert_eq!(c.metrics.max_tenant_labels, 5);
    }

    #[test]
    fn bad_values_are_located() {
        let diags = load(
            "[http]\nlisten = \"everywhere\"\n[log]\nformat = \"xml\"\n[metrics]\ncolour = 1\n",
        )
        .unwrap_err();
        assert_eq!(diags.len(), 3, "{diags}");
        let lines: Vec<usize> = diags.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![7, 9, 11], "{diags}");
        assert!(diags.iter().any(|d| d.message.contains("xml")), "{diags}");
    }
}

/// `[shutdown]`: what SIGTERM (or Ctrl-C) does.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// The longest a stop takes: stages stop consuming, then have three quarters of it to get
    /// the records in flight acknowledged and the delivery in progress done; offsets are
    /// committed and the process exits by this deadline whatever is left (left work is done
    /// again after restart, never lost). A human duration such as `"30s"`.
    #[serde(
        default = "default_shutdown_timeout",
        with = "crate::duration::serde_human"
    )]
    pub timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            timeout: default_shutdown_timeout(),
        }
    }
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}
