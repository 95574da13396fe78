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
    /// An event time outside the source's configured bounds (`max_event_age`,
    /// `max_event_ahead`), against the ingest clock.
    #[error("event time {time} is {by} outside the source's bounds")]
    TimeOutOfRange {
        /// The event time (RFC 3339).
        time: String,
        /// How far out, in words ("12d in the past").
        by: String,
    },
    /// No host field.
    #[error("no host name (looked for {0})")]
    NoHost(&'static str),
    /// The format could not be recognized.
    #[error("unknown record format: {0}")]
    UnknownFormat(String),
    /// The tenant could not be determined.
    #[error("no tenant: {0}")]
    NoTenant(String),
    /// A W3C log line arrived before any `#Fields:` header of its stream, and the source
    /// configures no `w3c_fields`.
    #[error("W3C log line without a #Fields: header before it (and no w3c_fields configured)")]
    NoW3cHeader,
    /// A W3C log line whose number of values differs from its `#Fields:` header (a truncated
    /// line, or a header that does not belong to it).
    #[error("W3C log line has {found} values, its #Fields: header names {expected}")]
    W3cFieldCount {
        /// Columns in the header.
        expected: usize,
        /// Values in the line.
        found: usize,
    },
    /// A W3C directive (`#Fields:`, ...) that cannot be read.
    #[error("bad W3C directive: {0}")]
    BadW3cDirective(String),
    /// An EVTX file whose file header cannot be read: none of it is decoded.
    #[error("not a readable EVTX file: {0}")]
    BadEvtxFile(String),
    /// A corrupted EVTX chunk (bad header, bad checksum): its records are skipped; the chunks
    /// before and after it are read.
    #[error("corrupted EVTX chunk {chunk}: {error}")]
    CorruptEvtxChunk {
        /// The chunk's number in the file (0-based).
        chunk: u64,
        /// What is wrong with it.
        error: String,
    },
    /// An EVTX record that cannot be parsed or rendered.
    #[error("unreadable EVTX record: {0}")]
    BadEvtxRecord(String),
    /// A gzip stream that cannot be decompressed.
    #[error("bad gzip data: {0}")]
    BadGzip(String),
}

impl DecodeError {
    /// Every reason label, for metrics registration and docs.
    pub const REASONS: [&'static str; 20] = [
        "too_large",
        "invalid_utf8",
        "malformed_json",
        "too_deep",
        "not_an_object",
        "wrong_type",
        "no_time",
        "bad_time",
        "time_out_of_range",
        "no_host",
        "unknown_format",
        "no_tenant",
        "no_w3c_header",
        "w3c_field_count",
        "bad_w3c_directive",
        "bad_evtx_file",
        "corrupt_evtx_chunk",
        "bad_evtx_record",
        "bad_gzip",
        // The label the ingest stage uses for a message it cannot hand to the decoder.
        "empty",
    ];

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
            DecodeError::TimeOutOfRange { .. } => "time_out_of_range",
            DecodeError::NoHost(_) => "no_host",
            DecodeError::UnknownFormat(_) => "unknown_format",
            DecodeError::NoTenant(_) => "no_tenant",
            DecodeError::NoW3cHeader => "no_w3c_header",
            DecodeError::W3cFieldCount { .. } => "w3c_field_count",
            DecodeError::BadW3cDirective(_) => "bad_w3c_directive",
            DecodeError::BadEvtxFile(_) => "bad_evtx_file",
            DecodeError::CorruptEvtxChunk { .. } => "corrupt_evtx_chunk",
            DecodeError::BadEvtxRecord(_) => "bad_evtx_record",
            DecodeError::BadGzip(_) => "bad_gzip",
        }
    }
}
