//! Every mistake the language can report, and how they reach the user.
//!
//! Checking collects problems instead of stopping at the first (knuffel's `Context`): a
//! user fixing a playbook should see every mistake from one run. Each problem is a
//! [`DslError`] variant with a namespaced code (`troupe::dsl::unknown_module`), a label
//! on the exact span and help that says what to write instead. Problems can come from
//! several files (includes, roles), so each one travels with its own source
//! ([`Located`]); the loader returns them all under one parent [`Invalid`] diagnostic.
//!
//! Rendered with `miette::GraphicalReportHandler` this gives, per problem, the file,
//! line, column, a snippet with the label, and the help line.

use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode, SourceSpan};
use thiserror::Error;

use crate::source::SourceFile;

/// One problem in one file. The span always points into the file the problem is
/// reported against (see [`Located`]).
#[derive(Debug, Error, Diagnostic)]
pub enum DslError {
    #[error("{message}")]
    #[diagnostic(code(troupe::dsl::syntax))]
    Syntax {
        message: String,
        #[label("{label}")]
        span: SourceSpan,
        label: String,
        #[help]
        help: Option<String>,
    },

    #[error("unknown node `{name}` in {context}")]
    #[diagnostic(code(troupe::dsl::unknown_node))]
    UnknownNode {
        name: String,
        context: &'static str,
        #[label("not expected here")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("unknown module `{name}`")]
    #[diagnostic(code(troupe::dsl::unknown_module))]
    UnknownModule {
        name: String,
        #[label("no such module")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("module `{module}` has no argument `{name}`")]
    #[diagnostic(code(troupe::dsl::unknown_argument))]
    UnknownArgument {
        module: String,
        name: String,
        #[label("unknown argument")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("`{node}` has no property `{name}`")]
    #[diagnostic(code(troupe::dsl::unknown_property))]
    UnknownProperty {
        node: String,
        name: String,
        #[label("unknown property")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("{what} must be {expected}, found {found}")]
    #[diagnostic(code(troupe::dsl::wrong_type))]
    WrongType {
        what: String,
        expected: String,
        found: String,
        #[label("expected {expected}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("invalid {what}: {message}")]
    #[diagnostic(code(troupe::dsl::invalid_value))]
    InvalidValue {
        what: String,
        message: String,
        #[label("invalid")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("module `{module}` needs the argument `{arg}`")]
    #[diagnostic(code(troupe::dsl::missing_argument))]
    MissingArgument {
        module: String,
        arg: String,
        #[label("`{arg}` is missing")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("module `{module}` needs exactly one of {args}, found {found}")]
    #[diagnostic(code(troupe::dsl::one_of))]
    OneOf {
        module: String,
        args: String,
        found: usize,
        #[label("give exactly one of {args}")]
        span: SourceSpan,
    },

    #[error("`{node}` needs {what}")]
    #[diagnostic(code(troupe::dsl::missing))]
    Missing {
        node: String,
        what: String,
        #[label("{what} is missing")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("{kind} `{name}` is defined twice")]
    #[diagnostic(code(troupe::dsl::duplicate))]
    Duplicate {
        kind: &'static str,
        name: String,
        #[label("defined again here")]
        span: SourceSpan,
        #[label("first defined here")]
        first: Option<SourceSpan>,
        #[help]
        help: Option<String>,
    },

    #[error("host `{host}` is given two different values for {field}")]
    #[diagnostic(
        code(troupe::dsl::host_conflict),
        help(
            "a host may be listed in several groups, but its address and connection settings must agree: give them once, at its first appearance"
        )
    )]
    HostConflict {
        host: String,
        field: String,
        #[label("this value")]
        span: SourceSpan,
        #[label("conflicts with the first")]
        first: Option<SourceSpan>,
    },

    #[error("`{name}` is not a valid {what} name")]
    #[diagnostic(code(troupe::dsl::bad_identifier))]
    BadIdentifier {
        name: String,
        what: &'static str,
        #[label("not a snake_case identifier")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("`{keyword}` expression does not parse: {detail}")]
    #[diagnostic(code(troupe::dsl::bad_expression))]
    BadExpression {
        keyword: String,
        detail: String,
        #[label("{detail}")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("template in {what} does not parse: {detail}")]
    #[diagnostic(
        code(troupe::dsl::bad_template),
        help("values may hold `{{{{ expression }}}}` and `{{% tag %}}` template syntax, rendered per host")
    )]
    BadTemplate {
        what: String,
        detail: String,
        #[label("{detail}")]
        span: SourceSpan,
    },

    #[error("no handler named `{name}`")]
    #[diagnostic(code(troupe::dsl::unknown_handler))]
    UnknownHandler {
        name: String,
        #[label("notified here")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("role `{name}` not found")]
    #[diagnostic(code(troupe::dsl::unknown_role))]
    UnknownRole {
        name: String,
        #[label("no such role")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("role `{role}` has no entry point `{name}`")]
    #[diagnostic(code(troupe::dsl::unknown_entry_point))]
    UnknownEntryPoint {
        role: String,
        name: String,
        #[label("no such task file in the role")]
        span: SourceSpan,
        #[help]
        help: String,
    },

    #[error("`module-defaults \"{glob}\"` matches no module")]
    #[diagnostic(code(troupe::dsl::no_module_matches))]
    NoModuleMatches {
        glob: String,
        #[label("no module has this name")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("`{name}` in `module-defaults \"{glob}\"` is not an argument of {modules}")]
    #[diagnostic(code(troupe::dsl::unknown_default))]
    UnknownDefault {
        glob: String,
        name: String,
        modules: String,
        #[label("not taken by every module this block applies to")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },

    #[error("cannot read {what} `{path}`: {message}")]
    #[diagnostic(code(troupe::dsl::io))]
    Io {
        what: &'static str,
        path: String,
        message: String,
        #[label("referenced here")]
        span: Option<SourceSpan>,
    },

    #[error("{what} `{path}` is not UTF-8: byte 0x{byte:02x} at line {line}, column {column}")]
    #[diagnostic(
        code(troupe::dsl::not_utf8),
        help(
            "troupe reads playbooks, inventories and vars files as UTF-8 text: re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`), or remove the stray byte"
        )
    )]
    NotUtf8 {
        what: &'static str,
        path: String,
        byte: u8,
        line: usize,
        column: usize,
        #[label("not UTF-8")]
        span: SourceSpan,
    },

    #[error("children blocks `{{ }}` nest more than {max} deep")]
    #[diagnostic(
        code(troupe::dsl::too_deep),
        help(
            "troupe refuses deeper nesting before parsing, so a runaway file cannot crash it; flatten the structure (an `include`, a role, or a variable holding part of the value)"
        )
    )]
    TooDeep {
        max: usize,
        #[label("nesting level {} starts here", max + 1)]
        span: SourceSpan,
    },

    #[error("`{path}` includes itself")]
    #[diagnostic(
        code(troupe::dsl::include_cycle),
        help("an included file (or role) ends up including itself again; remove one of the includes")
    )]
    IncludeCycle {
        path: String,
        #[label("this include closes the cycle")]
        span: SourceSpan,
    },

    #[error("group `{name}` contains itself")]
    #[diagnostic(
        code(troupe::dsl::group_cycle),
        help("a group cannot be nested (directly or through other groups) inside itself")
    )]
    GroupCycle {
        name: String,
        #[label("nested here")]
        span: SourceSpan,
    },

    #[error("invalid host pattern `{pattern}`: {message}")]
    #[diagnostic(
        code(troupe::dsl::bad_pattern),
        help(
            "patterns are host or group names and globs joined by `:` or `,`; `&name` intersects, `!name` excludes: `etcd:!podc01`, `etcd:&control-plane`, `podc0*`"
        )
    )]
    BadPattern {
        pattern: String,
        message: String,
        #[label("{message}")]
        span: SourceSpan,
    },

    #[error("the inventory has no host or group `{name}`")]
    #[diagnostic(code(troupe::dsl::unknown_host))]
    UnknownHost {
        name: String,
        #[label("not in the inventory")]
        span: SourceSpan,
        #[help]
        help: Option<String>,
    },
}

impl DslError {
    /// Where the problem is, for sorting reports into file order.
    fn offset(&self) -> usize {
        self.labels()
            .and_then(|mut l| l.next())
            .map_or(0, |l: LabeledSpan| l.offset())
    }
}

/// A problem together with the file it is in, so that a report can span several files.
#[derive(Debug, Error)]
#[error("{error}")]
pub struct Located {
    pub error: DslError,
    src: NamedSource<Arc<str>>,
}

impl Diagnostic for Located {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.error.code()
    }
    fn severity(&self) -> Option<miette::Severity> {
        self.error.severity()
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.error.help()
    }
    fn url<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.error.url()
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.src)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.error.labels()
    }
}

/// What a loader returns when anything is wrong: every problem found, in file order.
#[derive(Debug, Error, Diagnostic)]
#[error("{path}: {}", count(.problems.len()))]
#[diagnostic(code(troupe::dsl::invalid))]
pub struct Invalid {
    pub path: String,
    #[related]
    pub problems: Vec<Located>,
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 problem".into()
    } else {
        format!("{n} problems")
    }
}

/// The collector every decoder writes into (the "context"): it records problems per
/// file and keeps going, and turns them into one report at the end.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    files: Vec<Arc<SourceFile>>,
    found: Vec<(usize, DslError)>,
    /// Where values of `(secret)` variables are written, per file: blanked out of the
    /// source snippets of the report.
    secret_spans: Vec<(usize, SourceSpan)>,
}

impl Problems {
    /// Registers a file and returns its index for [`Problems::push`].
    pub(crate) fn add_file(&mut self, file: &Arc<SourceFile>) -> usize {
        if let Some(i) = self.files.iter().position(|f| Arc::ptr_eq(f, file)) {
            return i;
        }
        self.files.push(file.clone());
        self.files.len() - 1
    }

    pub(crate) fn push(&mut self, file: usize, error: DslError) {
        self.found.push((file, error));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Marks `span` of `file` as a secret's value, never to be shown in a snippet.
    pub(crate) fn hide(&mut self, file: usize, span: SourceSpan) {
        self.secret_spans.push((file, span));
    }

    /// The source of file `i` as the report shows it: every secret's value overwritten
    /// with `*` byte for byte (line breaks kept), so the labels' byte spans and the line
    /// numbers stay right. A file that did not parse has no known secret spans: there,
    /// whatever follows `(secret)NAME` on its line is blanked instead.
    fn shown(&self, i: usize) -> NamedSource<Arc<str>> {
        let file = &self.files[i];
        let mut spans: Vec<(usize, usize)> = self
            .secret_spans
            .iter()
            .filter(|(f, _)| *f == i)
            .map(|(_, s)| (s.offset(), s.offset() + s.len()))
            .collect();
        let unparsed = self
            .found
            .iter()
            .any(|(f, e)| *f == i && matches!(e, DslError::Syntax { .. }));
        if unparsed {
            spans.extend(secret_lines(&file.text));
        }
        if spans.is_empty() {
            return file.named();
        }
        let mut bytes = file.text.as_bytes().to_vec();
        for (start, end) in spans {
            let end = end.min(bytes.len());
            for b in bytes.get_mut(start.min(end)..end).into_iter().flatten() {
                if *b != b'\n' && *b != b'\r' {
                    *b = b'*';
                }
            }
        }
        // Only whole bytes of the text became ASCII `*`: still UTF-8.
        let text =
            String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        NamedSource::new(file.path.display().to_string(), Arc::from(text)).with_language("kdl")
    }

    /// `Ok(())` when nothing was found, else one report headed by `main` (the file the
    /// user asked for) with every problem, sorted by file and position.
    pub(crate) fn finish(mut self, main: &str) -> Result<(), miette::Report> {
        if self.found.is_empty() {
            return Ok(());
        }
        self.found.sort_by_key(|(file, e)| (*file, e.offset()));
        let shown: Vec<NamedSource<Arc<str>>> = (0..self.files.len()).map(|i| self.shown(i)).collect();
        let problems = self
            .found
            .into_iter()
            .map(|(file, error)| Located {
                error,
                src: shown[file].clone(),
            })
            .collect();
        Err(miette::Report::new(Invalid {
            path: main.to_string(),
            problems,
        }))
    }
}

/// In text that did not parse, the byte ranges after each `(secret)NAME` to the end of
/// its line: the best guess at where a secret's value is written.
fn secret_lines(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("(secret)") {
        let rest = &text[at + "(secret)".len()..];
        let name_len = rest
            .find(|c: char| c.is_whitespace() || c == '=' || c == '"' || c == '{' || c == ';')
            .unwrap_or(rest.len());
        let start = at + "(secret)".len() + name_len;
        let end = text[start..].find('\n').map_or(text.len(), |n| start + n);
        out.push((start, end));
    }
    out
}

/// "did you mean `x`?" for a misspelt name, or the list of valid names when it is short
/// enough to read.
pub(crate) fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let candidates: Vec<&str> = candidates.into_iter().collect();
    let best = candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(name, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((_, c)) = best {
        return Some(format!("did you mean `{c}`?"));
    }
    if candidates.is_empty() {
        None
    } else if candidates.len() <= 16 {
        let list: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
        Some(format!("expected one of {}", list.join(", ")))
    } else {
        None
    }
}
