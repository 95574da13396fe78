//! Sigma rules as typed specs: what a rule file says, checked for form, not yet compiled.
//!
//! [`parse_rule_file`] reads one YAML file (several documents separated by `---` are several
//! rules) into [`RuleDoc`]s: detection rules and correlation rules, in the shape of the Sigma
//! specification (v2). A document that is not a valid rule becomes a [`Diagnostic`](crate::Diagnostic) with its
//! line, and the other documents of the file still load. Compiling specs into matchers (regexes,
//! field resolution, prefilters) is the correlator's job.

mod condition;
mod parse;

use std::path::PathBuf;
use std::time::Duration;

use chainwatch_model::Severity;

pub use condition::{Condition, Pattern, parse_condition};
pub use parse::{parse_rule_file, parse_rule_text};

use crate::playbook::PlaybookSpec;

/// One document of a rule file.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleDoc {
    /// A detection rule (`logsource` + `detection`).
    Detection(DetectionRule),
    /// A correlation rule (`correlation`).
    Correlation(CorrelationRule),
}

impl RuleDoc {
    /// The metadata every rule has.
    pub fn meta(&self) -> &RuleMeta {
        match self {
            RuleDoc::Detection(r) => &r.meta,
            RuleDoc::Correlation(r) => &r.meta,
        }
    }
}

/// What every Sigma rule carries besides its logic.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleMeta {
    /// `title` (mandatory).
    pub title: String,
    /// `id`, usually a UUID.
    pub id: Option<String>,
    /// `name`: how correlation rules refer to it.
    pub name: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `status`.
    pub status: Option<String>,
    /// `level`.
    pub level: Option<Severity>,
    /// `tags` (`attack.t1003.001`, `attack.credential-access`, ...).
    pub tags: Vec<String>,
    /// `references`.
    pub references: Vec<String>,
    /// `falsepositives`.
    pub falsepositives: Vec<String>,
    /// `author`.
    pub author: Option<String>,
    /// The file the rule came from.
    pub file: PathBuf,
    /// The line its document starts on.
    pub line: usize,
}

impl RuleMeta {
    /// The rule's identity: its `id`, else its `name`, else its title.
    pub fn key(&self) -> &str {
        self.id
            .as_deref()
            .or(self.name.as_deref())
            .unwrap_or(&self.title)
    }
}

/// A Sigma detection rule.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionRule {
    /// Title, id, level, tags, ...
    pub meta: RuleMeta,
    /// Which events the rule applies to.
    pub logsource: LogSource,
    /// The searches and the condition.
    pub detection: Detection,
}

/// `logsource`: which events a rule looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSource {
    /// `category` (`process_creation`, `file_event`, ...).
    pub category: Option<String>,
    /// `product` (`windows`).
    pub product: Option<String>,
    /// `service` (`security`, `sysmon`, `msexchange-management`, ...).
    pub service: Option<String>,
}

/// `detection`: named searches and the condition that combines them.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// The search identifiers, in source order.
    pub searches: Vec<Search>,
    /// The condition(s); several conditions are alternatives (any may match).
    pub conditions: Vec<Condition>,
    /// The line of `condition`.
    pub condition_line: usize,
}

/// One named search of a detection.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    /// Its identifier (`selection`, `filter_main_*`, ...).
    pub name: String,
    /// Where it starts.
    pub line: usize,
    /// What it matches.
    pub body: SearchBody,
}

/// The body of a search.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchBody {
    /// One or more field maps; the search matches when any map matches (a map matches when
    /// all its items do).
    Maps(Vec<FieldMap>),
    /// Keywords: values searched in the whole event; any may match (all, with `|all`).
    Keywords(FieldItem),
}

/// A map of field conditions, all of which must hold.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldMap {
    /// The items, in source order.
    pub items: Vec<FieldItem>,
}

/// `Field|mod1|mod2: value-or-values`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldItem {
    /// The field name; `None` for keywords.
    pub field: Option<String>,
    /// The modifiers, in order.
    pub modifiers: Vec<Modifier>,
    /// The values; any may match, unless `|all` is among the modifiers.
    pub values: Vec<SigmaValue>,
    /// Where it is.
    pub line: usize,
}

/// A value in a detection.
#[derive(Debug, Clone, PartialEq)]
pub enum SigmaValue {
    /// A string, with Sigma wildcards (`*`, `?`, `\` escapes) still in it.
    Str(String),
    /// An integer.
    Int(i64),
    /// A number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// `null`: the field is absent or empty.
    Null,
}

/// A value modifier from the Sigma specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modifier {
    /// `contains`
    Contains,
    /// `startswith`
    StartsWith,
    /// `endswith`
    EndsWith,
    /// `all`
    All,
    /// `exists`
    Exists,
    /// `cased`
    Cased,
    /// `windash`
    Windash,
    /// `re`
    Re,
    /// `i` (after `re`): case-insensitive.
    ReIgnoreCase,
    /// `m` (after `re`): multi-line.
    ReMultiLine,
    /// `s` (after `re`): dot matches new line.
    ReDotAll,
    /// `base64`
    Base64,
    /// `base64offset`
    Base64Offset,
    /// `utf16le` / `wide`
    Utf16Le,
    /// `utf16be`
    Utf16Be,
    /// `utf16` (with byte-order mark)
    Utf16,
    /// `cidr`
    Cidr,
    /// `lt`
    Lt,
    /// `lte`
    Lte,
    /// `gt`
    Gt,
    /// `gte`
    Gte,
    /// `fieldref`
    FieldRef,
    /// `expand`
    Expand,
    /// `neq`
    Neq,
    /// Time part modifiers: `minute`, `hour`, `day`, `week`, `month`, `year`.
    TimePart(TimePart),
}

/// The part of a timestamp a time modifier compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimePart {
    /// `minute`
    Minute,
    /// `hour`
    Hour,
    /// `day`
    Day,
    /// `week`
    Week,
    /// `month`
    Month,
    /// `year`
    Year,
}

impl Modifier {
    /// Reads a modifier name as a rule writes it.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "contains" => Modifier::Contains,
            "startswith" => Modifier::StartsWith,
            "endswith" => Modifier::EndsWith,
            "all" => Modifier::All,
            "exists" => Modifier::Exists,
            "cased" => Modifier::Cased,
            "windash" => Modifier::Windash,
            "re" => Modifier::Re,
            "i" => Modifier::ReIgnoreCase,
            "m" => Modifier::ReMultiLine,
            "s" => Modifier::ReDotAll,
            "base64" => Modifier::Base64,
            "base64offset" => Modifier::Base64Offset,
            "utf16le" | "wide" => Modifier::Utf16Le,
            "utf16be" => Modifier::Utf16Be,
            "utf16" => Modifier::Utf16,
            "cidr" => Modifier::Cidr,
            "lt" => Modifier::Lt,
            "lte" => Modifier::Lte,
            "gt" => Modifier::Gt,
            "gte" => Modifier::Gte,
            "fieldref" => Modifier::FieldRef,
            "expand" => Modifier::Expand,
            "neq" => Modifier::Neq,
            "minute" => Modifier::TimePart(TimePart::Minute),
            "hour" => Modifier::TimePart(TimePart::Hour),
            "day" => Modifier::TimePart(TimePart::Day),
            "week" => Modifier::TimePart(TimePart::Week),
            "month" => Modifier::TimePart(TimePart::Month),
            "year" => Modifier::TimePart(TimePart::Year),
            _ => return None,
        })
    }

    /// The name a rule writes.
    pub fn name(self) -> &'static str {
        match self {
            Modifier::Contains => "contains",
            Modifier::StartsWith => "startswith",
            Modifier::EndsWith => "endswith",
            Modifier::All => "all",
            Modifier::Exists => "exists",
            Modifier::Cased => "cased",
            Modifier::Windash => "windash",
            Modifier::Re => "re",
            Modifier::ReIgnoreCase => "i",
            Modifier::ReMultiLine => "m",
            Modifier::ReDotAll => "s",
            Modifier::Base64 => "base64",
            Modifier::Base64Offset => "base64offset",
            Modifier::Utf16Le => "utf16le",
            Modifier::Utf16Be => "utf16be",
            Modifier::Utf16 => "utf16",
            Modifier::Cidr => "cidr",
            Modifier::Lt => "lt",
            Modifier::Lte => "lte",
            Modifier::Gt => "gt",
            Modifier::Gte => "gte",
            Modifier::FieldRef => "fieldref",
            Modifier::Expand => "expand",
            Modifier::Neq => "neq",
            Modifier::TimePart(TimePart::Minute) => "minute",
            Modifier::TimePart(TimePart::Hour) => "hour",
            Modifier::TimePart(TimePart::Day) => "day",
            Modifier::TimePart(TimePart::Week) => "week",
            Modifier::TimePart(TimePart::Month) => "month",
            Modifier::TimePart(TimePart::Year) => "year",
        }
    }
}

/// A Sigma correlation rule, possibly carrying a chainwatch playbook.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationRule {
    /// Title, id, level, tags, ...
    pub meta: RuleMeta,
    /// `correlation.type`.
    pub kind: CorrelationType,
    /// `correlation.rules`: ids or names of detection or correlation rules.
    pub rules: Vec<String>,
    /// `correlation.group-by`: field names or alias names.
    pub group_by: Vec<String>,
    /// `correlation.timespan`.
    pub timespan: Duration,
    /// `correlation.condition`.
    pub condition: Option<CountCondition>,
    /// `correlation.aliases`.
    pub aliases: Vec<FieldAlias>,
    /// `generate`: the referenced rules also alert on their own.
    pub generate: bool,
    /// The `playbook` custom attribute: what chainwatch adds to Sigma (boxed: most
    /// correlations have none, and it is large).
    pub playbook: Option<Box<PlaybookSpec>>,
}

/// The four correlation types of the specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CorrelationType {
    /// `event_count`
    EventCount,
    /// `value_count`
    ValueCount,
    /// `temporal`
    Temporal,
    /// `temporal_ordered`
    TemporalOrdered,
}

impl CorrelationType {
    /// The spelling in rules.
    pub fn name(self) -> &'static str {
        match self {
            CorrelationType::EventCount => "event_count",
            CorrelationType::ValueCount => "value_count",
            CorrelationType::Temporal => "temporal",
            CorrelationType::TemporalOrdered => "temporal_ordered",
        }
    }
}

/// `correlation.condition`: bounds on a count, and for `value_count` the counted field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountCondition {
    /// `field` (value_count): one field, or several (their combined values are counted).
    pub fields: Vec<String>,
    /// All bounds must hold.
    pub bounds: Vec<(Comparison, u64)>,
}

/// A comparison in a count condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `gt`
    Gt,
    /// `gte`
    Gte,
    /// `lt`
    Lt,
    /// `lte`
    Lte,
    /// `eq`
    Eq,
}

impl Comparison {
    /// Whether `count` satisfies `self bound`.
    pub fn holds(self, count: u64, bound: u64) -> bool {
        match self {
            Comparison::Gt => count > bound,
            Comparison::Gte => count >= bound,
            Comparison::Lt => count < bound,
            Comparison::Lte => count <= bound,
            Comparison::Eq => count == bound,
        }
    }
}

/// One alias: a group-by name standing for a different field per rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldAlias {
    /// The alias, as used in `group-by`.
    pub name: String,
    /// (rule name, field name) pairs.
    pub fields: Vec<(String, String)>,
}
