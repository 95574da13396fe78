//! Detection rules end to end (parse, compile, match), one test per form of the Sigma
//! specification's detection section: maps, lists of maps, keywords, `|all` keywords, null
//! and empty values, quantified conditions with patterns and `them`, nested parentheses,
//! several conditions, and how field names resolve across source formats.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

use std::path::Path;

use chainwatch_config::sigma::parse_rule_text;
use chainwatch_correlate::RuleSet;
use chainwatch_model::{
    Activity, Event, EventClass, EventId, FieldValue, Fields, HostName, ProcessInfo, Provenance,
    SourceFormat, SourceMeta, Target, TenantId, Timestamp,
};

/// A rule with the given detection section (indented by four spaces), on process creation.
fn rule(detection: &str) -> RuleSet {
    let text = format!(
        "title: T\nid: 00000000-0000-4000-8000-000000000001\nlogsource:\n    category: process_creation\n    product: windows\ndetection:\n{detection}"
    );
    let (docs, diags) = parse_rule_text(Path::new("t.yml"), &text);
    assert!(diags.is_empty(), "{diags}");
    let (set, diags) = RuleSet::compile(&docs);
    assert!(diags.is_empty(), "{diags}");
    set
}

/// A Sysmon process creation with these fields.
fn sysmon(fields: &[(&str, FieldValue)]) -> Event {
    let mut f = Fields::new();
    f.push("EventID", FieldValue::Int(1));
    for (k, v) in fields {
        f.push(*k, v.clone());
    }
    Event {
        id: EventId::from_u128(7),
        tenant: TenantId::new("t").unwrap(),
        time: Timestamp::from_millis(0),
        class: EventClass::ProcessActivity,
        activity: Activity::Launch,
        host: HostName::new("h"),
        user: None,
        process: None,
        parent: None,
        target: Target::default(),
        source: SourceMeta {
            format: SourceFormat::WindowsNested,
            channel: Some("Microsoft-Windows-Sysmon/Operational".into()),
            provider: None,
            event_id: Some(1),
        },
        fields: f,
        provenance: Provenance::File {
            path: "t".into(),
            line: None,
            record: None,
        },
    }
}

fn s(v: &str) -> FieldValue {
    FieldValue::Str(v.into())
}

fn matches(set: &RuleSet, event: &Event) -> bool {
    let fast = !set.matching(event).is_empty();
    assert_eq!(
        fast,
        !set.matching_exhaustive(event).is_empty(),
        "prefilter and exhaustive disagree"
    );
    fast
}

#[test]
fn a_map_is_and_a_list_of_values_is_or() {
    let set = rule(
        "    selection:\n        Image|endswith: '\\cmd.exe'\n        CommandLine|contains:\n            - '/c'\n            - '/k'\n    condition: selection\n",
    );
    assert!(matches(
        &set,
        &sysmon(&[
            ("Image", s(r"C:\x\cmd.exe")),
            ("CommandLine", s("cmd /k x"))
        ])
    ));
    assert!(!matches(
        &set,
        &sysmon(&[("Image", s(r"C:\x\cmd.exe")), ("CommandLine", s("cmd x"))])
    ));
    assert!(!matches(&set, &sysmon(&[("CommandLine", s("cmd /c x"))])));
}

#[test]
fn a_list_of_maps_is_or() {
    let set = rule(
        "    selection:\n        - Image|endswith: '\\example.exe'\n        - Description|contains: 'Test executable'\n    condition: selection\n",
    );
    assert!(matches(&set, &sysmon(&[("Image", s(r"C:\example.exe"))])));
    assert!(matches(
        &set,
        &sysmon(&[("Description", s("a test EXECUTABLE"))])
    ));
    assert!(!matches(&set, &sysmon(&[("Image", s(r"C:\other.exe"))])));
}

#[test]
fn keywords_search_every_field() {
    let set = rule(
        "    keywords:\n        - 'event::clear'\n        - 'event::drop'\n    condition: keywords\n",
    );
    assert!(matches(
        &set,
        &sysmon(&[("CommandLine", s("mimikatz EVENT::Drop exit"))])
    ));
    assert!(matches(&set, &sysmon(&[("Other", s("x event::clear"))])));
    assert!(!matches(
        &set,
        &sysmon(&[("CommandLine", s("event:clear"))])
    ));
}

#[test]
fn all_keywords_must_be_present_somewhere() {
    let set = rule(
        "    keywords_cmdlet:\n        '|all':\n            - 'OabVirtualDirectory'\n            - ' -ExternalUrl '\n    condition: keywords_cmdlet\n",
    );
    assert!(matches(
        &set,
        &sysmon(&[(
            "Payload",
            s("Set-OabVirtualDirectory -ExternalUrl 'http://x'")
        )])
    ));
    // In different fields: still "the event contains both".
    assert!(matches(
        &set,
        &sysmon(&[
            ("A", s("Set-OabVirtualDirectory")),
            ("B", s("x -ExternalUrl y"))
        ])
    ));
    assert!(!matches(
        &set,
        &sysmon(&[("Payload", s("Set-OabVirtualDirectory"))])
    ));
}

#[test]
fn null_and_empty_values() {
    let set = rule(
        "    selection:\n        Image|endswith: '\\x.exe'\n    filter:\n        ParentImage: null\n    condition: selection and not filter\n",
    );
    assert!(matches(
        &set,
        &sysmon(&[("Image", s(r"C:\x.exe")), ("ParentImage", s(r"C:\p.exe"))])
    ));
    assert!(
        !matches(&set, &sysmon(&[("Image", s(r"C:\x.exe"))])),
        "absent is null"
    );
    assert!(!matches(
        &set,
        &sysmon(&[("Image", s(r"C:\x.exe")), ("ParentImage", FieldValue::Null)])
    ));
    let empty = rule("    selection:\n        CommandLine: ''\n    condition: selection\n");
    assert!(matches(&empty, &sysmon(&[("CommandLine", s(""))])));
    assert!(!matches(&empty, &sysmon(&[("CommandLine", s("x"))])));
    assert!(!matches(&empty, &sysmon(&[])));
}

#[test]
fn one_of_and_all_of_patterns() {
    let det = "    selection_img:\n        Image|endswith: '\\a.exe'\n    selection_cli:\n        CommandLine|contains: 'go'\n    filter_main_x:\n        User: 'SYSTEM'\n    filter_main_y:\n        User: 'LOCAL SERVICE'\n";
    let one = rule(&format!(
        "{det}    condition: 1 of selection_* and not 1 of filter_main_*\n"
    ));
    let all = rule(&format!(
        "{det}    condition: all of selection_* and not 1 of filter_main_*\n"
    ));
    let img = sysmon(&[("Image", s(r"C:\a.exe")), ("User", s("bob"))]);
    let both = sysmon(&[
        ("Image", s(r"C:\a.exe")),
        ("CommandLine", s("go")),
        ("User", s("bob")),
    ]);
    let filtered = sysmon(&[
        ("Image", s(r"C:\a.exe")),
        ("CommandLine", s("go")),
        ("User", s("system")),
    ]);
    assert!(matches(&one, &img));
    assert!(!matches(&all, &img));
    assert!(matches(&all, &both));
    assert!(!matches(&one, &filtered));
    assert!(!matches(&all, &filtered));
}

#[test]
fn them_leaves_out_underscore_identifiers() {
    let det = "    sel_a:\n        Image|endswith: '\\a.exe'\n    _helper:\n        CommandLine|contains: 'never'\n";
    let all = rule(&format!("{det}    condition: all of them\n"));
    assert!(
        matches(&all, &sysmon(&[("Image", s(r"C:\a.exe"))])),
        "_helper is not in them"
    );
    let one = rule(&format!("{det}    condition: 1 of them\n"));
    assert!(!matches(&one, &sysmon(&[("CommandLine", s("never"))])));
    // Named explicitly, an underscore identifier counts.
    let named = rule(&format!("{det}    condition: sel_a or _helper\n"));
    assert!(matches(&named, &sysmon(&[("CommandLine", s("never"))])));
}

#[test]
fn nested_parentheses_and_precedence() {
    let det = "    a:\n        Image|endswith: '\\a.exe'\n    b:\n        Image|endswith: '\\b.exe'\n    c:\n        CommandLine|contains: 'c'\n    d:\n        CommandLine|contains: 'd'\n";
    let set = rule(&format!(
        "{det}    condition: (a or b) and not (c and (d or a))\n"
    ));
    let ev = |img: &str, cli: &str| sysmon(&[("Image", s(img)), ("CommandLine", s(cli))]);
    assert!(matches(&set, &ev(r"C:\a.exe", "x")));
    assert!(matches(&set, &ev(r"C:\b.exe", "c")), "c without d or a");
    assert!(!matches(&set, &ev(r"C:\b.exe", "c d")));
    assert!(!matches(&set, &ev(r"C:\a.exe", "c")), "c and a");
    // `not` binds tighter than `and`, which binds tighter than `or`.
    let prec = rule(&format!("{det}    condition: a or b and not c\n"));
    assert!(matches(&prec, &ev(r"C:\a.exe", "c")));
    assert!(!matches(&prec, &ev(r"C:\b.exe", "c")));
}

#[test]
fn several_conditions_are_alternatives() {
    let set = rule(
        "    a:\n        Image|endswith: '\\a.exe'\n    b:\n        Image|endswith: '\\b.exe'\n    condition:\n        - a\n        - b\n",
    );
    assert!(matches(&set, &sysmon(&[("Image", s(r"C:\b.exe"))])));
    assert!(!matches(&set, &sysmon(&[("Image", s(r"C:\c.exe"))])));
}

#[test]
fn numbers_match_numbers_and_numeric_text() {
    let set = rule(
        "    selection:\n        EventID: 1\n        IntegrityLevel: 'High'\n    condition: selection\n",
    );
    assert!(matches(&set, &sysmon(&[("IntegrityLevel", s("high"))])));
    let mut text_id = sysmon(&[("IntegrityLevel", s("High"))]);
    text_id.fields = {
        let mut f = Fields::new();
        f.push("EventID", s("1"));
        f.push("IntegrityLevel", s("High"));
        f
    };
    assert!(matches(&set, &text_id));
}

#[test]
fn sigma_field_names_fall_back_to_canonical_fields() {
    // Security 4688 has no `Image`; the normalized process image stands in for it.
    let set =
        rule("    selection:\n        Image|endswith: '\\whoami.exe'\n    condition: selection\n");
    let mut e = sysmon(&[("NewProcessName", s(r"C:\Windows\System32\whoami.exe"))]);
    e.source.channel = Some("Security".into());
    e.source.event_id = Some(4688);
    e.process = Some(ProcessInfo {
        image: Some(r"C:\Windows\System32\whoami.exe".into()),
        ..ProcessInfo::default()
    });
    assert!(matches(&set, &e));
    // The event's own field wins over the canonical one.
    let mut own = e.clone();
    own.fields.push("Image", s(r"C:\other.exe"));
    assert!(!matches(&set, &own));
}

#[test]
fn logsource_selects_events() {
    let set = rule("    selection:\n        CommandLine|contains: 'x'\n    condition: selection\n");
    let mut file_event = sysmon(&[("CommandLine", s("x"))]);
    file_event.source.event_id = Some(11);
    assert!(
        !matches(&set, &file_event),
        "Sysmon 11 is not process_creation"
    );
    assert!(matches(&set, &sysmon(&[("CommandLine", s("x"))])));
}
