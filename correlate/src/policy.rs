//! Per-tenant policy: which playbooks run for a customer, its known-good exclusions, priority
//! overrides, and the roles of its hosts (a playbook scoped to `exchange` runs only on hosts the
//! customer's config lists as Exchange servers, or that its telemetry showed to be: see
//! [`crate::roles`]).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use chainwatch_config::TenantConfig;
use chainwatch_config::sigma::{FieldItem, SigmaValue};
use chainwatch_config::{Diagnostic, Diagnostics};
use chainwatch_model::host::host_key;
use chainwatch_model::{Event, Severity, TenantId};

use crate::roles::RoleTable;
use crate::ruleset::{CompiledCorrelation, CompiledRule};
use crate::sigma::fields::{EventView, FieldId};
use crate::sigma::value::{CompileCtx, ValueSet};

/// A compiled exclusion: matches of `rule` (or of every rule) whose `field` matches a value do
/// not count for the tenant.
#[derive(Debug, Clone)]
struct Exclusion {
    rule: Option<usize>,
    field: FieldId,
    values: ValueSet,
}

/// One tenant's policy.
#[derive(Debug, Clone, Default)]
pub struct TenantPolicy {
    /// Correlations that run (indices); `None`: all.
    playbooks: Option<HashSet<usize>>,
    /// Priority overrides by correlation index.
    priority: HashMap<usize, Severity>,
    /// Role name to host keys.
    roles: HashMap<String, HashSet<String>>,
    /// Roles inferred from telemetry are not used as scope (`infer_roles = false`).
    declared_only: bool,
    exclusions: Vec<Exclusion>,
}

/// Every tenant's policy; tenants without one get the default (everything runs).
#[derive(Debug, Clone, Default)]
pub struct Policies {
    tenants: HashMap<TenantId, TenantPolicy>,
    default: TenantPolicy,
}

impl Policies {
    /// Compiles tenant configs against the rules they name. `file` is where the configs came
    /// from, for problems (names of playbooks or rules that do not exist, bad exclusion values).
    pub(crate) fn compile(
        configs: &std::collections::BTreeMap<String, TenantConfig>,
        detections: &[CompiledRule],
        correlations: &[CompiledCorrelation],
        ctx: &mut CompileCtx<'_>,
        file: &Path,
    ) -> Result<Self, Diagnostics> {
        let mut diags = Diagnostics::default();
        let mut tenants = HashMap::new();
        let find_corr = |name: &str| correlations.iter().position(|c| c.answers_to(name));
        let find_rule = |name: &str| {
            detections
                .iter()
                .position(|d| d.info.name.as_deref() == Some(name) || d.info.rule.id == name)
        };
        for (name, cfg) in configs {
            let mut err =
                |m: String| diags.push(Diagnostic::new(file, 0, 0, format!("tenants.{name}: {m}")));
            let Ok(tenant) = TenantId::new(name) else {
                err("not a valid tenant id".into());
                continue;
            };
            let mut p = TenantPolicy::default();
            if let Some(list) = &cfg.playbooks {
                let mut set = HashSet::new();
                for pb in list {
                    match find_corr(pb) {
                        Some(i) => {
                            set.insert(i);
                        }
                        None => err(format!("playbooks: no loaded playbook is named {pb:?}")),
                    }
                }
                p.playbooks = Some(set);
            }
            for (pb, sev) in &cfg.priority {
                match find_corr(pb) {
                    Some(i) => {
                        p.priority.insert(i, *sev);
                    }
                    None => err(format!("priority: no loaded playbook is named {pb:?}")),
                }
            }
            p.declared_only = cfg.infer_roles == Some(false);
            for (role, hosts) in &cfg.roles {
                p.roles
                    .insert(role.clone(), hosts.iter().map(|h| host_key(h)).collect());
            }
            for (i, x) in cfg.exclude.iter().enumerate() {
                let rule = match &x.rule {
                    Some(r) => match find_rule(r) {
                        Some(i) => Some(i),
                        None => {
                            err(format!("exclude[{i}]: no loaded rule is named {r:?}"));
                            continue;
                        }
                    },
                    None => None,
                };
                let item = FieldItem {
                    field: Some(x.field.clone()),
                    modifiers: Vec::new(),
                    values: x
                        .values
                        .iter()
                        .map(|v| SigmaValue::Str(v.clone()))
                        .collect(),
                    line: 0,
                };
                match ValueSet::compile(&item, ctx) {
                    Ok(values) => p.exclusions.push(Exclusion {
                        rule,
                        field: ctx.fields.intern(&x.field, ctx.tables),
                        values,
                    }),
                    Err(e) => err(format!("exclude[{i}]: {e}")),
                }
            }
            tenants.insert(tenant, p);
        }
        if diags.is_empty() {
            Ok(Self {
                tenants,
                default: TenantPolicy::default(),
            })
        } else {
            Err(diags)
        }
    }

    fn of(&self, tenant: &TenantId) -> &TenantPolicy {
        self.tenants.get(tenant).unwrap_or(&self.default)
    }

    /// Whether a match of detection `rule` on the event is excluded for its tenant.
    pub(crate) fn excluded(&self, rule: usize, view: &EventView<'_>) -> bool {
        self.of(&view.event.tenant)
            .exclusions
            .iter()
            .any(|x| x.rule.is_none_or(|r| r == rule) && x.values.matches(view.get(x.field), view))
    }

    /// Whether correlation `ci` runs for `event`: it is enabled for the tenant, and when the
    /// playbook is scoped to host roles, the host has one of them. A host has a role when the
    /// tenant declares it (`roles = { exchange = [...] }`) or when its telemetry showed it
    /// (`inferred`, unless the tenant sets `infer_roles = false`). A tenant with no host known
    /// to have any of the playbook's roles is not restricted: an unconfigured customer whose
    /// Exchange servers were not seen yet still gets detection everywhere.
    pub(crate) fn applies(
        &self,
        ci: usize,
        corr: &CompiledCorrelation,
        event: &Event,
        inferred: &RoleTable,
    ) -> bool {
        let p = self.of(&event.tenant);
        if p.playbooks.as_ref().is_some_and(|set| !set.contains(&ci)) {
            return false;
        }
        if corr.roles.is_empty() {
            return true;
        }
        let infer = !p.declared_only;
        let known = corr
            .roles
            .iter()
            .any(|r| p.roles.contains_key(r) || (infer && inferred.tenant_has(&event.tenant, r)));
        if !known {
            return true;
        }
        let host = event.host.key();
        corr.roles.iter().any(|r| {
            p.roles.get(r).is_some_and(|hosts| hosts.contains(host))
                || (infer && inferred.has(&event.tenant, host, r))
        })
    }

    /// The priority of correlation `ci`'s findings for `tenant`, if overridden.
    pub(crate) fn priority(&self, ci: usize, tenant: &TenantId) -> Option<Severity> {
        self.of(tenant).priority.get(&ci).copied()
    }
}
