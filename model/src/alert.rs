//! The finding: what the correlator produces and sinks deliver.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    Activity, AlertId, Event, EventClass, EventId, HostName, ProcessInfo, Provenance, Severity,
    SharedStr, Target, TechniqueId, TenantId, Timestamp,
};

/// A rule, as an alert names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RuleRef {
    /// The Sigma `id` (a UUID), or the rule's `name` when it has no id. Shared by the evidence
    /// of the rule.
    pub id: SharedStr,
    /// The Sigma `title`.
    pub title: String,
    /// The Sigma `level`.
    pub level: Severity,
}

/// Whether an alert is a single detection or a multi-stage chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// One event matched a standalone detection rule.
    Detection,
    /// A correlation (chain) rule completed.
    Chain,
}

/// One stage of a chain, in the correlation's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// The stage's name: its rule's `name` (or id), or the name of a group of rules.
    #[serde(default)]
    pub name: String,
    /// The detection rule of this stage (for a group, a reference naming the group).
    pub rule: RuleRef,
    /// ATT&CK techniques of this stage (from the rule's tags).
    pub techniques: Vec<TechniqueId>,
    /// Time of this stage's evidence.
    pub time: Timestamp,
    /// The events that showed this stage.
    pub events: Vec<EventId>,
}

/// One contributing event, with enough detail to read the alert without the raw telemetry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The event's id.
    pub id: EventId,
    /// Its event time.
    pub time: Timestamp,
    /// The id of the detection rule it matched (shared by every piece of evidence of the rule).
    pub rule: SharedStr,
    /// Its class.
    pub class: EventClass,
    /// Its activity.
    pub activity: Activity,
    /// The acting user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The acting process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
    /// Its parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ProcessInfo>,
    /// What was acted on.
    #[serde(default, skip_serializing_if = "SparseTarget::is_empty")]
    pub target: SparseTarget,
    /// Windows event id, where the source has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<u32>,
    /// The host it happened on (a chain grouped by user can span hosts). Absent in alerts
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostName>,
    /// Where the record came from.
    pub provenance: Provenance,
}

impl Evidence {
    /// The evidence of `event` for rule `rule` (pass the rule's [`SharedStr`] to share it).
    pub fn of(event: &Event, rule: impl Into<SharedStr>) -> Self {
        Self {
            id: event.id,
            time: event.time,
            rule: rule.into(),
            class: event.class,
            activity: event.activity,
            user: event.user.clone(),
            process: event.process.clone(),
            parent: event.parent.clone(),
            target: SparseTarget::of(&event.target),
            event_id: event.source.event_id,
            host: (!event.host.is_empty()).then(|| event.host.clone()),
            provenance: event.provenance.clone(),
        }
    }
}

/// A [`Target`] that takes no room when empty, as it is for most events (evidence is held
/// for every partial chain, so its size counts). Reads and writes as a `Target` (it
/// dereferences to one); serialized as one.
#[derive(Clone, Default)]
pub struct SparseTarget(Option<Box<Target>>);

static EMPTY_TARGET: Target = Target {
    file: None,
    process: None,
    account: None,
    group: None,
    service: None,
    url: None,
    registry: None,
    api: None,
};

impl SparseTarget {
    /// A copy of `target`.
    pub fn of(target: &Target) -> Self {
        Self((!target.is_empty()).then(|| Box::new(target.clone())))
    }

    /// True when nothing is known.
    pub fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(Target::is_empty)
    }
}

impl std::ops::Deref for SparseTarget {
    type Target = Target;

    fn deref(&self) -> &Target {
        self.0.as_deref().unwrap_or(&EMPTY_TARGET)
    }
}

impl std::ops::DerefMut for SparseTarget {
    fn deref_mut(&mut self) -> &mut Target {
        self.0.get_or_insert_with(Box::default)
    }
}

impl PartialEq for SparseTarget {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for SparseTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl Serialize for SparseTarget {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SparseTarget {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Target::deserialize(deserializer).map(|t| Self::of(&t))
    }
}

/// A notable event of the look-back: an event on one of the alert's hosts that matched some
/// rule (any level, standalone or a stage of some chain) but is not evidence of the alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notable {
    /// The event, as evidence is described (`rule` is the highest-level rule it matched).
    #[serde(flatten)]
    pub evidence: Evidence,
    /// Every rule it matched, highest level first.
    pub rules: Vec<RuleRef>,
    /// ATT&CK techniques of those rules, without repeats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub techniques: Vec<TechniqueId>,
}

impl Notable {
    /// The highest level among its rules.
    pub fn level(&self) -> Severity {
        self.rules
            .iter()
            .map(|r| r.level)
            .max()
            .unwrap_or(Severity::Informational)
    }
}

/// What happened on the alert's hosts around the chain: the notable events from `period`
/// before its first evidence up to its last, other than the evidence itself, from a bounded
/// per-host buffer. It answers "what else happened during the dwell time?".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lookback {
    /// Start of the window searched: the first evidence's time less the configured period.
    pub from: Timestamp,
    /// End of the window searched: the last evidence's time.
    pub to: Timestamp,
    /// The notable events in the window, in event-time order.
    pub events: Vec<Notable>,
    /// False when the buffer had already dropped notable events of these hosts inside the
    /// window (its bounds were reached), so the look-back may miss some.
    pub complete: bool,
    /// Notable events left out because the alert carries at most a configured number (the
    /// lowest levels, then the oldest, are left out first).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Deterministic: the same input gives the same id on every run.
    pub id: AlertId,
    /// The customer.
    pub tenant: TenantId,
    /// The host the finding is about.
    pub host: HostName,
    /// The user, where the evidence names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Detection or chain.
    pub kind: AlertKind,
    /// 0 for the first version of a finding; each update of the same finding (a partial chain
    /// that progressed, a suppressed repeat) carries the same id and the next revision.
    #[serde(default)]
    pub revision: u32,
    /// True while the chain is not complete (a partial finding).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// The rule that fired: the correlation rule for a chain.
    pub rule: RuleRef,
    /// How urgent: the playbook's priority, else the rule's level.
    pub severity: Severity,
    /// The playbook the chain belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playbook: Option<String>,
    /// ATT&CK techniques, in stage order, without repeats.
    pub techniques: Vec<TechniqueId>,
    /// Time of the earliest evidence.
    pub first_seen: Timestamp,
    /// Time of the latest evidence.
    pub last_seen: Timestamp,
    /// The group-by values the chain was keyed by (besides the tenant).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group: BTreeMap<String, String>,
    /// Each stage, in order (empty for a single detection).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<Stage>,
    /// Every contributing event, in event-time order.
    pub events: Vec<Evidence>,
    /// What to do: the playbook's response steps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response: Vec<String>,
    /// The rule's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The notable events on the alert's hosts before and during the chain (absent when the
    /// engine keeps no look-back, and in alerts written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookback: Option<Lookback>,
}
