//! Playbooks: what chainwatch adds to a Sigma correlation rule.
//!
//! A playbook file is a multi-document Sigma YAML file: the detection rules of its stages and
//! one correlation rule that chains them. The correlation rule carries a `playbook` custom
//! attribute (Sigma allows custom attributes, so other Sigma tools still load the file) with
//! what Sigma cannot say: the priority of the finding and the steps an analyst takes.

use chainwatch_model::Severity;

use crate::yaml::{self, Node};

/// The `playbook` attribute of a correlation rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlaybookSpec {
    /// Priority of the finding; defaults to the rule's `level`.
    pub priority: Option<Severity>,
    /// What the analyst checks first.
    pub investigation: Vec<String>,
    /// What to do: containment and recovery steps, in order.
    pub response: Vec<String>,
}

/// A problem: its (line, column) and message.
pub type PlaybookError = ((usize, usize), String);

const KEYS: [&str; 3] = ["priority", "investigation", "response"];

/// Reads a `playbook` attribute. Unknown keys are errors: a typo must not silently drop a
/// response step.
pub fn parse_playbook(node: &Node) -> Result<PlaybookSpec, Vec<PlaybookError>> {
    let at = |n: &Node| (yaml::line(n), yaml::column(n));
    let Some(entries) = yaml::entries(node) else {
        return Err(vec![(at(node), "must be a mapping".into())]);
    };
    let mut spec = PlaybookSpec::default();
    let mut errors = Vec::new();
    for (k, v) in entries {
        let key = yaml::as_str(k).unwrap_or_default();
        match key {
            "priority" => match yaml::as_str(v).map(str::parse::<Severity>) {
                Some(Ok(p)) => spec.priority = Some(p),
                Some(Err(e)) => errors.push((at(v), e.to_string())),
                None => errors.push((at(v), "'priority' must be a level such as high".into())),
            },
            "investigation" | "response" => {
                let steps = match yaml::items(v) {
                    Some(items) if items.iter().all(|i| yaml::as_text(i).is_some()) => {
                        items.iter().filter_map(yaml::as_text).collect()
                    }
                    _ => {
                        errors.push((at(v), format!("'{key}' must be a list of steps (strings)")));
                        continue;
                    }
                };
                if key == "response" {
                    spec.response = steps;
                } else {
                    spec.investigation = steps;
                }
            }
            other => errors.push((
                at(k),
                format!(
                    "unknown key '{other}' (expected one of: {})",
                    KEYS.join(", ")
                ),
            )),
        }
    }
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(errors)
    }
}
