//! Render errors as the user sees them.
//!
//! minijinja reports a kind, a detail, the template name, a line and a byte range; an
//! operator needs to know *which file*, *which line* and *which name* is missing, with
//! the offending line underlined. This module turns minijinja's error into a
//! [`RenderError`] that carries the template source and a label, so the miette report
//! points straight at the problem. Template names that troupe synthesises for inline
//! strings and expressions are translated back to what the user wrote.

use std::path::PathBuf;
use std::sync::Arc;

use miette::{NamedSource, SourceSpan};
use minijinja::ErrorKind;

/// Everything that can go wrong while rendering a template, a string or an expression.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RenderError {
    /// A variable (or attribute, or item) the template uses has no value for this host.
    #[error("`{name}` is undefined in {template} at line {line}")]
    #[diagnostic(code(troupe::render::undefined), help("{help}"))]
    Undefined {
        /// The undefined expression as written, e.g. `etcd_version` or `hostvars[h].address`.
        name: String,
        /// Template name (or `<string>` / `<expression>` for inline text).
        template: String,
        line: usize,
        #[source_code]
        src: Option<Arc<NamedSource<String>>>,
        #[label("not defined for this host")]
        span: Option<SourceSpan>,
        help: String,
    },

    /// The template or expression does not parse.
    #[error("syntax error in {template} at line {line}: {detail}")]
    #[diagnostic(
        code(troupe::render::syntax),
        help("fix the template syntax; see docs/templates.md for the Jinja subset troupe supports")
    )]
    Syntax {
        template: String,
        line: usize,
        detail: String,
        #[source_code]
        src: Option<Arc<NamedSource<String>>>,
        #[label("{detail}")]
        span: Option<SourceSpan>,
    },

    /// No search directory holds a template of that name.
    #[error("template `{name}` not found")]
    #[diagnostic(
        code(troupe::render::not_found),
        help("looked in {searched}; put the file in one of these directories or fix the name")
    )]
    NotFound {
        name: String,
        /// The search directories, already formatted for the message.
        searched: String,
    },

    /// The template file exists but could not be read.
    #[error("could not read template {}", path.display())]
    #[diagnostic(
        code(troupe::render::read),
        help("check the file's permissions and that it is valid UTF-8")
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Evaluation failed: a filter rejected its input, a type mismatch, `fail(...)`.
    #[error("{detail} in {template} at line {line}")]
    #[diagnostic(code(troupe::render::eval), help("{help}"))]
    Eval {
        /// minijinja's error kind, e.g. `invalid operation`.
        kind: ErrorKind,
        detail: String,
        template: String,
        line: usize,
        #[source_code]
        src: Option<Arc<NamedSource<String>>>,
        #[label("{kind}")]
        span: Option<SourceSpan>,
        help: String,
    },

    /// The render did more work than [`crate::renderer::FUEL`] allows (a loop that
    /// practically never ends, or output of many megabytes).
    #[error("{template} does too much work at line {line}: stopped after {limit} units of fuel")]
    #[diagnostic(
        code(troupe::render::out_of_fuel),
        help(
            "a render may do about {limit} steps (instructions, or 64 bytes of output each); look for loops over large ranges or lists at this line (see \"Limits\" in docs/templates.md)"
        )
    )]
    OutOfFuel {
        template: String,
        line: usize,
        limit: u64,
        #[source_code]
        src: Option<Arc<NamedSource<String>>>,
        #[label("still running here")]
        span: Option<SourceSpan>,
    },

    /// An expression evaluated fine but its value cannot become data (e.g. a macro).
    #[error("the value of `{expr}` cannot be used as data: {detail}")]
    #[diagnostic(
        code(troupe::render::not_data),
        help("only strings, numbers, booleans, none, lists and maps can be passed to tasks")
    )]
    NotData { expr: String, detail: String },

    /// A variable's value, as written, is a template that failed: the variable is named,
    /// the cause is below.
    #[error("in the value of variable `{name}`: {cause}")]
    #[diagnostic(
        code(troupe::render::var),
        help(
            "a variable's value is a template, rendered once as written: for a literal `{{{{` or `{{%` (a password that holds one) write the value as `{{% raw %}}…{{% endraw %}}`; what it takes from other variables and registered results is data, never rendered again"
        )
    )]
    InVar { name: String, cause: Box<RenderError> },

    /// Variables whose values are templates refer to each other in a circle.
    #[error("variables refer to each other in a circle: {names}")]
    #[diagnostic(
        code(troupe::render::var_cycle),
        help("give one of them a value that does not use the others")
    )]
    Cycle { names: String },
}

impl RenderError {
    /// The template name this error is about, when it has one.
    pub fn template(&self) -> Option<&str> {
        match self {
            RenderError::Undefined { template, .. }
            | RenderError::Syntax { template, .. }
            | RenderError::OutOfFuel { template, .. }
            | RenderError::Eval { template, .. } => Some(template),
            RenderError::NotFound { name, .. } => Some(name),
            RenderError::InVar { cause, .. } => cause.template(),
            RenderError::Read { .. } | RenderError::NotData { .. } | RenderError::Cycle { .. } => None,
        }
    }

    /// The 1-based line in the template, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            RenderError::Undefined { line, .. }
            | RenderError::Syntax { line, .. }
            | RenderError::OutOfFuel { line, .. }
            | RenderError::Eval { line, .. } => Some(*line),
            RenderError::InVar { cause, .. } => cause.line(),
            _ => None,
        }
    }
}

/// How the renderer names a template in diagnostics, and where its text comes from.
pub(crate) struct Origin {
    /// Name shown to the user (`etcd.yaml.j2`, `<string>`, `<expression>`).
    pub display: String,
    /// Name for the source snippet header: the file path when known.
    pub source_name: String,
    /// The text the user wrote (for synthetic templates: without troupe's wrapper).
    pub text: String,
    /// Bytes troupe prepended to the user's text in the compiled template.
    pub offset: usize,
}

/// Converts a minijinja error into a [`RenderError`]; `origin` resolves a template name
/// (as minijinja knows it) into what the user should see.
pub(crate) fn convert(
    err: minijinja::Error,
    origin: &dyn Fn(&str, Option<&str>) -> Option<Origin>,
    searched: &dyn Fn() -> String,
) -> RenderError {
    // A failure inside an included or imported template is wrapped by minijinja
    // ("error in \"x.j2\"") with the real error as its source: report the innermost.
    let mut err = &err;
    while matches!(err.kind(), ErrorKind::BadInclude | ErrorKind::EvalBlock) {
        match std::error::Error::source(err).and_then(|s| s.downcast_ref::<minijinja::Error>()) {
            Some(inner) => err = inner,
            None => break,
        }
    }

    let kind = err.kind();
    let detail = err.detail().unwrap_or("").to_string();

    // A file that exists but cannot be read: our loader attaches the io failure.
    if let Some(io) = std::error::Error::source(err).and_then(|s| s.downcast_ref::<ReadFailure>()) {
        return RenderError::Read {
            path: io.path.clone(),
            source: std::io::Error::new(io.kind, io.message.clone()),
        };
    }
    if kind == ErrorKind::TemplateNotFound {
        let name = detail
            .strip_prefix("template \"")
            .and_then(|d| d.split('"').next())
            .unwrap_or(&detail)
            .to_string();
        return RenderError::NotFound {
            name,
            searched: searched(),
        };
    }

    let raw_name = err.name().map(str::to_string);
    let origin = origin(raw_name.as_deref().unwrap_or("<string>"), err.template_source());
    let line = err.line().unwrap_or(0);
    let (template, src, span, line) = match origin {
        Some(o) => {
            let span = err.range().and_then(|r| {
                let start = r.start.checked_sub(o.offset)?;
                let end = r.end.saturating_sub(o.offset).min(o.text.len());
                (start <= o.text.len()).then(|| SourceSpan::from(start..end.max(start)))
            });
            // For a synthetic template the wrapper sits on line 1, so lines match;
            // without a range, point at the start of the reported line.
            let span = span.or_else(|| line_span(&o.text, line));
            let src = Arc::new(NamedSource::new(o.source_name, o.text));
            (o.display, Some(src), span, line.max(1))
        }
        None => (
            raw_name.unwrap_or_else(|| "<string>".into()),
            None,
            None,
            line.max(1),
        ),
    };

    let about_undefined = kind == ErrorKind::UndefinedError || undefined_name(&detail).is_some();
    match kind {
        _ if about_undefined => {
            let snippet = src
                .as_ref()
                .zip(span)
                .and_then(|(s, sp)| s.inner().get(sp.offset()..sp.offset() + sp.len()))
                .map(str::to_string);
            let name = undefined_name(&detail)
                .or(snippet)
                .unwrap_or_else(|| "a value".into());
            let help = undefined_help(&name);
            RenderError::Undefined {
                name,
                template,
                line,
                src,
                span,
                help,
            }
        }
        ErrorKind::OutOfFuel => RenderError::OutOfFuel {
            template,
            line,
            limit: crate::renderer::FUEL,
            src,
            span,
        },
        ErrorKind::SyntaxError | ErrorKind::BadEscape | ErrorKind::InvalidDelimiter => RenderError::Syntax {
            template,
            line,
            detail: if detail.is_empty() {
                kind.to_string()
            } else {
                detail
            },
            src,
            span,
        },
        _ => {
            let help = match kind {
                ErrorKind::UnknownFilter | ErrorKind::UnknownFunction | ErrorKind::UnknownTest => {
                    "docs/templates.md lists the filters, functions and tests troupe provides".to_string()
                }
                ErrorKind::MissingArgument | ErrorKind::TooManyArguments => {
                    "check the arguments against the filter's entry in docs/templates.md".to_string()
                }
                _ => "see the message above; `{{ value | to_json }}` shows what a value holds".to_string(),
            };
            let detail = if detail.is_empty() {
                kind.to_string()
            } else {
                format!("{kind}: {detail}")
            };
            RenderError::Eval {
                kind,
                detail,
                template,
                line,
                src,
                span,
                help,
            }
        }
    }
}

/// Carried as the source of a minijinja error when a template file exists but cannot
/// be read, so that it is reported as [`RenderError::Read`].
#[derive(Debug)]
pub(crate) struct ReadFailure {
    pub path: PathBuf,
    pub kind: std::io::ErrorKind,
    pub message: String,
}
impl std::fmt::Display for ReadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}
impl std::error::Error for ReadFailure {}

/// What to do about an undefined name.
pub(crate) fn undefined_help(name: &str) -> String {
    format!(
        "define `{name}` for this host (inventory, group, play or task vars, or -e), \
         or give it a default: `{{{{ {name} | default(...) }}}}`"
    )
}

/// Pulls `foo.bar` out of minijinja's "`foo.bar` is undefined" detail.
fn undefined_name(detail: &str) -> Option<String> {
    let start = detail.find('`')? + 1;
    let len = detail[start..].find('`')?;
    let rest = &detail[start + len..];
    rest.starts_with("` is undefined")
        .then(|| detail[start..start + len].to_string())
}

fn line_span(text: &str, line: usize) -> Option<SourceSpan> {
    if line == 0 {
        return None;
    }
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let trimmed = l.trim_end_matches(['\n', '\r']);
            return Some(SourceSpan::from(offset..offset + trimmed.len()));
        }
        offset += l.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undefined_name_is_taken_from_the_backticks() {
        assert_eq!(
            undefined_name("`etcd_version` is undefined").as_deref(),
            Some("etcd_version")
        );
        assert_eq!(
            undefined_name("invalid operation (`a.b` is undefined, from line 3)").as_deref(),
            Some("a.b")
        );
        assert_eq!(undefined_name("something else"), None);
    }

    #[test]
    fn line_span_covers_the_line_without_newline() {
        let text = "a\nbcd\ne";
        let span = line_span(text, 2).unwrap();
        assert_eq!(&text[span.offset()..span.offset() + span.len()], "bcd");
    }
}
