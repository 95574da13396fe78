//! The log subscriber: `tracing` lines on standard error, text or JSON, filtered by directives.
//! librdkafka's own lines arrive through `chainwatch_kafka::client::Context` under the target
//! `librdkafka`, in the same stream. JSON lines carry the current span and its parents (stage,
//! partition), so a line names where it happened.

use anyhow::{Result, anyhow};
use tracing_subscriber::EnvFilter;

/// Installs the subscriber. `RUST_LOG`, when set, overrides `level`.
pub fn init(json: bool, level: &str) -> Result<()> {
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        // The parse error repeats its source in its message: print it once.
        Ok(env) => EnvFilter::try_new(&env).map_err(|e| anyhow!("RUST_LOG={env:?}: {e}"))?,
        Err(_) => EnvFilter::try_new(level)
            .map_err(|e| anyhow!("[log] level {level:?} is not a level or filter: {e}"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}
