//! A validating scanner for ordinary JSON records: one pass over the bytes, no allocation, the
//! top-level fields as spans of the text.
//!
//! It reads the common shape of telemetry records (an object of strings, integers, booleans,
//! nulls and arrays of those) and refuses everything else: nested objects, arrays holding
//! containers, fractions and exponents, integers beyond 18 digits, `\u` and `\/` escapes, keys
//! with escapes, and anything that is not valid JSON. A refused record is not an error: it takes
//! the full decoder, which reports errors exactly as it always did. So what this scanner accepts
//! must be exactly what the full decoder accepts, and read the same way; it is checked against
//! `serde_json` in the tests below and by `chainwatch replay --verify` on real data.
//!
//! Strings are skipped sixteen bytes at a time: one block is classified at once (quotes,
//! backslashes, control characters, bytes beyond ASCII, as bit masks; `block`) and every
//! special byte of the block is handled from its mask, escapes included, without reading the
//! block again.

use chainwatch_model::{RawField, RawKind};

/// Classifying sixteen bytes at once.
///
/// On x86-64 this uses SSE2, which every x86-64 processor has (the compiler's baseline: no
/// run-time detection is needed), through `std::arch`. Calling an intrinsic is only `unsafe`
/// because the compiler does not count the build's baseline features as a caller's; that and an
/// unaligned load from a 16-byte array are the two `unsafe` operations of the project. No crate
/// offers a safe bit mask of a byte class: `memchr` finds up to three bytes, not a range, and
/// `std::simd` is not stable. Other targets use a plain loop.
mod block {
    /// The bytes of `chunk` that may end a plain run of string content (a quote, a backslash or
    /// a control character), and those beyond ASCII: bit `k` stands for byte `k`.
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[inline(always)]
    #[allow(unsafe_code)]
    pub(super) fn masks(chunk: &[u8; 16]) -> (u32, u32) {
        // SAFETY: SSE2 is enabled for the whole build (the `cfg` above), so the target feature
        // `classify` requires is present on every machine this code runs on.
        unsafe { classify(chunk) }
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    #[inline]
    #[target_feature(enable = "sse2")]
    #[allow(unsafe_code)]
    fn classify(chunk: &[u8; 16]) -> (u32, u32) {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8,
            _mm_or_si128, _mm_set1_epi8,
        };
        // SAFETY: the load reads the 16 bytes of `chunk`, with no alignment required.
        let v = unsafe { _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>()) };
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // c <= 0x1f exactly when max(c, 0x1f) == 0x1f (unsigned).
        let low = _mm_set1_epi8(0x1f);
        let control = _mm_cmpeq_epi8(_mm_max_epu8(v, low), low);
        let special = _mm_or_si128(_mm_or_si128(quote, backslash), control);
        (
            _mm_movemask_epi8(special).cast_unsigned(),
            _mm_movemask_epi8(v).cast_unsigned(),
        )
    }

    /// The same, byte by byte, where SSE2 is not available.
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    #[inline(always)]
    pub(super) fn masks(chunk: &[u8; 16]) -> (u32, u32) {
        bytewise(chunk)
    }

    /// The masks, byte by byte: the other targets' version, and the reference of the tests.
    #[cfg(any(test, not(all(target_arch = "x86_64", target_feature = "sse2"))))]
    pub(super) fn bytewise(chunk: &[u8; 16]) -> (u32, u32) {
        let (mut special, mut high) = (0u32, 0u32);
        for (k, &c) in chunk.iter().enumerate() {
            special |= u32::from(c == b'"' || c == b'\\' || c < 0x20) << k;
            high |= u32::from(c >= 0x80) << k;
        }
        (special, high)
    }
}

/// Whether `c` may follow a backslash in a string this scanner reads (`\u` changes text in ways
/// a literal search would miss; `\/` too).
#[inline(always)]
fn plain_escape(c: u8) -> bool {
    matches!(c, b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't')
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// Some string held a byte beyond ASCII.
    non_ascii: bool,
}

impl Scanner<'_> {
    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// At an opening quote: skips the string. Returns its content span and whether it holds
    /// escapes; `None` for invalid strings (control characters, bad escapes, invalid UTF-8) and
    /// the escapes this scanner does not read.
    #[inline(always)]
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        let start = self.i + 1;
        let mut i = start;
        let mut escaped = false;
        // Some byte of the content is beyond ASCII.
        let mut high = false;
        'blocks: while let Some(chunk) = self.b.get(i..i + 16) {
            let (mut special, beyond) = block::masks(chunk.try_into().ok()?);
            loop {
                if special == 0 {
                    // The whole block is content.
                    high |= beyond != 0;
                    i += 16;
                    continue 'blocks;
                }
                let k = special.trailing_zeros() as usize;
                let at = i + k;
                match self.b[at] {
                    b'"' => {
                        high |= beyond & ((1 << k) - 1) != 0;
                        return self.string_end(start, at, escaped, high);
                    }
                    b'\\' => {
                        if !plain_escape(*self.b.get(at + 1)?) {
                            return None;
                        }
                        escaped = true;
                        let next = k + 2;
                        if next >= 16 {
                            // The escape ends at or past the block's end.
                            high |= beyond != 0;
                            i = at + 2;
                            continue 'blocks;
                        }
                        special &= !((1 << next) - 1);
                    }
                    _ => return None,
                }
            }
        }
        // The last bytes, fewer than a block.
        loop {
            match *self.b.get(i)? {
                b'"' => return self.string_end(start, i, escaped, high),
                b'\\' => {
                    if !plain_escape(*self.b.get(i + 1)?) {
                        return None;
                    }
                    escaped = true;
                    i += 2;
                }
                c if c < 0x20 => return None,
                c => {
                    high |= c >= 0x80;
                    i += 1;
                }
            }
        }
    }

    /// The string from `start` ends at the quote at `end`: text beyond ASCII is checked here,
    /// string by string (the structure around strings is ASCII, so this checks the record).
    #[inline]
    fn string_end(
        &mut self,
        start: usize,
        end: usize,
        escaped: bool,
        high: bool,
    ) -> Option<(usize, usize, bool)> {
        if high {
            std::str::from_utf8(&self.b[start..end]).ok()?;
            self.non_ascii = true;
        }
        self.i = end + 1;
        Some((start, end, escaped))
    }

    /// An integer that fits an `i64` (as serde_json reads it: then its text is the decimal the
    /// decoder writes); fractions, exponents and larger integers refused.
    #[inline]
    fn integer(&mut self) -> Option<(usize, usize)> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = self.i;
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.i += 1;
                }
            }
            _ => return None,
        }
        if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let n = self.i - digits;
        // Up to 18 digits always fit; 19 digits may (NXLog writes `Keywords` as a negative
        // 64-bit integer); beyond, serde_json reads a float.
        if n > 19
            || (n == 19
                && std::str::from_utf8(&self.b[start..self.i])
                    .ok()?
                    .parse::<i64>()
                    .is_err())
        {
            return None;
        }
        Some((start, self.i))
    }

    #[inline]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? == word {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    /// One scalar value.
    #[inline(always)]
    fn scalar(&mut self) -> Option<(usize, usize, RawKind)> {
        Some(match self.peek()? {
            b'"' => {
                let (s, e, escaped) = self.string()?;
                let kind = if escaped {
                    RawKind::EscapedStr
                } else {
                    RawKind::Str
                };
                (s, e, kind)
            }
            b'-' | b'0'..=b'9' => {
                let (s, e) = self.integer()?;
                (s, e, RawKind::Int)
            }
            b't' => {
                let s = self.i;
                self.literal(b"true")?;
                (s, self.i, RawKind::Bool)
            }
            b'f' => {
                let s = self.i;
                self.literal(b"false")?;
                (s, self.i, RawKind::Bool)
            }
            b'n' => {
                let s = self.i;
                self.literal(b"null")?;
                (s, self.i, RawKind::Null)
            }
            _ => return None,
        })
    }

    /// An array of scalars, at its `[`; `each` is given every item's span and kind.
    fn list(&mut self, mut each: impl FnMut(usize, usize, RawKind)) -> Option<(usize, usize)> {
        let start = self.i;
        self.i += 1;
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some((start, self.i));
        }
        loop {
            self.ws();
            let (s, e, kind) = self.scalar()?;
            each(s, e, kind);
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some((start, self.i));
                }
                _ => return None,
            }
        }
    }
}

/// Scans `text` as one JSON object of ordinary fields into `out` (cleared first), checking
/// that it is valid UTF-8 on the way. Returns whether the text is all ASCII, or `None` when the
/// record is not of that shape or not valid JSON and UTF-8: it must then be decoded in full.
pub fn scan(text: &[u8], out: &mut Vec<RawField>) -> Option<bool> {
    out.clear();
    scan_inner(text, out)
}

/// The items of a [`RawKind::List`] value `text` (its span, brackets included) as the scanner
/// read them: each item's span in `text` and its kind.
pub(crate) fn list_items(text: &[u8]) -> Option<Vec<(usize, usize, RawKind)>> {
    let mut items = Vec::new();
    let mut s = Scanner {
        b: text,
        i: 0,
        non_ascii: false,
    };
    s.list(|start, end, kind| items.push((start, end, kind)))?;
    (s.i == text.len()).then_some(items)
}

fn scan_inner(b: &[u8], out: &mut Vec<RawField>) -> Option<bool> {
    // Spans are u32.
    if b.len() > u32::MAX as usize {
        return None;
    }
    let mut s = Scanner {
        b,
        i: 0,
        non_ascii: false,
    };
    s.ws();
    if s.peek()? != b'{' {
        return None;
    }
    s.i += 1;
    s.ws();
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            s.ws();
            if s.peek()? != b'"' {
                return None;
            }
            let (ks, ke, key_escaped) = s.string()?;
            if key_escaped {
                return None;
            }
            s.ws();
            if s.peek()? != b':' {
                return None;
            }
            s.i += 1;
            s.ws();
            let (vs, ve, kind) = if s.peek()? == b'[' {
                let (vs, ve) = s.list(|_, _, _| {})?;
                (vs, ve, RawKind::List)
            } else {
                s.scalar()?
            };
            let n = |x: usize| u32::try_from(x).ok();
            out.push(RawField {
                key_start: n(ks)?,
                key_end: n(ke)?,
                value_start: n(vs)?,
                value_end: n(ve)?,
                kind,
            });
            s.ws();
            match s.peek()? {
                b',' => s.i += 1,
                b'}' => {
                    s.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == b.len()).then_some(!s.non_ascii)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn fields(text: &str) -> Option<Vec<(String, String, RawKind)>> {
        fields_of(text.as_bytes())
    }

    fn fields_of(text: &[u8]) -> Option<Vec<(String, String, RawKind)>> {
        let mut out = Vec::new();
        let ascii = scan(text, &mut out)?;
        assert_eq!(ascii, text.is_ascii());
        let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        Some(
            out.iter()
                .map(|f| (s(f.key(text)), s(f.value(text)), f.kind))
                .collect(),
        )
    }

    #[test]
    fn ordinary_records_are_read_as_spans() {
        let f = fields(r#"{"Keywords":-9214364837600034816}"#).unwrap();
        assert_eq!(f[0].2, RawKind::Int);
        let text = r#" { "EventID" : 4688, "Channel":"Security","CommandLine":"C:\\x \"y\"\n","ok":true,"no":null,"tags":[ "a", 1 ,false],"e":[],"neg":-0 } "#;
        let f = fields(text).unwrap();
        assert_eq!(f[0], ("EventID".into(), "4688".into(), RawKind::Int));
        assert_eq!(f[1], ("Channel".into(), "Security".into(), RawKind::Str));
        assert_eq!(
            f[2],
            (
                "CommandLine".into(),
                r#"C:\\x \"y\"\n"#.into(),
                RawKind::EscapedStr
            )
        );
        assert_eq!(f[3].2, RawKind::Bool);
        assert_eq!(f[4].2, RawKind::Null);
        assert_eq!(
            f[5],
            ("tags".into(), r#"[ "a", 1 ,false]"#.into(), RawKind::List)
        );
        assert_eq!(f[6].1, "[]");
        assert_eq!(f[7], ("neg".into(), "-0".into(), RawKind::Int));
        assert_eq!(fields("{}"), Some(vec![]));
        // Long strings cross the 16-byte blocks.
        let long = format!(
            r#"{{"a":"{}\"{}","b":"{}"}}"#,
            "x".repeat(37),
            "y".repeat(16),
            "z".repeat(16)
        );
        let f = fields(&long).unwrap();
        assert_eq!(f[0].1.len(), 37 + 2 + 16);
        assert_eq!(f[1].1, "z".repeat(16));
    }

    /// The block masks agree with the byte-by-byte reference for every byte value at every
    /// position.
    #[test]
    fn block_masks_classify_every_byte() {
        for c in 0..=255u8 {
            for k in 0..16 {
                let mut chunk = [b'a'; 16];
                chunk[k] = c;
                assert_eq!(
                    block::masks(&chunk),
                    block::bytewise(&chunk),
                    "{c:#x} at {k}"
                );
            }
        }
        let mut chunk = [0u8; 16];
        for (k, b) in chunk.iter_mut().enumerate() {
            *b = [b'"', b'\\', 0x1f, 0x20, 0x7f, 0x80, 0xff, b'x'][k % 8];
        }
        assert_eq!(block::masks(&chunk), block::bytewise(&chunk));
    }

    /// Escapes, quotes, control characters and text beyond ASCII at every offset from the start
    /// of a block, across block ends: read as serde_json reads them.
    #[test]
    fn specials_at_every_block_offset() {
        for pad in 0..40 {
            for special in ["\\\"", "\\\\", "\\n", "é", "\\u0041", "\\/", "\u{1}", "\\x"] {
                for tail in [0, 1, 15, 16, 17, 40] {
                    let text = format!(
                        r#"{{"k":"{}{special}{}","n":1}}"#,
                        "p".repeat(pad),
                        "t".repeat(tail)
                    );
                    let ours = fields(&text);
                    let theirs = serde_json::from_str::<Value>(&text);
                    match ours {
                        Some(f) => {
                            let Ok(Value::Object(map)) = theirs else {
                                panic!("accepted {text:?}, serde_json did not");
                            };
                            let read: String =
                                serde_json::from_str(&format!("\"{}\"", f[0].1)).unwrap();
                            assert_eq!(Value::String(read), map["k"], "{text:?}");
                            assert_eq!(f[1].1, "1", "{text:?}");
                            assert_eq!(f[0].2 == RawKind::EscapedStr, special.starts_with('\\'));
                        }
                        None => assert!(
                            matches!(special, "\\u0041" | "\\/" | "\u{1}" | "\\x"),
                            "refused {text:?}"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn unusual_shapes_are_refused() {
        for text in [
            r#"{"a":{"b":1}}"#,
            r#"{"a":[{"b":1}]}"#,
            r#"{"a":[[1]]}"#,
            r#"{"a":1.5}"#,
            r#"{"a":1e3}"#,
            r#"{"a":9223372036854775808}"#,
            r#"{"a":-9223372036854775809}"#,
            r#"{"a":12345678901234567890}"#,
            r#"{"a":"\u0041"}"#,
            r#"{"a":"\/"}"#,
            r#"{"\"a":1}"#,
            "[1]",
            "\"x\"",
        ] {
            assert!(fields(text).is_none(), "{text}");
        }
    }

    /// Whatever the scanner accepts, serde_json accepts, and reads as the same top-level
    /// fields; invalid JSON is always refused.
    #[test]
    fn accepts_only_what_serde_json_accepts() {
        let cases = [
            "",
            "{",
            "}",
            "{}x",
            "{}}",
            "{,}",
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":01}"#,
            r#"{"a":-}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":falsey}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[,1]}"#,
            r#"{"a":[1 2]}"#,
            "{\"a\":\"\x01\"}",
            "{\"a\":\"\t\"}",
            r#"{"a":"\x"}"#,
            r#"{"a":"\"}"#,
            r#"{"a":"x"#,
            r#"{"a":[1"#,
            "{\"a\":1}\n",
            "\t{\"a\":1}\r\n",
            r#"{"a":1}{"b":2}"#,
            r#"{"a":-0,"b":0,"c":-12,"d":123456789012345678}"#,
            r#"{"a":-9223372036854775808,"b":9223372036854775807,"c":-9214364837600034816}"#,
            r#"{"a":"é\\\""}"#,
            "{\"a\":\"\u{7f}\"}",
            r#"{"a":1,"a":2}"#,
            r#"{ "a" : [ ] , "b" : [ null ] }"#,
            "{\"a\"\n:\n1}",
            r#"{"a":"b"  ,  "c":true}"#,
            "{\u{a0}}",
        ];
        for text in cases {
            let ours = fields(text);
            let theirs = serde_json::from_str::<Value>(text);
            if let Some(f) = ours {
                let Ok(Value::Object(map)) = theirs else {
                    panic!("scanner accepted {text:?}, serde_json did not");
                };
                for (k, raw, kind) in &f {
                    let want = &map[k];
                    let read = match kind {
                        RawKind::Str | RawKind::EscapedStr => {
                            Value::String(serde_json::from_str(&format!("\"{raw}\"")).unwrap())
                        }
                        _ => serde_json::from_str(raw).unwrap(),
                    };
                    // Duplicate keys: serde_json keeps the last one; compare where unique.
                    if f.iter().filter(|(x, _, _)| x == k).count() == 1 {
                        assert_eq!(&read, want, "{text:?}: {k}");
                    }
                }
            } else {
                // Every case above is of the ordinary shape: refused means invalid.
                assert!(
                    !matches!(theirs, Ok(Value::Object(_))),
                    "refused a valid plain record {text:?}"
                );
            }
        }
    }

    /// Random damage to real-looking records: whatever the scanner still accepts, serde_json
    /// accepts too, with the same fields.
    #[test]
    fn damaged_records_are_never_misread() {
        let seeds = [
            r#"{"EventID":4688,"Channel":"Security","CommandLine":"cmd /c \"whoami\" \\x\n","Hostname":"MXS01.azsentinel.local","tags":["a",1,true,null],"n":-42,"p":"Microsoft® Windows®"}"#,
            r#"{"SourceName":"Microsoft-Windows-Sysmon","EventID":10,"GrantedAccess":"0x1410","TargetImage":"C:\\Windows\\system32\\lsass.exe","x":false}"#,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"{}[]\":,\\ \t\nabu0123456789-.eE+/tfn\x01\x7f\xc3\xa9\x80\xff";
        let mut accepted = 0;
        for _ in 0..40_000 {
            let seed = seeds[(next() % 2) as usize].as_bytes();
            let mut bytes = seed.to_vec();
            for _ in 0..=(next() % 3) {
                let at = (next() as usize) % bytes.len();
                let c = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => bytes[at] = c,
                    1 => bytes.insert(at, c),
                    _ => {
                        bytes.remove(at);
                    }
                }
            }
            let Some(f) = fields_of(&bytes) else { continue };
            let text = std::str::from_utf8(&bytes).expect("the scanner accepted invalid UTF-8");
            accepted += 1;
            let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
                panic!("scanner accepted {text:?}, serde_json did not");
            };
            for (k, raw, kind) in &f {
                if f.iter().filter(|(x, _, _)| x == k).count() > 1 {
                    continue;
                }
                let read = match kind {
                    RawKind::Str | RawKind::EscapedStr => {
                        Value::String(serde_json::from_str(&format!("\"{raw}\"")).unwrap())
                    }
                    _ => serde_json::from_str(raw).unwrap(),
                };
                assert_eq!(&read, &map[k], "{text:?}: {k}");
            }
        }
        assert!(
            accepted > 1000,
            "too few damaged records stayed valid: {accepted}"
        );
    }
}
