//! Routing: which sinks take which findings.
//!
//! Every sink sees every finding (each consumes the alert topic in its own group) and keeps the
//! ones its route accepts. A route is one of three scopes, plus filters:
//! - `tenant = "acme"`: acme's own destination. It takes acme's findings and nothing else: the
//!   tenant check comes first and no other setting can widen it.
//! - `default = true`: the findings that no tenant destination takes (a tenant without one, or
//!   a finding its destinations filtered out).
//! - neither: every tenant's findings (the MSP's archive or SOC queue).
//!
//! Filters: `min_severity` (priority) and `playbooks`. Pure: decided from the config and the
//! finding alone, so every sink process decides alike.

use chainwatch_config::service::{RouteConfig, SinkConfig};
use chainwatch_model::{Alert, Severity};

/// One sink's route, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The sink's name.
    pub sink: String,
    scope: Scope,
    min_severity: Option<Severity>,
    playbooks: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Tenant(String),
    Default,
    All,
}

impl Route {
    /// The route of sink `sink`.
    pub fn new(sink: &str, config: &RouteConfig) -> Self {
        let scope = match (&config.tenant, config.default) {
            (Some(t), _) => Scope::Tenant(t.clone()),
            (None, true) => Scope::Default,
            (None, false) => Scope::All,
        };
        Self {
            sink: sink.to_owned(),
            scope,
            min_severity: config.min_severity,
            playbooks: config.playbooks.clone(),
        }
    }

    /// The tenant this destination belongs to, if it is a tenant's own.
    pub fn tenant(&self) -> Option<&str> {
        match &self.scope {
            Scope::Tenant(t) => Some(t),
            _ => None,
        }
    }

    fn filters_pass(&self, alert: &Alert) -> bool {
        if self.min_severity.is_some_and(|min| alert.severity < min) {
            return false;
        }
        if !self.playbooks.is_empty() {
            return alert
                .playbook
                .as_ref()
                .is_some_and(|p| self.playbooks.iter().any(|x| x == p));
        }
        true
    }
}

/// All sinks' routes: what one sink needs to decide, since `default` depends on the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// The routes of `sinks`.
    pub fn new(sinks: &[SinkConfig]) -> Self {
        Self {
            routes: sinks
                .iter()
                .map(|s| Route::new(s.name(), s.route()))
                .collect(),
        }
    }

    /// Whether sink `sink` takes `alert`. A sink not in the router takes nothing.
    pub fn accepts(&self, sink: &str, alert: &Alert) -> bool {
        let Some(route) = self.routes.iter().find(|r| r.sink == sink) else {
            return false;
        };
        let tenant = alert.tenant.as_str();
        match &route.scope {
            Scope::Tenant(t) => t == tenant && route.filters_pass(alert),
            Scope::All => route.filters_pass(alert),
            Scope::Default => {
                route.filters_pass(alert)
                    && !self
                        .routes
                        .iter()
                        .any(|r| r.tenant() == Some(tenant) && r.filters_pass(alert))
            }
        }
    }

    /// The names of the sinks that take `alert`, in config order.
    pub fn destinations<'a>(&'a self, alert: &Alert) -> Vec<&'a str> {
        self.routes
            .iter()
            .filter(|r| self.accepts(&r.sink, alert))
            .map(|r| r.sink.as_str())
            .collect()
    }
}
