//! Text a server controls, made safe to show: on a terminal, in a log line, in the journal
//! and in `status.json`.
//!
//! Owns: [`sanitize`], the one function every piece of registry-controlled text (error
//! `code`/`message`, `Content-Type`, `Content-Encoding`, platform strings from an index,
//! header echoes, token error text) passes through before it enters an error or a log.
//! Control characters (C0 including ESC, NUL, CR and LF; DEL; C1) and the invisible
//! characters that reorder or hide text (bidi overrides and isolates, zero-width
//! characters, line and paragraph separators, the byte-order mark) are escaped as `\u{..}`
//! (`\n`, `\r`, `\t` as themselves), and the result is capped with an ellipsis.
//!
//! Must never: pass an escape sequence through (`\x1b[2J` would clear an operator's
//! terminal), return more than the cap, split a character (the result is valid UTF-8
//! because the input is), or read further into a long input than the cap needs.

use std::fmt::Write as _;

/// The mark put where text was cut.
pub const ELLIPSIS: char = '…';

/// A cap for short server text: a media type, a header value, one platform string.
pub const SHORT: usize = 128;

/// A cap for server prose: an error message.
pub const MESSAGE: usize = 256;

/// `s` with every control or invisible formatting character escaped, at most `max_chars`
/// characters long: when more would follow, the text ends in [`ELLIPSIS`] (which counts
/// toward `max_chars`). An escape is never cut in half. `max_chars == 0` gives `""`.
pub fn sanitize(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(max_chars.min(s.len()).saturating_add(4));
    let mut used = 0usize;
    let mut buf = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        buf.clear();
        escape_into(c, &mut buf);
        let width = buf.chars().count();
        let last = chars.peek().is_none();
        // Room for this piece, and for the ellipsis too unless nothing follows it.
        let needed = if last { width } else { width + 1 };
        if used + needed > max_chars {
            // Either this piece does not fit, or it fits only without room to mark a cut.
            if used + width <= max_chars && last {
                out.push_str(&buf);
            } else if max_chars > 0 {
                out.push(ELLIPSIS);
            }
            return out;
        }
        out.push_str(&buf);
        used += width;
    }
    out
}

/// Whether `c` must not reach a terminal or a log as itself.
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Arabic letter mark, zero-width space/joiners, LRM/RLM.
            '\u{061c}' | '\u{200b}'..='\u{200f}'
            // Line and paragraph separators; bidi embeddings and overrides.
            | '\u{2028}'..='\u{202e}'
            // Word joiner and invisible operators; bidi isolates; deprecated format chars.
            | '\u{2060}'..='\u{206f}'
            // Byte-order mark / zero-width no-break space; interlinear annotation.
            | '\u{feff}' | '\u{fff9}'..='\u{fffb}'
        )
}

fn escape_into(c: char, out: &mut String) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if must_escape(c) => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_table() {
        let cases: &[(&str, usize, &str)] = &[
            ("plain text", 100, "plain text"),
            ("", 10, ""),
            ("abc", 0, ""),
            // ANSI: clear screen, colour, cursor moves.
            ("\x1b[2Jgone", 100, "\\u{1b}[2Jgone"),
            ("\x1b[31mred\x1b[0m", 100, "\\u{1b}[31mred\\u{1b}[0m"),
            // CR rewrites a log line; NUL ends C strings in journald fields.
            ("ok\rFAKE", 100, "ok\\rFAKE"),
            ("a\0b", 100, "a\\u{0}b"),
            ("line1\nline2\tx", 100, "line1\\nline2\\tx"),
            ("del\x7f", 100, "del\\u{7f}"),
            // C1 controls (CSI as one character).
            ("\u{9b}2J", 100, "\\u{9b}2J"),
            // Bidi override (Trojan Source), zero-width space, line separator, BOM.
            ("abc\u{202e}fed", 100, "abc\\u{202e}fed"),
            (
                "a\u{200b}b\u{2028}c\u{feff}",
                100,
                "a\\u{200b}b\\u{2028}c\\u{feff}",
            ),
            ("\u{2066}x\u{2069}", 100, "\\u{2066}x\\u{2069}"),
            // Printable non-ASCII is kept.
            ("café ✓ 東京", 100, "café ✓ 東京"),
            // The cap counts characters and includes the ellipsis.
            ("abcdef", 6, "abcdef"),
            ("abcdefg", 6, "abcde…"),
            ("abcdefg", 1, "…"),
            ("ééééé", 3, "éé…"),
            // An escape is kept whole or not at all.
            ("ab\x1b", 8, "ab\\u{1b}"),
            ("ab\x1b", 7, "ab…"),
            ("ab\x1bc", 8, "ab…"),
            ("ab\x1bc", 9, "ab\\u{1b}c"),
        ];
        for (input, max, want) in cases {
            let got = sanitize(input, *max);
            assert_eq!(&got, want, "sanitize({input:?}, {max})");
            assert!(got.chars().count() <= *max, "{got:?} over {max}");
        }
    }

    #[test]
    fn hostile_message_is_bounded_escaped_and_utf8() {
        let mut hostile = String::from("\x1b[2J\r\0");
        hostile.push_str(&"é".repeat(100 * 1024));
        let got = sanitize(&hostile, MESSAGE);
        assert_eq!(got.chars().count(), MESSAGE);
        assert!(got.starts_with("\\u{1b}[2J\\r\\u{0}é"), "{got}");
        assert!(got.ends_with(ELLIPSIS));
        assert!(!got.chars().any(must_escape), "{got:?}");
        // Already safe text is a fixed point.
        assert_eq!(sanitize(&got, MESSAGE), got);
    }

    #[test]
    fn nothing_unsafe_survives_any_character() {
        for c in (0u32..0x3000).chain(0xfe00..0x10000).filter_map(char::from_u32) {
            let s = format!("x{c}y");
            let got = sanitize(&s, 64);
            assert!(!got.chars().any(must_escape), "{c:?} gave {got:?}");
            assert!(!got.contains('\x1b') && !got.contains('\0'));
        }
    }
}
