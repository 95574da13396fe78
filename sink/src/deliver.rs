//! Deliverers: where an alert goes. A delivery that returns `Ok` is durable (written and
//! flushed to the OS, and synced for files), so the caller may store the alert's offset.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chainwatch_config::service::{AlertFormat, SinkConfig};
use chainwatch_model::Alert;

use crate::render;

/// Why a delivery failed, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// An I/O error (disk full, permission, closed pipe).
    #[error("{sink}: {source}")]
    Io {
        /// The sink's name.
        sink: String,
        /// The error.
        source: std::io::Error,
    },
}

impl SinkError {
    /// Whether a retry may succeed. I/O errors may be transient (a full disk gets space).
    pub fn retryable(&self) -> bool {
        match self {
            SinkError::Io { source, .. } => source.kind() != std::io::ErrorKind::PermissionDenied,
        }
    }
}

/// One destination.
#[derive(Debug)]
pub enum Deliverer {
    /// Standard output.
    Stdout {
        /// The sink's name.
        name: String,
        /// JSON lines or the readable form.
        format: AlertFormat,
    },
    /// A JSON lines file, appended to.
    File {
        /// The sink's name.
        name: String,
        /// Where.
        path: PathBuf,
        /// The open file.
        file: File,
    },
}

impl Deliverer {
    /// Opens the destination a sink config names; relative paths are under `base_dir`.
    pub fn open(config: &SinkConfig, base_dir: &Path) -> Result<Self, SinkError> {
        match config {
            SinkConfig::Stdout { name, format } => Ok(Deliverer::Stdout {
                name: name.clone(),
                format: *format,
            }),
            SinkConfig::File { name, path } => {
                let path = if path.is_absolute() {
                    path.clone()
                } else {
                    base_dir.join(path)
                };
                Self::file(name, &path)
            }
        }
    }

    /// A JSON lines file deliverer.
    pub fn file(name: &str, path: &Path) -> Result<Self, SinkError> {
        let io = |source| SinkError::Io {
            sink: name.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(Deliverer::File {
            name: name.to_owned(),
            path: path.to_path_buf(),
            file,
        })
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        match self {
            Deliverer::Stdout { name, .. } | Deliverer::File { name, .. } => name,
        }
    }

    /// Delivers one alert durably.
    pub fn deliver(&mut self, alert: &Alert) -> Result<(), SinkError> {
        match self {
            Deliverer::Stdout { name, format } => {
                let text = match format {
                    AlertFormat::Json => render::json_line(alert) + "\n",
                    AlertFormat::Pretty => render::pretty(alert) + "\n",
                };
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())
                    .and_then(|()| out.flush())
                    .map_err(|source| SinkError::Io {
                        sink: name.clone(),
                        source,
                    })
            }
            Deliverer::File { name, file, .. } => {
                let mut line = render::json_line(alert);
                line.push('\n');
                file.write_all(line.as_bytes())
                    .and_then(|()| file.sync_data())
                    .map_err(|source| SinkError::Io {
                        sink: name.clone(),
                        source,
                    })
            }
        }
    }
}
