//! The evidence timeline of a finding (`chainwatch explain`): the terminal text and the HTML
//! page, on the bundled sample's chain alert with a look-back added, and with
//! attacker-controlled content in every place telemetry reaches.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use chainwatch_model::{Alert, EventId, Lookback, Notable, RuleRef, Severity, TechniqueId};
use chainwatch_sink::timeline;

fn chain_alert() -> Alert {
    serde_json::from_str(include_str!("fixtures/chain-alert.json")).unwrap()
}

/// The chain alert with two look-back events: one 3 minutes before the first stage, one
/// during the chain.
fn with_lookback(mut a: Alert) -> Alert {
    let mut before = a.events[0].clone();
    before.id = EventId::from_u128(1);
    before.time = a.first_seen.add_nanos(-180_000_000_000);
    before.rule = "aspx".into();
    before.target.file = Some(r"C:\inetpub\wwwroot\aspnet_client\errorEE.aspx".into());
    let mut during = a.events[0].clone();
    during.id = EventId::from_u128(2);
    during.time = a.first_seen.add_nanos(60_000_000_000);
    a.lookback = Some(Lookback {
        from: a.first_seen.add_nanos(-86_400_000_000_000),
        to: a.last_seen,
        events: vec![
            Notable {
                evidence: before,
                rules: vec![RuleRef {
                    id: "aspx".into(),
                    title: "Web shell file written".into(),
                    level: Severity::High,
                }],
                techniques: vec![TechniqueId::parse("T1505.003").unwrap()],
            },
            Notable {
                evidence: during,
                rules: vec![RuleRef {
                    id: "recon".into(),
                    title: "Local group discovery".into(),
                    level: Severity::Low,
                }],
                techniques: Vec::new(),
            },
        ],
        complete: true,
        omitted: 0,
    });
    a
}

/// Text as the page's HTML escaping writes it.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
        .replace('/', "&#x2f;")
}

#[test]
fn the_terminal_timeline_merges_stages_and_look_back_in_time() {
    let a = with_lookback(chain_alert());
    let text = timeline::text(&a);
    let first = text.find("Web shell file written").unwrap();
    let stage1 = text.find("IIS worker process spawns a shell").unwrap();
    let during = text.find("Local group discovery").unwrap();
    let stage2 = text.find("User account created").unwrap();
    assert!(
        first < stage1 && stage1 < during && during < stage2,
        "{text}"
    );
    assert!(text.contains("-3m00s"), "{text}");
    assert!(
        text.contains("1 notable event(s) before, 1 during"),
        "{text}"
    );
    assert!(
        text.contains("earliest notable activity 3m00s before"),
        "{text}"
    );
    assert!(
        text.contains("T1003.001 LSASS Memory (Credential Access)"),
        "{text}"
    );
    for n in 1..=4 {
        assert!(text.contains(&format!("stage {n}")), "{text}");
    }
    // The readable block of replay and the stdout sink points at it.
    let block = chainwatch_sink::render::pretty(&a);
    assert!(
        block.contains("look-back: 2 other notable event(s) on the host since"),
        "{block}"
    );
    assert!(
        block.contains(&format!("chainwatch explain {}", a.id)),
        "{block}"
    );
}

#[test]
fn the_page_shows_every_stage_tactic_and_look_back_event() {
    let a = with_lookback(chain_alert());
    let html = timeline::html(&a).unwrap();
    for stage in &a.stages {
        assert!(html.contains(&stage.rule.title), "{}", stage.rule.title);
    }
    for n in 1..=4 {
        assert!(html.contains(&format!("id=\"stage-{n}\"")));
    }
    for tactic in [
        "Initial Access",
        "Persistence",
        "Credential Access",
        "Impact",
    ] {
        assert!(html.contains(tactic), "{tactic}");
    }
    assert!(html.contains("Web shell file written"));
    assert!(html.contains("errorEE.aspx"));
    // One chart: the look-back events fall within the chain's.
    assert_eq!(html.matches("<svg").count(), 1);
    assert!(html.contains("The chain"));
    // Notable activity hours before the chain: a second chart shows the dwell time.
    let mut early = a.clone();
    early.lookback.as_mut().unwrap().events[0].evidence.time =
        a.first_seen.add_nanos(-6 * 3_600_000_000_000);
    let html = timeline::html(&early).unwrap();
    assert_eq!(html.matches("<svg").count(), 2);
    assert!(html.contains("Look-back and chain"));
    assert!(timeline::text(&early).contains("earliest notable activity 6h00m00s before"));
    for step in &a.response {
        assert!(html.contains(&escaped(step)), "{step}");
    }
}

#[test]
fn the_page_is_self_contained() {
    let html = timeline::html(&with_lookback(chain_alert())).unwrap();
    let lower = html.to_ascii_lowercase();
    for banned in [
        "<script", "<link", "<img", "<iframe", "@import", "url(", " src=", "href=",
    ] {
        assert!(!lower.contains(banned), "{banned}");
    }
    assert!(lower.contains("content-security-policy"));
    assert!(lower.contains("default-src 'none'"));
}

#[test]
fn telemetry_content_is_escaped_everywhere() {
    let evil = r#"<script>alert(1)</script>"><img src=x onerror=alert(2)>' style="x"#;
    let mut a = with_lookback(chain_alert());
    a.host = chainwatch_model::HostName::new(evil);
    a.user = Some(evil.into());
    for e in &mut a.events {
        e.user = Some(evil.into());
        e.target.file = Some(evil.into());
        if let Some(p) = e.process.as_mut() {
            p.command_line = Some(evil.into());
            p.image = Some(evil.into());
        }
    }
    a.stages[0].name = evil.into();
    a.response.push(evil.into());
    a.description = Some(evil.into());
    let lb = a.lookback.as_mut().unwrap();
    lb.events[0].rules[0].title = evil.into();
    lb.events[0].evidence.user = Some(evil.into());
    let html = timeline::html(&a).unwrap();
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "a script element got through");
    assert!(!lower.contains("<img"), "an img element got through");
    assert!(
        !html.contains(r#"' style="x"#),
        "an attribute was opened by content"
    );
    assert!(html.contains(&escaped(evil)));

    let text = timeline::text(&a);
    let bell = "cmd /c whoami\u{1b}]0;pwned\u{7}\nFAKE LINE";
    let mut b = chain_alert();
    b.events[0].process.as_mut().unwrap().command_line = Some(bell.into());
    let text_b = timeline::text(&b);
    assert!(!text_b.contains('\u{1b}') && !text_b.contains('\u{7}'));
    assert!(
        text_b.contains("\\u{1b}]0;pwned\\u{7}\\u{a}FAKE LINE"),
        "{text_b}"
    );
    assert!(
        text.contains("<script>"),
        "plain text keeps the text as it is"
    );
}
