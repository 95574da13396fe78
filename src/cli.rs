//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// chainwatch: multi-tenant detection pipeline. Telemetry in, ATT&CK chain findings out.
#[derive(Debug, Parser)]
#[command(name = "chainwatch", version, about)]
pub struct Cli {
    /// Log lines as JSON (for log shippers) instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline on Kafka: ingest, correlate and sink stages.
    Run(RunArgs),
    /// Run the same cores over files, without a broker, and print alerts.
    Replay(ReplayArgs),
    /// Work with rule files.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Work with playbooks.
    Playbook {
        #[command(subcommand)]
        command: PlaybookCommand,
    },
    /// Send telemetry files to a Kafka topic, record by record (the demo's producer).
    Produce(ProduceArgs),
    /// Print a finding's evidence timeline (stages, ATT&CK, evidence, look-back) and write it
    /// as a self-contained HTML page for a ticket.
    Explain(ExplainArgs),
    /// Re-run rules or playbooks over the retained events topic, for a time range, across
    /// tenants ("who was hit before we had this playbook"), without touching live groups.
    Hunt(HuntArgs),
    /// List hosts by inferred role (Exchange servers, domain controllers, IIS servers), from a
    /// running deployment's roles topic or from telemetry files.
    Hosts(HostsArgs),
    /// Write a synthetic workload: tenants, hosts, noise, injected chains with known answers.
    Gen(GenArgs),
}

/// `chainwatch gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// The folder to write `telemetry.<tenant>.windows.jsonl` files and `answers.json` to
    /// (with `--brokers`, `answers.json` only).
    #[arg(long, default_value = "workload")]
    pub out: PathBuf,
    /// How many tenants (`tenant0000`, `tenant0001`, ...).
    #[arg(long, default_value_t = 2)]
    pub tenants: usize,
    /// Hosts per tenant.
    #[arg(long, default_value_t = 100)]
    pub hosts: usize,
    /// Noise events, all tenants together.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Complete four-stage chains to inject, spread over the tenants, one host each.
    #[arg(long, default_value_t = 10)]
    pub chains: usize,
    /// Hosts per tenant given a first stage alone (partial chains that never complete).
    #[arg(long, default_value_t = 0)]
    pub partials: usize,
    /// The share of noise events delivered late (up to 5 minutes after later events).
    #[arg(long, default_value_t = 0.02)]
    pub late: f64,
    /// The event-time span of each tenant's telemetry.
    #[arg(long, default_value = "2h")]
    pub duration: String,
    /// The time of the first event (RFC 3339).
    #[arg(long, default_value = "2026-11-20T00:00:00Z")]
    pub start: String,
    /// Seed of the random choices: the same seed writes the same files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Rule or playbook files or folders: example events any of them matches are not used as
    /// noise. Without it, the shipped playbooks.
    #[arg(long = "rules")]
    pub rules: Vec<PathBuf>,
    /// Also write each event's tenant into this field (for `replay --tenant-field` over
    /// several tenants' files at once).
    #[arg(long)]
    pub tenant_field: Option<String>,
    /// Produce the events to Kafka at these bootstrap servers instead of writing files (the
    /// answers still go to `--out`).
    #[arg(long)]
    pub brokers: Option<String>,
    /// With `--brokers`: each tenant's topic, `{tenant}` replaced by its name.
    #[arg(
        long,
        default_value = "telemetry.{tenant}.windows",
        requires = "brokers"
    )]
    pub topic: String,
    /// With `--brokers`: a librdkafka property, `KEY=VALUE` (repeatable): TLS, SASL, batching.
    #[arg(
        short = 'X',
        long = "option",
        value_name = "KEY=VALUE",
        requires = "brokers"
    )]
    pub options: Vec<String>,
    /// With `--brokers`: partitions of the topics created when missing.
    #[arg(long, default_value_t = 4, requires = "brokers")]
    pub partitions: i32,
}

/// Where a command reads chainwatch's topics: a service config, or brokers given here.
#[derive(Debug, Args)]
pub struct TopicSource {
    /// The service config: brokers, Kafka options and topic names come from it (only its
    /// `[kafka]`, `[topics]`, `[tenants]` and `[correlate.placeholders]` are read).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Bootstrap servers, `host:port[,host:port]` (instead of --config).
    #[arg(long, conflicts_with = "config")]
    pub brokers: Option<String>,
    /// A librdkafka property, `KEY=VALUE` (repeatable): TLS, SASL, timeouts (with --brokers).
    #[arg(short = 'X', long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// The topic to read (default: the config's, else chainwatch's default name).
    #[arg(long)]
    pub topic: Option<String>,
}

/// `chainwatch explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A findings file (JSON lines or a JSON document of chainwatch alerts or OCSF findings,
    /// as `replay`, the file sink or the alerts topic hold them), or an alert id (32 hex
    /// digits) to look up in `--in` files or, without them, on the alerts topic.
    pub target: String,
    /// Findings files to look the alert id up in.
    #[arg(long = "in", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Which revision of the finding (default: the latest).
    #[arg(long)]
    pub revision: Option<u32>,
    /// Where to write the HTML page (default: `chainwatch-ALERT_ID.html` here).
    #[arg(long, conflicts_with = "no_html")]
    pub html: Option<PathBuf>,
    /// Print the timeline only; write no page.
    #[arg(long)]
    pub no_html: bool,
    #[command(flatten)]
    pub source: TopicSource,
}

/// How `hunt` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HuntOutput {
    /// Findings per tenant and host, a table.
    Summary,
    /// Every finding (its latest revision), one JSON alert per line.
    Json,
    /// Every finding as a readable block.
    Pretty,
}

/// `chainwatch hunt`.
#[derive(Debug, Args)]
pub struct HuntArgs {
    /// Rule or playbook files or folders (repeatable). Without it, the shipped playbooks run.
    #[arg(long = "rules")]
    pub rules: Vec<PathBuf>,
    /// Start of the hunted event-time range: RFC 3339 (`2026-11-01T00:00:00Z`), a date
    /// (`2026-11-01`), or a duration before now (`30d`).
    #[arg(long)]
    pub from: String,
    /// End of the hunted event-time range, like --from, or `now`.
    #[arg(long, default_value = "now")]
    pub to: String,
    /// Only these tenants (repeatable; default: every tenant).
    #[arg(long = "tenant")]
    pub tenants: Vec<String>,
    /// How far record write times may be from event times: records written from --from less
    /// this up to --to plus this are read (telemetry arrives late; clocks differ).
    #[arg(long, default_value = "1h")]
    pub slack: String,
    /// How to report.
    #[arg(long, value_enum, default_value_t = HuntOutput::Summary)]
    pub output: HuntOutput,
    /// Also write the per-tenant, per-host report as JSON here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Values of Sigma `%placeholders%` (default: the config's `[correlate.placeholders]`).
    #[arg(long)]
    pub placeholders: Option<PathBuf>,
    #[command(flatten)]
    pub source: TopicSource,
}

/// How `hosts` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HostsOutput {
    /// One line per host and role.
    Table,
    /// One JSON record per host (as on the roles topic).
    Json,
}

/// `chainwatch hosts`.
#[derive(Debug, Args)]
pub struct HostsArgs {
    /// Only hosts with this role (`exchange`, `domain_controller`, `iis`).
    #[arg(long)]
    pub role: Option<String>,
    /// Only this tenant's hosts (with FILES: the tenant the files belong to, default
    /// `default`).
    #[arg(long)]
    pub tenant: Option<String>,
    /// How to print.
    #[arg(long, value_enum, default_value_t = HostsOutput::Table)]
    pub output: HostsOutput,
    /// Telemetry files or folders to infer roles from, instead of a running deployment's
    /// roles topic.
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub source: TopicSource,
}

/// `chainwatch playbook ...`.
#[derive(Debug, Subcommand)]
pub enum PlaybookCommand {
    /// Run each playbook's fixtures: the findings each must raise, exactly.
    Test {
        /// Playbook files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also write a JUnit XML report here (for CI).
        #[arg(long)]
        junit: Option<PathBuf>,
    },
}

/// `chainwatch produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Bootstrap servers, `host:port[,host:port]`.
    #[arg(long)]
    pub brokers: String,
    /// The topic; its name gives the tenant, as in `telemetry.contoso.windows`.
    #[arg(long)]
    pub topic: String,
    /// At most this many records per second (default: as fast as the broker acknowledges).
    #[arg(long)]
    pub rate: Option<f64>,
    /// A librdkafka property, `KEY=VALUE` (repeatable): TLS, SASL, timeouts.
    #[arg(short = 'X', long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// Telemetry files or folders (JSON lines, JSON arrays, concatenated JSON documents).
    /// Stretches that are not JSON records are sent as they are, to be dead-lettered.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// `chainwatch run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The service config (TOML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Which stages to run in this process.
    #[arg(long, value_delimiter = ',', default_values = ["ingest", "correlate", "sink"])]
    pub stages: Vec<StageName>,
}

/// A pipeline stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StageName {
    /// Raw topics to `chainwatch.events`.
    Ingest,
    /// `chainwatch.events` to `chainwatch.alerts`.
    Correlate,
    /// `chainwatch.alerts` to the configured sinks.
    Sink,
}

/// How alerts are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Readable blocks on a terminal, JSON lines on a pipe.
    Auto,
    /// One JSON alert per line.
    Json,
    /// One OCSF Detection Finding per line.
    Ocsf,
    /// Readable blocks.
    Pretty,
}

/// `chainwatch replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Rule or playbook files or folders (repeatable). Without it, the shipped playbooks run.
    #[arg(long = "rules")]
    pub rules: Vec<PathBuf>,
    /// The tenant every event belongs to.
    #[arg(long, default_value = "default", conflicts_with = "tenant_field")]
    pub tenant: String,
    /// Take each event's tenant from this payload field (trusted files only).
    #[arg(long)]
    pub tenant_field: Option<String>,
    /// Zone of time strings written without one, such as +05:00.
    #[arg(long, default_value = "+00:00")]
    pub timezone: String,
    /// Per-tenant overrides: a TOML file of [tenants.NAME] tables (playbooks, exclusions,
    /// priorities, host roles), as in the service config.
    #[arg(long)]
    pub tenants: Option<PathBuf>,
    /// Write a JSON summary here: records read, events, dead letters by reason, alerts.
    #[arg(long)]
    pub stats: Option<PathBuf>,
    /// Write dead-lettered records here (JSON lines with reason and provenance).
    #[arg(long)]
    pub dead_letter: Option<PathBuf>,
    /// How to print alerts.
    #[arg(long, value_enum, default_value_t = Output::Auto)]
    pub output: Output,
    /// How late an event may be, behind its host's newest event, and still join a chain.
    #[arg(long, default_value = "1h")]
    pub allowed_lateness: String,
    /// Values of Sigma `%placeholders%` (rules with the `expand` modifier): a TOML file of
    /// names to lists of values, such as `Administrators = ["admin*"]`.
    #[arg(long)]
    pub placeholders: Option<PathBuf>,
    /// The files' format (evtx, ecs, mde, w3c, ocsf, windows, ...). Default: told per file and
    /// per record.
    #[arg(long, value_parser = parse_format)]
    pub format: Option<chainwatch_config::service::InputFormat>,
    /// W3C columns for log lines before any `#Fields:` header ("date time s-ip cs-method ...").
    #[arg(long)]
    pub w3c_fields: Option<String>,
    /// Decode every record in full: no fast path (the reference the fast path must equal).
    #[arg(long, conflicts_with = "verify")]
    pub full: bool,
    /// Run twice, in full and with the fast path, and fail unless alerts and dead letters are
    /// identical; every record the fast path skips is also decoded and tested against every
    /// rule, and every record it decodes from the raw scan is also decoded in full and
    /// compared. Prints a summary instead of alerts.
    #[arg(long)]
    pub verify: bool,
    /// Telemetry files or folders: JSON lines, JSON arrays, concatenated JSON documents, EVTX,
    /// W3C (IIS) logs, and any of them gzipped (`.gz`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// `chainwatch rules ...`.
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Load rules and report every rule that cannot be loaded, with file, rule id and reason.
    Check {
        /// Values of Sigma `%placeholders%` (rules with the `expand` modifier): a TOML file of
        /// names to lists of values, such as `Administrators = ["admin*"]`.
        #[arg(long)]
        placeholders: Option<PathBuf>,
        /// Rule files or folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

/// Reads a format name as the config spells it.
fn parse_format(text: &str) -> Result<chainwatch_config::service::InputFormat, String> {
    use serde::Deserialize;
    use serde::de::IntoDeserializer;
    chainwatch_config::service::InputFormat::deserialize(
        IntoDeserializer::<serde::de::value::Error>::into_deserializer(text),
    )
    .map_err(|e| e.to_string())
}
