//! Deliverers: where a finding goes, one attempt at a time.
//!
//! [`Deliverer::attempt`] makes one attempt and says what happened ([`Outcome`]): delivered
//! (durable: written and synced, or confirmed by the destination with a 2xx), worth another
//! try, or rejected for good. Pacing retries and dead-lettering rejections is the sink stage's
//! job (`src/stages/sink.rs`), with [`crate::retry::Backoff`].

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use chainwatch_config::service::{AlertFormat, SinkConfig};
use chainwatch_model::Alert;

use crate::file::{JsonLinesFile, Rotation};
use crate::webhook::Webhook;
use crate::{ocsf, render};

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The finding is durable at the destination.
    Delivered {
        /// The destination already had it (a redelivery it recognised).
        duplicate: bool,
    },
    /// Not delivered; another attempt may succeed (timeouts, 5xx, 429, a full disk).
    Retry {
        /// How long the destination asked us to wait (`Retry-After`).
        after: Option<Duration>,
        /// What went wrong.
        error: String,
    },
    /// Not delivered, and sending it again will not help (other 4xx, a payload that cannot be
    /// built): the finding goes to the dead-letter topic with this.
    Reject {
        /// The HTTP status, where there was a response.
        status: Option<u16>,
        /// The response body (at most [`crate::webhook::MAX_BODY_KEPT`] bytes).
        body: String,
        /// What went wrong.
        error: String,
    },
}

/// A deliverer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// An I/O error opening the destination.
    #[error("sink {sink}: {source}")]
    Io {
        /// The sink's name.
        sink: String,
        /// The error.
        source: std::io::Error,
    },
    /// A setting that cannot work (a URL, a header, a template).
    #[error("sink {sink}: {message}")]
    Setup {
        /// The sink's name.
        sink: String,
        /// What is wrong.
        message: String,
    },
}

/// One destination.
#[derive(Debug)]
pub enum Deliverer {
    /// Standard output.
    Stdout {
        /// The sink's name.
        name: String,
        /// The form written.
        format: AlertFormat,
    },
    /// A JSON lines file.
    File {
        /// The sink's name.
        name: String,
        /// The file.
        file: JsonLinesFile,
    },
    /// An HTTP endpoint.
    Webhook(Box<Webhook>),
}

impl Deliverer {
    /// Opens the destination a sink config names; relative paths are under `base_dir`.
    pub fn open(config: &SinkConfig, base_dir: &Path) -> Result<Self, SinkError> {
        match config {
            SinkConfig::Stdout { name, format, .. } => Ok(Deliverer::Stdout {
                name: name.clone(),
                format: *format,
            }),
            SinkConfig::File {
                name,
                path,
                format,
                rotate_size,
                rotate_every,
                keep,
                ..
            } => {
                let path = if path.is_absolute() {
                    path.clone()
                } else {
                    base_dir.join(path)
                };
                let rotation = Rotation {
                    size: rotate_size.map(|s| s.as_u64()),
                    every: *rotate_every,
                };
                let file =
                    JsonLinesFile::open(&path, *format, rotation, *keep).map_err(|source| {
                        SinkError::Io {
                            sink: name.clone(),
                            source,
                        }
                    })?;
                Ok(Deliverer::File {
                    name: name.clone(),
                    file,
                })
            }
            SinkConfig::Webhook(w) => Ok(Deliverer::Webhook(Box::new(Webhook::new(w, base_dir)?))),
        }
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        match self {
            Deliverer::Stdout { name, .. } | Deliverer::File { name, .. } => name,
            Deliverer::Webhook(w) => w.name(),
        }
    }

    /// One attempt to deliver `alert`.
    pub async fn attempt(&mut self, alert: &Alert) -> Outcome {
        match self {
            Deliverer::Stdout { format, .. } => {
                let text = match format {
                    AlertFormat::Json => render::json_line(alert) + "\n",
                    AlertFormat::Ocsf => ocsf::line(alert) + "\n",
                    AlertFormat::Pretty => render::pretty(alert) + "\n",
                };
                let mut out = std::io::stdout().lock();
                io_outcome(out.write_all(text.as_bytes()).and_then(|()| out.flush()))
            }
            Deliverer::File { file, .. } => io_outcome(file.write(alert, SystemTime::now())),
            Deliverer::Webhook(w) => w.attempt(alert).await,
        }
    }
}

/// Local I/O errors are retried: a full disk gets space, a permission gets fixed, and nothing
/// is dead-lettered for a problem of our own machine.
fn io_outcome(r: std::io::Result<()>) -> Outcome {
    match r {
        Ok(()) => Outcome::Delivered { duplicate: false },
        Err(e) => Outcome::Retry {
            after: None,
            error: e.to_string(),
        },
    }
}
