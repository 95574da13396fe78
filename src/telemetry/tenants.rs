//! Tenant label values, bounded.
//!
//! A tenant label is worth having (which customer sends garbage, which one is attacked), but
//! tenants come from topic names, so their number is the fleet's. The first
//! `max_tenant_labels` tenants seen keep their own value; later ones share [`OTHER`]. With
//! labels turned off every tenant is [`ALL`]. "First seen" rather than "largest": a series must
//! not change its label while the process runs, and the first tenants seen after a start are
//! the busy ones.

use std::collections::HashSet;
use std::sync::RwLock;

use chainwatch_config::ops::MetricsConfig;

/// The value shared by tenants beyond the cap.
pub const OTHER: &str = "(other)";
/// The value of every tenant when tenant labels are off.
pub const ALL: &str = "(all)";
/// The value for a record whose tenant is not known (its topic matches no source).
pub const NONE: &str = "(none)";

/// Maps tenants to bounded label values.
#[derive(Debug)]
pub struct TenantLabels {
    enabled: bool,
    max: usize,
    seen: RwLock<HashSet<String>>,
}

impl TenantLabels {
    /// Labels as the `[metrics]` config says.
    pub fn new(config: &MetricsConfig) -> Self {
        Self {
            enabled: config.tenant_labels,
            max: config.max_tenant_labels,
            seen: RwLock::new(HashSet::new()),
        }
    }

    /// The label value for `tenant`.
    pub fn label<'a>(&self, tenant: &'a str) -> &'a str {
        if !self.enabled {
            return ALL;
        }
        {
            let seen = self
                .seen
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if seen.contains(tenant) {
                return tenant;
            }
            if seen.len() >= self.max {
                return OTHER;
            }
        }
        let mut seen = self
            .seen
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(tenant) {
            return tenant;
        }
        if seen.len() >= self.max {
            return OTHER;
        }
        seen.insert(tenant.to_owned());
        tenant
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_beyond_the_cap_share_one_value() {
        let t = TenantLabels::new(&MetricsConfig {
            tenant_labels: true,
            max_tenant_labels: 2,
        });
        assert_eq!(t.label("acme"), "acme");
        assert_eq!(t.label("globex"), "globex");
        assert_eq!(t.label("initech"), OTHER);
        // The first two keep their values.
        assert_eq!(t.label("acme"), "acme");
        assert_eq!(t.label("globex"), "globex");
    }

    #[test]
    fn tenant_labels_can_be_turned_off() {
        let t = TenantLabels::new(&MetricsConfig {
            tenant_labels: false,
            max_tenant_labels: 2,
        });
        assert_eq!(t.label("acme"), ALL);
    }
}
