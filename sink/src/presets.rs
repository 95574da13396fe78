//! Webhook payloads: what each ticketing, paging and chat tool accepts, built from a finding.
//!
//! Every preset carries the alert id where the tool can deduplicate on it: PagerDuty's
//! `dedup_key`, TheHive's `sourceRef`, ServiceNow's `correlation_id`, a Jira label. Every
//! request also carries it as the `Idempotency-Key` header ([`crate::webhook`]).
//!
//! A user template (MiniJinja) covers any other tool. Its variables: `alert` (chainwatch's
//! JSON), `ocsf` (the OCSF finding), `summary` (one line) and `text` (the readable block).
//! Write JSON with the `tojson` filter, which quotes and escapes: `{"title": {{ summary|tojson }}}`.

use chainwatch_config::service::{FindingFormat, Payload};
use chainwatch_model::{Alert, AlertKind, Severity};
use serde_json::{Value, json};

use crate::{ocsf, render};

/// A request body and its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// `Content-Type`.
    pub content_type: String,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// A payload spec, with its template compiled.
#[derive(Debug)]
pub struct PayloadBuilder {
    payload: Payload,
    template: Option<minijinja::Environment<'static>>,
}

/// A template that does not compile, with its line.
#[derive(Debug, thiserror::Error)]
#[error("template: {0}")]
pub struct TemplateError(String);

const TEMPLATE_NAME: &str = "payload";

impl PayloadBuilder {
    /// Prepares `payload`; a template is compiled now, so a broken one stops start-up.
    pub fn new(payload: &Payload) -> Result<Self, TemplateError> {
        let template = match payload {
            Payload::Template { body, .. } => {
                let mut env = minijinja::Environment::new();
                env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
                env.add_template_owned(TEMPLATE_NAME, body.clone().unwrap_or_default())
                    .map_err(|e| TemplateError(describe(&e)))?;
                Some(env)
            }
            _ => None,
        };
        Ok(Self {
            payload: payload.clone(),
            template,
        })
    }

    /// The preset's name.
    pub fn preset(&self) -> &'static str {
        self.payload.preset()
    }

    /// The body for `alert`. Fails only for a template that cannot render this finding.
    pub fn build(&self, alert: &Alert) -> Result<Body, String> {
        let json = |v: Value| Body {
            content_type: "application/json".into(),
            bytes: v.to_string().into_bytes(),
        };
        Ok(match &self.payload {
            Payload::Generic { format } => Body {
                content_type: "application/json".into(),
                bytes: match format {
                    FindingFormat::Json => render::json_line(alert).into_bytes(),
                    FindingFormat::Ocsf => ocsf::line(alert).into_bytes(),
                },
            },
            Payload::Jira {
                project,
                issue_type,
                labels,
            } => json(jira(alert, project, issue_type, labels)),
            Payload::ServiceNow {
                assignment_group,
                caller_id,
                category,
            } => json(servicenow(
                alert,
                assignment_group.as_deref(),
                caller_id.as_deref(),
                category.as_deref(),
            )),
            Payload::PagerDuty { routing_key } => json(pagerduty(alert, routing_key.expose())),
            Payload::TheHive { tlp, pap } => json(thehive(alert, *tlp, *pap)),
            Payload::Slack {} => json(slack(alert)),
            Payload::Teams {} => json(teams(alert)),
            Payload::Template { content_type, .. } => {
                let env = self
                    .template
                    .as_ref()
                    .ok_or_else(|| "template not compiled".to_owned())?;
                let tmpl = env.get_template(TEMPLATE_NAME).map_err(|e| describe(&e))?;
                let ctx = minijinja::context! {
                    alert => minijinja::Value::from(minijinja::value::Serde(alert)),
                    ocsf => minijinja::Value::from(minijinja::value::Serde(ocsf::finding(alert))),
                    summary => summary(alert),
                    text => render::pretty(alert),
                };
                Body {
                    content_type: content_type.clone(),
                    bytes: tmpl.render(ctx).map_err(|e| describe(&e))?.into_bytes(),
                }
            }
        })
    }
}

fn describe(e: &minijinja::Error) -> String {
    match e.line() {
        Some(line) => format!("line {line}: {e}"),
        None => e.to_string(),
    }
}

/// One line: `[HIGH] Exchange exploitation to ransomware on EXCH01 (tenant contoso)`.
pub fn summary(alert: &Alert) -> String {
    format!(
        "[{}] {} on {} (tenant {})",
        alert.severity.as_str().to_uppercase(),
        alert.rule.title,
        alert.host.display(),
        alert.tenant
    )
}

fn cut(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    s.push('…');
    s
}

fn technique_names(alert: &Alert) -> Vec<String> {
    alert
        .techniques
        .iter()
        .map(|t| match t.info() {
            Some(i) => format!("{t} {}", i.name),
            None => t.to_string(),
        })
        .collect()
}

fn jira(alert: &Alert, project: &str, issue_type: &str, labels: &[String]) -> Value {
    let mut all = vec![
        "chainwatch".to_owned(),
        format!("chainwatch-{}", alert.id),
        format!("tenant-{}", alert.tenant),
    ];
    all.extend(labels.iter().cloned());
    json!({
        "fields": {
            "project": {"key": project},
            "issuetype": {"name": issue_type},
            // Jira refuses summaries over 255 characters.
            "summary": cut(&summary(alert), 255),
            "description": render::pretty(alert),
            "labels": all,
        }
    })
}

fn servicenow(
    alert: &Alert,
    group: Option<&str>,
    caller: Option<&str>,
    category: Option<&str>,
) -> Value {
    // ServiceNow's scale: 1 high, 2 medium, 3 low.
    let (urgency, impact) = match alert.severity {
        Severity::Critical => ("1", "1"),
        Severity::High => ("1", "2"),
        Severity::Medium => ("2", "2"),
        Severity::Low | Severity::Informational => ("3", "3"),
    };
    let mut v = json!({
        "short_description": cut(&summary(alert), 160),
        "description": render::pretty(alert),
        "urgency": urgency,
        "impact": impact,
        "correlation_id": alert.id.to_string(),
        "correlation_display": "chainwatch",
    });
    for (k, val) in [
        ("assignment_group", group),
        ("caller_id", caller),
        ("category", category),
    ] {
        if let Some(val) = val {
            v[k] = json!(val);
        }
    }
    v
}

fn pagerduty(alert: &Alert, routing_key: &str) -> Value {
    let severity = match alert.severity {
        Severity::Critical => "critical",
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Informational => "info",
    };
    let stages: Vec<String> = alert
        .stages
        .iter()
        .map(|s| format!("{} {}", s.time, s.rule.title))
        .collect();
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": alert.id.to_string(),
        "client": "chainwatch",
        "payload": {
            // PagerDuty cuts summaries at 1024 characters.
            "summary": cut(&summary(alert), 1024),
            "source": alert.host.display(),
            "severity": severity,
            "timestamp": alert.first_seen.to_string(),
            "group": alert.tenant.as_str(),
            "class": match alert.kind { AlertKind::Chain => "chain", AlertKind::Detection => "detection" },
            "component": alert.playbook.as_deref().unwrap_or(&alert.rule.title),
            "custom_details": {
                "alert_id": alert.id.to_string(),
                "tenant": alert.tenant.as_str(),
                "host": alert.host.display(),
                "user": alert.user,
                "techniques": technique_names(alert),
                "stages": stages,
                "response": alert.response,
            }
        }
    })
}

fn thehive(alert: &Alert, tlp: u8, pap: u8) -> Value {
    // TheHive's scale: 1 low, 2 medium, 3 high, 4 critical.
    let severity = match alert.severity {
        Severity::Critical => 4,
        Severity::High => 3,
        Severity::Medium => 2,
        Severity::Low | Severity::Informational => 1,
    };
    let mut tags = vec![format!("tenant:{}", alert.tenant)];
    tags.extend(alert.techniques.iter().map(|t| format!("attack:{t}")));
    if let Some(p) = &alert.playbook {
        tags.push(format!("playbook:{p}"));
    }
    let mut observables = vec![json!({"dataType": "hostname", "data": alert.host.display()})];
    if let Some(u) = &alert.user {
        observables.push(json!({"dataType": "other", "data": u, "tags": ["user"]}));
    }
    json!({
        "type": "chainwatch",
        "source": "chainwatch",
        "sourceRef": alert.id.to_string(),
        "title": cut(&summary(alert), 512),
        "description": format!("```\n{}```", render::pretty(alert)),
        "severity": severity,
        "date": alert.first_seen.as_millis(),
        "tags": tags,
        "tlp": tlp,
        "pap": pap,
        "observables": observables,
    })
}

fn facts(alert: &Alert) -> Vec<(String, String)> {
    let mut f = vec![
        ("Tenant".to_owned(), alert.tenant.to_string()),
        ("Host".to_owned(), alert.host.display().to_owned()),
    ];
    if let Some(u) = &alert.user {
        f.push(("User".into(), u.clone()));
    }
    f.push((
        "Seen".into(),
        format!("{} .. {}", alert.first_seen, alert.last_seen),
    ));
    if !alert.techniques.is_empty() {
        f.push(("Techniques".into(), technique_names(alert).join(", ")));
    }
    f.push(("Alert id".into(), alert.id.to_string()));
    f
}

fn steps(alert: &Alert) -> Vec<String> {
    alert
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{}. {}  {}", i + 1, s.time, s.rule.title))
        .collect()
}

fn slack(alert: &Alert) -> Value {
    let fields: Vec<Value> = facts(alert)
        .into_iter()
        .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*\n{v}")}))
        .collect();
    let mut blocks = vec![
        // Slack header blocks hold at most 150 characters.
        json!({"type": "header", "text": {"type": "plain_text", "text": cut(&summary(alert), 150)}}),
        // And a section at most 10 fields.
        json!({"type": "section", "fields": fields.into_iter().take(10).collect::<Vec<_>>()}),
    ];
    let stages = steps(alert);
    if !stages.is_empty() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&format!("*Stages*\n{}", stages.join("\n")), 3000)}}));
    }
    if !alert.response.is_empty() {
        let r: Vec<String> = alert
            .response
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}. {s}", i + 1))
            .collect();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&format!("*Respond*\n{}", r.join("\n")), 3000)}}));
    }
    json!({"text": summary(alert), "blocks": blocks})
}

fn teams(alert: &Alert) -> Value {
    let facts: Vec<Value> = facts(alert)
        .into_iter()
        .map(|(k, v)| json!({"title": k, "value": v}))
        .collect();
    let mut body = vec![
        json!({"type": "TextBlock", "size": "Large", "weight": "Bolder", "wrap": true, "text": summary(alert)}),
        json!({"type": "FactSet", "facts": facts}),
    ];
    let stages = steps(alert);
    if !stages.is_empty() {
        body.push(json!({"type": "TextBlock", "weight": "Bolder", "text": "Stages"}));
        body.push(json!({"type": "TextBlock", "wrap": true, "text": stages.join("\n\n")}));
    }
    if !alert.response.is_empty() {
        let r: Vec<String> = alert
            .response
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}. {s}", i + 1))
            .collect();
        body.push(json!({"type": "TextBlock", "weight": "Bolder", "text": "Respond"}));
        body.push(json!({"type": "TextBlock", "wrap": true, "text": r.join("\n\n")}));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            }
        }]
    })
}
