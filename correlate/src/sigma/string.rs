//! Sigma strings: wildcards and escapes, and the transformation modifiers that turn one rule
//! value into the values actually matched (`expand`, `windash`, `utf16le`/`utf16be`/`utf16`/
//! `wide`, `base64`, `base64offset`).
//!
//! A value is read once into [`SigmaString`] pieces (`*`, `?` and literal text, `\` escaping
//! `*`, `?` and itself). Transformations work on pieces, so a wildcard never becomes literal text
//! by accident and literal `*` never becomes a wildcard.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A piece of a Sigma string after escape processing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Literal text.
    Text(String),
    /// `*`: any run of characters, even none.
    Star,
    /// `?`: exactly one character.
    One,
}

/// A rule value as pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SigmaString {
    pub(crate) pieces: Vec<Piece>,
    /// The text pieces hold bytes (each char is one byte, U+0000 to U+00FF), after a UTF-16
    /// encoding: `base64` then encodes those bytes, not their UTF-8 form.
    bytes: bool,
}

/// Compile-time error: what is unsupported or wrong, in words a rule author can act on.
pub(crate) type CompileError = String;

/// Most values one rule value may expand into (windash permutations, placeholder products).
const MAX_EXPANSION: usize = 4096;

impl SigmaString {
    /// Reads Sigma's wildcard syntax: `*`, `?`, and `\` escaping `*`, `?` and `\`. A backslash
    /// before anything else is a plain backslash (the specification's "single or double").
    pub(crate) fn parse(value: &str) -> Self {
        let mut out = Vec::new();
        let mut text = String::new();
        let mut chars = value.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.peek() {
                    Some(&next @ ('*' | '?' | '\\')) => {
                        text.push(next);
                        chars.next();
                    }
                    _ => text.push('\\'),
                },
                '*' | '?' => {
                    if !text.is_empty() {
                        out.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    out.push(if c == '*' { Piece::Star } else { Piece::One });
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            out.push(Piece::Text(text));
        }
        Self {
            pieces: out,
            bytes: false,
        }
    }

    /// A string of literal text only.
    pub(crate) fn literal(text: &str) -> Self {
        Self {
            pieces: if text.is_empty() {
                Vec::new()
            } else {
                vec![Piece::Text(text.to_owned())]
            },
            bytes: false,
        }
    }

    /// Whether it holds `*` or `?`.
    pub(crate) fn has_wildcards(&self) -> bool {
        self.pieces.iter().any(|p| !matches!(p, Piece::Text(_)))
    }

    /// Adds `*` at the start unless it is there (`contains`, `endswith`).
    pub(crate) fn star_before(&mut self) {
        if self.pieces.first() != Some(&Piece::Star) {
            self.pieces.insert(0, Piece::Star);
        }
    }

    /// Adds `*` at the end unless it is there (`contains`, `startswith`).
    pub(crate) fn star_after(&mut self) {
        if self.pieces.last() != Some(&Piece::Star) {
            self.pieces.push(Piece::Star);
        }
    }

    /// The literal text, when there are no wildcards.
    fn plain_bytes(&self, modifier: &str) -> Result<Vec<u8>, CompileError> {
        if self.has_wildcards() {
            return Err(format!(
                "'{modifier}' cannot encode a value with wildcards (* or ?): the encoded form \
                 of a wildcard is unknown"
            ));
        }
        let mut out = Vec::new();
        for p in &self.pieces {
            if let Piece::Text(t) = p {
                if self.bytes {
                    // Every char is below U+0100 by construction.
                    out.extend(t.chars().map(|c| u8::try_from(u32::from(c)).unwrap_or(0)));
                } else {
                    out.extend_from_slice(t.as_bytes());
                }
            }
        }
        Ok(out)
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `windash`: every dash or slash that starts a command-line flag (preceded by no word
/// character, followed by one) may be written `-`, `/`, en dash, em dash or horizontal bar; all
/// permutations are produced.
pub(crate) fn windash(s: &SigmaString) -> Result<Vec<SigmaString>, CompileError> {
    const DASHES: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];
    // (piece index, char index) of every flag dash.
    let mut positions = Vec::new();
    for (pi, p) in s.pieces.iter().enumerate() {
        if let Piece::Text(t) = p {
            let chars: Vec<char> = t.chars().collect();
            for (ci, &c) in chars.iter().enumerate() {
                let before_ok = ci == 0 || !is_word(chars[ci - 1]);
                let after_ok = chars.get(ci + 1).is_some_and(|&n| is_word(n));
                if matches!(c, '-' | '/') && before_ok && after_ok {
                    positions.push((pi, ci));
                }
            }
        }
    }
    let count = DASHES
        .len()
        .checked_pow(u32::try_from(positions.len()).unwrap_or(u32::MAX))
        .filter(|n| *n <= MAX_EXPANSION)
        .ok_or_else(|| {
            format!(
                "'windash' on a value with {} flags makes too many permutations",
                positions.len()
            )
        })?;
    let mut out = Vec::with_capacity(count);
    for n in 0..count {
        let mut pieces = s.pieces.clone();
        let mut rest = n;
        for &(pi, ci) in &positions {
            let dash = DASHES[rest % DASHES.len()];
            rest /= DASHES.len();
            if let Piece::Text(t) = &mut pieces[pi] {
                *t = t
                    .chars()
                    .enumerate()
                    .map(|(i, c)| if i == ci { dash } else { c })
                    .collect();
            }
        }
        out.push(SigmaString {
            pieces,
            bytes: s.bytes,
        });
    }
    Ok(out)
}

/// The UTF-16 encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Utf16 {
    /// `utf16le` / `wide`.
    Le,
    /// `utf16be`.
    Be,
    /// `utf16`: a byte-order mark (FF FE), then little-endian.
    WithBom,
}

/// Encodes the text pieces as UTF-16 bytes; wildcards stay wildcards.
pub(crate) fn utf16(s: &SigmaString, enc: Utf16) -> Result<SigmaString, CompileError> {
    if s.bytes {
        return Err("a value cannot be UTF-16 encoded twice".into());
    }
    let mut pieces: Vec<Piece> = s
        .pieces
        .iter()
        .map(|p| match p {
            Piece::Text(t) => {
                let mut out = String::with_capacity(t.len() * 2);
                for unit in t.encode_utf16() {
                    let [lo, hi] = unit.to_le_bytes();
                    let (a, b) = if enc == Utf16::Be { (hi, lo) } else { (lo, hi) };
                    out.push(char::from(a));
                    out.push(char::from(b));
                }
                Piece::Text(out)
            }
            other => other.clone(),
        })
        .collect();
    if enc == Utf16::WithBom {
        match pieces.first_mut() {
            Some(Piece::Text(t)) => t.insert_str(0, "\u{ff}\u{fe}"),
            _ => pieces.insert(0, Piece::Text("\u{ff}\u{fe}".into())),
        }
    }
    Ok(SigmaString {
        pieces,
        bytes: true,
    })
}

/// `base64`: the value's bytes (UTF-8, or the UTF-16 bytes after a UTF-16 modifier), encoded.
pub(crate) fn base64(s: &SigmaString) -> Result<SigmaString, CompileError> {
    let bytes = s.plain_bytes("base64")?;
    Ok(SigmaString::literal(&STANDARD.encode(bytes)))
}

/// `base64offset`: the value as it appears inside a longer base64 text, at each of the three
/// byte offsets it can start at. The characters that also encode neighbouring bytes are left
/// out, so each variant is the part that is the same whatever surrounds the value.
pub(crate) fn base64offset(s: &SigmaString) -> Result<Vec<SigmaString>, CompileError> {
    let bytes = s.plain_bytes("base64offset")?;
    let mut out = Vec::new();
    for shift in 0..3usize {
        let mut shifted = vec![0u8; shift];
        shifted.extend_from_slice(&bytes);
        let encoded = STANDARD.encode(&shifted);
        // Leading characters that encode only (or partly) the filler bytes.
        let start = [0, 2, 3][shift];
        // Trailing characters that encode padding bits, and the `=` padding itself.
        let cut = [0, 3, 2][shifted.len() % 3];
        let end = encoded.len().saturating_sub(cut);
        if start < end {
            let variant = SigmaString::literal(&encoded[start..end]);
            if !out.contains(&variant) {
                out.push(variant);
            }
        }
    }
    if out.is_empty() {
        return Err("the value is too short for 'base64offset'".into());
    }
    Ok(out)
}

/// `expand`: each `%name%` placeholder replaced by each of its configured values (all
/// combinations when there are several); `\%` is a literal percent sign. A placeholder without
/// configured values is an error: the specification says a tool that cannot resolve a
/// placeholder must refuse the rule.
pub(crate) fn expand(
    raw: &str,
    placeholders: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<String>, CompileError> {
    enum Part<'a> {
        Text(String),
        Placeholder(&'a str),
    }
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = raw;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("\\%") {
            text.push('%');
            rest = after;
        } else if c == '%'
            && let Some(end) = rest[1..].find('%')
            && end > 0
            && rest[1..=end]
                .chars()
                .all(|ch| ch.is_alphanumeric() || matches!(ch, '_' | '-' | '.'))
        {
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Placeholder(&rest[1..=end]));
            rest = &rest[end + 2..];
        } else {
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    let mut out = vec![String::new()];
    for part in &parts {
        match part {
            Part::Text(t) => out.iter_mut().for_each(|o| o.push_str(t)),
            Part::Placeholder(name) => {
                let values = placeholders.get(*name).ok_or_else(|| {
                    format!(
                        "the placeholder %{name}% has no configured values (set them in \
                         [correlate] placeholders, or with --placeholders)"
                    )
                })?;
                if values.is_empty() {
                    return Err(format!(
                        "the placeholder %{name}% is configured with no values"
                    ));
                }
                if out.len() * values.len() > MAX_EXPANSION {
                    return Err(format!(
                        "expanding %{name}% makes more than {MAX_EXPANSION} values"
                    ));
                }
                out = out
                    .iter()
                    .flat_map(|o| values.iter().map(move |v| format!("{o}{v}")))
                    .collect();
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &SigmaString) -> String {
        s.pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.clone(),
                Piece::Star => "*".into(),
                Piece::One => "?".into(),
            })
            .collect()
    }

    #[test]
    fn escapes_follow_the_specification() {
        // A plain backslash: single or double.
        assert_eq!(
            SigmaString::parse(r"C:\Windows").pieces,
            [Piece::Text(r"C:\Windows".into())]
        );
        assert_eq!(
            SigmaString::parse(r"C:\\Windows").pieces,
            [Piece::Text(r"C:\Windows".into())]
        );
        // An escaped wildcard is literal.
        assert_eq!(
            SigmaString::parse(r"a\*").pieces,
            [Piece::Text("a*".into())]
        );
        assert_eq!(
            SigmaString::parse(r"a\?").pieces,
            [Piece::Text("a?".into())]
        );
        // A backslash followed by a wildcard: `\\*`.
        assert_eq!(
            SigmaString::parse(r"a\\*").pieces,
            [Piece::Text(r"a\".into()), Piece::Star]
        );
        // Three backslashes: a backslash and a literal wildcard.
        assert_eq!(
            SigmaString::parse(r"a\\\*").pieces,
            [Piece::Text(r"a\*".into())]
        );
        // Four backslashes: two.
        assert_eq!(
            SigmaString::parse(r"\\\\").pieces,
            [Piece::Text(r"\\".into())]
        );
        assert_eq!(
            SigmaString::parse("prog?.exe").pieces,
            [
                Piece::Text("prog".into()),
                Piece::One,
                Piece::Text(".exe".into())
            ]
        );
    }

    #[test]
    fn windash_permutes_flag_dashes_only() {
        let out = windash(&SigmaString::parse(" -enc ")).unwrap();
        let texts: Vec<String> = out.iter().map(text).collect();
        assert_eq!(
            texts,
            [
                " -enc ",
                " /enc ",
                " \u{2013}enc ",
                " \u{2014}enc ",
                " \u{2015}enc "
            ]
        );
        // A dash inside a word is not a flag dash.
        let out = windash(&SigmaString::parse("-param-name")).unwrap();
        let texts: Vec<String> = out.iter().map(text).collect();
        assert_eq!(texts.len(), 5);
        assert!(texts.contains(&"/param-name".to_owned()));
        // Two flags: every combination.
        let out = windash(&SigmaString::parse("-a -b")).unwrap();
        assert_eq!(out.len(), 25);
        assert!(out.iter().map(text).any(|t| t == "/a \u{2014}b"));
    }

    #[test]
    fn utf16_encodings() {
        let le = utf16(&SigmaString::parse("cmd"), Utf16::Le).unwrap();
        assert_eq!(text(&le), "c\0m\0d\0");
        let be = utf16(&SigmaString::parse("cmd"), Utf16::Be).unwrap();
        assert_eq!(text(&be), "\0c\0m\0d");
        let bom = utf16(&SigmaString::parse("cmd"), Utf16::WithBom).unwrap();
        assert_eq!(text(&bom), "\u{ff}\u{fe}c\0m\0d\0");
        // Wildcards stay wildcards.
        let wild = utf16(&SigmaString::parse("a*"), Utf16::Le).unwrap();
        assert_eq!(wild.pieces, [Piece::Text("a\0".into()), Piece::Star]);
    }

    #[test]
    fn base64_of_text_and_of_utf16() {
        assert_eq!(
            text(&base64(&SigmaString::parse("/bin/bash")).unwrap()),
            "L2Jpbi9iYXNo"
        );
        let wide = utf16(&SigmaString::parse("cmd"), Utf16::Le).unwrap();
        assert_eq!(text(&base64(&wide).unwrap()), "YwBtAGQA");
        assert!(base64(&SigmaString::parse("a*")).is_err());
    }

    #[test]
    fn base64offset_gives_the_three_stable_middles() {
        let out: Vec<String> = base64offset(&SigmaString::parse("/bin/bash"))
            .unwrap()
            .iter()
            .map(text)
            .collect();
        assert_eq!(out, ["L2Jpbi9iYXNo", "9iaW4vYmFza", "vYmluL2Jhc2"]);
        // Each variant really occurs when the value sits at that offset in encoded text.
        for prefix in ["", "x", "xy"] {
            let whole = STANDARD.encode(format!("{prefix}/bin/bash and more"));
            assert!(out.iter().any(|v| whole.contains(v.as_str())), "{prefix:?}");
        }
    }

    #[test]
    fn expand_replaces_configured_placeholders() {
        let mut ph = BTreeMap::new();
        ph.insert(
            "Admins".to_owned(),
            vec!["root".to_owned(), "adm*".to_owned()],
        );
        assert_eq!(expand("%Admins%", &ph).unwrap(), ["root", "adm*"]);
        assert_eq!(
            expand(r"\%plain%Admins%", &ph).unwrap(),
            ["%plainroot", "%plainadm*"]
        );
        assert_eq!(expand("no placeholder", &ph).unwrap(), ["no placeholder"]);
        let err = expand("%Servers%", &ph).unwrap_err();
        assert!(err.contains("%Servers%"), "{err}");
    }
}
