//! What the checker needs to know about task modules, without knowing their code.
//! The run crate owns the modules and hands their specs to the checker, so the DSL
//! crate can validate arguments (names, types, required) with no dependency on how a
//! module works; the same specs generate `docs/modules.md`.

use std::time::Duration;

/// A task module as the language sees it.
#[derive(Debug, Clone, Copy)]
pub struct ModuleSpec {
    pub name: &'static str,
    /// One line for listings and "did you mean".
    pub summary: &'static str,
    /// Longer Markdown text for the module reference.
    pub doc: &'static str,
    pub args: &'static [ArgSpec],
    /// Sets of arguments of which exactly one must be given (e.g. `src` or `content`).
    pub one_of: &'static [&'static [&'static str]],
    /// A KDL snippet showing the module in a task; it must check clean.
    pub example: &'static str,
}

impl ModuleSpec {
    pub fn arg(&self, name: &str) -> Option<&'static ArgSpec> {
        self.args.iter().find(|a| a.name == name)
    }

    /// The argument that may be written as the node's first positional value
    /// (`shell "echo hi"`).
    pub fn positional(&self) -> Option<&'static ArgSpec> {
        self.args.iter().find(|a| a.positional)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ArgSpec {
    pub name: &'static str,
    pub kind: ArgKind,
    pub required: bool,
    /// May be given as the first positional value of the module node.
    pub positional: bool,
    /// The value used when the argument is not given, typed like the argument. It is
    /// written only here: the module reads it through its argument reader and the
    /// reference (`docs/modules.md`) renders it, so the two cannot disagree.
    pub default: Option<ArgDefault>,
    pub doc: &'static str,
    /// A path on the host that the module's check stats. The scheduler stats every
    /// such path of a play's tasks in one batched round trip per host before the play,
    /// so the checks find their answers cached: the module's own declaration says
    /// which paths, so a new module cannot be forgotten by the prefetch.
    pub stat: bool,
}

impl ArgSpec {
    /// A `const` starting point so module files can write
    /// `ArgSpec { required: true, ..ArgSpec::new("dest", ArgKind::Path, "…") }`.
    pub const fn new(name: &'static str, kind: ArgKind, doc: &'static str) -> Self {
        ArgSpec {
            name,
            kind,
            required: false,
            positional: false,
            default: None,
            doc,
            stat: false,
        }
    }
}

/// A typed default value (see [`ArgSpec::default`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgDefault {
    Bool(bool),
    Int(u64),
    /// The value of a `String`, `Path` or `Enum` argument.
    Str(&'static str),
    Duration(Duration),
}

impl ArgDefault {
    /// The default as it would be written in a playbook: `#false`, `5`, `"ca"`, `"30s"`.
    pub fn render(&self) -> String {
        match self {
            ArgDefault::Bool(b) => format!("#{b}"),
            ArgDefault::Int(n) => n.to_string(),
            ArgDefault::Str(s) => format!("{s:?}"),
            ArgDefault::Duration(d) => format!("\"{}\"", crate::duration::format_duration(*d)),
        }
    }

    /// Whether this default is a value of `kind` (an enum default is one of its words).
    pub fn fits(&self, kind: ArgKind) -> bool {
        match (self, kind) {
            (ArgDefault::Bool(_), ArgKind::Bool) | (ArgDefault::Int(_), ArgKind::Int) => true,
            (ArgDefault::Duration(_), ArgKind::Duration) => true,
            (ArgDefault::Str(_), ArgKind::String | ArgKind::Path) => true,
            (ArgDefault::Str(s), ArgKind::Enum(words)) => words.contains(s),
            _ => false,
        }
    }
}

/// Argument types the checker can verify before any host is touched. A string holding
/// `{{ ... }}` is accepted for every kind and checked again after rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    String,
    Path,
    Bool,
    Int,
    /// File mode: an integer (`0o644`) or an octal string (`"0644"`).
    Mode,
    /// `"2s"`, `"500ms"`, `"1m30s"`, or an integer number of seconds.
    Duration,
    List,
    Map,
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
    /// Anything (e.g. `debug var=`).
    Any,
}

impl ArgKind {
    pub fn describe(&self) -> String {
        match self {
            ArgKind::String => "a string".into(),
            ArgKind::Path => "a path".into(),
            ArgKind::Bool => "#true or #false".into(),
            ArgKind::Int => "an integer".into(),
            ArgKind::Mode => "a file mode like 0o644 or \"0644\"".into(),
            ArgKind::Duration => "a duration like \"2s\" or \"1m30s\"".into(),
            ArgKind::List => "a list".into(),
            ArgKind::Map => "a map".into(),
            ArgKind::Enum(values) => format!("one of {}", values.join(", ")),
            ArgKind::Any => "any value".into(),
        }
    }
}
