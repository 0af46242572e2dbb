//! A guard in front of both KDL parsers, so that no input can overflow the stack.
//!
//! `kdl`'s parser is recursive descent: each `{` children block is a few more stack
//! frames, and inside a `/* */` comment so is every `*`, every `/` and every nested
//! comment. About 3000 nested `{` (6 KB of input), or a comment holding 10 000 `*`,
//! overflowed the main thread's stack and aborted the process with SIGABRT, which no
//! `catch_unwind` can turn into a diagnostic. So before parsing, one linear scan reads
//! the text the way KDL lexes it (a `{` inside a string or a comment is not nesting):
//! - a `{` deeper than [`MAX_DEPTH`] is refused, located at that brace (the limit is
//!   documented in `docs/language.md`; real playbooks nest a handful of levels);
//! - inside block comments every `*` and `/` is replaced by a space. The parser then
//!   sees each comment as one run of text, whatever it held, and nothing else changes:
//!   byte offsets, lines and every other character stay as they were, so spans and
//!   what `kdl` accepts or rejects are the same.
//!
//! The scan only has to be right about what is *not* nesting; it never accepts or
//! rejects syntax itself: anything it misreads is still parsed (and reported) by `kdl`.

use std::borrow::Cow;

/// The deepest nesting of `{ }` children blocks a file may have.
pub(crate) const MAX_DEPTH: usize = 64;

/// Where a `{` goes one level past the limit: its byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooDeep {
    pub(crate) offset: usize,
}

/// The text to hand to the parsers (block comments neutralised), or the first `{`
/// that nests deeper than `max`.
pub(crate) fn guard(text: &str, max: usize) -> Result<Cow<'_, str>, TooDeep> {
    let b = text.as_bytes();
    let mut comments = Vec::new();
    let mut i = 0;
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'{' => {
                depth += 1;
                if depth > max {
                    return Err(TooDeep { offset: i });
                }
                i += 1;
            }
            b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |n| i + n + 1);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = block_comment(b, i);
                comments.push(i + 2..end.saturating_sub(2).max(i + 2));
                i = end;
            }
            b'"' => i = quoted(b, i),
            b'#' => {
                let hashes = b[i..].iter().take_while(|&&c| c == b'#').count();
                i += hashes;
                if b.get(i) == Some(&b'"') {
                    i = raw(b, i + 1, hashes);
                }
            }
            _ => i += 1,
        }
    }
    if comments
        .iter()
        .all(|r| !b[r.clone()].iter().any(|&c| c == b'*' || c == b'/'))
    {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = b.to_vec();
    for r in comments {
        for c in &mut out[r] {
            if *c == b'*' || *c == b'/' {
                *c = b' ';
            }
        }
    }
    // Only ASCII bytes were replaced by ASCII, so the text is still UTF-8.
    Ok(Cow::Owned(
        String::from_utf8(out).expect("ASCII replaced by ASCII"),
    ))
}

/// Skips a (nested) block comment starting at `start` (on its `/*`); returns the offset
/// after its closing `*/`. A comment that is never closed (the parser reports it)
/// gets the end of the text plus two, as if it were closed just past the end, so that
/// its whole interior is neutralised.
fn block_comment(b: &[u8], start: usize) -> usize {
    let mut depth = 0usize;
    let mut i = start;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len() + 2
}

/// Skips a `"quoted"` or `"""multi-line"""` string starting at `start` (on its first
/// quote); returns the offset after it, or the end of the text when it is never closed.
fn quoted(b: &[u8], start: usize) -> usize {
    let multi = b[start..].starts_with(b"\"\"\"");
    let mut i = start + if multi { 3 } else { 1 };
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' if !multi => return i + 1,
            b'"' if b[i..].starts_with(b"\"\"\"") => return i + 3,
            _ => i += 1,
        }
    }
    b.len()
}

/// Skips the rest of a raw string opened by `hashes` `#` and a quote (`i` is just past
/// the quote): it ends at the first quote followed by as many `#`.
fn raw(b: &[u8], mut i: usize, hashes: usize) -> usize {
    while i < b.len() {
        if b[i] == b'"' && b[i + 1..].iter().take(hashes).filter(|&&c| c == b'#').count() == hashes {
            return i + 1 + hashes;
        }
        i += 1;
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(n: usize) -> String {
        let mut s = String::new();
        for _ in 0..n {
            s.push_str("a {");
        }
        for _ in 0..n {
            s.push('}');
        }
        s
    }

    #[test]
    fn counts_children_blocks_and_stops_at_the_first_too_deep() {
        assert!(guard(&nested(64), 64).is_ok());
        assert_eq!(guard(&nested(3000), 64).unwrap_err().offset, 64 * 3 + 2);
        // closing blocks brings the depth back down
        assert!(guard(&nested(40).repeat(100), 64).is_ok());
    }

    #[test]
    fn braces_in_strings_and_comments_are_not_nesting() {
        let many = "{".repeat(200);
        for text in [
            format!("a \"{many}\""),
            format!("a \"\\\"{many}\""),
            format!("a \"\"\"\n{many}\n\"\"\""),
            format!("a #\"{many}\"#"),
            format!("a ##\"\"#{many}\"##"),
            format!("a // {many}\nb"),
            format!("a /* {many} */ b"),
            format!("a /* /* {many} */ */ b"),
        ] {
            assert!(guard(&text, 64).is_ok(), "{text}");
        }
        // after the string ends, braces count again
        let t = guard(&format!("a \"{{\" {}", nested(65)), 64).unwrap_err();
        assert_eq!(t.offset, 6 + 64 * 3 + 2);
        // `#true` is a keyword, not a raw string
        assert!(guard(&format!("a #true {}", nested(65)), 64).is_err());
    }

    #[test]
    fn block_comments_lose_their_stars_and_slashes_and_nothing_else() {
        let text = "a /* x*y /* z/ */ \"*\" */ b \"/*\" // */\nc";
        let out = guard(text, 64).unwrap();
        assert_eq!(out, "a /* x y    z     \" \" */ b \"/*\" // */\nc");
        assert_eq!(out.len(), text.len());
        // plain text is not copied
        assert!(matches!(guard("a /* b */ c", 64).unwrap(), Cow::Borrowed(_)));
        // an unclosed comment stays unclosed (the parser reports it)
        assert_eq!(guard("a /* b*", 64).unwrap(), "a /* b ");
        assert_eq!(guard("a /*", 64).unwrap(), "a /*");
    }
}
