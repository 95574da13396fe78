//! The one field vocabulary of normalized events.
//!
//! Ingest fills these from each source's own fields through mapping tables; rules read them when
//! a source lacks the field a rule names (Sigma's `Image` is `NewProcessName` in Security 4688,
//! `process.executable` in ECS). The names are stable: they appear in mapping files and docs.

use std::borrow::Cow;

use crate::{Event, ProcessInfo};

/// A normalized field of [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Canonical {
    /// `host`: the origin host name.
    Host,
    /// `user`: the acting user.
    User,
    /// `process.image`
    ProcessImage,
    /// `process.command_line`
    ProcessCommandLine,
    /// `process.pid`
    ProcessPid,
    /// `process.guid`
    ProcessGuid,
    /// `parent.image`
    ParentImage,
    /// `parent.command_line`
    ParentCommandLine,
    /// `parent.pid`
    ParentPid,
    /// `target.file`
    TargetFile,
    /// `target.process.image`
    TargetProcessImage,
    /// `target.process.pid`
    TargetProcessPid,
    /// `target.account`
    TargetAccount,
    /// `target.group`
    TargetGroup,
    /// `target.service`
    TargetService,
    /// `target.url`
    TargetUrl,
    /// `target.registry`
    TargetRegistry,
    /// `target.api`
    TargetApi,
}

impl Canonical {
    /// Every canonical field.
    pub const ALL: [Canonical; 18] = [
        Canonical::Host,
        Canonical::User,
        Canonical::ProcessImage,
        Canonical::ProcessCommandLine,
        Canonical::ProcessPid,
        Canonical::ProcessGuid,
        Canonical::ParentImage,
        Canonical::ParentCommandLine,
        Canonical::ParentPid,
        Canonical::TargetFile,
        Canonical::TargetProcessImage,
        Canonical::TargetProcessPid,
        Canonical::TargetAccount,
        Canonical::TargetGroup,
        Canonical::TargetService,
        Canonical::TargetUrl,
        Canonical::TargetRegistry,
        Canonical::TargetApi,
    ];

    /// The dotted name used in mapping files.
    pub fn name(self) -> &'static str {
        match self {
            Canonical::Host => "host",
            Canonical::User => "user",
            Canonical::ProcessImage => "process.image",
            Canonical::ProcessCommandLine => "process.command_line",
            Canonical::ProcessPid => "process.pid",
            Canonical::ProcessGuid => "process.guid",
            Canonical::ParentImage => "parent.image",
            Canonical::ParentCommandLine => "parent.command_line",
            Canonical::ParentPid => "parent.pid",
            Canonical::TargetFile => "target.file",
            Canonical::TargetProcessImage => "target.process.image",
            Canonical::TargetProcessPid => "target.process.pid",
            Canonical::TargetAccount => "target.account",
            Canonical::TargetGroup => "target.group",
            Canonical::TargetService => "target.service",
            Canonical::TargetUrl => "target.url",
            Canonical::TargetRegistry => "target.registry",
            Canonical::TargetApi => "target.api",
        }
    }

    /// Reads a dotted name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

fn s(v: Option<&String>) -> Option<Cow<'_, str>> {
    v.map(|v| Cow::Borrowed(v.as_str()))
}

fn pid_text(p: Option<&ProcessInfo>) -> Option<Cow<'_, str>> {
    p?.pid.map(|pid| Cow::Owned(pid.to_string()))
}

impl Event {
    /// The value of a canonical field, as text.
    pub fn canonical(&self, field: Canonical) -> Option<Cow<'_, str>> {
        let p = self.process.as_ref();
        let pp = self.parent.as_ref();
        let tp = self.target.process.as_ref();
        match field {
            Canonical::Host => (!self.host.is_empty()).then(|| Cow::Borrowed(self.host.display())),
            Canonical::User => s(self.user.as_ref()),
            Canonical::ProcessImage => s(p.and_then(|p| p.image.as_ref())),
            Canonical::ProcessCommandLine => s(p.and_then(|p| p.command_line.as_ref())),
            Canonical::ProcessPid => pid_text(p),
            Canonical::ProcessGuid => s(p.and_then(|p| p.guid.as_ref())),
            Canonical::ParentImage => s(pp.and_then(|p| p.image.as_ref())),
            Canonical::ParentCommandLine => s(pp.and_then(|p| p.command_line.as_ref())),
            Canonical::ParentPid => pid_text(pp),
            Canonical::TargetFile => s(self.target.file.as_ref()),
            Canonical::TargetProcessImage => s(tp.and_then(|p| p.image.as_ref())),
            Canonical::TargetProcessPid => pid_text(tp),
            Canonical::TargetAccount => s(self.target.account.as_ref()),
            Canonical::TargetGroup => s(self.target.group.as_ref()),
            Canonical::TargetService => s(self.target.service.as_ref()),
            Canonical::TargetUrl => s(self.target.url.as_ref()),
            Canonical::TargetRegistry => s(self.target.registry.as_ref()),
            Canonical::TargetApi => s(self.target.api.as_ref()),
        }
    }

    /// Sets a canonical field from text. A pid that is not a number (decimal or `0x` hex) is
    /// left unset. Setting `host` is ignored: the host is decided before normalization.
    pub fn set_canonical(&mut self, field: Canonical, value: String) {
        let pid = || parse_pid(&value);
        match field {
            Canonical::Host => {}
            Canonical::User => self.user = Some(value),
            Canonical::ProcessImage => process(&mut self.process).image = Some(value),
            Canonical::ProcessCommandLine => process(&mut self.process).command_line = Some(value),
            Canonical::ProcessPid => process(&mut self.process).pid = pid(),
            Canonical::ProcessGuid => process(&mut self.process).guid = Some(value),
            Canonical::ParentImage => process(&mut self.parent).image = Some(value),
            Canonical::ParentCommandLine => process(&mut self.parent).command_line = Some(value),
            Canonical::ParentPid => process(&mut self.parent).pid = pid(),
            Canonical::TargetFile => self.target.file = Some(value),
            Canonical::TargetProcessImage => process(&mut self.target.process).image = Some(value),
            Canonical::TargetProcessPid => process(&mut self.target.process).pid = pid(),
            Canonical::TargetAccount => self.target.account = Some(value),
            Canonical::TargetGroup => self.target.group = Some(value),
            Canonical::TargetService => self.target.service = Some(value),
            Canonical::TargetUrl => self.target.url = Some(value),
            Canonical::TargetRegistry => self.target.registry = Some(value),
            Canonical::TargetApi => self.target.api = Some(value),
        }
    }
}

fn process(slot: &mut Option<ProcessInfo>) -> &mut ProcessInfo {
    slot.get_or_insert_with(ProcessInfo::default)
}

/// Reads a process id written in decimal or `0x` hex (Security events write hex).
pub fn parse_pid(text: &str) -> Option<u64> {
    let t = text.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Canonical::ALL {
            assert_eq!(Canonical::from_name(c.name()), Some(c));
        }
        assert_eq!(parse_pid("0x12d8"), Some(0x12d8));
        assert_eq!(parse_pid("4242"), Some(4242));
        assert_eq!(parse_pid("-"), None);
    }
}
