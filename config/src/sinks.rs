//! `[[sinks]]`: where findings are delivered, in which form, and which findings each
//! destination takes (its route).
//!
//! Three kinds: `stdout`, `file` (JSON lines with rotation) and `webhook` (HTTP POST with a
//! payload preset for a ticketing or chat tool, or a template). Every sink may have a `route`:
//! the tenant it belongs to (a tenant's destination never receives another tenant's finding),
//! or `default = true` (findings no tenant destination took), and filters on severity and
//! playbook. Credentials come from secrets ([`crate::secret`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use chainwatch_model::{Severity, TenantId};
use serde::{Deserialize, Deserializer};

use crate::duration::serde_human;
use crate::secret::{MaybeSecret, Secret};

/// The form a terminal sink writes alerts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertFormat {
    /// chainwatch's JSON, one alert per line.
    #[default]
    Json,
    /// OCSF Detection Finding JSON, one per line.
    Ocsf,
    /// A readable multi-line rendering for terminals.
    Pretty,
}

/// A machine-readable finding format: the alert topic's, a file's, a generic webhook's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingFormat {
    /// chainwatch's own compact JSON (the `Alert` type).
    #[default]
    Json,
    /// OCSF Detection Finding (class 2004).
    Ocsf,
}

impl FindingFormat {
    /// The config spelling, also written in the `chainwatch.format` record header.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingFormat::Json => "json",
            FindingFormat::Ocsf => "ocsf",
        }
    }
}

/// Which findings a sink takes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The tenant this destination belongs to: it receives that tenant's findings and never
    /// another's. Without it (and without `default`), the sink takes every tenant's findings
    /// (an MSP-wide archive or queue).
    pub tenant: Option<String>,
    /// Take the findings that no tenant's own destination takes (tenants without a queue of
    /// their own, or findings their routes filtered out). Not with `tenant`.
    #[serde(default)]
    pub default: bool,
    /// Only findings of at least this priority (`informational` .. `critical`).
    pub min_severity: Option<Severity>,
    /// Only findings of these playbooks (by the correlation rule's name or title, as the alert
    /// carries it). Empty: any finding, with or without a playbook.
    #[serde(default)]
    pub playbooks: Vec<String>,
}

/// How long and how fast a webhook retries a finding the destination did not take.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Wait before the first retry; doubles on each failure (with jitter).
    #[serde(default = "default_initial_backoff", with = "serde_human")]
    pub initial_backoff: Duration,
    /// Longest wait between two attempts (a `Retry-After` from the destination may ask for
    /// longer, up to one hour).
    #[serde(default = "default_max_backoff", with = "serde_human")]
    pub max_backoff: Duration,
    /// How long to keep retrying one finding before it goes to the dead-letter topic:
    /// `"forever"` (the default: the alert topic is the spool, nothing is given up) or a
    /// duration such as `"24h"`.
    #[serde(default, deserialize_with = "forever_or_duration")]
    pub retry_for: Option<Duration>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            retry_for: None,
        }
    }
}

fn forever_or_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim() == "forever" {
        return Ok(None);
    }
    crate::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("{e}, or \"forever\"")))
}

/// How a webhook authenticates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer <token>` (TheHive API keys, most REST APIs).
    Bearer(Secret),
    /// HTTP basic authentication (Jira Cloud: account e-mail and API token; ServiceNow).
    Basic {
        /// The user name.
        user: String,
        /// The password or API token.
        password: Secret,
    },
    /// Any other header carrying a secret, such as `X-Api-Key`.
    Header {
        /// The header name.
        name: String,
        /// Its value.
        value: Secret,
    },
}

/// The body a webhook sends: a preset for a known tool, or a template.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "preset", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Payload {
    /// The finding itself, as JSON.
    Generic {
        /// chainwatch's JSON or OCSF.
        #[serde(default)]
        format: FindingFormat,
    },
    /// A Jira issue (`POST /rest/api/2/issue`).
    Jira {
        /// The project key, such as `SEC`.
        project: String,
        /// The issue type name.
        #[serde(default = "default_issue_type")]
        issue_type: String,
        /// Labels added to every issue (the alert id is always added as `chainwatch-<id>`).
        #[serde(default)]
        labels: Vec<String>,
    },
    /// A ServiceNow incident (`POST /api/now/table/incident`), with `correlation_id` = alert id.
    #[serde(rename = "servicenow")]
    ServiceNow {
        /// `assignment_group` (a group sys_id or name).
        assignment_group: Option<String>,
        /// `caller_id` (a user sys_id or name).
        caller_id: Option<String>,
        /// `category`.
        category: Option<String>,
    },
    /// A PagerDuty Events API v2 trigger, with `dedup_key` = alert id.
    #[serde(rename = "pagerduty")]
    PagerDuty {
        /// The integration's routing key.
        routing_key: Secret,
    },
    /// A TheHive alert (`POST /api/v1/alert`), with `sourceRef` = alert id.
    #[serde(rename = "thehive")]
    TheHive {
        /// Traffic Light Protocol level, 0 (white/clear) to 4 (red).
        #[serde(default = "default_tlp")]
        tlp: u8,
        /// Permissible Actions Protocol level, 0 (white) to 3 (red).
        #[serde(default = "default_tlp")]
        pap: u8,
    },
    /// A Slack message (incoming webhook). Takes no options (written as a struct variant so
    /// that a stray option is refused).
    Slack {},
    /// A Microsoft Teams message with an Adaptive Card (Workflows or incoming webhook).
    Teams {},
    /// A user template (MiniJinja syntax) over the finding; see the README for its variables.
    Template {
        /// The template text.
        body: Option<String>,
        /// Or a file holding it (relative to the config file's folder).
        file: Option<PathBuf>,
        /// The request's `Content-Type`.
        #[serde(default = "default_content_type")]
        content_type: String,
    },
}

impl Default for Payload {
    fn default() -> Self {
        Payload::Generic {
            format: FindingFormat::Json,
        }
    }
}

impl Payload {
    /// The preset's name, for logs and metrics.
    pub fn preset(&self) -> &'static str {
        match self {
            Payload::Generic { .. } => "generic",
            Payload::Jira { .. } => "jira",
            Payload::ServiceNow { .. } => "servicenow",
            Payload::PagerDuty { .. } => "pagerduty",
            Payload::TheHive { .. } => "thehive",
            Payload::Slack {} => "slack",
            Payload::Teams {} => "teams",
            Payload::Template { .. } => "template",
        }
    }
}

/// `kind = "webhook"`: an HTTP endpoint that takes each finding as one POST.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A name for logs, metrics and the consumer group.
    pub name: String,
    /// The endpoint (`https://...`). A secret when the URL itself is the credential (Slack,
    /// Teams).
    pub url: MaybeSecret,
    /// What to send. Default: the finding as chainwatch's JSON.
    #[serde(default)]
    pub payload: Payload,
    /// How to authenticate.
    pub auth: Option<Auth>,
    /// Extra request headers; values may be secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, MaybeSecret>,
    /// Time allowed for one request, connection included; a request that takes longer is
    /// retried.
    #[serde(default = "default_timeout", with = "serde_human")]
    pub timeout: Duration,
    /// Retry pacing and limit.
    #[serde(default)]
    pub retry: RetryConfig,
    /// A PEM file of extra root certificates to trust (a private CA in front of an on-premises
    /// ticketing server). The system's roots are always trusted.
    pub ca_file: Option<PathBuf>,
    /// Which findings this destination takes.
    #[serde(default)]
    pub route: RouteConfig,
}

/// `[[sinks]]`: one destination for alerts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SinkConfig {
    /// Standard output.
    Stdout {
        /// A name for logs, metrics and the consumer group.
        name: String,
        /// Output form.
        #[serde(default)]
        format: AlertFormat,
        /// Which findings it takes.
        #[serde(default)]
        route: RouteConfig,
    },
    /// A JSON lines file, appended to, rotated by size and/or age.
    File {
        /// A name for logs, metrics and the consumer group.
        name: String,
        /// The file (relative to the config file's folder). Rotated files sit beside it as
        /// `NAME.YYYYMMDDTHHMMSSZ.EXT`.
        path: PathBuf,
        /// chainwatch's JSON or OCSF, one finding per line.
        #[serde(default)]
        format: FindingFormat,
        /// Rotate when the file would grow past this size (`"100MB"`, `"1GiB"`).
        rotate_size: Option<ByteSize>,
        /// Rotate when the file has been written to for this long (`"1h"`, `"1d"`).
        #[serde(default, deserialize_with = "optional_duration")]
        rotate_every: Option<Duration>,
        /// Rotated files kept (the oldest beyond this are deleted); 0 keeps all.
        #[serde(default = "default_keep")]
        keep: usize,
        /// Which findings it takes.
        #[serde(default)]
        route: RouteConfig,
    },
    /// An HTTP endpoint: a ticketing system, a pager, a chat channel, or anything else.
    Webhook(Box<WebhookConfig>),
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    serde_human::deserialize(d).map(Some)
}

impl SinkConfig {
    /// The sink's name.
    pub fn name(&self) -> &str {
        match self {
            SinkConfig::Stdout { name, .. } | SinkConfig::File { name, .. } => name,
            SinkConfig::Webhook(w) => &w.name,
        }
    }

    /// Which findings the sink takes.
    pub fn route(&self) -> &RouteConfig {
        match self {
            SinkConfig::Stdout { route, .. } | SinkConfig::File { route, .. } => route,
            SinkConfig::Webhook(w) => &w.route,
        }
    }

    /// The kind, as the config spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Stdout { .. } => "stdout",
            SinkConfig::File { .. } => "file",
            SinkConfig::Webhook(_) => "webhook",
        }
    }
}

fn default_initial_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_issue_type() -> String {
    "Task".into()
}
fn default_tlp() -> u8 {
    2
}
fn default_content_type() -> String {
    "application/json".into()
}
fn default_keep() -> usize {
    10
}

/// Checks one sink and reads its secrets and template file; returns every problem found.
/// Relative paths are under `base_dir`.
pub(crate) fn check_sink(sink: &mut SinkConfig, base_dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    check_route(sink.route(), &mut problems);
    match sink {
        SinkConfig::Stdout { .. } => {}
        SinkConfig::File {
            rotate_size,
            rotate_every,
            ..
        } => {
            if rotate_size.is_some_and(|s| s.as_u64() == 0) {
                problems.push("'rotate_size' must be above 0".into());
            }
            if rotate_every.is_some_and(|d| d.is_zero()) {
                problems.push("'rotate_every' must be above 0".into());
            }
        }
        SinkConfig::Webhook(w) => check_webhook(w, base_dir, &mut problems),
    }
    problems
}

fn check_route(route: &RouteConfig, problems: &mut Vec<String>) {
    if let Some(t) = &route.tenant {
        if let Err(e) = TenantId::new(t) {
            problems.push(format!("route: 'tenant': {e}"));
        }
        if route.default {
            problems.push(
                "route: 'tenant' and 'default = true' exclude each other (a tenant's own destination is not the default one)"
                    .into(),
            );
        }
    }
    if route.playbooks.iter().any(|p| p.trim().is_empty()) {
        problems.push("route: 'playbooks' has an empty name".into());
    }
}

fn check_webhook(w: &mut WebhookConfig, base_dir: &Path, problems: &mut Vec<String>) {
    let mut resolve = |s: &mut Secret, what: &str| {
        if let Err(e) = s.resolve(base_dir) {
            problems.push(format!("{what}: {e}"));
        }
    };
    if let Some(s) = w.url.secret_mut() {
        resolve(s, "'url'");
    }
    match &mut w.auth {
        Some(Auth::Bearer(s)) => resolve(s, "'auth.bearer'"),
        Some(Auth::Basic { password, .. }) => resolve(password, "'auth.basic.password'"),
        Some(Auth::Header { value, .. }) => resolve(value, "'auth.header.value'"),
        None => {}
    }
    for (name, value) in &mut w.headers {
        if let Some(s) = value.secret_mut() {
            resolve(s, &format!("'headers.{name}'"));
        }
    }
    if let Payload::PagerDuty { routing_key } = &mut w.payload {
        resolve(routing_key, "'payload.routing_key'");
    }
    // A URL from a secret is checked only once read; its value is never quoted.
    let url = w.url.expose();
    if !(url.is_empty() || url.starts_with("https://") || url.starts_with("http://")) {
        problems.push(if w.url.is_secret() {
            "'url': the secret's value does not start with https:// or http://".into()
        } else {
            format!("'url' {url:?} does not start with https:// or http://")
        });
    }
    let header_names = w.headers.keys().map(String::as_str).chain(match &w.auth {
        Some(Auth::Header { name, .. }) => Some(name.as_str()),
        _ => None,
    });
    for name in header_names {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            problems.push(format!(
                "header name {name:?} is not a valid HTTP header name"
            ));
        }
    }
    if w.timeout.is_zero() {
        problems.push("'timeout' must be above 0".into());
    }
    if w.retry.initial_backoff.is_zero() || w.retry.initial_backoff > w.retry.max_backoff {
        problems.push("retry: 'initial_backoff' must be above 0 and at most 'max_backoff'".into());
    }
    match &mut w.payload {
        Payload::TheHive { tlp, pap } => {
            if *tlp > 4 {
                problems.push("payload: 'tlp' is 0 to 4".into());
            }
            if *pap > 3 {
                problems.push("payload: 'pap' is 0 to 3".into());
            }
        }
        Payload::Jira { project, .. } if project.trim().is_empty() => {
            problems.push("payload: 'project' is empty".into());
        }
        Payload::Template { body, file, .. } => match (body.as_ref(), file.as_ref()) {
            (Some(_), None) => {}
            (None, Some(path)) => {
                let p = if path.is_absolute() {
                    path.clone()
                } else {
                    base_dir.join(path)
                };
                match std::fs::read_to_string(&p) {
                    Ok(text) => *body = Some(text),
                    Err(e) => problems.push(format!(
                        "payload: cannot read the template {}: {e}",
                        p.display()
                    )),
                }
            }
            _ => problems.push("payload: a template needs exactly one of 'body' and 'file'".into()),
        },
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Sinks {
        sinks: Vec<SinkConfig>,
    }

    fn parse(text: &str) -> Vec<SinkConfig> {
        toml::from_str::<Sinks>(text).unwrap().sinks
    }

    #[test]
    fn reads_every_kind_with_presets_routes_and_defaults() {
        let sinks = parse(
            r#"
[[sinks]]
kind = "webhook"
name = "acme-jira"
url = "https://acme.atlassian.net/rest/api/2/issue"
payload = { preset = "jira", project = "SEC" }
auth = { basic = { user = "soc@msp.example", password = { env = "ACME_JIRA_TOKEN" } } }
route = { tenant = "acme", min_severity = "high", playbooks = ["exchange-to-ransomware"] }
retry = { initial_backoff = "1s", retry_for = "24h" }

[[sinks]]
kind = "webhook"
name = "pager"
url = "https://events.pagerduty.com/v2/enqueue"
payload = { preset = "pagerduty", routing_key = { file = "pd.key" } }
route = { default = true }

[[sinks]]
kind = "webhook"
name = "chat"
url = { env = "SLACK_WEBHOOK_URL" }
payload = { preset = "slack" }

[[sinks]]
kind = "file"
name = "archive"
path = "alerts.jsonl"
format = "ocsf"
rotate_size = "100MB"
rotate_every = "1d"
"#,
        );
        let SinkConfig::Webhook(jira) = &sinks[0] else {
            panic!("{sinks:?}")
        };
        assert_eq!(
            jira.payload,
            Payload::Jira {
                project: "SEC".into(),
                issue_type: "Task".into(),
                labels: vec![]
            }
        );
        assert_eq!(jira.route.tenant.as_deref(), Some("acme"));
        assert_eq!(jira.route.min_severity, Some(Severity::High));
        assert_eq!(jira.retry.retry_for, Some(Duration::from_secs(86400)));
        assert_eq!(jira.retry.max_backoff, Duration::from_secs(300));
        assert_eq!(jira.timeout, Duration::from_secs(10));
        let SinkConfig::Webhook(pager) = &sinks[1] else {
            panic!()
        };
        assert_eq!(pager.retry.retry_for, None, "retries forever by default");
        assert!(pager.route.default);
        let SinkConfig::Webhook(chat) = &sinks[2] else {
            panic!()
        };
        assert!(chat.url.is_secret());
        assert_eq!(chat.payload, Payload::Slack {});
        let SinkConfig::File {
            format,
            rotate_size,
            rotate_every,
            keep,
            ..
        } = &sinks[3]
        else {
            panic!()
        };
        assert_eq!(*format, FindingFormat::Ocsf);
        assert_eq!(rotate_size.unwrap().as_u64(), 100_000_000);
        assert_eq!(*rotate_every, Some(Duration::from_secs(86400)));
        assert_eq!(*keep, 10);
    }

    #[test]
    fn preset_options_are_checked_by_preset() {
        let missing_project: Result<Sinks, _> = toml::from_str(
            "[[sinks]]\nkind = \"webhook\"\nname = \"j\"\nurl = \"https://x\"\npayload = { preset = \"jira\" }\n",
        );
        assert!(
            missing_project.unwrap_err().to_string().contains("project"),
            "jira needs a project"
        );
        let stray: Result<Sinks, _> = toml::from_str(
            "[[sinks]]\nkind = \"webhook\"\nname = \"s\"\nurl = \"https://x\"\npayload = { preset = \"slack\", project = \"SEC\" }\n",
        );
        assert!(stray.is_err(), "slack takes no project");
        let unknown: Result<Sinks, _> = toml::from_str(
            "[[sinks]]\nkind = \"webhook\"\nname = \"w\"\nurl = \"https://x\"\ncolour = \"blue\"\n",
        );
        assert!(
            unknown.unwrap_err().to_string().contains("colour"),
            "unknown webhook keys are refused"
        );
    }

    #[test]
    fn checks_routes_urls_secrets_and_templates() {
        let dir = tempfile::tempdir().unwrap();
        let mut sinks = parse(
            r#"
[[sinks]]
kind = "webhook"
name = "w"
url = "ftp://nope"
payload = { preset = "template" }
route = { tenant = "acme", default = true }
headers = { "Bad Header" = "x", "X-Key" = { env = "CHAINWATCH_TEST_SURELY_UNSET_VARIABLE" } }
retry = { initial_backoff = "10m", max_backoff = "1m" }

[[sinks]]
kind = "webhook"
name = "t"
url = "https://x"
payload = { preset = "template", file = "ticket.j2" }
"#,
        );
        std::fs::write(dir.path().join("ticket.j2"), "{{ alert.id }}").unwrap();
        let problems = check_sink(&mut sinks[0], dir.path());
        let all = problems.join("\n");
        for expected in [
            "exclude each other",
            "ftp://nope",
            "Bad Header",
            "CHAINWATCH_TEST_SURELY_UNSET_VARIABLE is not set",
            "initial_backoff",
            "exactly one of 'body' and 'file'",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
        assert_eq!(problems.len(), 6, "{all}");
        assert!(check_sink(&mut sinks[1], dir.path()).is_empty());
        let SinkConfig::Webhook(t) = &sinks[1] else {
            panic!()
        };
        let Payload::Template { body, .. } = &t.payload else {
            panic!()
        };
        assert_eq!(
            body.as_deref(),
            Some("{{ alert.id }}"),
            "the file is read at load"
        );
    }
}
