//! The data tables the compiler reads: logsources (which events a rule sees) and Sigma field
//! names (where a field is read from). Both are TOML under `correlate/mappings/`, embedded at
//! compile time and parsed once per rule set.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chainwatch_model::{Activity, Canonical, Event, EventClass, SourceFormat};
use serde::Deserialize;

use crate::prefilter::RouteKey;

const LOGSOURCES: &str = include_str!("../../mappings/logsources.toml");
const FIELDS: &str = include_str!("../../mappings/sigma-fields.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsourceFile {
    products: BTreeMap<String, Vec<SourceFormat>>,
    category: Vec<CategorySpec>,
    service: Vec<ServiceSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CategorySpec {
    name: String,
    #[serde(default)]
    classes: Vec<String>,
    #[serde(default)]
    events: Vec<EventSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSpec {
    channel: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSpec {
    name: String,
    channels: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldsFile {
    fields: BTreeMap<String, String>,
}

/// What a category selects.
#[derive(Debug, Clone, Default)]
pub(crate) struct CategorySelector {
    classes: Vec<(EventClass, Option<Activity>)>,
    events: Vec<(String, Vec<u32>)>,
}

/// Which events a compiled rule sees.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogsourceFilter {
    formats: Option<Vec<SourceFormat>>,
    category: Option<CategorySelector>,
    channels: Option<Vec<String>>,
}

impl LogsourceFilter {
    pub(crate) fn matches(&self, event: &Event) -> bool {
        if let Some(formats) = &self.formats
            && !formats.contains(&event.source.format)
        {
            return false;
        }
        let channel = event.source.channel.as_deref();
        if let Some(channels) = &self.channels {
            match channel {
                Some(c) if channels.iter().any(|x| x.eq_ignore_ascii_case(c)) => {}
                _ => return false,
            }
        }
        if let Some(cat) = &self.category {
            let by_event = match (channel, event.source.event_id) {
                (Some(c), Some(id)) if !is_generic_channel(event) => Some(
                    cat.events
                        .iter()
                        .any(|(ch, ids)| ch.eq_ignore_ascii_case(c) && ids.contains(&id)),
                ),
                _ => None,
            };
            let hit = by_event.unwrap_or_else(|| {
                cat.classes.iter().any(|(class, act)| {
                    *class == event.class && act.is_none_or(|a| a == event.activity)
                })
            });
            if !hit {
                return false;
            }
        }
        true
    }

    /// What the prefilter may route this filter on (see [`RouteKey`]), given the event ids
    /// the rule's detection pins (`eids`); `None` when any event may match.
    pub(crate) fn route_keys(&self, eids: Option<&BTreeSet<u32>>) -> Option<Vec<RouteKey>> {
        let in_service = |ch: &str| {
            self.channels
                .as_ref()
                .is_none_or(|cs| cs.iter().any(|c| c.eq_ignore_ascii_case(ch)))
        };
        let mut keys = Vec::new();
        if let Some(cat) = &self.category {
            for (ch, ids) in &cat.events {
                if !in_service(ch) {
                    continue;
                }
                for id in ids {
                    if eids.is_none_or(|e| e.contains(id)) {
                        keys.push(RouteKey::ChannelId(ch.to_ascii_lowercase().into(), *id));
                    }
                }
            }
            for (class, _) in &cat.classes {
                keys.push(RouteKey::Class(*class));
            }
            return Some(keys);
        }
        if let Some(channels) = &self.channels {
            for ch in channels {
                let ch: Box<str> = ch.to_ascii_lowercase().into();
                match eids {
                    Some(ids) => {
                        keys.extend(ids.iter().map(|id| RouteKey::ChannelId(ch.clone(), *id)))
                    }
                    None => {
                        keys.push(RouteKey::Channel(ch));
                    }
                }
            }
            return Some(keys);
        }
        eids.map(|ids| ids.iter().map(|id| RouteKey::Id(*id)).collect())
    }
}

/// Events of Windows formats always carry channel and id; the class path is for other formats.
fn is_generic_channel(event: &Event) -> bool {
    !is_windows_format(event)
}

/// Whether the event's format carries Windows channels and event ids.
pub(crate) fn is_windows_format(event: &Event) -> bool {
    event.source.format.is_windows_event_log()
}

/// The parsed tables.
#[derive(Debug, Clone)]
pub struct Tables {
    products: HashMap<String, Vec<SourceFormat>>,
    categories: HashMap<String, CategorySelector>,
    services: HashMap<String, Vec<String>>,
    fields: HashMap<String, Canonical>,
}

fn parse_class(text: &str) -> Result<(EventClass, Option<Activity>), String> {
    let (class, activity) = match text.split_once('/') {
        Some((c, a)) => (c, Some(a)),
        None => (text, None),
    };
    let de = |s: &str| toml::Value::String(s.to_owned());
    let class: EventClass = de(class)
        .try_into()
        .map_err(|_| format!("unknown class {class:?}"))?;
    let activity = match activity {
        Some(a) => Some(
            de(a)
                .try_into()
                .map_err(|_| format!("unknown activity {a:?}"))?,
        ),
        None => None,
    };
    Ok((class, activity))
}

impl Tables {
    /// The built-in tables.
    pub fn builtin() -> Result<Self, String> {
        Self::parse(LOGSOURCES, FIELDS)
    }

    /// Parses tables from text.
    pub fn parse(logsources: &str, fields: &str) -> Result<Self, String> {
        let ls: LogsourceFile =
            toml::from_str(logsources).map_err(|e| format!("logsources: {e}"))?;
        let f: FieldsFile = toml::from_str(fields).map_err(|e| format!("sigma fields: {e}"))?;
        let mut categories = HashMap::new();
        for c in ls.category {
            let classes = c
                .classes
                .iter()
                .map(|s| parse_class(s))
                .collect::<Result<_, _>>()?;
            let events = c.events.into_iter().map(|e| (e.channel, e.ids)).collect();
            categories.insert(c.name, CategorySelector { classes, events });
        }
        let mut field_map = HashMap::new();
        for (sigma, canonical) in f.fields {
            let c = Canonical::from_name(&canonical).ok_or_else(|| {
                format!("sigma fields: unknown canonical field {canonical:?} for {sigma}")
            })?;
            field_map.insert(sigma, c);
        }
        Ok(Self {
            products: ls.products.into_iter().collect(),
            categories,
            services: ls
                .service
                .into_iter()
                .map(|s| (s.name, s.channels))
                .collect(),
            fields: field_map,
        })
    }

    /// The filter for a rule's logsource, or why it cannot be supported.
    pub(crate) fn logsource(
        &self,
        ls: &chainwatch_config::sigma::LogSource,
    ) -> Result<LogsourceFilter, String> {
        let formats = match &ls.product {
            Some(p) => Some(
                self.products
                    .get(p.as_str())
                    .cloned()
                    .ok_or_else(|| format!("unsupported logsource product {p:?}"))?,
            ),
            None => None,
        };
        let category = match &ls.category {
            Some(c) => Some(
                self.categories
                    .get(c.as_str())
                    .cloned()
                    .ok_or_else(|| format!("unsupported logsource category {c:?}"))?,
            ),
            None => None,
        };
        let channels = match &ls.service {
            Some(s) => Some(
                self.services
                    .get(s.as_str())
                    .cloned()
                    .ok_or_else(|| format!("unsupported logsource service {s:?}"))?,
            ),
            None => None,
        };
        if formats.is_none() && category.is_none() && channels.is_none() {
            return Err("the logsource names no product, category or service".into());
        }
        Ok(LogsourceFilter {
            formats,
            category,
            channels,
        })
    }

    /// The canonical field a Sigma field name falls back to.
    pub(crate) fn canonical(&self, sigma_field: &str) -> Option<Canonical> {
        self.fields.get(sigma_field).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_tables_parse() {
        let t = Tables::builtin().unwrap();
        assert_eq!(t.canonical("Image"), Some(Canonical::ProcessImage));
        assert_eq!(t.canonical("Computer"), Some(Canonical::Host));
        assert!(t.categories.contains_key("process_creation"));
        assert!(t.services.contains_key("msexchange-management"));
    }
}
