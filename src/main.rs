//! The `chainwatch` binary: command line, wiring of the cores to Kafka or files, shutdown.
//!
//! - `run`: the pipeline on Kafka ([`run`]), stages in [`stages`].
//! - `replay`: the same cores over files, no broker ([`replay`]).
//! - `rules check`: load rules and report every problem ([`rules`]).
//! - `produce`: send telemetry files to a topic ([`produce`]), the demo's producer.
//! - `gen`: a synthetic workload with known answers ([`workload`]), for benchmarks and tests.
//! - metrics, health and logs of `run`: [`telemetry`].
//! - investigation: `explain` ([`explain`]: a finding's timeline, terminal and HTML), `hunt`
//!   ([`hunt`]: rules over the retained events topic), `hosts` ([`hosts`]: inferred roles);
//!   where they find the topics: [`topic_source`].

mod chunked;
mod cli;
mod explain;
mod hosts;
mod hunt;
mod playbook_test;
mod produce;
mod reload;
mod replay;
mod rules;
mod run;
mod stages;
mod telemetry;
mod topic_source;
mod workload;

use std::process::ExitCode;

/// Every allocation of the binary goes through mimalloc (ARCHITECTURE.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Result;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, PlaybookCommand, RulesCommand};

fn init_logging(json: bool, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<ExitCode> = match &cli.command {
        Command::Run(args) => run::load_config(&args.config)
            .and_then(|config| {
                let json =
                    cli.log_json || config.log.format == chainwatch_config::ops::LogFormat::Json;
                telemetry::logging::init(json, &config.log.level)?;
                Ok(config)
            })
            .and_then(|config| {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(run::run(args, config))
            })
            .map(|()| ExitCode::SUCCESS),
        Command::Produce(args) => {
            init_logging(cli.log_json, "info");
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(produce::produce(args)))
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Gen(args) => {
            init_logging(cli.log_json, "error");
            workload::generate(args).map(|answers| {
                let to = match &args.brokers {
                    Some(b) => format!(
                        "Kafka at {b} ({}), answers to {}",
                        args.topic,
                        args.out.display()
                    ),
                    None => args.out.display().to_string(),
                };
                println!(
                    "wrote {} events, {} chains, for {} tenants to {to}",
                    answers.events,
                    answers.chains.len(),
                    answers.tenants.len(),
                );
                ExitCode::SUCCESS
            })
        }
        Command::Replay(args) => {
            init_logging(cli.log_json, "error");
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            replay::replay(args, &mut out).and_then(|stats| {
                use std::io::Write;
                out.flush()?;
                if let Some(path) = &args.stats {
                    replay::write_stats(path, &stats)?;
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Rules {
            command:
                RulesCommand::Check {
                    paths,
                    placeholders,
                },
        } => {
            init_logging(cli.log_json, "warn");
            rules::placeholders_from(placeholders.as_deref()).and_then(|p| {
                let stdout = std::io::stdout();
                let ok = rules::check(paths, &p, &mut stdout.lock())?;
                Ok(if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            })
        }
        Command::Playbook {
            command: PlaybookCommand::Test { paths, junit },
        } => {
            init_logging(cli.log_json, "error");
            playbook_test::test(paths, junit.as_deref()).map(|ok| {
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            })
        }
        Command::Explain(args) => {
            init_logging(cli.log_json, "warn");
            let stdout = std::io::stdout();
            explain::explain(args, &mut stdout.lock()).map(|page| {
                if let Some(path) = page {
                    eprintln!("wrote {}", path.display());
                }
                ExitCode::SUCCESS
            })
        }
        Command::Hunt(args) => {
            init_logging(cli.log_json, "warn");
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            hunt::hunt(args, &mut out).and_then(|_| {
                use std::io::Write;
                out.flush()?;
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Hosts(args) => {
            init_logging(cli.log_json, "warn");
            let stdout = std::io::stdout();
            hosts::hosts(args, &mut stdout.lock()).map(|_| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chainwatch: {e:#}");
            ExitCode::from(2)
        }
    }
}
