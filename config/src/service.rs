//! The service config: one TOML file that says where telemetry comes from, which rules run and
//! where findings go.
//!
//! [`ServiceConfig::load`] reports every problem at once, each with its file and line: syntax
//! errors, unknown keys, wrong types and values that make no sense together. A config with any
//! problem is refused as a whole.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::{Diagnostic, Diagnostics, line_col};
use crate::duration::serde_human;
pub use crate::ops::{HttpConfig, LogConfig, LogFormat, MetricsConfig, ShutdownConfig};
pub use crate::sinks::{
    AlertFormat, Auth, FindingFormat, Payload, RetryConfig, RouteConfig, SinkConfig, WebhookConfig,
};

/// The whole service config.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// `[kafka]`: the brokers and client settings.
    pub kafka: KafkaConfig,
    /// `[topics]`: chainwatch's own topics.
    pub topics: TopicsConfig,
    /// `[[sources]]`: raw telemetry topics.
    pub sources: Vec<SourceConfig>,
    /// `[correlate]`: rules and state limits.
    pub correlate: CorrelateConfig,
    /// `[[sinks]]`: where alerts are delivered.
    pub sinks: Vec<SinkConfig>,
    /// `[tenants.NAME]`: per-tenant playbook overrides.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// The directory of the config file; relative paths in it are relative to this.
    pub base_dir: PathBuf,
    /// `[http]`: the `/metrics`, `/healthz` and `/readyz` endpoint.
    pub http: HttpConfig,
    /// `[log]`: log format and level.
    pub log: LogConfig,
    /// `[metrics]`: label limits.
    pub metrics: MetricsConfig,
    /// `[shutdown]`: how long a stop may take.
    pub shutdown: ShutdownConfig,
}

/// `[kafka]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// Prefix of consumer group names: `{prefix}-ingest`, `{prefix}-correlate`,
    /// `{prefix}-sink-{name}`.
    #[serde(default = "default_group_prefix")]
    pub group_prefix: String,
    /// Create chainwatch's topics at start-up when they are missing.
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// Partitions of topics chainwatch creates.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of topics chainwatch creates.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// librdkafka properties passed through unchanged (TLS, SASL, timeouts, ...).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// librdkafka properties whose values are secrets (`"sasl.password"`, `"ssl.key.password"`),
    /// each `{ env = "NAME" }` or `{ file = "PATH" }`: read at start-up, passed to librdkafka
    /// like `options`, never printed.
    #[serde(default)]
    pub secrets: BTreeMap<String, crate::secret::Secret>,
}

/// `[topics]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// Normalized events, keyed by tenant and host.
    #[serde(default = "default_events_topic")]
    pub events: String,
    /// Findings, keyed by tenant.
    #[serde(default = "default_alerts_topic")]
    pub alerts: String,
    /// Records that could not be processed, with the reason in headers.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter: String,
    /// The correlate stage's state changelog: compacted, partition `p` holding the partial
    /// chains of `events` partition `p`, so they survive a crash, a restart or a rebalance.
    /// Created with the events topic's partition count when missing. Default:
    /// `{group_prefix}-correlate-state` (like the consumer groups, one per deployment).
    #[serde(default)]
    pub state: Option<String>,
    /// The form of findings on the alerts topic: `"json"` (chainwatch's own) or `"ocsf"`
    /// (OCSF Detection Finding). Sinks read either.
    #[serde(default)]
    pub alerts_format: FindingFormat,
    /// Host roles inferred from telemetry, one record per tenant and host (a compacted
    /// topic, created so when chainwatch creates its topics): what `chainwatch hosts` lists,
    /// and what a restarted correlator reads back.
    #[serde(default = "default_roles_topic")]
    pub roles: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            events: default_events_topic(),
            alerts: default_alerts_topic(),
            dead_letter: default_dead_letter_topic(),
            state: None,
            alerts_format: FindingFormat::default(),
            roles: default_roles_topic(),
        }
    }
}

/// `[tenants.NAME]`: what one customer runs differently.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Playbooks (correlation `name` or `id`) that run for this tenant; all when absent.
    pub playbooks: Option<Vec<String>>,
    /// Priority overrides per playbook (`name` or `id`), e.g. `{ exchange_to_ransomware = "high" }`.
    #[serde(default)]
    pub priority: BTreeMap<String, chainwatch_model::Severity>,
    /// Host roles: role name to host names, e.g. `{ exchange = ["EXCH01", "EXCH02"] }`. A
    /// playbook scoped to a role runs only on those hosts (and on hosts inferred to have it).
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
    /// Whether host roles inferred from telemetry (Exchange servers, domain controllers, IIS
    /// servers) count as playbook scope besides the declared `roles`. Default `true`; `false`
    /// scopes playbooks by the declared roles only.
    #[serde(default)]
    pub infer_roles: Option<bool>,
    /// Known-good activity: matches of these are dropped for this tenant.
    #[serde(default)]
    pub exclude: Vec<ExclusionConfig>,
}

/// `[[tenants.NAME.exclude]]`: a field value that makes a rule's match not count.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExclusionConfig {
    /// The rule (`name` or `id`) it applies to; every rule when absent.
    pub rule: Option<String>,
    /// The field, by Sigma name (`Image`, `SourceImage`, `User`, `CommandLine`, ...).
    pub field: String,
    /// Values, compared as Sigma compares: case-insensitive, `*` and `?` wildcards.
    pub values: Vec<String>,
}

/// A file holding only `[tenants.NAME]` tables (for `chainwatch replay --tenants`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsFile {
    /// The tenants.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
}

impl TenantsFile {
    /// Reads a tenants file; every problem with its line.
    pub fn load(path: &Path) -> Result<Self, Diagnostics> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostics(vec![Diagnostic::new(
                path,
                0,
                0,
                format!("cannot read: {e}"),
            )])
        })?;
        let mut l = Loader {
            file: path,
            text: &text,
            diags: Diagnostics::default(),
        };
        let (root, syntax) = DeTable::parse_recoverable(&text);
        for e in syntax {
            l.error(
                e.span().unwrap_or(0..0),
                format!("TOML syntax: {}", e.message().trim()),
            );
        }
        if !l.diags.is_empty() {
            return Err(l.diags);
        }
        let mut tenants = BTreeMap::new();
        for (key, value) in root.into_inner() {
            match key.get_ref().as_ref() {
                "tenants" => tenants = tenants_section(&mut l, value),
                other => l.error(
                    key.span(),
                    format!("unknown section '{other}' (expected tenants)"),
                ),
            }
        }
        if l.diags.is_empty() {
            Ok(Self { tenants })
        } else {
            Err(l.diags)
        }
    }
}

fn tenants_section(
    l: &mut Loader<'_>,
    value: Spanned<DeValue<'_>>,
) -> BTreeMap<String, TenantConfig> {
    let span = value.span();
    let mut out = BTreeMap::new();
    match value.into_inner() {
        DeValue::Table(t) => {
            for (k, v) in t {
                let name = k.get_ref().to_string();
                if chainwatch_model::TenantId::new(&name).is_err() {
                    l.error(
                        k.span(),
                        format!(
                            "tenants: {name:?} is not a valid tenant id (letters, digits, '-', '_')"
                        ),
                    );
                }
                if let Some(c) = l.section::<TenantConfig>(&format!("tenants.{name}"), v) {
                    out.insert(name, c);
                }
            }
        }
        _ => l.error(span, "'tenants' must be a table of [tenants.NAME] tables"),
    }
    out
}

/// The record format of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputFormat {
    /// Detect per record.
    #[default]
    Auto,
    /// Windows events as JSON, flat or nested (detected per record).
    Windows,
    /// Windows events, flat JSON (EventData at the top level).
    WindowsFlat,
    /// Windows events, nested JSON (`Event.System` / `Event.EventData`).
    WindowsNested,
    /// Binary EVTX files (one file per record on Kafka; `replay` reads `.evtx` files).
    Evtx,
    /// Elastic Common Schema JSON: Winlogbeat (`winlog.*`) and Elastic Agent.
    #[serde(alias = "winlogbeat")]
    Ecs,
    /// Microsoft Defender for Endpoint advanced-hunting rows or streaming-API records.
    Mde,
    /// W3C extended log lines, as IIS writes them (`#Fields:` header, space-separated values).
    #[serde(alias = "iis")]
    W3c,
    /// OCSF JSON events.
    Ocsf,
}

/// `[[sources]]`: one family of raw telemetry topics.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A name for logs and metrics.
    pub name: String,
    /// Topic name pattern with one `{tenant}` placeholder, e.g. `telemetry.{tenant}.windows`.
    /// The tenant is taken from the topic name, never from the payload.
    pub topics: String,
    /// The record format.
    #[serde(default)]
    pub format: InputFormat,
    /// Zone of time strings written without one, as `+05:00` (default UTC).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Records larger than this are dead-lettered.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// W3C column names, as in a `#Fields:` line (`"date time s-ip cs-method cs-uri-stem ..."`),
    /// for lines that arrive before any `#Fields:` header of their stream (after a restart, or
    /// from a shipper that drops comment lines). Without it such lines are dead-lettered as
    /// `no_w3c_header`. A `#Fields:` header in the stream always takes precedence.
    #[serde(default)]
    pub w3c_fields: Option<String>,
    /// Events whose time is further than this in the past, against the ingest clock, are
    /// dead-lettered as `time_out_of_range` (a human duration such as `"400d"`). Unset: no bound.
    #[serde(default, with = "crate::duration::serde_human_opt")]
    pub max_event_age: Option<Duration>,
    /// Events whose time is further than this in the future, against the ingest clock, are
    /// dead-lettered as `time_out_of_range` (such as `"1h"`). Unset: no bound.
    #[serde(default, with = "crate::duration::serde_human_opt")]
    pub max_event_ahead: Option<Duration>,
}

/// `[correlate]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelateConfig {
    /// Rule and playbook files or folders.
    pub rules: Vec<PathBuf>,
    /// How late (in event time, behind the newest event of the same host) an event may arrive
    /// and still join a chain.
    #[serde(default = "default_lateness", with = "serde_human")]
    pub allowed_lateness: Duration,
    /// Most groups (tenant + group-by key) tracked per correlation rule, over all tenants and
    /// all partitions of the events topic (each partition's state gets its share); beyond it
    /// the least recently updated groups are evicted and counted.
    #[serde(default = "default_max_groups")]
    pub max_groups: usize,
    /// Most groups tracked per correlation rule for one tenant (over all partitions, each
    /// getting its share): a tenant beyond it evicts its own groups, never another tenant's.
    #[serde(default = "default_max_groups_per_tenant")]
    pub max_groups_per_tenant: usize,
    /// After this long (wall clock) without an event of a tenant on a partition, the tenant's
    /// event-time clock there moves on at the wall clock's pace from its newest event, never
    /// past the wall clock, so absence deadlines and count windows with an upper bound close
    /// while the input is quiet. `"0s"`: clocks move only with events.
    #[serde(default = "default_idle_after", with = "serde_human")]
    pub idle_after: Duration,
    /// How often rule files are checked for changes (they are also reloaded on SIGHUP).
    #[serde(default = "default_reload_interval", with = "serde_human")]
    pub reload_interval: Duration,
    /// When ingest runs in the same process, the events it writes are handed to this
    /// correlator as soon as the brokers acknowledge them, instead of waiting for its consumer
    /// to fetch them back: one broker round trip less between a raw record and its finding.
    /// The consumer still reads the events topic (events other instances wrote come that way)
    /// and skips what was handed; each event is processed once either way. `false`: every
    /// event is read back from the brokers.
    #[serde(default = "default_true")]
    pub handoff: bool,
    /// Values of Sigma placeholders, for rule values with the `expand` modifier: a placeholder
    /// name (without the `%`) to the values it stands for, which are Sigma strings (wildcards
    /// allowed), e.g. `Administrators = ["admin*", "root"]`. A rule that uses a placeholder not
    /// listed here is refused, as the Sigma specification requires.
    #[serde(default)]
    pub placeholders: BTreeMap<String, Vec<String>>,
    /// `[correlate.lookback]`: what every alert carries of its hosts' other notable events.
    #[serde(default)]
    pub lookback: LookbackSettings,
}

/// `[correlate.lookback]`: per host, the recent notable events (any rule match, whatever its
/// level) are kept in a bounded buffer; every alert carries those of its hosts from `period`
/// before its first evidence up to its last. Entries dropped by a bound are counted
/// (`chainwatch_lookback_evictions_total`) and an alert whose window lost some says so.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookbackSettings {
    /// How far before an alert's first evidence its look-back reaches (`"24h"`); `"0s"` turns
    /// the look-back off.
    #[serde(default = "default_lookback_period", with = "serde_human")]
    pub period: Duration,
    /// Most notable events kept per host (its oldest are dropped first).
    #[serde(default = "default_lookback_per_host")]
    pub max_events_per_host: usize,
    /// Most notable events kept per tenant, over its hosts (the least recently active host's
    /// oldest are dropped first), so one noisy tenant drops its own history, not others'.
    #[serde(default = "default_lookback_per_tenant")]
    pub max_events_per_tenant: usize,
    /// Most notable events kept in all (taken from the tenant holding the most).
    #[serde(default = "default_lookback_events")]
    pub max_events: usize,
    /// Most notable events one alert carries (the lowest levels, then the oldest, are left
    /// out first; the alert counts them).
    #[serde(default = "default_lookback_per_alert")]
    pub max_events_per_alert: usize,
}

impl Default for LookbackSettings {
    fn default() -> Self {
        Self {
            period: default_lookback_period(),
            max_events_per_host: default_lookback_per_host(),
            max_events_per_tenant: default_lookback_per_tenant(),
            max_events: default_lookback_events(),
            max_events_per_alert: default_lookback_per_alert(),
        }
    }
}

fn default_group_prefix() -> String {
    "chainwatch".into()
}
fn default_true() -> bool {
    true
}
fn default_partitions() -> i32 {
    6
}
fn default_replication() -> i32 {
    1
}
fn default_events_topic() -> String {
    "chainwatch.events".into()
}
fn default_alerts_topic() -> String {
    "chainwatch.alerts".into()
}
fn default_dead_letter_topic() -> String {
    "chainwatch.dead-letter".into()
}
fn default_roles_topic() -> String {
    "chainwatch.roles".into()
}
fn default_lookback_period() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_lookback_per_host() -> usize {
    256
}
fn default_lookback_per_tenant() -> usize {
    100_000
}
fn default_lookback_events() -> usize {
    1_000_000
}
fn default_lookback_per_alert() -> usize {
    200
}
fn default_idle_after() -> Duration {
    Duration::from_secs(60)
}
fn default_timezone() -> String {
    "+00:00".into()
}
fn default_max_record_bytes() -> usize {
    1 << 20
}
fn default_lateness() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_groups() -> usize {
    1_000_000
}
fn default_max_groups_per_tenant() -> usize {
    100_000
}
fn default_reload_interval() -> Duration {
    Duration::from_secs(2)
}

impl Default for CorrelateConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            allowed_lateness: default_lateness(),
            max_groups: default_max_groups(),
            max_groups_per_tenant: default_max_groups_per_tenant(),
            idle_after: default_idle_after(),
            reload_interval: default_reload_interval(),
            handoff: true,
            placeholders: BTreeMap::new(),
            lookback: LookbackSettings::default(),
        }
    }
}

/// Reads the problems of one file.
struct Loader<'a> {
    file: &'a Path,
    text: &'a str,
    diags: Diagnostics,
}

impl Loader<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.diags
            .push(Diagnostic::new(self.file, line, col, message));
    }

    /// Where the key `name` of table `table` is set, for problems found after deserializing
    /// (which keeps no spans): the first line after the `[table]` header (or in the whole file
    /// without one) whose key is `name`, bare or quoted; the header itself when the key is not
    /// written (its default is the problem); the file's start when neither is.
    fn key_span(&self, table: &str, name: &str) -> Range<usize> {
        let header = format!("[{table}]");
        let mut inside = !self.text.lines().any(|l| l.trim() == header);
        let mut header_at = None;
        let mut offset = 0;
        for line in self.text.split_inclusive('\n') {
            let t = line.trim_start();
            if t.trim_end() == header {
                inside = true;
                header_at = Some(offset + (line.len() - t.len()));
            } else if inside && t.starts_with('[') {
                // The next table: the key is not in this one.
                inside = false;
            } else if inside {
                let key = t.split('=').next().unwrap_or_default().trim();
                if key.trim_matches('"') == name || key.trim_matches('\'') == name {
                    let at = offset + (line.len() - t.len());
                    return at..at;
                }
            }
            offset += line.len();
        }
        header_at.map_or(0..0, |at| at..at)
    }

    fn section<T: DeserializeOwned>(
        &mut self,
        what: &str,
        value: Spanned<DeValue<'_>>,
    ) -> Option<T> {
        let span = value.span();
        match T::deserialize(value.into_deserializer()) {
            Ok(v) => Some(v),
            Err(e) => {
                let at = e.span().unwrap_or(span);
                self.error(at, format!("{what}: {}", e.message().trim()));
                None
            }
        }
    }

    fn array<T: DeserializeOwned>(
        &mut self,
        what: &str,
        value: Spanned<DeValue<'_>>,
    ) -> Vec<(T, Range<usize>)> {
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(items) => items
                .iter()
                .cloned()
                .enumerate()
                .filter_map(|(i, item)| {
                    let item_span = item.span();
                    self.section(&format!("{what}[{i}]"), item)
                        .map(|v| (v, item_span))
                })
                .collect(),
            _ => {
                self.error(
                    span,
                    format!("'{what}' must be an array of tables ([[{what}]])"),
                );
                Vec::new()
            }
        }
    }
}

impl ServiceConfig {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, Diagnostics> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostics(vec![Diagnostic::new(
                path,
                0,
                0,
                format!("cannot read the config file: {e}"),
            )])
        })?;
        Self::from_text(path, &text)
    }

    /// Reads and validates config text, as if read from `path`.
    pub fn from_text(path: &Path, text: &str) -> Result<Self, Diagnostics> {
        let mut l = Loader {
            file: path,
            text,
            diags: Diagnostics::default(),
        };
        let (root, syntax) = DeTable::parse_recoverable(text);
        for e in syntax {
            let span = e.span().unwrap_or(0..0);
            l.error(span, format!("TOML syntax: {}", e.message().trim()));
        }
        if !l.diags.is_empty() {
            return Err(l.diags);
        }
        let root_span = root.span();
        let (mut kafka, mut topics, mut correlate) = (None, None, None);
        let (mut sources, mut sinks) = (Vec::new(), Vec::new());
        let mut tenants = BTreeMap::new();
        let (mut http, mut log, mut metrics, mut shutdown) = (None, None, None, None);
        for (key, value) in root.into_inner() {
            match key.get_ref().as_ref() {
                "kafka" => kafka = l.section::<KafkaConfig>("kafka", value),
                "topics" => topics = l.section::<TopicsConfig>("topics", value),
                "correlate" => correlate = l.section::<CorrelateConfig>("correlate", value),
                "sources" => sources = l.array::<SourceConfig>("sources", value),
                "sinks" => sinks = l.array::<SinkConfig>("sinks", value),
                "tenants" => tenants = tenants_section(&mut l, value),
                "http" => http = l.section::<HttpConfig>("http", value),
                "log" => log = l.section::<LogConfig>("log", value),
                "metrics" => metrics = l.section::<MetricsConfig>("metrics", value),
                "shutdown" => shutdown = l.section::<ShutdownConfig>("shutdown", value),
                other => l.error(
                    key.span(),
                    format!(
                        "unknown section '{other}' (expected kafka, topics, sources, correlate, sinks, tenants, http, log, metrics, shutdown)"
                    ),
                ),
            }
        }
        if kafka.is_none() && !l.diags.iter().any(|d| d.message.starts_with("kafka")) {
            l.error(root_span.start..root_span.start, "missing section [kafka]");
        }
        if correlate.is_none() && !l.diags.iter().any(|d| d.message.starts_with("correlate")) {
            l.error(
                root_span.start..root_span.start,
                "missing section [correlate] (which rules to run)",
            );
        }
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        validate(
            &mut l,
            &sources,
            &mut sinks,
            correlate.as_ref(),
            kafka.as_mut(),
            topics.as_ref(),
            &base_dir,
        );
        if !l.diags.is_empty() {
            return Err(l.diags);
        }
        let (Some(kafka), Some(correlate)) = (kafka, correlate) else {
            return Err(l.diags);
        };
        Ok(ServiceConfig {
            kafka,
            topics: topics.unwrap_or_default(),
            sources: sources.into_iter().map(|(s, _)| s).collect(),
            correlate,
            sinks: sinks.into_iter().map(|(s, _)| s).collect(),
            tenants,
            base_dir,
            http: http.unwrap_or_default(),
            log: log.unwrap_or_default(),
            metrics: metrics.unwrap_or_default(),
            shutdown: shutdown.unwrap_or_default(),
        })
    }

    /// The correlate stage's state changelog topic: `[topics] state`, or
    /// `{group_prefix}-correlate-state`.
    pub fn state_topic(&self) -> String {
        self.topics
            .state
            .clone()
            .unwrap_or_else(|| format!("{}-correlate-state", self.kafka.group_prefix))
    }

    /// A path from the config, resolved against the config file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// Checks that need several values at once. Pure apart from reading the secrets and template
/// files that sinks name.
fn validate(
    l: &mut Loader<'_>,
    sources: &[(SourceConfig, Range<usize>)],
    sinks: &mut [(SinkConfig, Range<usize>)],
    correlate: Option<&CorrelateConfig>,
    kafka: Option<&mut KafkaConfig>,
    topics: Option<&TopicsConfig>,
    base_dir: &Path,
) {
    if let Some(k) = kafka {
        if k.brokers.trim().is_empty() {
            l.error(l.key_span("kafka", "brokers"), "kafka: 'brokers' is empty");
        }
        if k.partitions < 1 {
            l.error(
                l.key_span("kafka", "partitions"),
                "kafka: 'partitions' must be at least 1",
            );
        }
        // Files librdkafka reads at client creation: a missing one is a config problem with
        // its line, not a client error at start-up (relative paths are from the working
        // directory, as librdkafka reads them).
        for (name, value) in &k.options {
            let file_option = name.starts_with("ssl.") && name.ends_with(".location");
            if file_option && value != "probe" && !Path::new(value).exists() {
                l.error(
                    l.key_span("kafka.options", name),
                    format!("kafka.options.{name:?}: {value} does not exist"),
                );
            }
        }
        for (name, secret) in &mut k.secrets {
            if k.options.contains_key(name) {
                l.error(
                    l.key_span("kafka.secrets", name),
                    format!("kafka: {name:?} is set in both [kafka.options] and [kafka.secrets]"),
                );
            }
            if let Err(e) = secret.resolve(base_dir) {
                l.error(
                    l.key_span("kafka.secrets", name),
                    format!("kafka.secrets.{name:?}: {e}"),
                );
            }
        }
    }
    if let Some(t) = topics {
        let mut names = vec![
            ("events", &t.events),
            ("alerts", &t.alerts),
            ("dead_letter", &t.dead_letter),
        ];
        names.extend(t.state.as_ref().map(|s| ("state", s)));
        for (i, (key, a)) in names.iter().enumerate() {
            if let Some((first, _)) = names[..i].iter().find(|(_, b)| b == a) {
                l.error(
                    l.key_span("topics", key),
                    format!("topics: {a:?} is named for two purposes ({first} and {key})"),
                );
            }
        }
    }
    let mut names = Vec::new();
    for (i, (s, span)) in sources.iter().enumerate() {
        if s.topics.matches("{tenant}").count() != 1 {
            l.error(span.clone(), format!(
                "sources[{i}] ({}): 'topics' must contain '{{tenant}}' exactly once, e.g. telemetry.{{tenant}}.windows",
                s.name
            ));
        }
        let literal = s.topics.replace("{tenant}", "");
        if !literal
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            l.error(span.clone(), format!(
                "sources[{i}] ({}): 'topics' may only use letters, digits, '.', '_' and '-' besides {{tenant}}",
                s.name
            ));
        }
        if crate::parse_offset(&s.timezone).is_none() {
            l.error(
                span.clone(),
                format!(
                    "sources[{i}] ({}): 'timezone' {:?} is not an offset such as +00:00 or -05:00",
                    s.name, s.timezone
                ),
            );
        }
        if s.max_record_bytes == 0 {
            l.error(
                span.clone(),
                format!(
                    "sources[{i}] ({}): 'max_record_bytes' must be above 0",
                    s.name
                ),
            );
        }
        if let Some(fields) = &s.w3c_fields {
            if !matches!(s.format, InputFormat::W3c | InputFormat::Auto) {
                l.error(
                    span.clone(),
                    format!(
                        "sources[{i}] ({}): 'w3c_fields' applies only to format \"w3c\" or \"auto\"",
                        s.name
                    ),
                );
            }
            let names: Vec<&str> = fields.split_whitespace().collect();
            if names.is_empty() {
                l.error(
                    span.clone(),
                    format!("sources[{i}] ({}): 'w3c_fields' names no column", s.name),
                );
            }
            if let Some(dup) = names
                .iter()
                .enumerate()
                .find_map(|(k, n)| names[..k].contains(n).then_some(n))
            {
                l.error(
                    span.clone(),
                    format!(
                        "sources[{i}] ({}): 'w3c_fields' names the column {dup:?} twice",
                        s.name
                    ),
                );
            }
        }
        if names.contains(&s.name) {
            l.error(
                span.clone(),
                format!("sources[{i}]: the name {:?} is used twice", s.name),
            );
        }
        names.push(s.name.clone());
    }
    let mut sink_names = Vec::new();
    for (i, (s, span)) in sinks.iter_mut().enumerate() {
        let name = s.name().to_owned();
        for problem in crate::sinks::check_sink(s, base_dir) {
            l.error(span.clone(), format!("sinks[{i}] ({name}): {problem}"));
        }
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        {
            l.error(
                span.clone(),
                format!("sinks[{i}]: 'name' {name:?} may only use letters, digits, '-' and '_'"),
            );
        }
        if sink_names.contains(&name) {
            l.error(
                span.clone(),
                format!("sinks[{i}]: the name {name:?} is used twice"),
            );
        }
        sink_names.push(name);
    }
    if let Some(c) = correlate {
        if c.rules.is_empty() {
            l.error(
                l.key_span("correlate", "rules"),
                "correlate: 'rules' lists no rule file or folder",
            );
        }
        for r in &c.rules {
            let p = if r.is_absolute() {
                r.clone()
            } else {
                base_dir.join(r)
            };
            if !p.exists() {
                l.error(
                    0..0,
                    format!("correlate: rules path {} does not exist", p.display()),
                );
            }
        }
        for (name, values) in &c.placeholders {
            if values.is_empty() {
                l.error(
                    0..0,
                    format!("correlate: placeholder {name:?} lists no values"),
                );
            }
        }
        if c.max_groups_per_tenant > c.max_groups {
            l.error(
                0..0,
                "correlate: 'max_groups_per_tenant' is above 'max_groups'",
            );
        }
        let lb = &c.lookback;
        if lb.max_events_per_host > lb.max_events_per_tenant
            || lb.max_events_per_tenant > lb.max_events
        {
            l.error(
                0..0,
                "correlate.lookback: expected max_events_per_host <= max_events_per_tenant <= max_events",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<ServiceConfig, Diagnostics> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("playbooks")).unwrap();
        ServiceConfig::from_text(&dir.path().join("chainwatch.toml"), text)
    }

    const GOOD: &str = r#"
[kafka]
brokers = "127.0.0.1:9092"

[kafka.options]
"socket.timeout.ms" = "5000"

[[sources]]
name = "windows"
topics = "telemetry.{tenant}.windows"
format = "windows"

[correlate]
rules = ["playbooks"]
allowed_lateness = "30m"

[correlate.placeholders]
Administrators = ["admin*", "root"]

[[sinks]]
kind = "stdout"
name = "console"

[[sinks]]
kind = "file"
name = "archive"
path = "alerts.jsonl"
"#;

    #[test]
    fn kafka_security_problems_point_at_their_keys() {
        let text = "[kafka]\nbrokers = \"b:9092\"\n\n[kafka.options]\n\"security.protocol\" = \"sasl_ssl\"\n\"ssl.ca.location\" = \"/nonexistent/ca.pem\"\n\"sasl.password\" = \"x\"\n\n[kafka.secrets]\n\"sasl.password\" = { env = \"CHAINWATCH_TEST_UNSET_VARIABLE\" }\n\n[correlate]\nrules = [\"playbooks\"]\n";
        let diags = load(text).unwrap_err();
        let at = |what: &str| {
            diags
                .iter()
                .find(|d| d.message.contains(what))
                .map(|d| d.line)
                .unwrap_or_else(|| panic!("no problem about {what}: {diags}"))
        };
        assert_eq!(at("does not exist"), 6, "{diags}");
        assert_eq!(at("set in both"), 10, "{diags}");
        assert_eq!(at("kafka.secrets"), 10, "{diags}");
    }

    #[test]
    fn reads_a_good_config_with_defaults() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.topics.events, "chainwatch.events");
        assert_eq!(c.correlate.allowed_lateness, Duration::from_secs(1800));
        assert_eq!(
            c.correlate.placeholders["Administrators"],
            ["admin*", "root"]
        );
        assert_eq!(c.sources[0].format, InputFormat::Windows);
        assert_eq!(c.kafka.options["socket.timeout.ms"], "5000");
        assert_eq!(c.sinks.len(), 2);
        assert_eq!(c.sinks[1].name(), "archive");
    }

    #[test]
    fn lists_every_problem_with_its_line() {
        let bad = r#"
[kafka]
brokers = "127.0.0.1:9092"
colour = "blue"

[[sources]]
name = "windows"
topics = "telemetry.windows"

[correlate]
rules = ["playbooks"]
allowed_lateness = "soon"

[[sinks]]
kind = "carrier-pigeon"
name = "x"
"#;
        let diags = load(bad).unwrap_err();
        let lines: Vec<usize> = diags.iter().map(|d| d.line).collect();
        assert!(
            diags.iter().any(|d| d.message.contains("colour")),
            "{diags}"
        );
        assert!(
            diags.iter().any(|d| d.message.contains("{tenant}")),
            "{diags}"
        );
        assert!(diags.iter().any(|d| d.message.contains("soon")), "{diags}");
        assert!(
            diags.iter().any(|d| d.message.contains("carrier-pigeon")),
            "{diags}"
        );
        assert_eq!(diags.len(), 4, "{diags}");
        assert!(lines.contains(&4), "unknown key on line 4: {diags}");
        assert!(lines.iter().all(|&l| l > 0), "{diags}");
    }

    #[test]
    fn problems_found_after_reading_point_at_their_key_or_table() {
        let bad = r#"
[kafka]
partitions = 0
brokers = " "

[topics]
events = "chainwatch.events"
alerts = "chainwatch.events"

[correlate]
rules = []
"#;
        let diags = load(bad).unwrap_err();
        let line_of = |needle: &str| {
            diags
                .iter()
                .find(|d| d.message.contains(needle))
                .map(|d| d.line)
                .unwrap_or_else(|| panic!("no problem about {needle}: {diags}"))
        };
        assert_eq!(line_of("'partitions'"), 3, "{diags}");
        assert_eq!(line_of("'brokers'"), 4, "{diags}");
        assert_eq!(line_of("two purposes"), 8, "{diags}");
        assert_eq!(line_of("'rules'"), 11, "{diags}");

        // A key left out (its default is the problem): the table's header.
        let diags = load("[kafka]\nbrokers = \"b:9092\"\n\n[topics]\nevents = \"chainwatch.alerts\"\n[correlate]\nrules = [\"playbooks\"]\n").unwrap_err();
        let d = diags
            .iter()
            .find(|d| d.message.contains("two purposes"))
            .unwrap_or_else(|| panic!("{diags}"));
        assert_eq!(d.line, 4, "{diags}");
    }

    #[test]
    fn tenant_overrides() {
        let text = format!(
            "{GOOD}{}",
            r#"
[tenants.acme]
playbooks = ["exchange_to_ransomware"]
priority = { exchange_to_ransomware = "high" }
roles = { exchange = ["EXCH01"] }

[[tenants.acme.exclude]]
rule = "lsass_memory_dump"
field = "SourceImage"
values = ['C:\Program Files\Tanium\*']
"#
        );
        let c = load(&text).unwrap();
        let acme = &c.tenants["acme"];
        assert_eq!(
            acme.playbooks.as_deref(),
            Some(&["exchange_to_ransomware".to_owned()][..])
        );
        assert_eq!(
            acme.priority["exchange_to_ransomware"],
            chainwatch_model::Severity::High
        );
        assert_eq!(acme.roles["exchange"], ["EXCH01"]);
        assert_eq!(acme.exclude[0].field, "SourceImage");
        let bad = load(&format!("{GOOD}\n[tenants.\"a.b\"]\nplaybook = []\n")).unwrap_err();
        assert!(
            bad.iter()
                .any(|d| d.message.contains("not a valid tenant id")),
            "{bad}"
        );
        assert!(bad.iter().any(|d| d.message.contains("playbook")), "{bad}");
    }

    #[test]
    fn sink_problems_carry_the_sink_and_its_line() {
        let text = GOOD.to_owned()
            + r#"
[[sinks]]
kind = "webhook"
name = "pager"
url = "https://events.pagerduty.com/v2/enqueue"
payload = { preset = "pagerduty", routing_key = { env = "CHAINWATCH_TEST_SURELY_UNSET_VARIABLE" } }
route = { tenant = "not a tenant" }
"#;
        let diags = load(&text).unwrap_err();
        assert_eq!(diags.len(), 2, "{diags}");
        let header = text[..text.rfind("[[sinks]]").unwrap()].lines().count() + 1;
        for d in diags.iter() {
            assert!(d.message.starts_with("sinks[2] (pager)"), "{diags}");
            assert!(
                (header..=header + 1).contains(&d.line),
                "points at the sink (line {header}): {diags}"
            );
        }
        assert!(diags.iter().any(|d| {
            d.message
                .contains("CHAINWATCH_TEST_SURELY_UNSET_VARIABLE is not set")
        }));
    }

    #[test]
    fn source_formats_w3c_columns_and_time_bounds() {
        let text = GOOD.replace(
            "format = \"windows\"",
            "format = \"iis\"\nw3c_fields = \"date time cs-uri-stem\"\nmax_event_age = \"400d\"\nmax_event_ahead = \"1h\"",
        );
        let c = load(&text).unwrap();
        let s = &c.sources[0];
        assert_eq!(s.format, InputFormat::W3c);
        assert_eq!(s.w3c_fields.as_deref(), Some("date time cs-uri-stem"));
        assert_eq!(s.max_event_age, Some(Duration::from_secs(400 * 86400)));
        assert_eq!(s.max_event_ahead, Some(Duration::from_secs(3600)));
        for (format, expected) in [
            ("evtx", InputFormat::Evtx),
            ("ecs", InputFormat::Ecs),
            ("winlogbeat", InputFormat::Ecs),
            ("mde", InputFormat::Mde),
            ("w3c", InputFormat::W3c),
            ("ocsf", InputFormat::Ocsf),
        ] {
            let c = load(&GOOD.replace(
                "\"windows\"\n\n[correlate]",
                &format!("\"{format}\"\n\n[correlate]"),
            ))
            .unwrap();
            assert_eq!(c.sources[0].format, expected, "{format}");
        }

        let bad = GOOD.replace(
            "format = \"windows\"",
            "format = \"ecs\"\nw3c_fields = \"date date\"\nmax_event_age = \"old\"",
        );
        let diags = load(&bad).unwrap_err();
        assert!(diags.iter().any(|d| d.message.contains("old")), "{diags}");
        let bad = GOOD.replace(
            "format = \"windows\"",
            "format = \"ecs\"\nw3c_fields = \"date date\"",
        );
        let diags = load(&bad).unwrap_err();
        assert!(
            diags.iter().any(|d| d.message.contains("only to format")),
            "{diags}"
        );
        assert!(
            diags.iter().any(|d| d.message.contains("\"date\" twice")),
            "{diags}"
        );
        let diags = load(&GOOD.replace("format = \"windows\"", "format = \"syslog\"")).unwrap_err();
        assert!(
            diags.iter().any(|d| d.message.contains("syslog")),
            "{diags}"
        );
    }

    #[test]
    fn lookback_and_roles_topic_have_defaults_and_checks() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.topics.roles, "chainwatch.roles");
        assert_eq!(c.correlate.lookback.period, Duration::from_secs(86400));
        assert_eq!(c.correlate.lookback.max_events_per_host, 256);
        let text = GOOD.replace(
            "allowed_lateness = \"30m\"",
            "allowed_lateness = \"30m\"\n\n[correlate.lookback]\nperiod = \"6h\"\nmax_events_per_host = 50",
        );
        let c = load(&text).unwrap();
        assert_eq!(c.correlate.lookback.period, Duration::from_secs(6 * 3600));
        assert_eq!(c.correlate.lookback.max_events_per_host, 50);
        let bad = GOOD.replace(
            "allowed_lateness = \"30m\"",
            "allowed_lateness = \"30m\"\n\n[correlate.lookback]\nmax_events_per_host = 5000000\ncolour = 1",
        );
        let diags = load(&bad).unwrap_err();
        assert!(
            diags.iter().any(|d| d.message.contains("colour")),
            "{diags}"
        );
        let bad = GOOD.replace(
            "allowed_lateness = \"30m\"",
            "allowed_lateness = \"30m\"\n\n[correlate.lookback]\nmax_events_per_host = 5000000",
        );
        let diags = load(&bad).unwrap_err();
        assert!(
            diags
                .iter()
                .any(|d| d.message.contains("max_events_per_host")),
            "{diags}"
        );
    }

    #[test]
    fn syntax_errors_are_located() {
        let diags = load("[kafka\nbrokers = 1\n").unwrap_err();
        assert_eq!(diags.0[0].line, 1, "{diags}");
        assert!(diags.0[0].message.starts_with("TOML syntax"));
    }
}
