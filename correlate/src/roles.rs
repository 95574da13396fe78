//! Host roles inferred from telemetry: which hosts of a tenant are Exchange servers, domain
//! controllers or IIS servers, from what their own events show (`correlate/mappings/roles.toml`,
//! the signals in data).
//!
//! - [`RoleSignals`]: the compiled signal table; [`RoleSignals::infer`] says which roles one
//!   event shows. [`RoleSignals::interest`] lists the literals and formats an event must carry
//!   to show any role, for a raw-bytes prefilter that must keep those events even when no rule
//!   can match them.
//! - [`RoleTable`]: per tenant and host, the roles seen (first and last time, the signal, how
//!   many events). Bounded; it hands out [`HostRoles`] records when a host gains a role (or a
//!   role's last sighting moves on by a day), which the correlate stage writes to a compacted
//!   topic keyed by tenant and host: that topic is where `chainwatch hosts` lists them, and
//!   what a restarted correlator restores the table from ([`RoleTable::restore`]).
//!
//! Pure: no I/O, no clock (times are event times).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use chainwatch_model::{
    Event, HostName, ProcessInfo, SharedStr, SourceFormat, TenantId, Timestamp,
};
use serde::{Deserialize, Serialize};

const TABLE: &str = include_str!("../mappings/roles.toml");

/// A role's last sighting is written out again once it is this much newer than the one last
/// written (event time), so a listing shows hosts that still have the role.
const REFRESH_NS: i64 = 24 * 3600 * 1_000_000_000;

/// Most hosts with a role held over all tenants; beyond it new hosts are not recorded
/// (counted in [`RoleTable::refused`]). Hosts with a role are servers: few per tenant.
pub const MAX_HOSTS: usize = 1_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    signal: Vec<SignalSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalSpec {
    role: String,
    name: String,
    why: String,
    #[serde(default)]
    channel: Vec<String>,
    #[serde(default)]
    provider: Vec<String>,
    #[serde(default)]
    event_ids: Vec<u32>,
    #[serde(default)]
    formats: Vec<SourceFormat>,
    #[serde(default)]
    service: Vec<String>,
    #[serde(default)]
    fields: BTreeMap<String, Vec<String>>,
    process: Option<ProcessSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessSpec {
    #[serde(default)]
    name: Vec<String>,
    #[serde(default)]
    path: Vec<String>,
    #[serde(default)]
    command_line: Vec<String>,
}

/// One name of a criterion: equal, or a prefix when written with a trailing `*`.
#[derive(Debug, Clone)]
enum Name {
    Exact(String),
    Prefix(String),
}

impl Name {
    fn new(text: &str) -> Self {
        match text.strip_suffix('*') {
            Some(p) => Name::Prefix(p.to_owned()),
            None => Name::Exact(text.to_owned()),
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Name::Exact(n) => value.eq_ignore_ascii_case(n),
            Name::Prefix(p) => value
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
        }
    }

    fn text(&self) -> &str {
        match self {
            Name::Exact(t) | Name::Prefix(t) => t,
        }
    }
}

fn any(names: &[Name], value: Option<&str>) -> bool {
    value.is_some_and(|v| names.iter().any(|n| n.matches(v)))
}

/// `needle` in `haystack`, ASCII case-insensitive.
fn contains(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

#[derive(Debug, Clone)]
struct ProcessCriterion {
    name: Vec<Name>,
    path: Vec<String>,
    command_line: Vec<String>,
}

impl ProcessCriterion {
    fn matches(&self, p: &ProcessInfo) -> bool {
        (self.name.is_empty() || any(&self.name, p.name()))
            && (self.path.is_empty()
                || p.image
                    .as_deref()
                    .is_some_and(|i| self.path.iter().any(|x| contains(i, x))))
            && (self.command_line.is_empty()
                || p.command_line
                    .as_deref()
                    .is_some_and(|c| self.command_line.iter().any(|x| contains(c, x))))
    }
}

/// One compiled signal.
#[derive(Debug, Clone)]
struct Signal {
    role: usize,
    name: String,
    why: String,
    channel: Vec<Name>,
    provider: Vec<Name>,
    event_ids: Vec<u32>,
    formats: Vec<SourceFormat>,
    service: Vec<Name>,
    fields: Vec<(String, Vec<Name>)>,
    process: Option<ProcessCriterion>,
}

impl Signal {
    fn matches(&self, e: &Event) -> bool {
        (self.channel.is_empty() || any(&self.channel, e.source.channel.as_deref()))
            && (self.provider.is_empty() || any(&self.provider, e.source.provider.as_deref()))
            && (self.event_ids.is_empty()
                || e.source
                    .event_id
                    .is_some_and(|id| self.event_ids.contains(&id)))
            && (self.formats.is_empty() || self.formats.contains(&e.source.format))
            && (self.service.is_empty() || any(&self.service, e.target.service.as_deref()))
            && self.fields.iter().all(|(field, names)| {
                any(
                    names,
                    e.fields.get(field).and_then(|v| v.as_text()).as_deref(),
                )
            })
            && self.process.as_ref().is_none_or(|c| {
                [
                    e.process.as_ref(),
                    e.parent.as_ref(),
                    e.target.process.as_ref(),
                ]
                .into_iter()
                .flatten()
                .any(|p| c.matches(p))
            })
    }
}

/// What an event must carry to show any role: for a prefilter on raw bytes, which may skip a
/// record only when it holds none of `literals` (ASCII case-insensitive) and its format is not
/// one of `formats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interest {
    /// Texts of which every role-showing record holds at least one (channel and provider
    /// names, process file names, service names, field values; event ids as decimal text).
    pub literals: Vec<String>,
    /// Formats whose every record shows a role (IIS access logs).
    pub formats: Vec<SourceFormat>,
    /// Channels (exact, ignoring case) and event ids: a record of one may show a role (signals
    /// on event ids of an exactly named channel, whose ids are numbers, not texts).
    pub routes: Vec<(String, u32)>,
}

/// The signal table, compiled.
#[derive(Debug, Clone)]
pub struct RoleSignals {
    roles: Vec<String>,
    signals: Vec<Signal>,
}

/// Why the role table cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("role signal table: {0}")]
pub struct TableError(String);

impl RoleSignals {
    /// Compiles a signal table (TOML, as `correlate/mappings/roles.toml`).
    pub fn parse(text: &str) -> Result<Self, TableError> {
        let file: TableFile = toml::from_str(text).map_err(|e| TableError(e.to_string()))?;
        let mut roles: Vec<String> = Vec::new();
        let mut signals = Vec::new();
        for s in file.signal {
            let role = match roles.iter().position(|r| *r == s.role) {
                Some(i) => i,
                None => {
                    roles.push(s.role.clone());
                    roles.len() - 1
                }
            };
            let names = |v: &[String]| v.iter().map(|t| Name::new(t)).collect::<Vec<_>>();
            let signal = Signal {
                role,
                channel: names(&s.channel),
                provider: names(&s.provider),
                event_ids: s.event_ids,
                formats: s.formats,
                service: names(&s.service),
                fields: s
                    .fields
                    .iter()
                    .map(|(k, v)| (k.clone(), names(v)))
                    .collect(),
                process: s.process.map(|p| ProcessCriterion {
                    name: names(&p.name),
                    path: p.path,
                    command_line: p.command_line,
                }),
                name: s.name,
                why: s.why,
            };
            let empty = signal.channel.is_empty()
                && signal.provider.is_empty()
                && signal.event_ids.is_empty()
                && signal.formats.is_empty()
                && signal.service.is_empty()
                && signal.fields.is_empty()
                && signal.process.is_none();
            if empty {
                return Err(TableError(format!(
                    "signal {:?} has no criterion: every host would have role {:?}",
                    signal.name, s.role
                )));
            }
            signals.push(signal);
        }
        Ok(Self { roles, signals })
    }

    /// The table shipped in `correlate/mappings/roles.toml`.
    pub fn builtin() -> &'static Self {
        static SIGNALS: OnceLock<RoleSignals> = OnceLock::new();
        SIGNALS.get_or_init(|| match Self::parse(TABLE) {
            Ok(s) => s,
            // The table is compiled in; a unit test reads it, so this cannot happen in a build
            // that passed its tests.
            Err(e) => panic!("{e}"),
        })
    }

    /// Every role the table knows (metric label values, `chainwatch hosts --role`).
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    /// The (role, signal name) pairs `event` shows, one per role (the first signal listed).
    pub fn infer<'a>(&'a self, event: &Event) -> Vec<(&'a str, &'a str)> {
        let mut out: Vec<(&str, &str)> = Vec::new();
        for s in &self.signals {
            let role = self.roles[s.role].as_str();
            if out.iter().any(|(r, _)| *r == role) {
                continue;
            }
            if s.matches(event) {
                out.push((role, s.name.as_str()));
            }
        }
        out
    }

    /// Why a signal shows its role, as the table says.
    pub fn why(&self, signal: &str) -> Option<&str> {
        self.signals
            .iter()
            .find(|s| s.name == signal)
            .map(|s| s.why.as_str())
    }

    /// What a record must carry to show a role (see [`Interest`]).
    pub fn interest(&self) -> Interest {
        let mut literals: Vec<String> = Vec::new();
        let mut formats = Vec::new();
        let mut routes = Vec::new();
        for s in &self.signals {
            if !s.formats.is_empty() {
                formats.extend(s.formats.iter().copied());
                continue;
            }
            // One criterion every matching record satisfies is enough; the most selective
            // first: process names, services, event ids, field values, providers, channels.
            let mut texts: Vec<String> = Vec::new();
            if let Some(p) = &s.process {
                if !p.name.is_empty() {
                    texts.extend(p.name.iter().map(|n| n.text().to_owned()));
                } else if !p.path.is_empty() {
                    texts.extend(p.path.iter().cloned());
                } else {
                    texts.extend(p.command_line.iter().cloned());
                }
            } else if !s.service.is_empty() {
                texts.extend(s.service.iter().map(|n| n.text().to_owned()));
            } else if !s.event_ids.is_empty()
                && !s.channel.is_empty()
                && s.channel.iter().all(|c| matches!(c, Name::Exact(_)))
            {
                for c in &s.channel {
                    routes.extend(s.event_ids.iter().map(|&id| (c.text().to_owned(), id)));
                }
            } else if !s.event_ids.is_empty() {
                texts.extend(s.event_ids.iter().map(u32::to_string));
            } else if let Some((_, names)) = s.fields.first() {
                texts.extend(names.iter().map(|n| n.text().to_owned()));
            } else if !s.provider.is_empty() {
                texts.extend(s.provider.iter().map(|n| n.text().to_owned()));
            } else {
                texts.extend(s.channel.iter().map(|n| n.text().to_owned()));
            }
            for t in texts {
                // A JSON record escapes backslashes; keep the part no escaping changes.
                let t = t.trim_matches('\\').replace('\\', "");
                if !t.is_empty() && !literals.iter().any(|l| l.eq_ignore_ascii_case(&t)) {
                    literals.push(t);
                }
            }
        }
        formats.sort_by_key(|f| f.as_str());
        formats.dedup();
        routes.sort();
        routes.dedup();
        Interest {
            literals,
            formats,
            routes,
        }
    }
}

/// One role of one host, as seen so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleSeen {
    /// Event time of the first event that showed it.
    pub first_seen: Timestamp,
    /// Event time of the latest event that showed it.
    pub last_seen: Timestamp,
    /// The signal that first showed it (a name in the signal table).
    pub signal: String,
    /// Events that showed it (by this correlator; restored records keep theirs).
    pub events: u64,
}

/// A host's inferred roles: the record of the roles topic (key `tenant/host key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoles {
    /// The tenant.
    pub tenant: TenantId,
    /// The host, as first seen.
    pub host: HostName,
    /// Role name to what showed it.
    pub roles: BTreeMap<String, RoleSeen>,
}

impl HostRoles {
    /// The record key on the roles topic: tenant and host key (tenant ids hold no `/`).
    pub fn key(&self) -> String {
        format!("{}/{}", self.tenant, self.host.key())
    }
}

/// One host's roles as the table holds them: a short slice, not maps (one million hosts with
/// one role each is the shape that has to stay small). Turned into a [`HostRoles`] record when
/// one is written out or asked for.
#[derive(Debug, Clone)]
struct Entry {
    /// Sorted by name. A boxed slice (no capacity word): roles are added once per host.
    roles: Box<[Role]>,
}

/// The hosts of one tenant that have a role.
#[derive(Debug, Clone, Default)]
struct TenantRoles {
    /// Keyed by host name (compared and looked up by its key; shared with the events').
    hosts: HashMap<HostName, Entry>,
    /// Keys of the hosts restored and not yet observed by this process (no event of theirs
    /// seen here). Only restored hosts are ever in it, and they leave it at their first event:
    /// a flag in every entry would widen every map bucket by 8 bytes.
    unobserved: HashSet<SharedStr>,
}

/// A role's name and the signal that showed it: the pairs the signal table can make are few,
/// so every host's role points at one shared pair (8 bytes, not two shared strings of 16).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Names {
    name: Box<str>,
    signal: Box<str>,
}

/// A [`RoleSeen`] with its role's name; names and signals are shared between hosts.
#[derive(Debug, Clone)]
struct Role {
    names: Arc<Names>,
    first_seen: Timestamp,
    last_seen: Timestamp,
    events: u64,
    /// The last sighting written out.
    published: Timestamp,
}

/// Role and signal name pairs beyond this many are forgotten (hosts keep theirs); the signal
/// table holds a few dozen.
const MAX_INTERNED: usize = 4096;

/// The shared copy of the pair (`name`, `signal`). Asked only when a host gains a role or a
/// role's first signal changes, so the lookup key may be built.
fn intern(strings: &mut HashSet<Arc<Names>>, name: &str, signal: &str) -> Arc<Names> {
    let names = Names {
        name: name.into(),
        signal: signal.into(),
    };
    if let Some(known) = strings.get(&names) {
        return Arc::clone(known);
    }
    if strings.len() >= MAX_INTERNED {
        strings.clear();
    }
    let shared = Arc::new(names);
    strings.insert(Arc::clone(&shared));
    shared
}

impl Role {
    fn name(&self) -> &str {
        &self.names.name
    }
}

impl Entry {
    fn has(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.name() == role)
    }

    fn record(&self, tenant: &TenantId, host: &HostName) -> HostRoles {
        HostRoles {
            tenant: tenant.clone(),
            host: host.clone(),
            roles: self
                .roles
                .iter()
                .map(|r| {
                    let seen = RoleSeen {
                        first_seen: r.first_seen,
                        last_seen: r.last_seen,
                        signal: r.names.signal.to_string(),
                        events: r.events,
                    };
                    (r.name().to_string(), seen)
                })
                .collect(),
        }
    }

    /// The role `name`, added (as `make` makes it) when missing; true when it was added.
    fn role(&mut self, name: &str, make: impl FnOnce() -> Role) -> (&mut Role, bool) {
        match self.roles.binary_search_by(|r| r.name().cmp(name)) {
            Ok(i) => (&mut self.roles[i], false),
            Err(i) => {
                let mut roles = std::mem::take(&mut self.roles).into_vec();
                roles.reserve_exact(1);
                roles.insert(i, make());
                self.roles = roles.into_boxed_slice();
                (&mut self.roles[i], true)
            }
        }
    }
}

/// The roles of every host seen with one, per tenant. Bounded by [`MAX_HOSTS`].
#[derive(Debug, Clone, Default)]
pub struct RoleTable {
    tenants: HashMap<TenantId, TenantRoles>,
    hosts: usize,
    refused: u64,
    changes: Vec<HostRoles>,
    /// Role and signal name pairs, shared.
    strings: HashSet<Arc<Names>>,
    /// Nobody takes the changes (a replay): they are not kept.
    discard_changes: bool,
    /// [`RoleTable::counts`] may have changed since [`RoleTable::counts_changed`] was asked.
    dirty: bool,
}

impl RoleTable {
    /// Learns what `event` shows of its host's roles. Changes worth writing out accumulate
    /// for [`RoleTable::take_changes`].
    pub fn observe(&mut self, signals: &RoleSignals, event: &Event) {
        if event.host.is_empty() {
            return;
        }
        let shown = signals.infer(event);
        // A restored host observed here for the first time.
        if let Some(t) = self.tenants.get_mut(&event.tenant)
            && !t.unobserved.is_empty()
            && t.unobserved.remove(event.host.key())
        {
            self.dirty = true;
        }
        if shown.is_empty() {
            return;
        }
        let known = self
            .tenants
            .get_mut(&event.tenant)
            .and_then(|t| t.hosts.get_mut(event.host.key()));
        let entry = match known {
            Some(e) => e,
            None => {
                if self.hosts >= MAX_HOSTS {
                    self.refused += 1;
                    return;
                }
                self.hosts += 1;
                self.tenants
                    .entry(event.tenant.clone())
                    .or_default()
                    .hosts
                    .entry(event.host.clone())
                    .or_insert_with(|| Entry {
                        roles: Box::default(),
                    })
            }
        };
        let mut changed = false;
        let strings = &mut self.strings;
        for (role, signal) in shown {
            let (r, added) = entry.role(role, || Role {
                names: intern(strings, role, signal),
                first_seen: event.time,
                last_seen: event.time,
                events: 0,
                published: event.time,
            });
            if added {
                self.dirty = true;
            }
            r.events += 1;
            if event.time < r.first_seen {
                r.first_seen = event.time;
                r.names = intern(strings, role, signal);
            }
            r.last_seen = r.last_seen.max(event.time);
            if added || r.last_seen.nanos_since(r.published) >= REFRESH_NS {
                r.published = r.last_seen;
                changed = true;
            }
        }
        if changed && !self.discard_changes {
            self.changes.push(entry.record(&event.tenant, &event.host));
        }
    }

    /// Stops keeping changes for [`RoleTable::take_changes`] (for a caller that never takes
    /// them, such as a replay): they would only accumulate.
    pub fn discard_changes(&mut self) {
        self.discard_changes = true;
        self.changes = Vec::new();
    }

    /// The records to write out since the last call (a host that gained a role, or whose
    /// role was seen again a day later).
    pub fn take_changes(&mut self) -> Vec<HostRoles> {
        std::mem::take(&mut self.changes)
    }

    /// Merges a record read back from the roles topic (at start-up): roles seen earlier, by
    /// this or another correlator. Nothing is written out for it.
    pub fn restore(&mut self, record: HostRoles) {
        let tenant = self.tenants.entry(record.tenant.clone()).or_default();
        let key = record.host.clone();
        if !tenant.hosts.contains_key(key.key()) {
            if self.hosts >= MAX_HOSTS {
                self.refused += 1;
                return;
            }
            self.hosts += 1;
            tenant.unobserved.insert(key.shared_key());
        }
        let entry = tenant.hosts.entry(key).or_insert_with(|| Entry {
            roles: Box::default(),
        });
        let strings = &mut self.strings;
        for (role, seen) in record.roles {
            let published = seen.last_seen;
            let (r, added) = entry.role(&role, || Role {
                names: intern(strings, &role, &seen.signal),
                first_seen: seen.first_seen,
                last_seen: seen.last_seen,
                events: seen.events,
                published,
            });
            if !added {
                if seen.first_seen < r.first_seen {
                    r.first_seen = seen.first_seen;
                    r.names = intern(strings, &role, &seen.signal);
                }
                r.last_seen = r.last_seen.max(seen.last_seen);
                r.events = r.events.max(seen.events);
            }
            r.published = r.published.max(published);
        }
    }

    /// Whether `host` (a host key) of `tenant` has `role`.
    pub fn has(&self, tenant: &TenantId, host: &str, role: &str) -> bool {
        self.tenants
            .get(tenant)
            .and_then(|t| t.hosts.get(host))
            .is_some_and(|e| e.has(role))
    }

    /// Whether some host of `tenant` has `role`.
    pub fn tenant_has(&self, tenant: &TenantId, role: &str) -> bool {
        self.tenants
            .get(tenant)
            .is_some_and(|t| t.hosts.values().any(|e| e.has(role)))
    }

    /// The roles of one host, if it has any.
    pub fn host(&self, tenant: &TenantId, host: &str) -> Option<HostRoles> {
        self.tenants
            .get(tenant)
            .and_then(|t| t.hosts.get_key_value(host))
            .map(|(h, e)| e.record(tenant, h))
    }

    /// Every host with a role, by tenant and host key.
    pub fn all(&self) -> Vec<HostRoles> {
        let mut v: Vec<HostRoles> = self
            .tenants
            .iter()
            .flat_map(|(tenant, t)| t.hosts.iter().map(|(h, e)| e.record(tenant, h)))
            .collect();
        v.sort_by(|a, b| (&a.tenant, a.host.key()).cmp(&(&b.tenant, b.host.key())));
        v
    }

    /// Per tenant and role, how many hosts this process observed with the role (restored
    /// hosts count once one of their events arrives here, so that correlators sharing the
    /// events topic's partitions each count their own hosts and the sum is the fleet's).
    pub fn counts(&self) -> BTreeMap<(TenantId, String), usize> {
        let mut out = BTreeMap::new();
        for (tenant, t) in &self.tenants {
            let observed = |h: &&HostName| !t.unobserved.contains(h.key());
            for e in t.hosts.iter().filter(|(h, _)| observed(h)).map(|(_, e)| e) {
                for role in &e.roles {
                    *out.entry((tenant.clone(), role.name().to_string()))
                        .or_default() += 1;
                }
            }
        }
        out
    }

    /// True once when [`RoleTable::counts`] may differ from when this was last asked (a host
    /// gained a role, or a restored host was observed here): the time to set gauges again.
    pub fn counts_changed(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Hosts with a role held.
    pub fn len(&self) -> usize {
        self.hosts
    }

    /// True when no host has a role.
    pub fn is_empty(&self) -> bool {
        self.hosts == 0
    }

    /// New hosts not recorded because the table was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every host with a role holds (BENCHMARKS.md, memory): a map entry and a boxed
    /// slice of roles. Guards against a field that makes every such host bigger.
    #[test]
    fn per_host_roles_stay_small() {
        assert!(std::mem::size_of::<Entry>() <= 16);
        assert!(std::mem::size_of::<Role>() <= 40);
    }
    use chainwatch_model::{EventId, FieldValue, SourceMeta};

    fn event(host: &str, channel: &str, provider: &str, id: u32) -> Event {
        Event {
            source: SourceMeta {
                format: SourceFormat::WindowsFlat,
                channel: Some(channel.into()),
                provider: Some(provider.into()),
                event_id: Some(id),
            },
            ..Event::bare(
                EventId::from_u128(u128::from(id)),
                TenantId::new("acme").unwrap(),
                Timestamp::from_nanos(1_000_000_000 * i64::from(id)),
                HostName::new(host),
            )
        }
    }

    fn proc(image: &str, cmd: &str) -> Option<ProcessInfo> {
        Some(ProcessInfo {
            image: Some(image.into()),
            command_line: Some(cmd.into()),
            ..ProcessInfo::default()
        })
    }

    #[test]
    fn the_shipped_table_loads() {
        let s = RoleSignals::builtin();
        assert_eq!(s.roles(), ["exchange", "domain_controller", "iis"]);
        assert!(s.why("kerberos_kdc").is_some());
    }

    #[test]
    fn signals_name_their_roles() {
        let s = RoleSignals::builtin();
        let e = event("MXS01", "MSExchange Management", "MSExchange CmdletLogs", 1);
        assert_eq!(s.infer(&e), [("exchange", "exchange_log")]);

        let mut w3wp = event("MXS01", "Microsoft-Windows-Sysmon/Operational", "Sysmon", 1);
        w3wp.process = proc(r"C:\Windows\System32\cmd.exe", "cmd /c whoami");
        w3wp.parent = proc(
            r"c:\windows\system32\inetsrv\w3wp.exe",
            r#"w3wp.exe -ap "MSExchangeOWAAppPool" -v "v4.0""#,
        );
        assert_eq!(
            s.infer(&w3wp),
            [("exchange", "exchange_app_pool"), ("iis", "iis_worker")]
        );

        let mut plain_iis = w3wp.clone();
        plain_iis.parent = proc(
            r"c:\windows\system32\inetsrv\w3wp.exe",
            r#"w3wp.exe -ap "DefaultAppPool""#,
        );
        assert_eq!(s.infer(&plain_iis), [("iis", "iis_worker")]);

        let kdc = event(
            "DC01",
            "Security",
            "Microsoft-Windows-Security-Auditing",
            4769,
        );
        assert_eq!(s.infer(&kdc), [("domain_controller", "kerberos_kdc")]);
        // A logon or a workstation's Kerberos client event is no sign of a DC.
        let logon = event(
            "WS1",
            "Security",
            "Microsoft-Windows-Security-Auditing",
            4624,
        );
        assert!(s.infer(&logon).is_empty());

        let mut ds = event(
            "DC01",
            "Security",
            "Microsoft-Windows-Security-Auditing",
            4662,
        );
        assert!(s.infer(&ds).is_empty(), "4662 on a non-DS object server");
        ds.fields.push("ObjectServer", FieldValue::Str("DS".into()));
        assert_eq!(s.infer(&ds), [("domain_controller", "directory_access")]);

        // The Exchange folder alone (a web shell written there) is not a role.
        let mut tools = event(
            "ADMIN1",
            "Microsoft-Windows-Sysmon/Operational",
            "Sysmon",
            1,
        );
        tools.process = proc(
            r"C:\Windows\System32\WindowsPowerShell\v1.0\powershell.exe",
            r"powershell -PSConsoleFile 'C:\Program Files\Microsoft\Exchange Server\V15\bin\exshell.psc1'",
        );
        assert!(s.infer(&tools).is_empty());
        tools.process = proc(
            r"C:\Program Files\Microsoft\Exchange Server\V15\Bin\MSExchangeHMWorker.exe",
            "MSExchangeHMWorker.exe -pipe:2716",
        );
        assert_eq!(s.infer(&tools), [("exchange", "exchange_service_process")]);
    }

    #[test]
    fn prefixes_need_a_star_and_names_compare_whole() {
        let s = RoleSignals::parse(
            r#"
[[signal]]
role = "x"
name = "svc"
why = "-"
service = ["WAS"]
"#,
        )
        .unwrap();
        let mut e = event("H", "System", "Service Control Manager", 7045);
        e.target.service = Some("Wasabi".into());
        assert!(s.infer(&e).is_empty());
        e.target.service = Some("was".into());
        assert_eq!(s.infer(&e), [("x", "svc")]);
        assert!(
            RoleSignals::parse("[[signal]]\nrole = \"x\"\nname = \"n\"\nwhy = \"-\"\n").is_err()
        );
    }

    #[test]
    fn the_table_keeps_first_and_last_sightings_and_writes_changes_out() {
        let s = RoleSignals::builtin();
        let mut t = RoleTable::default();
        let acme = TenantId::new("acme").unwrap();
        let mut e = event(
            "EXCH01.contoso.local",
            "MSExchange Management",
            "MSExchange CmdletLogs",
            10,
        );
        t.observe(s, &e);
        assert!(t.has(&acme, "exch01", "exchange"));
        assert!(t.tenant_has(&acme, "exchange"));
        assert!(!t.has(&acme, "exch01", "iis"));
        let changes = t.take_changes();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].key(), "acme/exch01");
        // Seen again soon: nothing new to write.
        e.time = Timestamp::from_nanos(20_000_000_000);
        t.observe(s, &e);
        assert!(t.take_changes().is_empty());
        // A day later: the sighting is written out again.
        e.time = e.time.add_nanos(REFRESH_NS);
        t.observe(s, &e);
        let changes = t.take_changes();
        assert_eq!(changes.len(), 1);
        let seen = &changes[0].roles["exchange"];
        assert_eq!(seen.first_seen, Timestamp::from_nanos(10_000_000_000));
        assert_eq!(seen.events, 3);
        // Another tenant's host of the same name is another host.
        let globex = TenantId::new("globex").unwrap();
        assert!(!t.has(&globex, "exch01", "exchange"));
        assert_eq!(t.counts()[&(acme, "exchange".to_owned())], 1);
        assert!(t.counts_changed());
        assert!(!t.counts_changed(), "asked again: nothing new");
    }

    #[test]
    fn restored_records_merge_and_count_once_observed_here() {
        let s = RoleSignals::builtin();
        let acme = TenantId::new("acme").unwrap();
        let mut earlier = RoleTable::default();
        earlier.observe(
            s,
            &event(
                "DC01",
                "Security",
                "Microsoft-Windows-Security-Auditing",
                4768,
            ),
        );
        let record = earlier.take_changes().remove(0);
        let text = serde_json::to_string(&record).unwrap();
        let mut t = RoleTable::default();
        t.restore(serde_json::from_str(&text).unwrap());
        assert!(t.has(&acme, "dc01", "domain_controller"));
        assert!(t.counts().is_empty(), "not observed by this process yet");
        t.observe(
            s,
            &event(
                "DC01",
                "Security",
                "Microsoft-Windows-Security-Auditing",
                4624,
            ),
        );
        assert_eq!(t.counts()[&(acme, "domain_controller".to_owned())], 1);
        assert!(t.take_changes().is_empty(), "nothing new to write");
    }

    #[test]
    fn interest_covers_every_signal() {
        let i = RoleSignals::builtin().interest();
        for needle in ["w3wp.exe", "MSExchange", "ismserv.exe"] {
            assert!(
                i.literals.iter().any(|l| l.eq_ignore_ascii_case(needle)),
                "{needle} in {:?}",
                i.literals
            );
        }
        // Event ids are numbers in a record, not texts: routes of their (exact) channel.
        for route in [("Security", 4769), ("Security", 4662)] {
            assert!(
                i.routes
                    .iter()
                    .any(|(c, id)| c == route.0 && *id == route.1),
                "{route:?} in {:?}",
                i.routes
            );
        }
        assert!(!i.literals.iter().any(|l| l == "4769"), "{:?}", i.literals);
        assert_eq!(i.formats, [SourceFormat::W3c]);
    }
}
