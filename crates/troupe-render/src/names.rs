//! The filter, test and function names a template or expression uses, found without
//! rendering it.
//!
//! minijinja resolves names only when the instruction runs, so a template with an
//! unknown filter (`| json_query`, an Ansible filter troupe does not have) or test
//! (`is finished`) compiles fine and fails on the host, after earlier tasks changed
//! hosts. The checker needs those names up front: this is a small lexer over the
//! template's `{{ }}` and `{% %}` blocks (strings, comments and `{% raw %}` skipped)
//! that reports `| name` and `{% filter name %}` as filters, `is [not] name` as tests
//! and `name(` (not after a `.`) as functions. Names a template declares itself
//! (macros, imports, `set`, loop variables) are never reported as functions.

/// What a used name must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    Filter,
    Test,
    Function,
}

impl NameKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::Filter => "filter",
            NameKind::Test => "test",
            NameKind::Function => "function",
        }
    }
}

/// One use of a name, at a byte offset of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedName {
    pub kind: NameKind,
    pub name: String,
    pub offset: usize,
}

/// Names that are never looked up as globals even when called.
const SPECIAL: &[&str] = &["caller", "super", "self", "loop", "varargs", "kwargs"];
/// Words of the expression language itself: `not (a)`, `x in (list)` are not calls.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "is",
    "if",
    "else",
    "elif",
    "true",
    "false",
    "none",
    "True",
    "False",
    "None",
    "as",
    "import",
    "with",
    "without",
    "context",
    "ignore",
    "missing",
    "recursive",
];
/// Statements whose identifiers (may) declare names.
const DECLARING: &[&str] = &["macro", "from", "import", "set", "with", "for", "call"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok<'a> {
    Ident(&'a str),
    Punct(u8),
    Str,
}

/// The names `src` uses. `expr` says whether `src` is a bare expression (`when`) rather
/// than template text.
pub fn used_names(src: &str, expr: bool) -> Vec<UsedName> {
    let b = src.as_bytes();
    let mut regions: Vec<(Vec<(Tok<'_>, usize)>, bool)> = Vec::new();
    if expr {
        regions.push((lex(src, 0, b.len(), None).0, false));
    } else {
        let mut i = 0;
        while i + 1 < b.len() {
            match (b[i], b[i + 1]) {
                (b'{', b'#') => {
                    i = find(b, i + 2, b"#}").map_or(b.len(), |e| e + 2);
                }
                (b'{', b'{') => {
                    let (toks, end) = lex(src, i + 2, b.len(), Some(b"}}"));
                    regions.push((toks, false));
                    i = end;
                }
                (b'{', b'%') => {
                    let (toks, end) = lex(src, i + 2, b.len(), Some(b"%}"));
                    let raw = matches!(toks.first(), Some((Tok::Ident("raw"), _)));
                    regions.push((toks, true));
                    i = end;
                    if raw {
                        // skip to `{% endraw %}` (with or without `-`)
                        let mut j = i;
                        i = b.len();
                        while let Some(start) = find(b, j, b"{%") {
                            let rest = src[start + 2..].trim_start_matches(['-', '+']).trim_start();
                            if rest.starts_with("endraw") {
                                i = start;
                                break;
                            }
                            j = start + 2;
                        }
                    }
                }
                _ => i += 1,
            }
        }
    }

    let mut declared: Vec<&str> = SPECIAL.to_vec();
    for (toks, stmt) in &regions {
        if *stmt
            && let Some((Tok::Ident(first), _)) = toks.first()
            && DECLARING.contains(first)
        {
            declared.extend(toks.iter().filter_map(|(t, _)| match t {
                Tok::Ident(n) => Some(*n),
                _ => None,
            }));
        }
    }

    let mut out = Vec::new();
    for (toks, stmt) in &regions {
        for (k, (tok, offset)) in toks.iter().enumerate() {
            let Tok::Ident(name) = *tok else { continue };
            let prev = k.checked_sub(1).map(|p| toks[p].0);
            let prev2 = k.checked_sub(2).map(|p| toks[p].0);
            let next = toks.get(k + 1).map(|t| t.0);
            let kind = match (prev, prev2) {
                (Some(Tok::Punct(b'|')), _) => Some(NameKind::Filter),
                (Some(Tok::Ident("filter")), _) if *stmt && k == 1 => Some(NameKind::Filter),
                (Some(Tok::Ident("is")), _) if name != "not" => Some(NameKind::Test),
                (Some(Tok::Ident("not")), Some(Tok::Ident("is"))) => Some(NameKind::Test),
                (Some(Tok::Punct(b'.')), _) => None,
                _ if next == Some(Tok::Punct(b'('))
                    && !declared.contains(&name)
                    && !KEYWORDS.contains(&name) =>
                {
                    Some(NameKind::Function)
                }
                _ => None,
            };
            if let Some(kind) = kind {
                out.push(UsedName {
                    kind,
                    name: name.to_string(),
                    offset: *offset,
                });
            }
        }
    }
    out
}

fn find(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    (from..b.len().saturating_sub(pat.len() - 1)).find(|&i| b[i..].starts_with(pat))
}

/// Tokens from `start` up to the closing delimiter `close` (outside strings), and the
/// offset after it (the end of the text when it is missing).
fn lex<'a>(src: &'a str, start: usize, end: usize, close: Option<&[u8]>) -> (Vec<(Tok<'a>, usize)>, usize) {
    let b = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = start;
    // a leading `-`/`+` whitespace-control marker is not an operator
    if close.is_some() && matches!(b.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    while i < end {
        let c = b[i];
        if let Some(close) = close {
            if b[i..].starts_with(close) {
                return (toks, i + close.len());
            }
            if matches!(c, b'-' | b'+') && b[i + 1..].starts_with(close) {
                return (toks, i + 1 + close.len());
            }
        }
        match c {
            b'\'' | b'"' => {
                let at = i;
                i += 1;
                while i < end && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                toks.push((Tok::Str, at));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let at = i;
                while i < end && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                toks.push((Tok::Ident(&src[at..i]), at));
            }
            c if c.is_ascii_digit() => {
                while i < end && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                    i += 1;
                }
                toks.push((Tok::Str, i));
            }
            c if c.is_ascii_whitespace() => i += 1,
            c => {
                toks.push((Tok::Punct(c), i));
                i += 1;
            }
        }
    }
    (toks, end.min(b.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_renderer_knows_its_own_names_and_no_others() {
        let r = crate::Renderer::new(vec![]);
        let unknown: Vec<String> = r
            .unknown_names(
                "{{ x | combine(y) | to_json | default(1) | nosuch }}{% if a is changed or a is finished or a is defined %}{{ range(2) }}{{ nofn(1) }}{{ fail('x') }}{% endif %}",
                false,
            )
            .into_iter()
            .map(|u| format!("{} {}", u.kind.as_str(), u.name))
            .collect();
        assert_eq!(unknown, ["filter nosuch", "test finished", "function nofn"]);
    }

    fn names(src: &str, expr: bool) -> Vec<(NameKind, String)> {
        used_names(src, expr)
            .into_iter()
            .map(|u| (u.kind, u.name))
            .collect()
    }

    #[test]
    fn finds_filters_tests_and_functions() {
        use NameKind::*;
        assert_eq!(
            names(
                "a {{ x | combine(y) | to_json }} {% if r is changed %}{% endif %}",
                false
            ),
            [
                (Filter, "combine".into()),
                (Filter, "to_json".into()),
                (Test, "changed".into())
            ]
        );
        assert_eq!(
            names("r is not defined and range(3) | length > lookup('x').y(1)", true),
            [
                (Test, "defined".into()),
                (Function, "range".into()),
                (Filter, "length".into()),
                (Function, "lookup".into())
            ]
        );
        assert_eq!(
            names("{% filter upper %}x{% endfilter %}", false),
            [(Filter, "upper".into())]
        );
        let u = used_names("ab\n{{- x|nope -}}", false);
        assert_eq!((u[0].name.as_str(), u[0].offset), ("nope", 9));
    }

    #[test]
    fn skips_strings_comments_raw_and_declared_names() {
        assert!(names("{{ '| nope' ~ \"is nope\" }}", false).is_empty());
        assert!(names("{# {{ x | nope }} #}", false).is_empty());
        assert!(names("{% raw %}{{ x | nope }}{% endraw %}", false).is_empty());
        assert!(names("| nope is nope nope()", false).is_empty(), "plain text");
        assert!(
            names(
                "{% macro m(a) %}{{ caller() }}{% endmacro %}{{ m(1) }}{% from 'x' import f as g %}{{ g() }}",
                false
            )
            .is_empty()
        );
        assert!(
            names("{% set f = namespace() %}{{ f.x() }}", false)
                .iter()
                .all(|(_, n)| n == "namespace")
        );
    }
}
