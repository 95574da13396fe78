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
    /// Write a synthetic workload: tenants, hosts, noise, injected chains with known answers.
    Gen(GenArgs),
}

/// `chainwatch gen`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// The folder to write `telemetry.<tenant>.windows.jsonl` files and `answers.json` to.
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
    /// rule. Prints a summary instead of alerts.
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
