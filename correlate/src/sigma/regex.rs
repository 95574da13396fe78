//! Sigma regular expressions (`|re`) compiled with the `regex` crate.
//!
//! The specification's flavour is PCRE. Two differences matter in practice and are bridged
//! here by rewriting the pattern before compiling it:
//!
//! - PCRE's `\w`, `\d`, `\s` and `\b` are ASCII-only by default; the `regex` crate's are
//!   Unicode-aware. Beyond giving other answers on non-ASCII text, a Unicode `\w{1,64}` compiles
//!   to a program of several megabytes (SigmaHQ's svchost rule failed with "Compiled regex
//!   exceeds size limit"); the ASCII classes are small.
//! - Features the `regex` crate does not have (look-around, back-references, atomic groups,
//!   possessive quantifiers) are refused with a message that names them, which the
//!   specification allows: it lists them as unsupported.

use regex::{Regex, RegexBuilder};

use super::string::CompileError;

const WORD: &str = "0-9A-Za-z_";
const DIGIT: &str = "0-9";
const SPACE: &str = r"\t\n\x0B\x0C\r ";

/// Rewrites PCRE shorthand classes to their ASCII meaning.
fn translate(pcre: &str) -> String {
    let mut out = String::with_capacity(pcre.len() + 16);
    let mut chars = pcre.chars().peekable();
    let mut in_class = false;
    // Position within the current class, to keep `[]...]` and `[^]...]` literal brackets.
    let mut class_len = 0usize;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(e) = chars.next() else {
                    out.push('\\');
                    break;
                };
                let class = |set: &str, negated: bool| {
                    if negated {
                        format!("[^{set}]")
                    } else if in_class {
                        set.to_owned()
                    } else {
                        format!("[{set}]")
                    }
                };
                match e {
                    'w' => out.push_str(&class(WORD, false)),
                    'W' => out.push_str(&class(WORD, true)),
                    'd' => out.push_str(&class(DIGIT, false)),
                    'D' => out.push_str(&class(DIGIT, true)),
                    's' => out.push_str(&class(SPACE, false)),
                    'S' => out.push_str(&class(SPACE, true)),
                    'b' if in_class => out.push_str(r"\x08"),
                    'b' => out.push_str(r"(?-u:\b)"),
                    'B' if !in_class => out.push_str(r"(?-u:\B)"),
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
                if in_class {
                    class_len += 1;
                }
            }
            '[' if !in_class => {
                in_class = true;
                class_len = 0;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
            }
            '[' if chars.peek() == Some(&':') => {
                // A POSIX class such as [:digit:], copied whole.
                out.push('[');
                for d in chars.by_ref() {
                    out.push(d);
                    if d == ']' {
                        break;
                    }
                }
                class_len += 1;
            }
            '[' => {
                // A literal bracket inside a class: the regex crate would read a nested class.
                out.push_str(r"\[");
                class_len += 1;
            }
            ']' if in_class && class_len > 0 => {
                in_class = false;
                out.push(']');
            }
            ']' if !in_class => out.push_str(r"\]"),
            other => {
                if in_class {
                    class_len += 1;
                }
                out.push(other);
            }
        }
    }
    out
}

/// Why the `regex` crate refused a pattern, in Sigma terms where it is a known PCRE feature.
fn explain(pattern: &str, error: &regex::Error) -> String {
    let features = [
        ("(?=", "look-ahead"),
        ("(?!", "negative look-ahead"),
        ("(?<=", "look-behind"),
        ("(?<!", "negative look-behind"),
        ("(?>", "atomic groups"),
        ("*+", "possessive quantifiers"),
        ("++", "possessive quantifiers"),
        ("?+", "possessive quantifiers"),
    ];
    for (needle, name) in features {
        if pattern.contains(needle) {
            return format!(
                "unsupported regular expression feature: {name} in {pattern:?} (the Sigma \
                 regex flavour does not include it)"
            );
        }
    }
    let backref = pattern
        .as_bytes()
        .windows(2)
        .any(|w| w[0] == b'\\' && (b'1'..=b'9').contains(&w[1]));
    if backref {
        return format!(
            "unsupported regular expression feature: back-references in {pattern:?} (the Sigma \
             regex flavour does not include them)"
        );
    }
    format!("invalid regular expression {pattern:?}: {error}")
}

/// The flags of a Sigma regex (`|re|i|m|s`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    pub(crate) ignore_case: bool,
    pub(crate) multi_line: bool,
    pub(crate) dot_all: bool,
}

/// Compiles a Sigma regex; it matches anywhere in the value (a search), as in PCRE.
pub(crate) fn compile(pattern: &str, flags: Flags) -> Result<Regex, CompileError> {
    let translated = translate(pattern);
    RegexBuilder::new(&translated)
        .case_insensitive(flags.ignore_case)
        .multi_line(flags.multi_line)
        .dot_matches_new_line(flags.dot_all)
        .size_limit(32 << 20)
        .build()
        .map_err(|e| explain(pattern, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(p: &str) -> Regex {
        compile(p, Flags::default()).unwrap()
    }

    #[test]
    fn shorthand_classes_are_ascii_as_in_pcre() {
        assert!(re(r"^\w+$").is_match("abc_123"));
        assert!(!re(r"^\w+$").is_match("été"), "PCRE's \\w is ASCII");
        assert!(re(r"^\W$").is_match("é"));
        assert!(re(r"^\d\D\s\S$").is_match("1a b"));
        assert!(re(r"^[\w.-]+$").is_match("a.b-c"));
        assert!(re(r"^[^\d]+$").is_match("abc"));
        assert!(!re(r"^[^\d]+$").is_match("a1"));
        assert!(re(r"\bcmd\b").is_match("x cmd y"));
        assert!(re(r"^[]a]+$").is_match("]a"));
        assert!(re(r"^[[:digit:]]+$").is_match("42"));
        assert!(re(r"^[a[]+$").is_match("[a"));
    }

    #[test]
    fn the_large_unicode_repetition_now_compiles() {
        // SigmaHQ f17211f1: exceeded the size limit with Unicode classes.
        let r = re(r"-k\s\w{1,64}(?:\s?(?:-p|-s))?");
        assert!(r.is_match("svchost.exe -k netsvcs -p"));
    }

    #[test]
    fn flags() {
        assert!(
            !re("minidump").is_match("MiniDump"),
            "case-sensitive by default"
        );
        let i = Flags {
            ignore_case: true,
            ..Flags::default()
        };
        assert!(compile("minidump", i).unwrap().is_match("MiniDump"));
        let m = Flags {
            multi_line: true,
            ..Flags::default()
        };
        assert!(compile("^b$", m).unwrap().is_match("a\nb\nc"));
        assert!(!re("^b$").is_match("a\nb\nc"));
        let s = Flags {
            dot_all: true,
            ..Flags::default()
        };
        assert!(compile("a.b", s).unwrap().is_match("a\nb"));
        assert!(!re("a.b").is_match("a\nb"));
    }

    #[test]
    fn unsupported_features_are_named() {
        let e = compile("a(?=b)", Flags::default()).unwrap_err();
        assert!(e.contains("look-ahead"), "{e}");
        let e = compile(r"(a)\1", Flags::default()).unwrap_err();
        assert!(e.contains("back-references"), "{e}");
        let e = compile("(", Flags::default()).unwrap_err();
        assert!(e.contains("invalid regular expression"), "{e}");
    }
}
