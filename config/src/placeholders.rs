//! Placeholder values from a file (`--placeholders FILE`): the same shape as the service
//! config's `[correlate.placeholders]`, a TOML table of placeholder names to lists of values.
//!
//! ```toml
//! Administrators = ["admin*", "root"]
//! DomainControllers = ["dc01*", "dc02*"]
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use crate::diagnostic::{Diagnostic, Diagnostics, line_col};

/// Placeholder names to their values.
pub type Placeholders = BTreeMap<String, Vec<String>>;

/// Reads placeholder values from `text` (the contents of `file`); every problem with its line.
pub fn parse_placeholders(file: &Path, text: &str) -> Result<Placeholders, Diagnostics> {
    let mut diags = Diagnostics::default();
    match toml::from_str::<Placeholders>(text) {
        Ok(map) => {
            for (name, values) in &map {
                if values.is_empty() {
                    diags.push(Diagnostic::new(
                        file,
                        0,
                        0,
                        format!("placeholder {name:?} lists no values"),
                    ));
                }
            }
            if diags.is_empty() {
                Ok(map)
            } else {
                Err(diags)
            }
        }
        Err(e) => {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            diags.push(Diagnostic::new(
                file,
                line,
                column,
                format!(
                    "placeholders must be names with lists of values, such as \
                     Administrators = [\"admin*\"]: {}",
                    e.message().trim()
                ),
            ));
            Err(diags)
        }
    }
}

/// Reads a placeholder file.
pub fn load_placeholders(file: &Path) -> Result<Placeholders, Diagnostics> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        let mut d = Diagnostics::default();
        d.push(Diagnostic::new(
            file,
            0,
            0,
            format!("cannot read the file: {e}"),
        ));
        d
    })?;
    parse_placeholders(file, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_and_values() {
        let p = parse_placeholders(
            Path::new("p.toml"),
            "Administrators = [\"admin*\", \"root\"]\nServers = [\"srv*\"]\n",
        )
        .unwrap();
        assert_eq!(p["Administrators"], ["admin*", "root"]);
        assert_eq!(p["Servers"], ["srv*"]);
    }

    #[test]
    fn problems_carry_their_line() {
        let d = parse_placeholders(Path::new("p.toml"), "A = [\"x\"]\nB = 3\n").unwrap_err();
        assert_eq!(d.0[0].line, 2, "{d}");
        let d = parse_placeholders(Path::new("p.toml"), "A = []\n").unwrap_err();
        assert!(d.0[0].message.contains("no values"), "{d}");
    }
}
