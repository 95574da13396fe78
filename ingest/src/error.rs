//! Why a record could not become an event.

/// A record that cannot be decoded. Each variant has a short, bounded [`reason`](Self::reason)
/// for metrics labels and dead-letter headers, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Larger than the source's `max_record_bytes`.
    #[error("record of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not UTF-8.
    #[error("record is not valid UTF-8 (byte {at})")]
    InvalidUtf8 {
        /// The first bad byte.
        at: usize,
    },
    /// Not JSON, or truncated.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// Nested deeper than the limit.
    #[error("JSON nested deeper than {0} levels")]
    TooDeep(usize),
    /// JSON, but not an object.
    #[error("expected a JSON object, found {0}")]
    NotAnObject(&'static str),
    /// A field has the wrong type.
    #[error("field {field} should be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// No timestamp field.
    #[error("no event time (looked for {0})")]
    NoTime(&'static str),
    /// A timestamp that cannot be read.
    #[error("unreadable event time {0:?}")]
    BadTime(String),
    /// No host field.
    #[error("no host name (looked for {0})")]
    NoHost(&'static str),
    /// The format could not be recognized.
    #[error("unknown record format: {0}")]
    UnknownFormat(String),
    /// The tenant could not be determined.
    #[error("no tenant: {0}")]
    NoTenant(String),
}

impl DecodeError {
    /// A short label, from a closed set, for metrics and dead-letter headers.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::InvalidUtf8 { .. } => "invalid_utf8",
            DecodeError::MalformedJson(_) => "malformed_json",
            DecodeError::TooDeep(_) => "too_deep",
            DecodeError::NotAnObject(_) => "not_an_object",
            DecodeError::WrongType { .. } => "wrong_type",
            DecodeError::NoTime(_) => "no_time",
            DecodeError::BadTime(_) => "bad_time",
            DecodeError::NoHost(_) => "no_host",
            DecodeError::UnknownFormat(_) => "unknown_format",
            DecodeError::NoTenant(_) => "no_tenant",
        }
    }
}
