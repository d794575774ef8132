//! Character classes as llama.cpp's `unicode.cpp` sees them, and GPT-2's byte ↔ character map.
//!
//! The pre-tokenizers only ask three questions of a code point: is it a letter (`\p{L}`), a
//! number (`\p{N}`), or white space (the Unicode `White_Space` property, which is the list
//! llama.cpp keeps)? Letters and numbers come from a table of Unicode 15.1, the version of
//! llama.cpp's `unicode-data.cpp`, so that text with recently added characters splits the
//! same way.

use super::unicode_table::RANGES;

/// The class of a code point in a letter/number range of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Class {
    Letter,
    Number,
}

/// What the pre-tokenizers need to know about one code point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Letter,
    Number,
    Space,
    /// Anything else: punctuation, symbols, marks, controls, unassigned.
    Other,
}

/// The kind of `c`.
pub(super) fn kind(c: char) -> Kind {
    if c.is_ascii() {
        return match c {
            'a'..='z' | 'A'..='Z' => Kind::Letter,
            '0'..='9' => Kind::Number,
            '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | ' ' => Kind::Space,
            _ => Kind::Other,
        };
    }
    // White_Space and the letter/number categories are disjoint.
    if c.is_whitespace() {
        return Kind::Space;
    }
    let cp = c as u32;
    let i = RANGES.partition_point(|&(_, last, _)| last < cp);
    match RANGES.get(i) {
        Some(&(first, _, class)) if first <= cp => match class {
            Class::Letter => Kind::Letter,
            Class::Number => Kind::Number,
        },
        _ => Kind::Other,
    }
}

/// GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves, the other 68
/// bytes are mapped, in order, to U+0100 and up.
pub(super) const BYTE_TO_CHAR: [char; 256] = byte_to_char_table();

const fn is_direct(b: u32) -> bool {
    (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
}

const fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    let mut b = 0u32;
    while b < 256 {
        let cp = if is_direct(b) {
            b
        } else {
            n += 1;
            255 + n
        };
        table[b as usize] = match char::from_u32(cp) {
            Some(c) => c,
            None => '\0',
        };
        b += 1;
    }
    table
}

/// Inverse of [`BYTE_TO_CHAR`] over U+0000..U+0143, -1 where no byte maps there.
const CHAR_TO_BYTE: [i16; 324] = char_to_byte_table();

const fn char_to_byte_table() -> [i16; 324] {
    let mut table = [-1i16; 324];
    let mut b = 0usize;
    while b < 256 {
        table[BYTE_TO_CHAR[b] as usize] = b as i16;
        b += 1;
    }
    table
}

/// The byte a byte-level BPE character stands for, if it is one of the 256.
pub(super) fn char_to_byte(c: char) -> Option<u8> {
    match CHAR_TO_BYTE.get(c as usize) {
        Some(&b) if b >= 0 => Some(b as u8),
        _ => None,
    }
}

/// Append the byte-level encoding of `bytes` to `out`.
pub(super) fn byte_encode_into(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        out.push(BYTE_TO_CHAR[b as usize]);
    }
}

/// Append the bytes that a byte-level token text stands for. Characters outside the map
/// (never produced by GPT-2 conversion) are kept as their own UTF-8 bytes.
pub(super) fn byte_decode_into(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match char_to_byte(c) {
            Some(b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_gpt2s() {
        assert_eq!(BYTE_TO_CHAR[b'A' as usize], 'A');
        assert_eq!(BYTE_TO_CHAR[b' ' as usize], 'Ġ'); // U+0120
        assert_eq!(BYTE_TO_CHAR[b'\n' as usize], 'Ċ'); // U+010A
        assert_eq!(BYTE_TO_CHAR[0], '\u{100}');
        assert_eq!(BYTE_TO_CHAR[0xAD], '\u{143}');
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = BYTE_TO_CHAR[b as usize];
            assert!(seen.insert(c), "{c:?} twice");
            assert_eq!(char_to_byte(c), Some(b));
        }
        assert_eq!(char_to_byte('\u{144}'), None);
        assert_eq!(char_to_byte('日'), None);
    }

    #[test]
    fn kinds() {
        assert_eq!(kind('a'), Kind::Letter);
        assert_eq!(kind('é'), Kind::Letter);
        assert_eq!(kind('日'), Kind::Letter);
        assert_eq!(kind('7'), Kind::Number);
        assert_eq!(kind('²'), Kind::Number);
        assert_eq!(kind('٣'), Kind::Number);
        assert_eq!(kind(' '), Kind::Space);
        assert_eq!(kind('\u{3000}'), Kind::Space);
        assert_eq!(kind('\u{85}'), Kind::Space);
        assert_eq!(kind('\u{1C}'), Kind::Other); // not White_Space
        assert_eq!(kind('🤖'), Kind::Other);
        assert_eq!(kind('.'), Kind::Other);
        assert_eq!(kind('\u{301}'), Kind::Other); // a mark
        // Unassigned in 15.1 (llama.cpp's tables), assigned in 16.0.
        assert_eq!(kind('\u{1C89}'), Kind::Other);
    }

    /// The generated table equals the regex classes it was derived from.
    #[test]
    fn table_matches_regex_classes() {
        let all: String = (0..0x11_0000u32).filter_map(char::from_u32).collect();
        let mut derived = Vec::new();
        for (pattern, class) in [
            (r"[\p{L}&&\p{Age=V15_1}]+", Class::Letter),
            (r"[\p{N}&&\p{Age=V15_1}]+", Class::Number),
        ] {
            let re = fancy_regex::Regex::new(pattern).expect("pattern compiles");
            for m in re.find_iter(&all) {
                let m = m.expect("no backtracking limit in a plain class");
                let first = m.as_str().chars().next().expect("non-empty") as u32;
                let last = m.as_str().chars().last().expect("non-empty") as u32;
                if first < 0xD800 && last > 0xDFFF {
                    derived.push((first, 0xD7FF, class));
                    derived.push((0xE000, last, class));
                } else {
                    derived.push((first, last, class));
                }
            }
        }
        derived.sort_by_key(|r| r.0);
        assert_eq!(derived.len(), RANGES.len());
        for (d, t) in derived.iter().zip(RANGES.iter()) {
            assert_eq!(d, t);
        }
    }
}
