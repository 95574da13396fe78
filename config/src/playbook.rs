//! Playbooks: what chainwatch adds to a Sigma correlation rule.
//!
//! A playbook file is a multi-document Sigma YAML file: the detection rules of its stages and
//! one `temporal_ordered` correlation rule that chains them. The correlation rule carries a
//! `playbook` custom attribute (Sigma allows custom attributes, so other Sigma tools still load
//! the file) with what Sigma cannot say:
//!
//! - per-stage settings: a time limit from the previous stage (`max_gap`), counts with distinct
//!   values inside a window (`min_count`, `distinct`, `within`), `optional` stages;
//! - `groups`: consecutive rules of the chain that form one stage, satisfied by `min` of them in
//!   any order ("N of these M");
//! - `absent`: a rule that must NOT match within a deadline after a stage, judged on event time;
//! - `partial`: findings raised before the chain completes, with their priority;
//! - `suppress`: one finding per group and window, updated as stages arrive;
//! - `scope`: host roles the playbook applies to;
//! - `priority`, `investigation`, `response`, `references`;
//! - `fixtures`: telemetry files with the findings they must (or must not) raise.
//!
//! Unknown keys are errors everywhere: a typo must not silently drop a response step.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chainwatch_model::Severity;

use crate::duration::parse_duration;
use crate::yaml::{self, Node};

/// The `playbook` attribute of a correlation rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlaybookSpec {
    /// Priority of the complete finding; defaults to the rule's `level`.
    pub priority: Option<Severity>,
    /// Where the playbook applies.
    pub scope: Scope,
    /// Settings per stage, by the rule name (or id) used in `correlation.rules`.
    pub stages: BTreeMap<String, StageSettings>,
    /// Consecutive rules of the chain that form one stage.
    pub groups: Vec<StageGroup>,
    /// Rules that must not match after a stage.
    pub absent: Vec<Absence>,
    /// Findings raised before the chain completes.
    pub partial: Vec<Milestone>,
    /// One finding per group and window: later stages update it.
    pub suppress: Option<Duration>,
    /// What the analyst checks first.
    pub investigation: Vec<String>,
    /// What to do: containment and recovery steps, in order.
    pub response: Vec<String>,
    /// Public descriptions of the threat.
    pub references: Vec<String>,
    /// Telemetry files and the findings they must raise.
    pub fixtures: Vec<Fixture>,
}

/// Where a playbook applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Host roles (`exchange`, `domain_controller`, `iis`); empty means every host. A host has a
    /// role when its tenant's config says so.
    pub roles: Vec<String>,
}

/// Settings of one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSettings {
    /// At most this long after the previous stage that happened.
    pub max_gap: Option<Duration>,
    /// Matches needed for the stage (default 1).
    pub min_count: u32,
    /// Count distinct values of this field instead of events.
    pub distinct: Option<String>,
    /// The counted matches fall inside a window this long.
    pub within: Option<Duration>,
    /// The chain may go on without this stage.
    pub optional: bool,
}

impl Default for StageSettings {
    fn default() -> Self {
        Self {
            max_gap: None,
            min_count: 1,
            distinct: None,
            within: None,
            optional: false,
        }
    }
}

/// Consecutive rules of the chain that form one stage, satisfied by `min` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageGroup {
    /// The stage's name in alerts.
    pub name: String,
    /// The rules, as named in `correlation.rules` (consecutive there).
    pub rules: Vec<String>,
    /// How many of them must match, in any order.
    pub min: usize,
}

/// A rule that must not match within `within` after stage `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Absence {
    /// A detection rule of the same file, not one of the chain's stages.
    pub rule: String,
    /// The stage whose time starts the deadline.
    pub after: String,
    /// How long after that stage the rule must stay silent.
    pub within: Duration,
}

/// A partial finding: raised once the chain reaches `after`, with `priority`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Milestone {
    /// The stage (rule or group name) reached.
    pub after: String,
    /// Priority of the finding at that point.
    pub priority: Severity,
}

/// One fixture: a telemetry file and what replaying it must raise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixture {
    /// What the fixture shows.
    pub name: String,
    /// The telemetry file, relative to the playbook file.
    pub input: PathBuf,
    /// The tenant of every event (default `default`).
    pub tenant: Option<String>,
    /// Take each event's tenant from this field instead.
    pub tenant_field: Option<String>,
    /// The findings of this playbook the replay must raise, exactly (empty: none).
    pub expect: Vec<Expectation>,
    /// The line of the fixture in the playbook file.
    pub line: usize,
}

/// One finding a fixture expects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expectation {
    /// The stages it has, in order (rule or group names).
    pub stages: Vec<String>,
    /// Its host (compared as hosts are: case-insensitive, without domain).
    pub host: Option<String>,
    /// Its tenant.
    pub tenant: Option<String>,
    /// Its priority.
    pub priority: Option<Severity>,
    /// Whether it is partial (the chain not complete).
    pub partial: Option<bool>,
}

/// A problem: its (line, column) and message.
pub type PlaybookError = ((usize, usize), String);

fn at(n: &Node) -> (usize, usize) {
    (yaml::line(n), yaml::column(n))
}

struct Reader<'a> {
    errors: Vec<PlaybookError>,
    chain: &'a [String],
}

impl Reader<'_> {
    fn err(&mut self, n: &Node, msg: impl Into<String>) {
        self.errors.push((at(n), msg.into()));
    }

    fn entries<'n>(&mut self, node: &'n Node, what: &str) -> Vec<(&'n Node, &'n Node, String)> {
        match yaml::entries(node) {
            Some(e) => e
                .filter_map(|(k, v)| match yaml::as_text(k) {
                    Some(key) => Some((k, v, key)),
                    None => {
                        self.errors
                            .push((at(k), format!("{what}: keys must be strings")));
                        None
                    }
                })
                .collect(),
            None => {
                self.err(node, format!("{what} must be a mapping"));
                Vec::new()
            }
        }
    }

    fn unknown(&mut self, k: &Node, key: &str, what: &str, known: &[&str]) {
        self.err(
            k,
            format!(
                "{what}: unknown key '{key}' (expected one of: {})",
                known.join(", ")
            ),
        );
    }

    fn strings(&mut self, v: &Node, what: &str) -> Vec<String> {
        match yaml::items(v) {
            Some(items) if items.iter().all(|i| yaml::as_text(i).is_some()) => {
                items.iter().filter_map(yaml::as_text).collect()
            }
            _ => {
                self.err(v, format!("'{what}' must be a list of strings"));
                Vec::new()
            }
        }
    }

    fn duration(&mut self, v: &Node, what: &str) -> Option<Duration> {
        match yaml::as_str(v).map(parse_duration) {
            Some(Ok(d)) if !d.is_zero() => Some(d),
            Some(Ok(_)) => {
                self.err(v, format!("'{what}' must be longer than zero"));
                None
            }
            Some(Err(e)) => {
                self.err(v, format!("'{what}': {e}"));
                None
            }
            None => {
                self.err(v, format!("'{what}' must be a duration such as 10m or 24h"));
                None
            }
        }
    }

    fn severity(&mut self, v: &Node, what: &str) -> Option<Severity> {
        match yaml::as_str(v).map(str::parse::<Severity>) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                self.err(v, format!("'{what}': {e}"));
                None
            }
            None => {
                self.err(v, format!("'{what}' must be a level such as high"));
                None
            }
        }
    }

    fn text(&mut self, v: &Node, what: &str) -> Option<String> {
        let t = yaml::as_text(v);
        if t.is_none() {
            self.err(v, format!("'{what}' must be a string"));
        }
        t
    }

    /// A stage name: one of the chain's rules or a group name.
    fn check_stage(&mut self, n: &Node, name: &str, groups: &[StageGroup], what: &str) {
        if !self.chain.iter().any(|r| r == name) && !groups.iter().any(|g| g.name == name) {
            self.err(
                n,
                format!(
                    "{what}: '{name}' is not a stage of this chain (its correlation rules are {})",
                    self.chain.join(", ")
                ),
            );
        }
    }

    fn stage_settings(&mut self, node: &Node, is_group: bool) -> StageSettings {
        const KEYS: [&str; 5] = ["max_gap", "min_count", "distinct", "within", "optional"];
        let mut s = StageSettings::default();
        for (k, v, key) in self.entries(node, "a stage") {
            match key.as_str() {
                "max_gap" => s.max_gap = self.duration(v, "max_gap"),
                "within" => s.within = self.duration(v, "within"),
                "distinct" => s.distinct = self.text(v, "distinct"),
                "min_count" => match yaml::scalar(v) {
                    Some(saphyr::ScalarOwned::Integer(n)) if *n >= 1 => s.min_count = *n as u32,
                    _ => self.err(v, "'min_count' must be an integer of at least 1"),
                },
                "optional" => match yaml::scalar(v) {
                    Some(saphyr::ScalarOwned::Boolean(b)) => s.optional = *b,
                    _ => self.err(v, "'optional' must be true or false"),
                },
                other => self.unknown(k, other, "stage", &KEYS),
            }
        }
        if s.distinct.is_some() && s.min_count < 2 {
            self.err(
                node,
                "'distinct' only makes sense with 'min_count' of 2 or more",
            );
        }
        if s.within.is_some() && s.min_count < 2 && !is_group {
            self.err(
                node,
                "'within' only makes sense with 'min_count' of 2 or more, or on a group",
            );
        }
        s
    }

    fn groups(&mut self, node: &Node) -> Vec<StageGroup> {
        let Some(items) = yaml::items(node) else {
            self.err(node, "'groups' must be a list");
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let (mut name, mut rules, mut min) = (None, Vec::new(), None);
            for (k, v, key) in self.entries(item, "a group") {
                match key.as_str() {
                    "name" => name = self.text(v, "name"),
                    "rules" => rules = self.strings(v, "rules"),
                    "min" => match yaml::scalar(v) {
                        Some(saphyr::ScalarOwned::Integer(n)) if *n >= 1 => min = Some(*n as usize),
                        _ => self.err(v, "'min' must be an integer of at least 1"),
                    },
                    other => self.unknown(k, other, "group", &["name", "rules", "min"]),
                }
            }
            let Some(name) = name else {
                self.err(item, "a group needs a 'name'");
                continue;
            };
            if rules.len() < 2 {
                self.err(item, format!("group '{name}' needs at least two rules"));
                continue;
            }
            let min = min.unwrap_or(1);
            if min > rules.len() {
                self.err(
                    item,
                    format!(
                        "group '{name}': min {min} is more than its {} rules",
                        rules.len()
                    ),
                );
            }
            let positions: Vec<Option<usize>> = rules
                .iter()
                .map(|r| self.chain.iter().position(|c| c == r))
                .collect();
            if positions.iter().any(Option::is_none) {
                self.err(
                    item,
                    format!("group '{name}': every rule must be one of the correlation's rules"),
                );
            } else {
                let mut p: Vec<usize> = positions.into_iter().flatten().collect();
                p.sort_unstable();
                if p.windows(2).any(|w| w[1] != w[0] + 1) {
                    self.err(
                        item,
                        format!(
                            "group '{name}': its rules must be consecutive in correlation.rules"
                        ),
                    );
                }
            }
            out.push(StageGroup { name, rules, min });
        }
        out
    }
}

const KEYS: [&str; 11] = [
    "priority",
    "scope",
    "stages",
    "groups",
    "absent",
    "partial",
    "suppress",
    "investigation",
    "response",
    "references",
    "fixtures",
];

/// Reads a `playbook` attribute of a correlation whose `rules` are `chain`. Every problem is
/// returned, with its position.
pub fn parse_playbook(node: &Node, chain: &[String]) -> Result<PlaybookSpec, Vec<PlaybookError>> {
    let mut r = Reader {
        errors: Vec::new(),
        chain,
    };
    let mut spec = PlaybookSpec::default();
    let entries = r.entries(node, "'playbook'");
    // Groups first: other sections may name them.
    if let Some((_, v, _)) = entries.iter().find(|(_, _, k)| k == "groups") {
        spec.groups = r.groups(v);
    }
    for (k, v, key) in &entries {
        match key.as_str() {
            "priority" => spec.priority = r.severity(v, "priority"),
            "groups" => {}
            "investigation" => spec.investigation = r.strings(v, "investigation"),
            "response" => spec.response = r.strings(v, "response"),
            "references" => spec.references = r.strings(v, "references"),
            "suppress" => spec.suppress = r.duration(v, "suppress"),
            "scope" => {
                for (k2, v2, key2) in r.entries(v, "'scope'") {
                    match key2.as_str() {
                        "roles" => spec.scope.roles = r.strings(v2, "roles"),
                        other => r.unknown(k2, other, "scope", &["roles"]),
                    }
                }
            }
            "stages" => {
                for (k2, v2, name) in r.entries(v, "'stages'") {
                    r.check_stage(k2, &name, &spec.groups, "stages");
                    let is_group = spec.groups.iter().any(|g| g.name == name);
                    let s = r.stage_settings(v2, is_group);
                    spec.stages.insert(name, s);
                }
            }
            "partial" => match yaml::items(v) {
                Some(items) => {
                    for item in items {
                        let (mut after, mut priority) = (None, None);
                        for (k2, v2, key2) in r.entries(item, "a partial finding") {
                            match key2.as_str() {
                                "after" => after = r.text(v2, "after").map(|a| (a, k2)),
                                "priority" => priority = r.severity(v2, "priority"),
                                other => r.unknown(k2, other, "partial", &["after", "priority"]),
                            }
                        }
                        match (after, priority) {
                            (Some((after, n)), Some(priority)) => {
                                r.check_stage(n, &after, &spec.groups, "partial");
                                spec.partial.push(Milestone { after, priority });
                            }
                            _ => r.err(item, "a partial finding needs 'after' and 'priority'"),
                        }
                    }
                }
                None => r.err(v, "'partial' must be a list of {after, priority}"),
            },
            "absent" => match yaml::items(v) {
                Some(items) => {
                    for item in items {
                        let (mut rule, mut after, mut within) = (None, None, None);
                        for (k2, v2, key2) in r.entries(item, "an absence") {
                            match key2.as_str() {
                                "rule" => rule = r.text(v2, "rule"),
                                "after" => after = r.text(v2, "after").map(|a| (a, k2)),
                                "within" => within = r.duration(v2, "within"),
                                other => {
                                    r.unknown(k2, other, "absent", &["rule", "after", "within"])
                                }
                            }
                        }
                        match (rule, after, within) {
                            (Some(rule), Some((after, n)), Some(within)) => {
                                r.check_stage(n, &after, &spec.groups, "absent");
                                if chain.contains(&rule) {
                                    r.err(item, format!("absent: '{rule}' is a stage of the chain; an absent rule must be another rule of the file"));
                                }
                                spec.absent.push(Absence {
                                    rule,
                                    after,
                                    within,
                                });
                            }
                            _ => r.err(item, "an absence needs 'rule', 'after' and 'within'"),
                        }
                    }
                }
                None => r.err(v, "'absent' must be a list of {rule, after, within}"),
            },
            "fixtures" => spec.fixtures = fixtures(&mut r, v, &spec.groups),
            other => r.unknown(k, other, "playbook", &KEYS),
        }
    }
    if r.errors.is_empty() {
        Ok(spec)
    } else {
        Err(r.errors)
    }
}

fn fixtures(r: &mut Reader<'_>, node: &Node, groups: &[StageGroup]) -> Vec<Fixture> {
    const KEYS: [&str; 5] = ["name", "input", "tenant", "tenant_field", "expect"];
    let Some(items) = yaml::items(node) else {
        r.err(node, "'fixtures' must be a list");
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        let mut f = Fixture {
            name: String::new(),
            input: PathBuf::new(),
            tenant: None,
            tenant_field: None,
            expect: Vec::new(),
            line: yaml::line(item),
        };
        let mut has_expect = false;
        for (k, v, key) in r.entries(item, "a fixture") {
            match key.as_str() {
                "name" => f.name = r.text(v, "name").unwrap_or_default(),
                "input" => f.input = PathBuf::from(r.text(v, "input").unwrap_or_default()),
                "tenant" => f.tenant = r.text(v, "tenant"),
                "tenant_field" => f.tenant_field = r.text(v, "tenant_field"),
                "expect" => {
                    has_expect = true;
                    match yaml::items(v) {
                        Some(list) => {
                            for e in list {
                                f.expect.push(expectation(r, e, groups));
                            }
                        }
                        None => r.err(v, "'expect' must be a list of findings ([] for none)"),
                    }
                }
                other => r.unknown(k, other, "fixture", &KEYS),
            }
        }
        if f.name.is_empty() || f.input.as_os_str().is_empty() || !has_expect {
            r.err(item, "a fixture needs 'name', 'input' and 'expect'");
        }
        out.push(f);
    }
    out
}

fn expectation(r: &mut Reader<'_>, node: &Node, groups: &[StageGroup]) -> Expectation {
    const KEYS: [&str; 5] = ["stages", "host", "tenant", "priority", "partial"];
    let mut e = Expectation::default();
    for (k, v, key) in r.entries(node, "an expected finding") {
        match key.as_str() {
            "stages" => {
                e.stages = r.strings(v, "stages");
                for s in e.stages.clone() {
                    r.check_stage(v, &s, groups, "expect");
                }
            }
            "host" => e.host = r.text(v, "host"),
            "tenant" => e.tenant = r.text(v, "tenant"),
            "priority" => e.priority = r.severity(v, "priority"),
            "partial" => match yaml::scalar(v) {
                Some(saphyr::ScalarOwned::Boolean(b)) => e.partial = Some(*b),
                _ => r.err(v, "'partial' must be true or false"),
            },
            other => r.unknown(k, other, "expected finding", &KEYS),
        }
    }
    e
}
