//! Ordered chains: Sigma's `temporal_ordered`, extended by playbooks.
//!
//! Per correlation, tenant and group key, a group keeps the hits of each stage (and of each
//! absent rule) sorted by event time. After each hit, [`solve`] looks for placements of the
//! stages in order:
//!
//! - each stage has *candidates* `(t, s, hits)`: it is satisfied at time `t` by `hits`, the
//!   earliest of which is at `s`. A plain stage's candidates are its hits (`s = t`); a counting
//!   stage (`min_count`, `distinct`, `within`) or a group of rules ("N of these M") completes at
//!   the hit that brings it to its threshold, counting back from there;
//! - a placement of stage `k` follows a placement of the previous stage at `p` when `p <= s`
//!   (a different event when equal), `t - p <= max_gap`, and the chain from its start to `t`
//!   fits the timespan; optional stages may be skipped;
//! - the solution is computed layer by layer, keeping per completion time and number of stages
//!   placed the latest and the earliest possible start, so the search is a dynamic program, not
//!   a backtracking search.
//!
//! Arrival order never matters: only event times do. Partial findings, suppression and
//! absence deadlines are decided here too; the engine turns [`Emission`]s into alerts.
//!
//! State is bounded: events later than the allowed lateness behind the group's newest event are
//! dropped; hits older than lateness + timespan are pruned; each stage keeps at most
//! [`Limits::max_hits_per_stage`] hits; groups live in the shared bounded map ([`Groups`]).

use std::collections::{BTreeMap, BTreeSet};

use chainwatch_model::{EventId, Severity, TenantId, Timestamp};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::groups::{GroupKey, GroupState, Groups, Limits};
use super::{Hit, horizon};

/// How one stage is satisfied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StageSpec {
    /// Distinct rules needed among the stage's rules (1 unless the stage is a group).
    pub(crate) min_rules: usize,
    /// Matches (or distinct values) needed.
    pub(crate) min_count: usize,
    /// The counted matches fall inside this window.
    pub(crate) within_ns: Option<i64>,
    /// At most this long after the previous placed stage.
    pub(crate) max_gap_ns: Option<i64>,
    /// May be skipped.
    pub(crate) optional: bool,
}

/// An absent rule: no hit within `within_ns` after stage `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AbsenceSpec {
    pub(crate) after: usize,
    pub(crate) within_ns: i64,
}

/// A chain's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainSpec {
    pub(crate) stages: Vec<StageSpec>,
    pub(crate) absences: Vec<AbsenceSpec>,
    /// (stage index, priority), sorted by stage index.
    pub(crate) milestones: Vec<(usize, Severity)>,
    pub(crate) suppress_ns: Option<i64>,
    pub(crate) timespan_ns: i64,
}

/// One placed stage of a solution.
#[derive(Debug, Clone)]
pub(crate) struct Pick {
    pub(crate) stage: usize,
    pub(crate) time: Timestamp,
    pub(crate) hits: Vec<Hit>,
}

/// A finding to raise.
#[derive(Debug, Clone)]
pub(crate) struct Emission {
    /// Seed of the finding's id: the first event of the chain (stable across updates).
    pub(crate) seed: EventId,
    pub(crate) revision: u32,
    pub(crate) partial: bool,
    /// The priority of a partial finding; `None` for a complete one (the correlation's).
    pub(crate) priority: Option<Severity>,
    pub(crate) picks: Vec<Pick>,
}

/// What happened to one hit.
#[derive(Debug, Default)]
pub(crate) struct ChainOutcome {
    pub(crate) duplicate: bool,
    pub(crate) late: bool,
    pub(crate) emissions: Vec<Emission>,
}

/// The finding being built for a group.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Open {
    seed: EventId,
    first_seen: Timestamp,
    revision: u32,
    /// Index into the milestones of the last partial finding raised (`None`: none yet).
    /// `u32`, as `placed`: the group is held per partial chain, and the narrower fields keep
    /// it a malloc size class smaller (the JSON is the same).
    milestone: Option<u32>,
    /// The chain is complete (its required stages are placed).
    complete: bool,
    /// Stages placed in the last version raised.
    placed: u32,
    /// The complete chain can grow no more (every stage placed, or its timespan is over) and
    /// its evidence is used up.
    closed: bool,
}

/// The hits of one stage (or absent rule), sorted by time: the first inline, so a stage with
/// one hit costs no allocation of its own.
type HitList = SmallVec<[Hit; 1]>;

/// A group's stage (or absence) lists: the first inline, so a lone first stage, the shape
/// of most partial chains, lives in the group's own allocation with its hit.
type Lists = SmallVec<[HitList; 1]>;

/// One group's chain state (serializable: it is what the changelog holds for the group).
///
/// One is held per partial chain, so the parts most groups never use (absence lists, used
/// events, an absence deadline) are boxed together in [`Rare`]; the record written is the same
/// as when they were fields of the group ([`GroupRecord`]). The first stage's list and its
/// first hit are inline ([`Lists`]): a group with one hit is one allocation (its box in the
/// group map), not three (group, list of stage lists, hit list).
#[derive(Debug, Default)]
pub(crate) struct Group {
    stages: Lists,
    newest: Option<Timestamp>,
    open: Option<Open>,
    rare: Option<Box<Rare>>,
}

/// The parts of a [`Group`] that most groups leave empty.
#[derive(Debug, Default)]
struct Rare {
    absent: Lists,
    /// Events used by a finding, so redelivery cannot reuse them.
    consumed: Vec<(Timestamp, EventId)>,
    /// The earliest absence deadline a complete chain waits for.
    waiting: Option<Timestamp>,
}

/// A [`Group`] as the changelog writes it: every part a field.
#[derive(Serialize)]
struct GroupRecord<'a> {
    stages: ListsRecord<'a>,
    absent: ListsRecord<'a>,
    consumed: &'a [(Timestamp, EventId)],
    newest: Option<Timestamp>,
    open: &'a Option<Open>,
    waiting: Option<Timestamp>,
}

/// Stage (or absence) lists as the changelog writes them: a sequence of sequences of hits,
/// as the `Vec<Vec<Hit>>` they were.
struct ListsRecord<'a>(&'a [HitList]);

impl Serialize for ListsRecord<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(SmallVec::as_slice))
    }
}

/// Lists read from the changelog, each with its first hit (and the first list) inline.
fn lists_from(read: Vec<Vec<Hit>>) -> Lists {
    read.into_iter().map(SmallVec::from_vec).collect()
}

/// A [`Group`] as the changelog holds it.
#[derive(Deserialize)]
struct GroupRecordIn {
    stages: Vec<Vec<Hit>>,
    absent: Vec<Vec<Hit>>,
    consumed: Vec<(Timestamp, EventId)>,
    newest: Option<Timestamp>,
    open: Option<Open>,
    waiting: Option<Timestamp>,
}

impl Serialize for Group {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        GroupRecord {
            stages: ListsRecord(&self.stages),
            absent: ListsRecord(self.absent()),
            consumed: self.consumed(),
            newest: self.newest,
            open: &self.open,
            waiting: self.waiting(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Group {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let r = GroupRecordIn::deserialize(deserializer)?;
        let rare = Rare {
            absent: lists_from(r.absent),
            consumed: r.consumed,
            waiting: r.waiting,
        };
        let used = !rare.absent.is_empty() || !rare.consumed.is_empty() || rare.waiting.is_some();
        Ok(Group {
            stages: lists_from(r.stages),
            newest: r.newest,
            open: r.open,
            rare: used.then(|| Box::new(rare)),
        })
    }
}

impl Group {
    /// The newest event time the group has seen.
    pub(crate) fn newest(&self) -> Option<Timestamp> {
        self.newest
    }

    fn absent(&self) -> &[HitList] {
        self.rare.as_ref().map_or(&[], |r| &r.absent)
    }

    fn consumed(&self) -> &[(Timestamp, EventId)] {
        self.rare.as_ref().map_or(&[], |r| &r.consumed)
    }

    fn waiting(&self) -> Option<Timestamp> {
        self.rare.as_ref().and_then(|r| r.waiting)
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_default()
    }

    fn set_waiting(&mut self, waiting: Option<Timestamp>) {
        if waiting.is_some() || self.rare.is_some() {
            self.rare_mut().waiting = waiting;
        }
    }
}

impl GroupState for Group {
    fn is_empty(&self) -> bool {
        self.stages.iter().all(SmallVec::is_empty)
            && self.consumed().is_empty()
            && self.open.is_none()
    }
}

/// A count or index of stages or milestones as the group keeps it (a chain has far fewer).
fn narrow(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The hits of list `i` of a group's stage (or absence) lists: lists past the last one
/// holding a hit are not kept (a lone first stage then costs one list, not one per stage).
fn list(lists: &[HitList], i: usize) -> &[Hit] {
    lists.get(i).map_or(&[], SmallVec::as_slice)
}

/// List `i` of a group's stage (or absence) lists, added (empty, with the ones before it) when
/// missing.
fn list_mut(lists: &mut Lists, i: usize) -> &mut HitList {
    if lists.len() <= i {
        lists.reserve_exact(i + 1 - lists.len());
        lists.resize_with(i + 1, SmallVec::new);
    }
    &mut lists[i]
}

/// Where a hit goes in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A stage of the chain.
    Stage(usize),
    /// An absent rule.
    Absent(usize),
}

/// The state of one ordered (playbook) correlation.
#[derive(Debug, Default)]
pub(crate) struct Chains {
    groups: Groups<Group>,
    /// Groups whose complete chain waits for an absence deadline, by deadline.
    deadlines: BTreeSet<(Timestamp, GroupKey)>,
}

impl Chains {
    /// Groups held (partial chains).
    pub(crate) fn len(&self) -> usize {
        self.groups.len()
    }

    /// Groups evicted so far.
    pub(crate) fn evicted(&self) -> u64 {
        self.groups.evicted
    }

    /// The groups (see [`Groups::track_changes`]).
    pub(crate) fn groups_mut(&mut self) -> &mut Groups<Group> {
        &mut self.groups
    }

    /// Every group now, least recently updated first.
    pub(crate) fn all(&self) -> impl Iterator<Item = (GroupKey, &Group)> {
        self.groups.all()
    }

    /// Puts back a group read from the changelog, with the absence deadline it waits for.
    pub(crate) fn restore(&mut self, key: GroupKey, group: Group, limits: Limits) {
        if let Some(d) = group.waiting() {
            self.deadlines.insert((d, key.clone()));
        }
        self.groups.restore(key, group, limits);
    }

    /// Adds a hit to the group `key` and decides what to raise. `watermark` is the tenant's
    /// event-time watermark (absence deadlines before it have passed).
    pub(crate) fn observe(
        &mut self,
        key: GroupKey,
        slot: Slot,
        hit: Hit,
        spec: &ChainSpec,
        limits: Limits,
        watermark: Timestamp,
    ) -> ChainOutcome {
        let (outcome, old_wait, new_wait) = self.groups.update(&key, limits, |g| {
            // Absence lists are kept whole (a reader before stage lists were kept short
            // indexes them directly); stage lists only up to the last one used.
            if g.absent().len() < spec.absences.len() {
                g.rare_mut()
                    .absent
                    .resize_with(spec.absences.len(), SmallVec::new);
            }
            let old_wait = g.waiting();
            let outcome = add_hit(g, slot, hit, spec, limits, watermark);
            (outcome, old_wait, g.waiting())
        });
        self.rewait(&key, old_wait, new_wait);
        outcome
    }

    /// Raises the complete chains whose absence deadlines `watermark` has passed, for `tenant`
    /// (or every tenant).
    pub(crate) fn advance(
        &mut self,
        tenant: Option<&TenantId>,
        spec: &ChainSpec,
        watermark: Timestamp,
    ) -> Vec<(GroupKey, Emission)> {
        let due: Vec<(Timestamp, GroupKey)> = self
            .deadlines
            .iter()
            .take_while(|(d, _)| *d <= watermark)
            .filter(|(_, k)| tenant.is_none_or(|t| *t == k.0))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for (deadline, key) in due {
            self.deadlines.remove(&(deadline, key.clone()));
            let decided = self.groups.peek(&key, |g| {
                let emissions = decide(g, spec, watermark);
                (emissions, g.waiting())
            });
            let Some((emissions, new_wait)) = decided else {
                continue; // evicted meanwhile
            };
            if let Some(n) = new_wait {
                self.deadlines.insert((n, key.clone()));
            }
            out.extend(emissions.into_iter().map(|e| (key.clone(), e)));
        }
        out
    }

    fn rewait(&mut self, key: &GroupKey, old: Option<Timestamp>, new: Option<Timestamp>) {
        if old != new {
            if let Some(o) = old {
                self.deadlines.remove(&(o, key.clone()));
            }
            if let Some(n) = new {
                self.deadlines.insert((n, key.clone()));
            }
        }
    }
}

fn add_hit(
    g: &mut Group,
    slot: Slot,
    hit: Hit,
    spec: &ChainSpec,
    limits: Limits,
    watermark: Timestamp,
) -> ChainOutcome {
    let mut out = ChainOutcome::default();
    let list = match slot {
        Slot::Stage(i) => list(&g.stages, i),
        Slot::Absent(i) => list(g.absent(), i),
    };
    if g.consumed().iter().any(|(_, id)| *id == hit.id) || list.iter().any(|h| h.id == hit.id) {
        out.duplicate = true;
        return out;
    }
    if let Some(newest) = g.newest
        && hit.time < newest.add_nanos(-limits.lateness_ns)
    {
        out.late = true;
        return out;
    }
    let newest = g.newest.map_or(hit.time, |n| n.max(hit.time));
    g.newest = Some(newest);
    let list = match slot {
        Slot::Stage(i) => list_mut(&mut g.stages, i),
        Slot::Absent(i) => list_mut(&mut g.rare_mut().absent, i),
    };
    let at = list.partition_point(|h| (h.time, h.id) < (hit.time, hit.id));
    crate::compact::insert(list, at, hit);
    if list.len() > limits.max_hits_per_stage {
        // Keep the newest: old hits are the first to age out anyway.
        list.remove(0);
    }

    // Prune what can no longer join a chain.
    let oldest = horizon(newest, limits);
    for list in &mut g.stages {
        list.retain(|h| h.time >= oldest);
    }
    if let Some(rare) = &mut g.rare {
        for list in &mut rare.absent {
            list.retain(|h| h.time >= oldest);
        }
        rare.consumed.retain(|(t, _)| *t >= oldest);
    }
    if let Some(o) = &g.open {
        let expired = match spec.suppress_ns {
            Some(w) => newest.nanos_since(o.first_seen) > w.max(spec.timespan_ns),
            None => o.first_seen < oldest,
        };
        if expired {
            g.open = None;
        }
    }

    out.emissions = decide(g, spec, watermark);
    out
}

/// Solves the group and decides what to raise: a complete finding (when no absence deadline
/// is pending), updates of it while optional stages still join, or a partial one when a new
/// milestone is reached.
fn decide(g: &mut Group, spec: &ChainSpec, watermark: Timestamp) -> Vec<Emission> {
    g.set_waiting(None);
    let solution = solve(&g.stages, spec);
    let mut out = Vec::new();
    if let Some(picks) = solution.complete {
        // Absence: the chain counts only if no absent rule matched within its deadline.
        let mut deadline: Option<Timestamp> = None;
        let mut cancelled = false;
        for (ai, a) in spec.absences.iter().enumerate() {
            let anchor = picks
                .iter()
                .filter(|p| p.stage <= a.after)
                .map(|p| p.time)
                .next_back()
                .unwrap_or(picks[0].time);
            let end = anchor.add_nanos(a.within_ns);
            if list(g.absent(), ai)
                .iter()
                .any(|h| h.time > anchor && h.time <= end)
            {
                cancelled = true;
            }
            deadline = Some(deadline.map_or(end, |d| d.max(end)));
        }
        if !cancelled {
            match deadline {
                Some(d) if d > watermark => g.set_waiting(Some(d)),
                _ => {
                    let placed = picks.len();
                    let open_chain = g.open.as_ref().is_some_and(|o| o.complete && !o.closed);
                    if open_chain {
                        // The same chain, still open: raise it again only if it grew.
                        if g.open.as_ref().is_some_and(|o| narrow(placed) > o.placed) {
                            out.push(emit(g, spec, picks.clone(), false, None, true));
                        }
                    } else {
                        let reuse = g
                            .open
                            .as_ref()
                            .is_some_and(|o| spec.suppress_ns.is_some() || !o.complete);
                        out.push(emit(g, spec, picks.clone(), false, None, reuse));
                    }
                    if let Some(o) = g.open.as_mut() {
                        o.placed = o.placed.max(narrow(placed));
                    }
                    let start = picks
                        .iter()
                        .flat_map(|p| p.hits.iter())
                        .map(|h| h.time)
                        .min();
                    let newest = g.newest.unwrap_or(watermark);
                    let over = start.is_some_and(|s| newest.nanos_since(s) > spec.timespan_ns);
                    if placed == spec.stages.len() || over {
                        consume(g, &picks, spec);
                    }
                    return out;
                }
            }
        }
    }
    // Partial findings: the furthest milestone the chain has reached.
    let reached = spec
        .milestones
        .iter()
        .enumerate()
        .filter(|(_, (stage, _))| solution.prefix.get(*stage).is_some_and(Option::is_some))
        .map(|(i, _)| i)
        .next_back();
    if let Some(mi) = reached {
        let already = g.open.as_ref().and_then(|o| o.milestone);
        let mi = narrow(mi);
        let done = g.open.as_ref().is_some_and(|o| o.complete && !o.closed);
        let closed = g.open.as_ref().is_some_and(|o| o.closed);
        if !done && (closed || already.is_none_or(|a| mi > a)) {
            let stage = spec.milestones[mi as usize].0;
            let picks = solution.prefix[stage].clone().unwrap_or_default();
            let priority = spec.milestones[mi as usize].1;
            let reuse = g
                .open
                .as_ref()
                .is_some_and(|o| !o.closed || spec.suppress_ns.is_some());
            let e = emit(g, spec, picks, true, Some(priority), reuse);
            if let Some(o) = g.open.as_mut() {
                o.milestone = Some(mi);
                o.closed = false;
                o.complete = false;
            }
            out.push(e);
        }
    }
    out
}

/// Raises a version of the group's finding: an update of the open one (`reuse`: same id, next
/// revision) or a new one seeded by the chain's first event.
fn emit(
    g: &mut Group,
    spec: &ChainSpec,
    picks: Vec<Pick>,
    partial: bool,
    priority: Option<Severity>,
    reuse: bool,
) -> Emission {
    let _ = spec;
    let first = picks
        .iter()
        .flat_map(|p| p.hits.iter())
        .min_by_key(|h| (h.time, h.id))
        .map(|h| (h.id, h.time));
    let (first_id, first_time) = first.unwrap_or((EventId::from_u128(0), Timestamp::from_nanos(0)));
    let open = match g.open.as_mut() {
        Some(o) if reuse => {
            o.revision += 1;
            o
        }
        _ => g.open.insert(Open {
            seed: first_id,
            first_seen: first_time,
            revision: 0,
            milestone: None,
            complete: false,
            placed: 0,
            closed: false,
        }),
    };
    if !partial {
        open.complete = true;
        open.closed = false;
    }
    Emission {
        seed: open.seed,
        revision: open.revision,
        partial,
        priority,
        picks,
    }
}

/// After a complete finding can grow no more: every hit up to its end is used up, so a second
/// finding needs new evidence for every stage. Without suppression the finding is forgotten;
/// with it, it stays (closed) so a repeat within the window updates it.
fn consume(g: &mut Group, picks: &[Pick], spec: &ChainSpec) {
    let end = picks
        .iter()
        .map(|p| p.time)
        .max()
        .unwrap_or(Timestamp::from_nanos(i64::MIN));
    let rare = g.rare.get_or_insert_default();
    for list in g.stages.iter_mut().chain(rare.absent.iter_mut()) {
        list.retain(|h| {
            if h.time <= end {
                rare.consumed.push((h.time, h.id));
                false
            } else {
                true
            }
        });
    }
    if spec.suppress_ns.is_none() {
        g.open = None;
    } else if let Some(o) = g.open.as_mut() {
        o.closed = true;
    }
}

/// A stage satisfied at `t` by `hits`, the earliest at `s`.
#[derive(Debug, Clone)]
struct Candidate {
    t: Timestamp,
    s: Timestamp,
    /// Indices into the stage's hits.
    hits: Vec<usize>,
}

/// The candidates of one stage: every hit at which the stage's thresholds are met, counting
/// back from it.
fn candidates(hits: &[Hit], spec: &StageSpec) -> Vec<Candidate> {
    let simple = spec.min_rules <= 1 && spec.min_count <= 1;
    let mut out = Vec::with_capacity(hits.len());
    for (j, h) in hits.iter().enumerate() {
        if simple {
            out.push(Candidate {
                t: h.time,
                s: h.time,
                hits: vec![j],
            });
            continue;
        }
        let mut rules: Vec<usize> = Vec::new();
        let mut values: Vec<&str> = Vec::new();
        let mut count = 0usize;
        let mut used = Vec::new();
        for i in (0..=j).rev() {
            let x = &hits[i];
            if spec
                .within_ns
                .is_some_and(|w| h.time.nanos_since(x.time) > w)
            {
                break;
            }
            let new_value = match &x.value {
                Some(v) => {
                    if values.contains(&&**v) {
                        false
                    } else {
                        values.push(v);
                        true
                    }
                }
                None => true,
            };
            if new_value {
                count += 1;
            }
            if !rules.contains(&x.input) {
                rules.push(x.input);
            }
            used.push(i);
            if count >= spec.min_count && rules.len() >= spec.min_rules {
                used.reverse();
                out.push(Candidate {
                    t: h.time,
                    s: x.time,
                    hits: used,
                });
                break;
            }
        }
    }
    out
}

/// A placement in the dynamic program.
#[derive(Debug, Clone)]
struct Node {
    /// Time of the last placed stage.
    t: Timestamp,
    /// The last placed event (to tell apart two stages met by one event at the same time).
    last: Option<EventId>,
    /// Start of the chain; `None` while nothing is placed.
    start: Option<Timestamp>,
    /// How many stages are placed (optional stages placed rather than skipped count).
    placed: usize,
    /// Back-pointer: (layer, node) of the predecessor.
    prev: Option<(usize, usize)>,
    /// The candidate placed in this layer (`None`: the stage was skipped).
    candidate: Option<Candidate>,
}

/// The result of solving a group.
#[derive(Debug, Default)]
pub(crate) struct Solution {
    /// A complete chain.
    pub(crate) complete: Option<Vec<Pick>>,
    /// Per stage, the earliest chain reaching it (placed or skipped), if any.
    pub(crate) prefix: Vec<Option<Vec<Pick>>>,
}

fn reconstruct(layers: &[Vec<Node>], stages: &[HitList], mut at: (usize, usize)) -> Vec<Pick> {
    let mut picks = Vec::new();
    loop {
        let node = &layers[at.0][at.1];
        if let Some(c) = &node.candidate {
            picks.push(Pick {
                stage: at.0,
                time: c.t,
                hits: c
                    .hits
                    .iter()
                    .map(|&i| list(stages, at.0)[i].clone())
                    .collect(),
            });
        }
        match node.prev {
            Some(p) => at = p,
            None => break,
        }
    }
    picks.reverse();
    picks
}

/// Finds the earliest complete chain and the earliest chain reaching each stage.
pub(crate) fn solve(stages: &[HitList], spec: &ChainSpec) -> Solution {
    let n = spec.stages.len();
    let mut solution = Solution {
        complete: None,
        prefix: vec![None; n],
    };
    // Layer "before the first stage": one node, nothing placed.
    let origin = Node {
        t: Timestamp::from_nanos(i64::MIN),
        last: None,
        start: None,
        placed: 0,
        prev: None,
        candidate: None,
    };
    let mut layers: Vec<Vec<Node>> = Vec::with_capacity(n);
    let mut prev_layer: Vec<Node> = vec![origin];
    let mut prev_index: Option<usize> = None;
    for (k, stage) in spec.stages.iter().enumerate() {
        let hits = list(stages, k);
        let cands = candidates(hits, stage);
        // For each candidate and each number of stages placed before it, the predecessor
        // leaving the latest start: more stages placed is better evidence, a later start leaves
        // more room in the timespan, and neither dominates the other.
        // Per (completion time, stages placed): the node with the latest start (it leaves the
        // most room for the timespan) and the one with the earliest (it reports the most
        // evidence). Both are valid; later stages keep whichever still fits.
        let mut best: BTreeMap<(Timestamp, usize, bool), Node> = BTreeMap::new();
        for c in &cands {
            let first_hit = hits[c.hits[0]].id;
            for (pi, p) in prev_layer.iter().enumerate() {
                let after = p.t < c.s || (p.t == c.s && p.last != Some(first_hit));
                if !after {
                    continue;
                }
                if p.start.is_some()
                    && let Some(gap) = stage.max_gap_ns
                    && c.t.nanos_since(p.t) > gap
                {
                    continue;
                }
                let start = p.start.unwrap_or(c.s);
                if c.t.nanos_since(start) > spec.timespan_ns {
                    continue;
                }
                let node = Node {
                    t: c.t,
                    last: c.hits.last().map(|&i| hits[i].id),
                    start: Some(start),
                    placed: p.placed + 1,
                    prev: prev_index.map(|l| (l, pi)),
                    candidate: Some(c.clone()),
                };
                for latest in [true, false] {
                    let better = |old: &Node| {
                        if latest {
                            node.start > old.start
                        } else {
                            node.start < old.start
                        }
                    };
                    match best.entry((c.t, node.placed, latest)) {
                        std::collections::btree_map::Entry::Vacant(v) => {
                            v.insert(node.clone());
                        }
                        std::collections::btree_map::Entry::Occupied(mut o) => {
                            if better(o.get()) {
                                o.insert(node.clone());
                            }
                        }
                    }
                }
            }
        }
        let mut layer: Vec<Node> = best.into_values().collect();
        if stage.optional {
            // Skipping: carry the previous layer's placements forward.
            for (pi, p) in prev_layer.iter().enumerate() {
                layer.push(Node {
                    t: p.t,
                    last: p.last,
                    start: p.start,
                    placed: p.placed,
                    prev: prev_index.map(|l| (l, pi)),
                    candidate: None,
                });
            }
        }
        if layer.is_empty() {
            layers.push(layer);
            return solution;
        }
        layers.push(layer);
        let li = layers.len() - 1;
        // The earliest chain reaching this stage with something placed.
        if let Some(ni) = earliest(&layers[li]) {
            solution.prefix[k] = Some(reconstruct(&layers, stages, (li, ni)));
        }
        prev_layer = layers[li].clone();
        prev_index = Some(li);
    }
    if let Some(li) = prev_index
        && let Some(ni) = earliest(&layers[li])
    {
        solution.complete = Some(reconstruct(&layers, stages, (li, ni)));
    }
    solution
}

/// The best node of a layer among those with something placed: the most stages placed, then
/// the earliest completion, then the earliest start (the most evidence).
fn earliest(layer: &[Node]) -> Option<usize> {
    layer
        .iter()
        .enumerate()
        .filter(|(_, x)| x.start.is_some())
        .min_by_key(|(_, x)| (std::cmp::Reverse(x.placed), x.t, x.start))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chainwatch_model::HostName;
    use serde_json::{Value, json};

    use super::*;

    fn hit(secs: i64, id: u128) -> Hit {
        Hit {
            time: Timestamp::from_nanos(secs * 1_000_000_000),
            id: EventId::from_u128(id),
            input: 0,
            host: HostName::new("web-1"),
            value: None,
            evidence: Arc::from([]),
        }
    }

    /// A lone first-stage hit, the shape of most partial chains, lives in the group itself:
    /// neither the list of stage lists nor the stage's hit list has a heap copy; a second
    /// hit of the stage and a hit of a later stage move them to the heap, and they read the
    /// same.
    #[test]
    fn a_lone_first_stage_hit_is_held_inline_in_the_group() {
        let stage = StageSpec {
            min_rules: 1,
            min_count: 1,
            within_ns: None,
            max_gap_ns: None,
            optional: false,
        };
        let spec = ChainSpec {
            stages: vec![stage.clone(), stage.clone(), stage],
            absences: Vec::new(),
            milestones: Vec::new(),
            suppress_ns: None,
            timespan_ns: 3_600_000_000_000,
        };
        let limits = Limits {
            lateness_ns: 60_000_000_000,
            timespan_ns: spec.timespan_ns,
            max_groups: 10,
            max_groups_per_tenant: 10,
            max_hits_per_stage: 8,
        };
        let watermark = Timestamp::from_nanos(0);
        let mut g = Group::default();
        let out = add_hit(&mut g, Slot::Stage(0), hit(10, 1), &spec, limits, watermark);
        assert!(!out.duplicate && !out.late);
        assert_eq!(g.stages.len(), 1);
        assert!(!g.stages.spilled(), "the first stage list is inline");
        assert!(!g.stages[0].spilled(), "its first hit is inline");
        add_hit(&mut g, Slot::Stage(0), hit(11, 2), &spec, limits, watermark);
        assert!(
            g.stages[0].spilled(),
            "a second hit moves the list to the heap"
        );
        add_hit(&mut g, Slot::Stage(2), hit(12, 3), &spec, limits, watermark);
        assert!(
            g.stages.spilled(),
            "a later stage's list moves the lists to the heap"
        );
        let ids = |i: usize| list(&g.stages, i).iter().map(|h| h.id).collect::<Vec<_>>();
        assert_eq!(ids(0), [EventId::from_u128(1), EventId::from_u128(2)]);
        assert!(ids(1).is_empty());
        assert_eq!(ids(2), [EventId::from_u128(3)]);
    }

    /// The changelog record keeps every part of a group as a field, in the order it always
    /// had, whether or not the group keeps the part.
    #[test]
    fn a_group_record_has_every_field_and_reads_back_the_same() {
        let group = Group {
            stages: smallvec::smallvec![smallvec::smallvec![hit(10, 1)]],
            newest: Some(Timestamp::from_nanos(10_000_000_000)),
            ..Group::default()
        };
        let written = serde_json::to_value(&group).expect("serializes");
        let Value::Object(fields) = &written else {
            panic!("not an object: {written}");
        };
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        let mut want = ["stages", "absent", "consumed", "newest", "open", "waiting"];
        want.sort_unstable();
        assert_eq!(sorted, want);
        assert_eq!(written["absent"], json!([]));
        assert_eq!(written["consumed"], json!([]));
        assert_eq!(written["waiting"], Value::Null);
        let read: Group = serde_json::from_value(written.clone()).expect("reads back");
        assert!(read.rare.is_none(), "nothing rare to keep");
        assert_eq!(serde_json::to_value(&read).expect("serializes"), written);
    }

    /// A record written when a group kept a list per stage and its rare parts inline reads
    /// back with them, and writes the same record again.
    #[test]
    fn a_record_with_every_stage_list_and_an_absence_deadline_restores() {
        let h = serde_json::to_value(hit(10, 1)).expect("serializes");
        let used =
            serde_json::to_value((Timestamp::from_nanos(5_000_000_000), EventId::from_u128(7)))
                .expect("serializes");
        let deadline = serde_json::to_value(Timestamp::from_nanos(70_000_000_000)).expect("ts");
        let old = json!({
            "stages": [[h], [], [], []],
            "absent": [[]],
            "consumed": [used],
            "newest": serde_json::to_value(Timestamp::from_nanos(10_000_000_000)).expect("ts"),
            "open": null,
            "waiting": deadline,
        });
        let read: Group = serde_json::from_value(old.clone()).expect("reads");
        assert_eq!(read.stages.len(), 4);
        assert_eq!(read.absent().len(), 1);
        assert_eq!(read.consumed().len(), 1);
        assert_eq!(read.waiting(), Some(Timestamp::from_nanos(70_000_000_000)));
        assert!(!read.is_empty());
        assert_eq!(serde_json::to_value(&read).expect("serializes"), old);
    }
}
