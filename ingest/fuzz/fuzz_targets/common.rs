//! What every target does: split a payload as a file or Kafka message would be, decode every
//! record, and check the invariants that must hold for any input.

use std::sync::OnceLock;

use chainwatch_config::service::InputFormat;
use chainwatch_ingest::{
    DecodeError, Decoder, DecoderConfig, Piece, TenantSource, W3cState, split_payload,
};
use chainwatch_model::{Provenance, TenantId, Timestamp, wire};

/// A decoder per format, built once: the mapping tables are parsed at start-up, not per input.
pub fn decoder(format: InputFormat) -> &'static Decoder {
    static DECODERS: OnceLock<Vec<(InputFormat, Decoder)>> = OnceLock::new();
    let all = DECODERS.get_or_init(|| {
        [
            InputFormat::Auto,
            InputFormat::Windows,
            InputFormat::Evtx,
            InputFormat::Ecs,
            InputFormat::Mde,
            InputFormat::W3c,
            InputFormat::Ocsf,
        ]
        .into_iter()
        .map(|f| {
            let config = DecoderConfig {
                format: f,
                max_record_bytes: 64 << 10,
                max_unpacked_bytes: 1 << 20,
                // Lines before any header are read with IIS's default columns.
                w3c_fields: (f == InputFormat::W3c).then(|| {
                    "date time s-ip cs-method cs-uri-stem cs-uri-query s-port cs-username c-ip cs(User-Agent) cs(Referer) sc-status sc-substatus sc-win32-status time-taken".into()
                }),
                max_event_age: Some(std::time::Duration::from_secs(3650 * 86_400)),
                max_event_ahead: Some(std::time::Duration::from_secs(3600)),
                ..DecoderConfig::default()
            };
            (f, Decoder::new(config).expect("the built-in tables load"))
        })
        .collect()
    });
    &all.iter()
        .find(|(f, _)| *f == format)
        .expect("a decoder per format")
        .1
}

/// Splits and decodes `data`; panics only if an invariant breaks.
pub fn run(format: InputFormat, data: &[u8]) {
    let d = decoder(format);
    let tenant = TenantSource::Fixed(TenantId::new("fuzz").expect("a valid tenant"));
    let origin = Provenance::Kafka {
        topic: "telemetry.fuzz.x".into(),
        partition: 0,
        offset: 0,
        record: None,
    };
    let now = Timestamp::from_millis(1_714_557_600_000);
    let mut w3c = W3cState::new();
    for piece in split_payload(data, &origin, &d.split_options(), &mut w3c) {
        match piece {
            Piece::Record(r) => match d.decode_record(&r, &tenant, Some(now)) {
                Ok(event) => {
                    // Every event has a host and serializes as JSON (files, `hunt` reports)
                    // and as bin1 (the events topic), reading back as itself.
                    assert!(!event.host.key().is_empty() || event.host.display().is_empty());
                    serde_json::to_vec(&event).expect("events serialize");
                    let bin = wire::to_bin(&event, 0);
                    let back = wire::decode_event(&bin, Some(wire::BIN1)).expect("bin1 reads");
                    assert_eq!(back, event);
                    assert_eq!(back.host.display(), event.host.display());
                }
                Err(e) => check_reason(&e),
            },
            Piece::Bad { error, .. } => check_reason(&error),
        }
    }
}

fn check_reason(e: &DecodeError) {
    assert!(DecodeError::REASONS.contains(&e.reason()));
    let _ = e.to_string();
}
