//! A fast path for stage one: parses the plain KDL v2 that playbooks are made of into
//! the same `kdl` types (spans and value text included) the full parser builds.
//!
//! Why: `kdl`'s parser keeps every byte of formatting and recovers from errors, and
//! runs at about 1 MB/s; a 10 000-task playbook (issue 7's target: parse and check in
//! under 100 ms) took close to a second in it alone. This parser handles the common
//! subset of the language (identifiers, single-line quoted strings, decimal, hex, octal
//! and binary integers, simple decimals, `#keywords`, `//` comments, `(list)` node
//! annotations, children) in one pass over the bytes, and gives up (returns `None`) on
//! anything else: multi-line or raw strings, slashdash, `/* */`, line continuations,
//! typed values, unusual whitespace, and every syntax error. The caller then runs the
//! full `kdl` parser, so what is accepted and every syntax diagnostic stay exactly
//! `kdl`'s. The no-panic sweep test compares both parsers on thousands of mutated
//! files ([`agrees_with_kdl`]).

use kdl::{KdlDocument, KdlEntry, KdlEntryFormat, KdlIdentifier, KdlNode, KdlValue};
use miette::SourceSpan;

/// Parses `text`, or returns `None` when it is outside the fast subset (or invalid).
pub(crate) fn parse(text: &str) -> Option<KdlDocument> {
    if !plain(text) {
        return None;
    }
    let mut p = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        depth: 0,
    };
    let doc = p.nodes()?;
    (p.pos == p.bytes.len()).then_some(doc)
}

/// Whether the text avoids every character the fast path does not handle: control
/// characters other than tab and newline (so no `\r`), and outside ASCII the Unicode
/// newlines, spaces and direction marks that KDL gives a meaning or forbids.
fn plain(text: &str) -> bool {
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) || b == b'\n' || b == b'\t')
    {
        return true;
    }
    text.chars().all(|c| match c {
        '\t' | '\n' => true,
        '\0'..='\u{1f}' | '\u{7f}'..='\u{a0}' => false,
        '\u{1680}' | '\u{2000}'..='\u{200f}' | '\u{2028}'..='\u{202f}' | '\u{205f}'..='\u{206f}' => false,
        '\u{3000}' | '\u{feff}' | '\u{fff0}'..='\u{ffff}' => false,
        _ => true,
    })
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

fn span(start: usize, end: usize) -> SourceSpan {
    SourceSpan::from(start..end)
}

/// Characters that may appear in a bare identifier (ASCII only on the fast path).
fn ident_byte(b: u8) -> bool {
    b.is_ascii_graphic()
        && !matches!(
            b,
            b'\\' | b'/' | b'(' | b')' | b'{' | b'}' | b';' | b'[' | b']' | b'"' | b'#' | b'='
        )
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<u8> {
        self.bytes.get(self.pos + n).copied()
    }

    fn spaces(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Skips a `//` comment up to and including its newline.
    fn line_comment(&mut self) {
        while let Some(b) = self.peek() {
            self.pos += 1;
            if b == b'\n' {
                break;
            }
        }
    }

    /// Blank lines, spaces and comments between nodes.
    fn line_space(&mut self) -> Option<()> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n') => self.pos += 1,
                Some(b'/') if self.peek_at(1) == Some(b'/') => self.line_comment(),
                Some(b'/') => return None,
                _ => return Some(()),
            }
        }
    }

    /// `(line-space* node terminator?)* line-space*`, up to `}` or the end.
    fn nodes(&mut self) -> Option<KdlDocument> {
        self.depth += 1;
        if self.depth > 64 {
            return None;
        }
        let mut doc = KdlDocument::new();
        self.line_space()?;
        let start = self.pos;
        let mut end = start;
        loop {
            match self.peek() {
                None => break,
                Some(b'}') if self.depth > 1 => break,
                Some(_) => {}
            }
            let node = self.node()?;
            end = self.pos;
            doc.nodes_mut().push(node);
            // the terminator: `;`, a newline, a comment, or the `}`/end that follows
            match self.peek() {
                Some(b';' | b'\n') => self.pos += 1,
                Some(b'/') if self.peek_at(1) == Some(b'/') => self.line_comment(),
                Some(b'}') if self.depth > 1 => {}
                None => {}
                _ => return None,
            }
            self.line_space()?;
        }
        doc.set_span(span(start, end));
        self.depth -= 1;
        Some(doc)
    }

    fn node(&mut self) -> Option<KdlNode> {
        let start = self.pos;
        let ty = if self.peek() == Some(b'(') {
            self.pos += 1;
            let ty = self.ident_or_quoted()?;
            if self.peek() != Some(b')') {
                return None;
            }
            self.pos += 1;
            Some(ty)
        } else {
            None
        };
        let name = self.ident_or_quoted()?;
        let mut node = KdlNode::new(name);
        if let Some(ty) = ty {
            node.set_ty(ty);
        }
        loop {
            let spaced = self.spaces();
            match self.peek() {
                None | Some(b'\n' | b';' | b'}') => break,
                Some(b'/') if self.peek_at(1) == Some(b'/') => break,
                Some(b'{') if spaced => {
                    self.pos += 1;
                    let children = self.nodes()?;
                    if self.peek() != Some(b'}') {
                        return None;
                    }
                    self.pos += 1;
                    node.set_children(children);
                    self.spaces();
                    match self.peek() {
                        None | Some(b'\n' | b';' | b'}') => break,
                        Some(b'/') if self.peek_at(1) == Some(b'/') => break,
                        _ => return None,
                    }
                }
                Some(_) if spaced => {
                    let entry = self.entry()?;
                    node.entries_mut().push(entry);
                }
                Some(_) => return None,
            }
        }
        node.set_span(span(start, self.pos));
        Some(node)
    }

    /// A node name, property key or type name: a bare identifier or a quoted string.
    fn ident_or_quoted(&mut self) -> Option<KdlIdentifier> {
        let start = self.pos;
        let value = if self.peek() == Some(b'"') {
            self.quoted()?
        } else {
            self.bare_ident()?.to_string()
        };
        let mut ident = KdlIdentifier::from(value);
        ident.set_span(span(start, self.pos));
        Some(ident)
    }

    fn bare_ident(&mut self) -> Option<&'a str> {
        let start = self.pos;
        let first = self.peek()?;
        // digits (and sign-digit, dot-digit) start numbers, not identifiers
        if first.is_ascii_digit() || first == b'.' {
            return None;
        }
        if matches!(first, b'+' | b'-') && self.peek_at(1).is_some_and(|b| b.is_ascii_digit() || b == b'.') {
            return None;
        }
        while self.peek().is_some_and(ident_byte) {
            self.pos += 1;
        }
        let ident = &self.text[start..self.pos];
        if ident.is_empty() || matches!(ident, "true" | "false" | "null" | "inf" | "-inf" | "nan") {
            return None;
        }
        Some(ident)
    }

    /// A single-line `"quoted string"` with the simple escapes.
    fn quoted(&mut self) -> Option<String> {
        self.pos += 1; // the opening quote
        if self.peek() == Some(b'"') && self.peek_at(1) == Some(b'"') {
            return None; // a multi-line string
        }
        let mut out = String::new();
        let mut run = self.pos;
        loop {
            match self.peek()? {
                b'"' => {
                    out.push_str(&self.text[run..self.pos]);
                    self.pos += 1;
                    return Some(out);
                }
                b'\n' => return None,
                b'\\' => {
                    out.push_str(&self.text[run..self.pos]);
                    let c = match self.peek_at(1)? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b's' => ' ',
                        b'u' => {
                            self.pos += 2;
                            if self.peek() != Some(b'{') {
                                return None;
                            }
                            let hex_start = self.pos + 1;
                            let len = self.bytes[hex_start..]
                                .iter()
                                .take_while(|b| b.is_ascii_hexdigit())
                                .count();
                            if !(1..=6).contains(&len) || self.bytes.get(hex_start + len) != Some(&b'}') {
                                return None;
                            }
                            let code =
                                u32::from_str_radix(&self.text[hex_start..hex_start + len], 16).ok()?;
                            out.push(char::from_u32(code)?);
                            self.pos = hex_start + len + 1;
                            run = self.pos;
                            continue;
                        }
                        _ => return None,
                    };
                    out.push(c);
                    self.pos += 2;
                    run = self.pos;
                }
                _ => self.pos += 1,
            }
        }
    }

    /// A property (`key=value`) or an argument.
    fn entry(&mut self) -> Option<KdlEntry> {
        let start = self.pos;
        let b = self.peek()?;
        let starts_number = b.is_ascii_digit()
            || (matches!(b, b'+' | b'-') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()));
        if b == b'"' || (!starts_number && b != b'#' && b != b'(') {
            let key = self.ident_or_quoted()?;
            if self.peek() == Some(b'=') {
                self.pos += 1;
                let (value, repr) = self.value()?;
                let mut e = KdlEntry::new_prop(key, value);
                self.finish_entry(&mut e, start, repr)?;
                return Some(e);
            }
            let repr = self.text[start..self.pos].to_string();
            let mut e = KdlEntry::new(KdlValue::String(key.value().to_string()));
            self.finish_entry(&mut e, start, repr)?;
            return Some(e);
        }
        let (value, repr) = self.value()?;
        let mut e = KdlEntry::new(value);
        self.finish_entry(&mut e, start, repr)?;
        Some(e)
    }

    fn finish_entry(&mut self, e: &mut KdlEntry, start: usize, value_repr: String) -> Option<()> {
        // an entry must be followed by a separator the fast path understands
        match self.peek() {
            None | Some(b' ' | b'\t' | b'\n' | b';' | b'}') => {}
            _ => return None,
        }
        e.set_span(span(start, self.pos));
        e.set_format(KdlEntryFormat {
            value_repr,
            ..Default::default()
        });
        Some(())
    }

    /// A value after `=`, or a non-string argument: with its source text.
    fn value(&mut self) -> Option<(KdlValue, String)> {
        let start = self.pos;
        let value = match self.peek()? {
            b'"' => KdlValue::String(self.quoted()?),
            b'#' => {
                self.pos += 1;
                let word_start = self.pos;
                while self.peek().is_some_and(ident_byte) {
                    self.pos += 1;
                }
                match &self.text[word_start..self.pos] {
                    "true" => KdlValue::Bool(true),
                    "false" => KdlValue::Bool(false),
                    "null" => KdlValue::Null,
                    _ => return None,
                }
            }
            b'0'..=b'9' | b'+' | b'-' => self.number()?,
            b'(' => return None,
            _ => KdlValue::String(self.bare_ident()?.to_string()),
        };
        Some((value, self.text[start..self.pos].to_string()))
    }

    fn number(&mut self) -> Option<KdlValue> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if matches!(self.peek(), Some(b'+' | b'-')) {
            self.pos += 1;
        }
        let radix = match (self.peek(), self.peek_at(1)) {
            (Some(b'0'), Some(b'x')) => 16,
            (Some(b'0'), Some(b'o')) => 8,
            (Some(b'0'), Some(b'b')) => 2,
            _ => 10,
        };
        if radix != 10 {
            self.pos += 2;
        }
        let digits_start = self.pos;
        if !self.peek().is_some_and(|b| (b as char).is_digit(radix)) {
            return None;
        }
        while self
            .peek()
            .is_some_and(|b| (b as char).is_digit(radix) || b == b'_')
        {
            self.pos += 1;
        }
        let mut is_float = false;
        if radix == 10 && self.peek() == Some(b'.') {
            self.pos += 1;
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return None;
            }
            while self.peek().is_some_and(|b| b.is_ascii_digit() || b == b'_') {
                self.pos += 1;
            }
            is_float = true;
        }
        // exponents, suffixes and anything glued on: leave them to kdl
        if self.peek().is_some_and(ident_byte) {
            return None;
        }
        let digits: String = self.text[digits_start..self.pos]
            .chars()
            .filter(|c| *c != '_')
            .collect();
        if is_float {
            let f: f64 = self.text[start..self.pos].replace('_', "").parse().ok()?;
            return f.is_finite().then_some(KdlValue::Float(f));
        }
        if radix == 10 && digits.len() > 1 && digits.starts_with('0') {
            return None;
        }
        let magnitude = i128::from_str_radix(&digits, radix).ok()?;
        Some(KdlValue::Integer(if negative { -magnitude } else { magnitude }))
    }
}

/// Compares the fast path with `kdl` on `text`: `Ok` when the fast path declines or
/// builds exactly what `kdl` builds (as far as the decoder looks: names, types,
/// values, value text, children and every span).
pub fn agrees_with_kdl(text: &str) -> Result<(), String> {
    let Some(fast) = parse(text) else { return Ok(()) };
    let slow =
        KdlDocument::parse_v2(text).map_err(|e| format!("fast path accepted what kdl rejects: {e:?}"))?;
    compare_docs(&fast, &slow, true)
}

fn compare_docs(a: &KdlDocument, b: &KdlDocument, top: bool) -> Result<(), String> {
    if !top && a.span() != b.span() {
        return Err(format!("children span {:?} != {:?}", a.span(), b.span()));
    }
    if a.nodes().len() != b.nodes().len() {
        return Err(format!("{} nodes != {}", a.nodes().len(), b.nodes().len()));
    }
    for (x, y) in a.nodes().iter().zip(b.nodes()) {
        let what = y.name().value();
        let same_ident =
            |p: &KdlIdentifier, q: &KdlIdentifier| p.value() == q.value() && p.span() == q.span();
        if !same_ident(x.name(), y.name()) || x.span() != y.span() {
            return Err(format!(
                "node {what}: {:?} {:?} != {:?} {:?}",
                x.name(),
                x.span(),
                y.name(),
                y.span()
            ));
        }
        match (x.ty(), y.ty()) {
            (None, None) => {}
            (Some(p), Some(q)) if same_ident(p, q) => {}
            (p, q) => return Err(format!("node {what}: type {p:?} != {q:?}")),
        }
        if x.entries().len() != y.entries().len() {
            return Err(format!(
                "node {what}: {} entries != {}",
                x.entries().len(),
                y.entries().len()
            ));
        }
        for (e, f) in x.entries().iter().zip(y.entries()) {
            let names_agree = match (e.name(), f.name()) {
                (None, None) => true,
                (Some(p), Some(q)) => same_ident(p, q),
                _ => false,
            };
            let repr = |e: &KdlEntry| e.format().map(|f| f.value_repr.clone());
            if !names_agree || e.value() != f.value() || e.span() != f.span() || repr(e) != repr(f) {
                return Err(format!("node {what}: entry {e:?} != {f:?}"));
            }
        }
        match (x.children(), y.children()) {
            (None, None) => {}
            (Some(p), Some(q)) => compare_docs(p, q, false)?,
            _ => return Err(format!("node {what}: children differ")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_fast_path_for_plain_playbooks() {
        let text = r#"
// comment
play "Grow etcd" hosts=etcd serial=1 {
    vars { pki_dir "/etc/kubernetes/pki/etcd"; n -0x1f; f 0.5; b #true; z #null }
    task "Write \"etcd\" manifest\u{e9}" notify="restart kubelet" {   // trailing
        template src="etcd.yaml.j2" dest="/etc/kubernetes/manifests/etcd.yaml" mode=0o600
    }
    (list)empty
    task "é" when="not etcd_bootstrap" retries=5 delay="2s" { etcd-member name="{{ x }}" }
    - a=1 b="x" ;
    handler "restart kubelet" { service name=kubelet state=restarted }
}
"#;
        assert!(parse(text).is_some(), "plain text should take the fast path");
        agrees_with_kdl(text).unwrap();
        let doc = parse(text).unwrap();
        let task = &doc.nodes()[0].children().unwrap().nodes()[1];
        assert_eq!(
            task.entries()[0].value().as_string(),
            Some("Write \"etcd\" manifesté")
        );
    }

    #[test]
    fn declines_what_it_does_not_handle() {
        for text in [
            "a \"\"\"\n  x\n  \"\"\"",
            "a #\"raw\"#",
            "a /- b",
            "a /* c */ b",
            "a \\\n b",
            "a (u8)1",
            "a 1e5",
            "a true",
            "a 007",
            "a\r\nb",
            "a{ }",
            "a x = 1",
            "a \"\\/\"",
            "a \u{a0}b",
            "}",
            "a {",
            "a \"unterminated",
        ] {
            assert!(parse(text).is_none(), "{text:?}");
        }
    }
}
