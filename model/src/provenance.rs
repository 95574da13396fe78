//! Where a record came from, kept with every event and every piece of evidence.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::SharedStr;

/// The origin of a record: a Kafka position or a place in a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Provenance {
    /// A record consumed from Kafka.
    Kafka {
        /// The topic it was read from.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset in that partition.
        offset: i64,
        /// The 0-based index of the record within the message, when one message carried several
        /// (a block of W3C lines, a JSON array, an EVTX file).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        record: Option<u64>,
    },
    /// A record read from a file.
    File {
        /// The file, as given on the command line (shared by every record of the file).
        path: SharedStr,
        /// The 1-based line where the record starts (text formats).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        line: Option<u64>,
        /// The record number (EVTX) or the 0-based index in a JSON array.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        record: Option<u64>,
    },
}

impl Provenance {
    /// The same origin narrowed to one record in it: the record's index within a Kafka message,
    /// or its number in a file (EVTX record id, index in a JSON array).
    pub fn with_record(&self, index: u64) -> Self {
        let mut p = self.clone();
        match &mut p {
            Provenance::Kafka { record, .. } | Provenance::File { record, .. } => {
                *record = Some(index);
            }
        }
        p
    }

    /// The same origin at a 1-based line of a file (unchanged for Kafka records).
    pub fn with_line(&self, at: u64) -> Self {
        let mut p = self.clone();
        if let Provenance::File { line, .. } = &mut p {
            *line = Some(at);
        }
        p
    }
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provenance::Kafka {
                topic,
                partition,
                offset,
                record,
            } => {
                write!(f, "{topic}[{partition}]@{offset}")?;
                if let Some(record) = record {
                    write!(f, "#{record}")?;
                }
                Ok(())
            }
            Provenance::File { path, line, record } => {
                f.write_str(path)?;
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                }
                if let Some(record) = record {
                    write!(f, "#{record}")?;
                }
                Ok(())
            }
        }
    }
}
