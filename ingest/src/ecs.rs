//! Elastic Common Schema records: Winlogbeat and Elastic Agent.
//!
//! A Winlogbeat record is a Windows event wrapped in ECS: its event data is under
//! `winlog.event_data`, its channel, id, provider and computer under `winlog.*`. Those are
//! renamed to the names the Windows table and Sigma rules use (`winlog.event_data.CommandLine`
//! becomes `CommandLine`, `winlog.channel` becomes `Channel`, ...); every other ECS field keeps its
//! dotted ECS name (`process.executable`, `host.name`, `event.code`).
//!
//! Time is `@timestamp` (Winlogbeat sets it to the event's own time; `event.created` is the
//! shipper's clock and is never read). The host is `winlog.computer_name` (the origin, also
//! when events were forwarded to a collector) before `host.name` (the machine the beat runs on,
//! which is the collector in WEF setups).

use chainwatch_model::Fields;

use crate::json::Leaf;
use crate::layout::{Layout, TimeField};

/// Where ECS records keep time and host (`Computer` is `winlog.computer_name` renamed).
pub const LAYOUT: Layout = Layout {
    time: &[TimeField::Text("@timestamp")],
    time_names: "@timestamp",
    host: &["Computer", "host.name", "host.hostname"],
    host_names: "winlog.computer_name, host.name, host.hostname",
};

/// `winlog.*` fields renamed to Windows names; other `winlog.*` fields keep their names.
pub const RENAMES: [(&str, &str); 14] = [
    ("winlog.channel", "Channel"),
    ("winlog.event_id", "EventID"),
    ("winlog.provider_name", "Provider_Name"),
    ("winlog.provider_guid", "Provider_Guid"),
    ("winlog.computer_name", "Computer"),
    ("winlog.record_id", "EventRecordID"),
    ("winlog.task", "Task"),
    ("winlog.opcode", "Opcode"),
    ("winlog.keywords", "Keywords"),
    ("winlog.version", "Version"),
    ("winlog.process.pid", "Execution_ProcessID"),
    ("winlog.process.thread.id", "Execution_ThreadID"),
    ("winlog.user.identifier", "Security_UserID"),
    ("winlog.activity_id", "Correlation_ActivityID"),
];

fn renamed(path: &str) -> Option<&'static str> {
    RENAMES
        .iter()
        .find(|(from, _)| *from == path)
        .map(|(_, to)| *to)
}

/// Turns flattened ECS leaves into fields.
pub fn to_fields(leaves: Vec<Leaf>) -> Fields {
    let mut fields = Fields::with_capacity(leaves.len());
    for (path, value) in leaves {
        if let Some(name) = path
            .strip_prefix("winlog.event_data.")
            .or_else(|| path.strip_prefix("winlog.user_data."))
        {
            // UserData members may sit under an element (`LogFileCleared.SubjectUserName`).
            let name = name.rsplit('.').next().unwrap_or(name);
            fields.push(name, value);
        } else if let Some(name) = renamed(&path) {
            fields.push(name, value);
        } else {
            fields.push(path, value);
        }
    }
    fields
}

/// True when the leaves carry a Windows event (a channel or an event id under `winlog`).
pub fn is_windows_event(fields: &Fields) -> bool {
    fields.get("Channel").is_some() && fields.get("EventID").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::flatten;

    #[test]
    fn winlog_fields_get_windows_names() {
        let leaves = flatten(
            r#"{"@timestamp":"2021-03-14T01:40:15.338Z","winlog":{"channel":"Security","event_id":"4688","computer_name":"MXS01.azsentinel.local","event_data":{"NewProcessName":"C:\\cmd.exe"},"api":"wineventlog"},"host":{"name":"wec01"},"process":{"executable":"C:\\cmd.exe"}}"#,
            16,
        )
        .unwrap();
        let f = to_fields(leaves);
        assert_eq!(f.get_str("Channel"), Some("Security"));
        assert_eq!(f.get_str("EventID"), Some("4688"));
        assert_eq!(f.get_str("NewProcessName"), Some("C:\\cmd.exe"));
        assert_eq!(f.get_str("winlog.api"), Some("wineventlog"));
        assert_eq!(f.get_str("process.executable"), Some("C:\\cmd.exe"));
        assert!(is_windows_event(&f));
        assert_eq!(LAYOUT.host(&f).unwrap().key(), "mxs01");
    }
}
