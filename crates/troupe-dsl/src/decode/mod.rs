//! The second stage: from a parsed `KdlDocument` to the model, one file at a time.
//!
//! `kdl` gives us nodes, entries and spans but no meaning; its serde support is
//! experimental and loses the difference between arguments, properties and children,
//! which this language relies on. So decoding is explicit: each node kind has a function
//! that walks its entries once, and a handful of typed helpers here
//! ([`Cx::string`], [`Cx::bool`], [`Cx::uint`], [`Cx::duration`]) turn entries into Rust
//! values or record a [`DslError`] and return `None`. Decoding never stops at a problem;
//! a missing value just leaves a default behind, and [`Problems`] remembers what to say.
//!
//! [`Cx`] also tracks which file is being decoded, because includes and roles pull
//! other files into one playbook and every span must be reported against its own file.

pub(crate) mod depth;
pub(crate) mod fast;
pub(crate) mod value;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use crate::errors::{DslError, Problems, suggest};
use crate::model::Loc;
use crate::source::SourceFile;

/// The decoding context: where problems go, and the file being decoded.
pub(crate) struct Cx {
    pub(crate) problems: Problems,
    file: Arc<SourceFile>,
    file_idx: usize,
    /// Names of variables marked `(secret)` in any `vars` block decoded so far.
    pub(crate) secrets: indexmap::IndexSet<String>,
}

impl Cx {
    pub(crate) fn new(file: Arc<SourceFile>) -> Cx {
        let mut problems = Problems::default();
        let file_idx = problems.add_file(&file);
        Cx {
            problems,
            file,
            file_idx,
            secrets: indexmap::IndexSet::new(),
        }
    }

    pub(crate) fn file(&self) -> &Arc<SourceFile> {
        &self.file
    }

    /// Decodes another file (an include, a role's tasks) with `f`, then comes back.
    pub(crate) fn in_file<T>(&mut self, file: Arc<SourceFile>, f: impl FnOnce(&mut Cx) -> T) -> T {
        let idx = self.problems.add_file(&file);
        let prev = (
            std::mem::replace(&mut self.file, file),
            std::mem::replace(&mut self.file_idx, idx),
        );
        let out = f(self);
        (self.file, self.file_idx) = prev;
        out
    }

    pub(crate) fn error(&mut self, error: DslError) {
        self.problems.push(self.file_idx, error);
    }

    /// `span` of the current file holds a secret's value: never shown in a report.
    pub(crate) fn hide(&mut self, span: SourceSpan) {
        self.problems.hide(self.file_idx, span);
    }

    pub(crate) fn loc(&self, span: SourceSpan) -> Loc {
        self.file.loc(span)
    }

    /// Parses the current file's text as KDL v2; syntax errors are recorded. Plain text
    /// takes the [`fast`] path; anything else (and every error) goes through `kdl`.
    pub(crate) fn parse(&mut self) -> Option<KdlDocument> {
        let file_text = self.file.text.clone();
        let text = match depth::guard(&file_text, depth::MAX_DEPTH) {
            Ok(text) => text,
            Err(deep) => {
                self.error(DslError::TooDeep {
                    max: depth::MAX_DEPTH,
                    span: SourceSpan::from(deep.offset..deep.offset + 1),
                });
                return None;
            }
        };
        if let Some(doc) = fast::parse(&text) {
            return Some(doc);
        }
        // kdl is a third-party parser: should it ever panic on odd input, report that
        // as a syntax error rather than taking the whole run down.
        let parsed = std::panic::catch_unwind(|| KdlDocument::parse(&text));
        match parsed {
            Ok(Ok(doc)) => Some(doc),
            Ok(Err(err)) => {
                if err.diagnostics.is_empty() {
                    // never leave a failed parse unreported: callers rely on it
                    self.error(DslError::Syntax {
                        message: "invalid KDL".into(),
                        span: SourceSpan::from(0..0),
                        label: "here".into(),
                        help: None,
                    });
                }
                for d in err.diagnostics {
                    let span = clamp(d.span, text.len());
                    let found = self.file.slice(span).to_string();
                    let (message, label, help) = match v1_habit(&found) {
                        Some((message, label, help)) => (message, label, Some(help)),
                        None => (
                            d.message.unwrap_or_else(|| "invalid KDL".into()),
                            d.label.unwrap_or_else(|| "here".into()),
                            d.help,
                        ),
                    };
                    self.error(DslError::Syntax {
                        message,
                        span,
                        label,
                        help,
                    });
                }
                None
            }
            Err(_) => {
                self.error(DslError::Syntax {
                    message: "the KDL parser failed on this file".into(),
                    span: SourceSpan::from(0..0),
                    label: "here".into(),
                    help: Some("please report this input as a bug in troupe".into()),
                });
                None
            }
        }
    }

    // ---- typed entry helpers -------------------------------------------------------

    pub(crate) fn wrong_type(&mut self, what: &str, expected: &str, e: &KdlEntry) {
        let help = match e.value() {
            KdlValue::String(s) if expected.contains("#true") && is_bool_word(s) => {
                Some("booleans are written `#true` and `#false` in KDL v2".to_string())
            }
            KdlValue::String(s) if expected.contains("integer") && s.trim().parse::<i64>().is_ok() => {
                Some(format!("write the number without quotes: {}", s.trim()))
            }
            _ => None,
        };
        self.error(DslError::WrongType {
            what: what.to_string(),
            expected: expected.to_string(),
            found: describe(e.value()),
            span: e.span(),
            help,
        });
    }

    pub(crate) fn invalid(
        &mut self,
        what: &str,
        message: impl Into<String>,
        span: SourceSpan,
        help: Option<String>,
    ) {
        self.error(DslError::InvalidValue {
            what: what.to_string(),
            message: message.into(),
            span,
            help,
        });
    }

    pub(crate) fn string(&mut self, e: &KdlEntry, what: &str) -> Option<String> {
        match e.value() {
            KdlValue::String(s) => Some(s.clone()),
            _ => {
                self.wrong_type(what, "a string", e);
                None
            }
        }
    }

    pub(crate) fn bool(&mut self, e: &KdlEntry, what: &str) -> Option<bool> {
        match e.value() {
            KdlValue::Bool(b) => Some(*b),
            _ => {
                self.wrong_type(what, "#true or #false", e);
                None
            }
        }
    }

    /// A non-negative integer no larger than `max`.
    pub(crate) fn uint(&mut self, e: &KdlEntry, what: &str, max: u64) -> Option<u64> {
        match e.value() {
            KdlValue::Integer(i) if *i >= 0 && *i <= max as i128 => Some(*i as u64),
            KdlValue::Integer(_) => {
                self.invalid(what, format!("must be between 0 and {max}"), e.span(), None);
                None
            }
            _ => {
                self.wrong_type(what, "an integer", e);
                None
            }
        }
    }

    /// `"2s"`, `"1m30s"`, `"500ms"` or an integer number of seconds.
    pub(crate) fn duration(&mut self, e: &KdlEntry, what: &str) -> Option<Duration> {
        match e.value() {
            KdlValue::Integer(i) if *i >= 0 && *i <= u32::MAX as i128 => Some(Duration::from_secs(*i as u64)),
            KdlValue::String(s) => match crate::duration::parse_duration(s) {
                Some(d) => Some(d),
                None => {
                    self.invalid(
                        what,
                        format!("`{s}` is not a duration"),
                        e.span(),
                        Some("write a duration like \"2s\", \"500ms\", \"1m30s\" or \"1h\"".into()),
                    );
                    None
                }
            },
            _ => {
                self.wrong_type(what, "a duration like \"2s\"", e);
                None
            }
        }
    }

    /// Records an unknown property on `node`, suggesting one of `known`.
    pub(crate) fn unknown_prop(&mut self, node: &str, name: &str, span: SourceSpan, known: &[&str]) {
        self.error(DslError::UnknownProperty {
            node: node.to_string(),
            name: name.to_string(),
            span,
            help: suggest(name, known.iter().copied()),
        });
    }

    /// Records an unknown child node, suggesting one of `known`.
    pub(crate) fn unknown_node(&mut self, node: &KdlNode, context: &'static str, known: &[&str]) {
        let name = node.name().value();
        self.error(DslError::UnknownNode {
            name: name.to_string(),
            context,
            span: node.name().span(),
            help: suggest(name, known.iter().copied()),
        });
    }

    /// Reports every positional argument of `node` after the first `allowed`.
    pub(crate) fn extra_args(&mut self, node: &KdlNode, allowed: usize, what: &str) {
        for e in node.entries().iter().filter(|e| e.name().is_none()).skip(allowed) {
            let help = Some(match allowed {
                0 => format!("`{}` takes no positional values; {what}", node.name().value()),
                1 => format!("`{}` takes one positional value; {what}", node.name().value()),
                n => format!("`{}` takes {n} positional values; {what}", node.name().value()),
            });
            self.invalid("value", "unexpected positional value", e.span(), help);
        }
    }

    /// Reports children on a node that takes none.
    pub(crate) fn no_children(&mut self, node: &KdlNode) {
        if let Some(children) = node.children() {
            let span = children.span();
            self.invalid(
                "block",
                format!("`{}` takes no children", node.name().value()),
                span,
                Some("remove the `{ ... }` block".into()),
            );
        }
    }

    /// The node's first positional value as a name (a string), or a `Missing` error.
    pub(crate) fn name_arg(
        &mut self,
        node: &KdlNode,
        what: &str,
        example: &str,
    ) -> Option<(String, SourceSpan)> {
        match node.entries().iter().find(|e| e.name().is_none()) {
            Some(e) => self.string(e, what).map(|s| (s, e.span())),
            None => {
                self.error(DslError::Missing {
                    node: node.name().value().to_string(),
                    what: what.to_string(),
                    span: node.name().span(),
                    help: Some(format!("write it as the first value: {example}")),
                });
                None
            }
        }
    }

    /// Whether `name` (a property) was already seen on this node; reports the repeat.
    pub(crate) fn repeated(
        &mut self,
        seen: &mut Vec<(String, SourceSpan)>,
        name: &str,
        span: SourceSpan,
    ) -> bool {
        if let Some((_, first)) = seen.iter().find(|(n, _)| n == name) {
            let first = *first;
            self.error(DslError::Duplicate {
                kind: "property",
                name: name.to_string(),
                span,
                first: Some(first),
                help: Some("give each property once".into()),
            });
            return true;
        }
        seen.push((name.to_string(), span));
        false
    }
}

/// Why a loader could not get a file's text.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The file could not be read at all (missing, a folder, no permission).
    Io(String),
    /// The file was read but is not UTF-8: [`NotUtf8::problem`] locates the first bad byte.
    NotUtf8(NotUtf8),
}

/// A file that is not UTF-8, kept (lossily decoded) so its report can show where.
#[derive(Debug)]
pub(crate) struct NotUtf8 {
    /// The text with every invalid sequence replaced by U+FFFD. Up to `offset` it is
    /// byte for byte the file, so the offset and the line index stay right.
    lossy: String,
    /// Byte offset of the first invalid byte.
    offset: usize,
    /// That byte's value, shown in the message.
    byte: u8,
}

impl NotUtf8 {
    fn new(bytes: &[u8], err: std::str::Utf8Error) -> NotUtf8 {
        let offset = err.valid_up_to();
        NotUtf8 {
            lossy: String::from_utf8_lossy(bytes).into_owned(),
            offset,
            byte: bytes[offset],
        }
    }

    /// The file as the problems report shows it, and the problem to push against it.
    pub(crate) fn problem(self, path: &Path, what: &'static str) -> (Arc<SourceFile>, DslError) {
        let file = Arc::new(SourceFile::new(path, &self.lossy));
        let (line, column) = file.line_col(self.offset);
        let error = DslError::NotUtf8 {
            what,
            path: path.display().to_string(),
            byte: self.byte,
            line,
            column,
            // the replacement character U+FFFD is 3 bytes long in the lossy text
            span: SourceSpan::from(self.offset..self.offset + '\u{fffd}'.len_utf8()),
        };
        (file, error)
    }
}

/// Reads a file for a loader; a failure is a problem to report, not a panic. A file
/// that is not UTF-8 is reported with the line and column of its first bad byte (the
/// standard library's "stream did not contain valid UTF-8" names no place).
pub(crate) fn read(path: &Path) -> Result<String, ReadError> {
    let bytes = std::fs::read(path).map_err(|e| ReadError::Io(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| {
        let utf8 = e.utf8_error();
        ReadError::NotUtf8(NotUtf8::new(e.as_bytes(), utf8))
    })
}

fn clamp(span: SourceSpan, len: usize) -> SourceSpan {
    let start = span.offset().min(len);
    let end = (span.offset() + span.len()).min(len);
    SourceSpan::from(start..end)
}

fn is_bool_word(s: &str) -> bool {
    matches!(
        s,
        "true" | "false" | "yes" | "no" | "on" | "off" | "True" | "False"
    )
}

/// Recognises KDL v1 spellings that v2 rejects, under a syntax error's span: bare
/// `true`/`false`/`null`, `r"raw"` strings, the `\/` escape. Returns the message,
/// label and help to show instead of the parser's generic ones.
fn v1_habit(found: &str) -> Option<(String, String, String)> {
    let word = found.trim().trim_start_matches('=');
    if matches!(word, "true" | "false" | "null" | "inf" | "-inf" | "nan") {
        return Some((
            format!("`{word}` is not a value in KDL v2"),
            format!("write #{word}"),
            format!(
                "KDL v2 writes keywords with a `#`: `#{word}`; bare `{word}` is KDL v1 (for the string, quote it: \"{word}\")"
            ),
        ));
    }
    let raw = word.rsplit('=').next().unwrap_or(word);
    if let Some(rest) = raw
        .strip_prefix('r')
        .filter(|r| r.starts_with('"') || r.starts_with('#'))
    {
        let fence = "#".repeat(rest.chars().take_while(|c| *c == '#').count().max(1));
        return Some((
            "`r\"...\"` raw strings are KDL v1".into(),
            "KDL v1 raw string".into(),
            format!("KDL v2 writes raw strings with `#` only: {fence}\"...\"{fence}"),
        ));
    }
    if found.contains("\\/") {
        return Some((
            "`\\/` is not an escape in KDL v2".into(),
            "KDL v1 escape".into(),
            "write a plain `/`: KDL v2 dropped the `\\/` escape".into(),
        ));
    }
    None
}

/// How a value reads in an error message.
pub(crate) fn describe(v: &KdlValue) -> String {
    match v {
        KdlValue::String(s) if s.chars().count() > 40 => "a string".into(),
        KdlValue::String(s) => format!("the string \"{s}\""),
        KdlValue::Integer(i) => format!("the integer {i}"),
        KdlValue::Float(f) => format!("the number {f}"),
        KdlValue::Bool(b) => format!("#{b}"),
        KdlValue::Null => "#null".into(),
    }
}
