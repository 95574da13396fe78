//! YAML documents to Sigma specs, with a line for every problem.

use std::path::Path;

use saphyr::{LoadableYamlNode, ScalarOwned};

use super::{
    Comparison, Condition, CorrelationRule, CorrelationType, CountCondition, Detection,
    DetectionRule, FieldAlias, FieldItem, FieldMap, LogSource, Modifier, RuleDoc, RuleMeta, Search,
    SearchBody, SigmaValue, parse_condition,
};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::duration::parse_duration;
use crate::playbook::parse_playbook;
use crate::yaml::{self, Node};

/// Reads a rule file from disk. An unreadable file is one diagnostic.
pub fn parse_rule_file(file: &Path) -> (Vec<RuleDoc>, Diagnostics) {
    match std::fs::read_to_string(file) {
        Ok(text) => parse_rule_text(file, &text),
        Err(e) => {
            let mut d = Diagnostics::default();
            d.push(Diagnostic::new(
                file,
                0,
                0,
                format!("cannot read the file: {e}"),
            ));
            (Vec::new(), d)
        }
    }
}

/// The number of the last line of `text`, as YAML counts lines (LF, CRLF or a lone CR).
fn last_line(text: &str) -> usize {
    text.matches('\n').count() + text.matches('\r').count() - text.matches("\r\n").count() + 1
}

/// Reads the rules in `text` (the contents of `file`). Each YAML document is one rule; a bad
/// document is reported and skipped, and the others still load.
pub fn parse_rule_text(file: &Path, text: &str) -> (Vec<RuleDoc>, Diagnostics) {
    let mut diags = Diagnostics::default();
    let docs = match Node::load_from_str(text) {
        Ok(docs) => docs,
        Err(e) => {
            let m = e.marker();
            // At the end of a file without a final line break the scanner reports the line
            // after the last one: the problem is at the end of the last line.
            let last = last_line(text);
            let (line, col) = if m.line() > last {
                (
                    last,
                    text.lines().last().map_or(0, |l| l.chars().count()) + 1,
                )
            } else {
                (m.line(), m.col() + 1)
            };
            diags.push(Diagnostic::new(
                file,
                line,
                col,
                format!("not valid YAML: {}", e.info()),
            ));
            return (Vec::new(), diags);
        }
    };
    let mut rules = Vec::new();
    for doc in &docs {
        if yaml::scalar(doc) == Some(&ScalarOwned::Null) {
            continue; // an empty document, e.g. after a trailing `---`
        }
        let mut ctx = Ctx {
            file,
            rule: None,
            diags: Diagnostics::default(),
        };
        if let Some(rule) = ctx.document(doc) {
            rules.push(rule);
        }
        diags.0.extend(ctx.diags.0);
    }
    (rules, diags)
}

struct Ctx<'a> {
    file: &'a Path,
    rule: Option<String>,
    diags: Diagnostics,
}

impl Ctx<'_> {
    fn error(&mut self, node: &Node, message: impl Into<String>) {
        let mut d = Diagnostic::new(self.file, yaml::line(node), yaml::column(node), message);
        d.rule = self.rule.clone();
        self.diags.push(d);
    }

    fn document(&mut self, doc: &Node) -> Option<RuleDoc> {
        if yaml::entries(doc).is_none() {
            self.error(
                doc,
                format!("a rule must be a mapping, found {}", yaml::kind(doc)),
            );
            return None;
        }
        let id = yaml::get(doc, "id").and_then(yaml::as_text);
        let title = yaml::get(doc, "title").and_then(yaml::as_text);
        self.rule = id.clone().or_else(|| title.clone());
        let errors_before = self.diags.len();
        let meta = self.meta(doc, id, title);
        if let Some(action) = yaml::get(doc, "action") {
            self.error(
                action,
                "unsupported: 'action' documents (Sigma v1 rule collections); write each rule \
                 as a complete document",
            );
            return None;
        }
        let rule = if let Some(corr) = yaml::get(doc, "correlation") {
            self.correlation(doc, corr, meta?).map(RuleDoc::Correlation)
        } else if let Some(det) = yaml::get(doc, "detection") {
            let logsource = self.logsource(doc);
            let detection = self.detection(det);
            Some(RuleDoc::Detection(DetectionRule {
                meta: meta?,
                logsource: logsource?,
                detection: detection?,
            }))
        } else if yaml::get(doc, "filter").is_some() {
            self.error(doc, "unsupported: Sigma filter documents (meta filters)");
            None
        } else {
            self.error(
                doc,
                "neither 'detection' nor 'correlation': this document is not a Sigma rule",
            );
            None
        };
        // A rule with any problem is not half-loaded.
        if self.diags.len() > errors_before {
            return None;
        }
        rule
    }

    fn meta(&mut self, doc: &Node, id: Option<String>, title: Option<String>) -> Option<RuleMeta> {
        let Some(title) = title else {
            self.error(doc, "missing 'title'");
            return None;
        };
        let level = match yaml::get(doc, "level") {
            Some(node) => match yaml::as_str(node).map(str::parse::<chainwatch_model::Severity>) {
                Some(Ok(level)) => Some(level),
                Some(Err(e)) => {
                    self.error(node, e.to_string());
                    None
                }
                None => {
                    self.error(node, "'level' must be a string");
                    None
                }
            },
            None => None,
        };
        Some(RuleMeta {
            title,
            id,
            name: yaml::get(doc, "name").and_then(yaml::as_text),
            description: yaml::get(doc, "description").and_then(yaml::as_text),
            status: yaml::get(doc, "status").and_then(yaml::as_text),
            level,
            tags: self.string_list(doc, "tags"),
            references: self.string_list(doc, "references"),
            falsepositives: self.string_list(doc, "falsepositives"),
            author: yaml::get(doc, "author").and_then(yaml::as_text),
            file: self.file.to_path_buf(),
            line: yaml::line(doc),
        })
    }

    /// A list of strings (a single string is a list of one).
    fn string_list(&mut self, doc: &Node, key: &str) -> Vec<String> {
        let Some(node) = yaml::get(doc, key) else {
            return Vec::new();
        };
        if let Some(text) = yaml::as_text(node) {
            return vec![text];
        }
        if yaml::scalar(node) == Some(&ScalarOwned::Null) {
            return Vec::new();
        }
        match yaml::items(node) {
            Some(items) => items.iter().filter_map(yaml::as_text).collect(),
            None => {
                self.error(node, format!("'{key}' must be a list of strings"));
                Vec::new()
            }
        }
    }

    fn logsource(&mut self, doc: &Node) -> Option<LogSource> {
        let Some(node) = yaml::get(doc, "logsource") else {
            self.error(doc, "missing 'logsource'");
            return None;
        };
        if yaml::entries(node).is_none() {
            self.error(node, "'logsource' must be a mapping");
            return None;
        }
        let text = |k: &str| yaml::get(node, k).and_then(yaml::as_text);
        Some(LogSource {
            category: text("category"),
            product: text("product"),
            service: text("service"),
        })
    }

    fn detection(&mut self, det: &Node) -> Option<Detection> {
        let Some(entries) = yaml::entries(det) else {
            self.error(det, "'detection' must be a mapping");
            return None;
        };
        let mut searches = Vec::new();
        let mut failed_searches = Vec::new();
        let mut conditions = Vec::new();
        let mut condition_nodes = Vec::new();
        let mut condition_line = 0;
        let mut ok = true;
        for (key, value) in entries {
            let Some(name) = yaml::as_text(key) else {
                self.error(key, "a search identifier must be a string");
                ok = false;
                continue;
            };
            match name.as_str() {
                "condition" => {
                    condition_line = yaml::line(key);
                    let texts: Vec<&Node> = match yaml::items(value) {
                        Some(items) => items.iter().collect(),
                        None => vec![value],
                    };
                    for node in texts {
                        match yaml::as_str(node).map(parse_condition) {
                            Some(Ok(c)) => {
                                conditions.push(c);
                                condition_nodes.push(node);
                            }
                            Some(Err(e)) => {
                                self.error(node, format!("condition: {e}"));
                                ok = false;
                            }
                            None => {
                                self.error(
                                    node,
                                    "'condition' must be a string or a list of strings",
                                );
                                ok = false;
                            }
                        }
                    }
                }
                "timeframe" => {
                    self.error(
                        key,
                        "unsupported: 'timeframe' (deprecated Sigma aggregation); use a \
                         correlation rule with 'timespan'",
                    );
                    ok = false;
                }
                _ => match self.search_body(value) {
                    Some(body) => searches.push(Search {
                        name,
                        line: yaml::line(key),
                        body,
                    }),
                    None => {
                        failed_searches.push(name);
                        ok = false;
                    }
                },
            }
        }
        if conditions.is_empty() && ok {
            self.error(det, "missing 'condition'");
            return None;
        }
        // Names of searches that failed to parse count as present: their own error says why.
        let names: Vec<&str> = searches
            .iter()
            .map(|s| s.name.as_str())
            .chain(failed_searches.iter().map(String::as_str))
            .collect();
        for (cond, node) in conditions.iter().zip(condition_nodes) {
            self.check_references(node, cond, &names, &mut ok);
        }
        ok.then_some(Detection {
            searches,
            conditions,
            condition_line,
        })
    }

    fn check_references(&mut self, at: &Node, cond: &Condition, searches: &[&str], ok: &mut bool) {
        match cond {
            Condition::Search(name) => {
                if !searches.contains(&name.as_str()) {
                    self.error(
                        at,
                        format!("the condition names {name:?}, which is not a search of this rule"),
                    );
                    *ok = false;
                }
            }
            Condition::Not(inner) => self.check_references(at, inner, searches, ok),
            Condition::And(terms) | Condition::Or(terms) => {
                for t in terms {
                    self.check_references(at, t, searches, ok);
                }
            }
            Condition::OneOf(p) | Condition::AllOf(p) => {
                if !searches.iter().any(|s| p.matches(s)) {
                    self.error(
                        at,
                        format!("the condition's pattern '{p}' matches no search of this rule"),
                    );
                    *ok = false;
                }
            }
        }
    }

    fn search_body(&mut self, node: &Node) -> Option<SearchBody> {
        if yaml::entries(node).is_some() {
            return self.field_map(node).map(|m| SearchBody::Maps(vec![m]));
        }
        if let Some(items) = yaml::items(node) {
            if items.is_empty() {
                self.error(node, "a search cannot be an empty list");
                return None;
            }
            if items.iter().all(|i| yaml::entries(i).is_some()) {
                let maps: Option<Vec<FieldMap>> = items.iter().map(|i| self.field_map(i)).collect();
                return maps.map(SearchBody::Maps);
            }
            if items.iter().all(|i| yaml::scalar(i).is_some()) {
                let values = items.iter().filter_map(|i| self.value(i)).collect();
                return Some(SearchBody::Keywords(FieldItem {
                    field: None,
                    modifiers: Vec::new(),
                    values,
                    line: yaml::line(node),
                }));
            }
            self.error(
                node,
                "a search list must hold only maps or only keywords, not both",
            );
            return None;
        }
        if let Some(v) = yaml::scalar(node).and_then(|_| self.value(node)) {
            return Some(SearchBody::Keywords(FieldItem {
                field: None,
                modifiers: Vec::new(),
                values: vec![v],
                line: yaml::line(node),
            }));
        }
        self.error(
            node,
            format!(
                "a search must be a map or a list, found {}",
                yaml::kind(node)
            ),
        );
        None
    }

    fn field_map(&mut self, node: &Node) -> Option<FieldMap> {
        let mut items = Vec::new();
        let mut ok = true;
        for (key, value) in yaml::entries(node)? {
            let Some(key_text) = yaml::as_text(key) else {
                self.error(key, "a field name must be a string");
                ok = false;
                continue;
            };
            let mut parts = key_text.split('|');
            let field = parts.next().unwrap_or_default().trim();
            let mut modifiers = Vec::new();
            for m in parts {
                match Modifier::from_name(m.trim()) {
                    Some(modifier) => modifiers.push(modifier),
                    None => {
                        self.error(key, format!("unknown value modifier '{m}' in '{key_text}'"));
                        ok = false;
                    }
                }
            }
            let re_flags = [
                Modifier::ReIgnoreCase,
                Modifier::ReMultiLine,
                Modifier::ReDotAll,
            ];
            if modifiers.iter().any(|m| re_flags.contains(m)) && !modifiers.contains(&Modifier::Re)
            {
                self.error(
                    key,
                    format!("regex flags i, m and s need 're' in '{key_text}'"),
                );
                ok = false;
            }
            let values = match yaml::items(value) {
                Some(list) => list.iter().filter_map(|v| self.value(v)).collect(),
                None => self.value(value).into_iter().collect(),
            };
            items.push(FieldItem {
                field: (!field.is_empty()).then(|| field.to_owned()),
                modifiers,
                values,
                line: yaml::line(key),
            });
        }
        ok.then_some(FieldMap { items })
    }

    fn value(&mut self, node: &Node) -> Option<SigmaValue> {
        match yaml::scalar(node) {
            Some(ScalarOwned::String(s)) => Some(SigmaValue::Str(s.clone())),
            Some(ScalarOwned::Integer(i)) => Some(SigmaValue::Int(*i)),
            Some(ScalarOwned::FloatingPoint(f)) => Some(SigmaValue::Float(f.into_inner())),
            Some(ScalarOwned::Boolean(b)) => Some(SigmaValue::Bool(*b)),
            Some(ScalarOwned::Null) => Some(SigmaValue::Null),
            None => {
                self.error(
                    node,
                    format!(
                        "a field value must be a scalar or a list of scalars, found {}",
                        yaml::kind(node)
                    ),
                );
                None
            }
        }
    }

    fn correlation(&mut self, doc: &Node, corr: &Node, meta: RuleMeta) -> Option<CorrelationRule> {
        if yaml::entries(corr).is_none() {
            self.error(corr, "'correlation' must be a mapping");
            return None;
        }
        let kind = match yaml::get(corr, "type") {
            Some(node) => match yaml::as_str(node) {
                Some("event_count") => Some(CorrelationType::EventCount),
                Some("value_count") => Some(CorrelationType::ValueCount),
                Some("temporal") => Some(CorrelationType::Temporal),
                Some("temporal_ordered") => Some(CorrelationType::TemporalOrdered),
                _ => {
                    self.error(
                        node,
                        "correlation 'type' must be event_count, value_count, temporal or temporal_ordered",
                    );
                    None
                }
            },
            None => {
                self.error(corr, "missing correlation 'type'");
                None
            }
        };
        let rules = self.string_list(corr, "rules");
        if rules.is_empty() {
            self.error(corr, "a correlation needs 'rules' (ids or names of rules)");
        }
        let group_by = self.string_list(corr, "group-by");
        let timespan = match yaml::get(corr, "timespan") {
            Some(node) => match yaml::as_str(node).map(parse_duration) {
                Some(Ok(d)) if !d.is_zero() => Some(d),
                Some(Ok(_)) => {
                    self.error(node, "'timespan' must be longer than zero");
                    None
                }
                Some(Err(e)) => {
                    self.error(node, e);
                    None
                }
                None => {
                    self.error(node, "'timespan' must be a duration such as 10m or 24h");
                    None
                }
            },
            None => {
                self.error(corr, "missing correlation 'timespan'");
                None
            }
        };
        let condition = yaml::get(corr, "condition").and_then(|n| self.count_condition(n));
        let kind = kind?;
        match kind {
            CorrelationType::EventCount | CorrelationType::ValueCount if condition.is_none() => {
                self.error(
                    corr,
                    format!("a {} correlation needs a 'condition'", kind.name()),
                );
            }
            CorrelationType::ValueCount
                if condition.as_ref().is_some_and(|c| c.fields.is_empty()) =>
            {
                self.error(
                    corr,
                    "a value_count correlation needs 'field' in its condition",
                );
            }
            _ => {}
        }
        let aliases = yaml::get(corr, "aliases")
            .map(|n| self.aliases(n))
            .unwrap_or_default();
        let generate = [yaml::get(doc, "generate"), yaml::get(corr, "generate")]
            .into_iter()
            .flatten()
            .any(|n| yaml::scalar(n) == Some(&ScalarOwned::Boolean(true)));
        let playbook = match yaml::get(doc, "playbook") {
            Some(node) => match parse_playbook(node, &rules) {
                Ok(p) => Some(Box::new(p)),
                Err(errors) => {
                    for (at, msg) in errors {
                        let mut d =
                            Diagnostic::new(self.file, at.0, at.1, format!("playbook: {msg}"));
                        d.rule = self.rule.clone();
                        self.diags.push(d);
                    }
                    None
                }
            },
            None => None,
        };
        Some(CorrelationRule {
            meta,
            kind,
            rules,
            group_by,
            timespan: timespan?,
            condition,
            aliases,
            generate,
            playbook,
        })
    }

    fn count_condition(&mut self, node: &Node) -> Option<CountCondition> {
        let Some(entries) = yaml::entries(node) else {
            self.error(
                node,
                "a correlation 'condition' must be a mapping such as {gte: 10}",
            );
            return None;
        };
        let mut cond = CountCondition {
            fields: Vec::new(),
            bounds: Vec::new(),
        };
        for (k, v) in entries {
            let key = yaml::as_str(k).unwrap_or_default();
            let cmp = match key {
                "field" => {
                    match yaml::items(v) {
                        Some(items) => {
                            cond.fields = items.iter().filter_map(yaml::as_text).collect();
                            if cond.fields.len() != items.len() {
                                self.error(v, "'field' must be a field name or a list of them");
                            }
                        }
                        None => match yaml::as_text(v) {
                            Some(f) => cond.fields = vec![f],
                            None => self.error(v, "'field' must be a field name or a list of them"),
                        },
                    }
                    continue;
                }
                "gt" => Comparison::Gt,
                "gte" => Comparison::Gte,
                "lt" => Comparison::Lt,
                "lte" => Comparison::Lte,
                "eq" => Comparison::Eq,
                other => {
                    self.error(
                        k,
                        format!("unknown condition operator '{other}' (gt, gte, lt, lte, eq)"),
                    );
                    continue;
                }
            };
            match yaml::scalar(v) {
                Some(ScalarOwned::Integer(n)) if *n >= 0 => cond.bounds.push((cmp, *n as u64)),
                _ => self.error(v, format!("'{key}' needs a non-negative integer")),
            }
        }
        Some(cond)
    }

    fn aliases(&mut self, node: &Node) -> Vec<FieldAlias> {
        let Some(entries) = yaml::entries(node) else {
            self.error(
                node,
                "'aliases' must be a mapping of alias names to {rule: field}",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, per_rule) in entries {
            let Some(name) = yaml::as_text(name) else {
                continue;
            };
            let Some(pairs) = yaml::entries(per_rule) else {
                self.error(
                    per_rule,
                    format!("alias '{name}' must map rule names to field names"),
                );
                continue;
            };
            let fields = pairs
                .filter_map(|(r, f)| Some((yaml::as_text(r)?, yaml::as_text(f)?)))
                .collect();
            out.push(FieldAlias { name, fields });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigma::{Pattern, SearchBody};
    use std::path::PathBuf;

    fn parse(text: &str) -> (Vec<RuleDoc>, Diagnostics) {
        parse_rule_text(&PathBuf::from("t.yml"), text)
    }

    const DETECTION: &str = r#"
title: Web server spawns a shell
id: 0a5e2f4c-1111-4222-8333-944455556666
name: web_shell
status: test
level: high
tags:
    - attack.persistence
    - attack.t1505.003
logsource:
    category: process_creation
    product: windows
detection:
    selection:
        ParentImage|endswith: '\w3wp.exe'
        Image|endswith:
            - '\cmd.exe'
            - '\powershell.exe'
    filter_main:
        CommandLine|contains|all:
            - 'a'
            - 'b'
    condition: selection and not 1 of filter_*
"#;

    #[test]
    fn a_yaml_error_at_the_end_of_a_file_without_a_final_line_break_points_into_the_file() {
        // Found by the `sigma` fuzz target: the scanner put this one on line 3 of 2.
        let (docs, diags) = parse("title: x\nlogsource: {product: windows, category: a b");
        assert!(docs.is_empty());
        let d = diags.iter().next().unwrap();
        assert!(d.message.starts_with("not valid YAML"), "{d}");
        assert_eq!(d.line, 2, "{d}");
    }

    #[test]
    fn reads_a_detection_rule() {
        let (docs, diags) = parse(DETECTION);
        assert!(diags.is_empty(), "{diags}");
        let RuleDoc::Detection(rule) = &docs[0] else {
            panic!("not a detection")
        };
        assert_eq!(rule.meta.name.as_deref(), Some("web_shell"));
        assert_eq!(rule.meta.level, Some(chainwatch_model::Severity::High));
        assert_eq!(rule.logsource.category.as_deref(), Some("process_creation"));
        assert_eq!(rule.detection.searches.len(), 2);
        let SearchBody::Maps(maps) = &rule.detection.searches[0].body else {
            panic!()
        };
        assert_eq!(maps[0].items[1].field.as_deref(), Some("Image"));
        assert_eq!(maps[0].items[1].modifiers, vec![Modifier::EndsWith]);
        assert_eq!(maps[0].items[1].values.len(), 2);
        assert_eq!(
            rule.detection.conditions[0],
            Condition::And(vec![
                Condition::Search("selection".into()),
                Condition::Not(Box::new(Condition::OneOf(Pattern::Names(
                    "filter_*".into()
                ))))
            ])
        );
    }

    #[test]
    fn reads_a_correlation_with_its_playbook() {
        let text = r#"
title: Chain
id: 11111111-2222-4333-8444-555555555555
correlation:
    type: temporal_ordered
    rules: [a, b]
    group-by: [Computer]
    timespan: 24h
level: critical
playbook:
    priority: critical
    response:
        - Isolate the host
"#;
        let (docs, diags) = parse(text);
        assert!(diags.is_empty(), "{diags}");
        let RuleDoc::Correlation(c) = &docs[0] else {
            panic!()
        };
        assert_eq!(c.kind, CorrelationType::TemporalOrdered);
        assert_eq!(c.rules, vec!["a", "b"]);
        assert_eq!(c.group_by, vec!["Computer"]);
        assert_eq!(c.timespan.as_secs(), 86400);
        assert!(!c.generate);
        let pb = c.playbook.as_ref().unwrap();
        assert_eq!(pb.response, vec!["Isolate the host"]);
        assert_eq!(pb.priority, Some(chainwatch_model::Severity::Critical));
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "title: Bad\nid: bad-1\nlogsource:\n    product: windows\ndetection:\n    sel:\n        Image|endswithh: x\n    condition: sel or other\n---\ntitle: Good\nlogsource: {product: windows}\ndetection:\n    sel: {EventID: 1}\n    condition: sel\n";
        let (docs, diags) = parse(text);
        assert_eq!(docs.len(), 1, "the good rule still loads");
        let lines: Vec<usize> = diags.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![7, 8], "{diags}");
        assert!(diags.0[0].message.contains("endswithh"));
        assert!(diags.0[1].message.contains("\"other\""));
        assert_eq!(diags.0[0].rule.as_deref(), Some("bad-1"));
    }

    const CHAIN: &str = r#"
title: Chain
correlation:
    type: temporal_ordered
    rules: [a, b, c, d]
    group-by: [Computer]
    timespan: 24h
playbook:
"#;

    #[test]
    fn reads_every_playbook_extension() {
        let text = format!(
            "{CHAIN}{}",
            r#"    priority: critical
    scope: {roles: [exchange]}
    groups:
        - {name: recon, rules: [b, c], min: 1}
    stages:
        a: {optional: true}
        recon: {max_gap: 1h}
        d: {min_count: 20, distinct: TargetFilename, within: 1m}
    absent:
        - {rule: cleanup, after: a, within: 30m}
    partial:
        - {after: a, priority: medium}
        - {after: recon, priority: high}
    suppress: 24h
    references: [https://example.org]
    fixtures:
        - name: positive
          input: fixtures/p.jsonl
          tenant: acme
          expect:
              - {stages: [a, recon, d], host: EXCH01, priority: critical}
        - {name: negative, input: fixtures/n.jsonl, expect: []}
"#
        );
        let (docs, diags) = parse(&text);
        assert!(diags.is_empty(), "{diags}");
        let RuleDoc::Correlation(c) = &docs[0] else {
            panic!()
        };
        let pb = c.playbook.as_ref().unwrap();
        assert_eq!(pb.scope.roles, ["exchange"]);
        assert_eq!(pb.groups[0].rules, ["b", "c"]);
        assert!(pb.stages["a"].optional);
        assert_eq!(pb.stages["recon"].max_gap.unwrap().as_secs(), 3600);
        assert_eq!(pb.stages["d"].min_count, 20);
        assert_eq!(pb.stages["d"].distinct.as_deref(), Some("TargetFilename"));
        assert_eq!(pb.absent[0].rule, "cleanup");
        assert_eq!(pb.partial[1].priority, chainwatch_model::Severity::High);
        assert_eq!(pb.suppress.unwrap().as_secs(), 86400);
        assert_eq!(pb.fixtures.len(), 2);
        assert_eq!(pb.fixtures[0].expect[0].stages, ["a", "recon", "d"]);
        assert!(pb.fixtures[1].expect.is_empty());
    }

    #[test]
    fn playbook_mistakes_are_all_reported() {
        let text = format!(
            "{CHAIN}{}",
            r#"    priority: urgent
    stages:
        z: {optional: true}
        a: {min_count: 1, within: 1m, colour: red}
    groups:
        - {name: g, rules: [a, c]}
    partial:
        - {after: nowhere, priority: high}
    absent:
        - {rule: b, after: a, within: 1m}
    respond: [typo]
"#
        );
        let (docs, diags) = parse(&text);
        assert!(docs.is_empty());
        let all = diags.to_string();
        for needle in [
            "urgent",
            "'z' is not a stage",
            "colour",
            "only makes sense",
            "consecutive",
            "nowhere",
            "'b' is a stage",
            "respond",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in {all}");
        }
        assert!(diags.iter().all(|d| d.line > 8), "{all}");
    }

    #[test]
    fn yaml_errors_carry_a_position() {
        let (docs, diags) = parse("title: x\n  bad: [\n");
        assert!(docs.is_empty());
        assert_eq!(diags.len(), 1);
        assert!(diags.0[0].line >= 1);
    }

    #[test]
    fn deprecated_aggregations_are_explained() {
        let text = "title: Agg\nlogsource: {product: windows}\ndetection:\n    sel: {EventID: 1}\n    condition: sel | count() > 5\n";
        let (docs, diags) = parse(text);
        assert!(docs.is_empty());
        assert!(diags.0[0].message.contains("correlation rule"), "{diags}");
        assert_eq!(diags.0[0].line, 5);
    }
}
