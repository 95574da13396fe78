//! Tenant resolution from topic names: `telemetry.{tenant}.windows` matches
//! `telemetry.acme.windows` and says the tenant is `acme`.

use chainwatch_model::TenantId;
use regex::Regex;

/// A topic name pattern with one `{tenant}` placeholder.
#[derive(Debug, Clone)]
pub struct TopicPattern {
    pattern: String,
    regex: Regex,
}

impl TopicPattern {
    /// Compiles a pattern; the config loader has already checked its form.
    pub fn new(pattern: &str) -> Result<Self, String> {
        let Some((before, after)) = pattern.split_once("{tenant}") else {
            return Err(format!("topic pattern {pattern:?} has no {{tenant}}"));
        };
        let source = format!(
            "^{}([A-Za-z0-9_-]{{1,{}}}){}$",
            regex::escape(before),
            TenantId::MAX_LEN,
            regex::escape(after)
        );
        let regex = Regex::new(&source).map_err(|e| e.to_string())?;
        Ok(Self {
            pattern: pattern.to_owned(),
            regex,
        })
    }

    /// The regex for a Kafka regex subscription (librdkafka wants a leading `^`).
    pub fn subscription(&self) -> &str {
        self.regex.as_str()
    }

    /// The pattern as configured.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The tenant a topic belongs to, if it matches.
    pub fn tenant_of(&self, topic: &str) -> Option<TenantId> {
        let caps = self.regex.captures(topic)?;
        TenantId::new(caps.get(1)?.as_str()).ok()
    }

    /// The topic of `tenant`.
    pub fn topic_for(&self, tenant: &TenantId) -> String {
        self.pattern.replace("{tenant}", tenant.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_comes_from_the_topic_name() {
        let p = TopicPattern::new("telemetry.{tenant}.windows").unwrap();
        assert_eq!(
            p.tenant_of("telemetry.acme.windows").unwrap().as_str(),
            "acme"
        );
        assert_eq!(p.tenant_of("telemetry.acme.linux"), None);
        assert_eq!(
            p.tenant_of("telemetry.a.b.windows"),
            None,
            "dots are not tenant characters"
        );
        assert_eq!(p.tenant_of("xtelemetry.acme.windows"), None);
        assert!(p.subscription().starts_with('^'));
        assert_eq!(
            p.topic_for(&TenantId::new("globex").unwrap()),
            "telemetry.globex.windows"
        );
    }
}
