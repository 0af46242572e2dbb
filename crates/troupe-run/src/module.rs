//! The one contract every task module follows: decode the rendered arguments into a
//! typed request, `check` the host and return a plan, `apply` exactly that plan. The
//! executor owns the check → apply state machine, `--check` and `--diff`; a module
//! never learns which mode it runs in, so check mode cannot drift from a real run.

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use troupe_dsl::registry::ModuleSpec;

use crate::connection::{ConnError, Connection};
use crate::modules::args::Reader;

/// Rendered module arguments (templates already expanded for this host and item).
pub type Args = serde_json::Map<String, serde_json::Value>;

/// What a module may use while it runs on one host.
pub struct TaskCx<'a> {
    /// Inventory name of the host the task is for.
    pub host: &'a str,
    /// The host the work happens on (the delegate, with `delegate-to`).
    pub conn: &'a Arc<dyn Connection>,
    /// The controller itself, for modules that keep state there (a CA key, fetched files).
    pub controller: &'a Arc<dyn Connection>,
    /// Folders searched for `src` files and templates, most specific first
    /// (role, playbook, top-level), each holding `files/` and `templates/`.
    pub search_dirs: &'a [PathBuf],
    /// Renders a template file (found through `search_dirs`) with this host's vars.
    pub render: &'a (dyn Fn(&str) -> Result<String, TaskError> + Send + Sync),
    /// Evaluates a template expression (`etcd_members | length`) with this host's vars,
    /// for modules such as `debug var=` that name a variable rather than a value.
    pub eval: &'a (dyn Fn(&str) -> Result<serde_json::Value, TaskError> + Send + Sync),
}

impl TaskCx<'_> {
    /// Find `rel` (a `src` argument) under `sub` (`files` or `templates`) of the
    /// search dirs, most specific first; an absolute path is taken as is.
    pub fn find_file(&self, sub: &str, rel: &str) -> Result<PathBuf, TaskError> {
        let path = std::path::Path::new(rel);
        if path.is_absolute() {
            return if path.exists() {
                Ok(path.to_path_buf())
            } else {
                Err(TaskError::failed(format!(
                    "{rel} does not exist on the controller"
                )))
            };
        }
        for dir in self.search_dirs {
            for candidate in [dir.join(sub).join(rel), dir.join(rel)] {
                if candidate.is_file() {
                    return Ok(candidate);
                }
            }
        }
        let looked: Vec<String> = self
            .search_dirs
            .iter()
            .map(|d| d.join(sub).display().to_string())
            .collect();
        Err(TaskError::failed_help(
            format!("`{rel}` not found on the controller"),
            format!("looked in {}; put the file in one of them", looked.join(", ")),
        ))
    }
}

/// A file's content before and after, for `--diff`. Secrets never go in here: modules
/// that handle keys put a placeholder instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    pub path: String,
    pub before: String,
    pub after: String,
}

impl Diff {
    /// A `before` meaning "the current content of `path` on the host": the executor
    /// reads it only under `--diff`, so a normal run pays no round trip for a diff.
    pub const BEFORE_FROM_HOST: &'static str = "\0troupe:before-from-host\0";

    /// Text for a diff side: the bytes when they are UTF-8 text, else a placeholder.
    pub fn text(bytes: &[u8]) -> String {
        match std::str::from_utf8(bytes) {
            Ok(s) if !s.contains('\0') => s.to_string(),
            _ => format!("<binary, {} bytes>\n", bytes.len()),
        }
    }
}

/// The answer of `check`.
pub enum Check<P> {
    /// Already as asked; `Outcome` carries what `register` should see.
    Unchanged(Outcome),
    Change(Change<P>),
}

/// A change a module intends to make.
pub struct Change<P> {
    pub plan: P,
    /// One line, shown in `--check` and the progress output: "create /etc/etcd/etcd.env",
    /// "reissue server.pem: SAN 10.1.1.204 missing".
    pub summary: String,
    pub diffs: Vec<Diff>,
    /// What `apply` may change on the host.
    pub touches: Touches,
}

/// What applying a change may alter on the host. The executor keeps facts it fetched
/// ahead (batched stats) about everything else, so a run that writes twenty files does
/// not pay a fresh round trip of checks after each one. A module that cannot say
/// precisely (a command, a service) leaves the default, `Anything`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Touches {
    #[default]
    Anything,
    /// Only these paths and their parent directories (created with `mkdir -p`), and with
    /// `below`, everything under them too (a removal, a directory replaced by a link).
    Paths { paths: Vec<String>, below: bool },
}

impl<P> Change<P> {
    pub fn new(plan: P, summary: impl Into<String>) -> Self {
        Change {
            plan,
            summary: summary.into(),
            diffs: Vec::new(),
            touches: Touches::Anything,
        }
    }
    pub fn with_diff(mut self, diff: Diff) -> Self {
        self.diffs.push(diff);
        self
    }
    /// Declare that `apply` changes nothing but `path` (and its parents; with `below`,
    /// what lies under it).
    pub fn touching(mut self, path: impl Into<String>, below: bool) -> Self {
        self.touches = Touches::Paths {
            paths: vec![path.into()],
            below,
        };
        self
    }
}

/// What running (or not needing to run) a task produced.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub changed: bool,
    /// Set when the module judged the task failed but still has data to register
    /// (a command's exit code and output); `failed-when` may override it.
    pub failed: Option<String>,
    /// Registered as the task's result (`register`): stdout, rc, members...
    pub data: serde_json::Value,
    /// One line for the progress output.
    pub msg: Option<String>,
}

impl Outcome {
    pub fn changed(data: serde_json::Value) -> Self {
        Outcome {
            changed: true,
            data,
            ..Outcome::default()
        }
    }
    pub fn ok(data: serde_json::Value) -> Self {
        Outcome {
            changed: false,
            data,
            ..Outcome::default()
        }
    }
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum TaskError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Conn(#[from] ConnError),

    /// A template (file, argument or expression) failed for this host.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Render(Box<troupe_render::RenderError>),

    /// An etcd module's failure, keeping its own code (`troupe::etcd::would_lose_quorum`)
    /// and help, so JSON consumers can tell "refused to break quorum" from a timeout.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Etcd(Box<crate::etcd::EtcdError>),

    /// A pki module's failure, keeping its own code (`troupe::pki::...`) and help.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Pki(Box<crate::pki::PkiError>),

    #[error("argument `{arg}`: {msg}")]
    #[diagnostic(code(troupe::task::bad_arg))]
    BadArg { arg: String, msg: String },

    /// A rendered argument holds a NUL byte: no path, command or shell word can, and
    /// over SSH it would cut the string short or drop the connection. Literal NULs
    /// are refused by the checker; this catches the ones a template produced.
    #[error("argument `{arg}` holds a NUL byte after rendering")]
    #[diagnostic(
        code(troupe::task::nul_byte),
        help(
            "a NUL (\\0) cannot be part of a path, command or argument; find where the variable that fills `{arg}` gets it"
        )
    )]
    NulByte { arg: String },

    #[error("{msg}")]
    #[diagnostic(code(troupe::task::failed))]
    Failed {
        msg: String,
        #[help]
        help: Option<String>,
    },
}

impl From<crate::etcd::EtcdError> for TaskError {
    fn from(e: crate::etcd::EtcdError) -> Self {
        TaskError::Etcd(Box::new(e))
    }
}

impl From<crate::pki::PkiError> for TaskError {
    fn from(e: crate::pki::PkiError) -> Self {
        TaskError::Pki(Box::new(e))
    }
}

impl From<troupe_render::RenderError> for TaskError {
    fn from(e: troupe_render::RenderError) -> Self {
        TaskError::Render(Box::new(e))
    }
}

impl TaskError {
    pub fn failed(msg: impl Into<String>) -> Self {
        TaskError::Failed {
            msg: msg.into(),
            help: None,
        }
    }
    pub fn failed_help(msg: impl Into<String>, help: impl Into<String>) -> Self {
        TaskError::Failed {
            msg: msg.into(),
            help: Some(help.into()),
        }
    }
    pub fn bad_arg(arg: impl Into<String>, msg: impl Into<String>) -> Self {
        TaskError::BadArg {
            arg: arg.into(),
            msg: msg.into(),
        }
    }
}

/// A task module with typed request and plan. Implement this; the registry stores it
/// type-erased as [`DynModule`].
///
/// The shape of a module file (`modules/file.rs` is a small complete one):
///
/// - A `static SPEC: ModuleSpec` declares every argument once: name, [`ArgKind`], doc,
///   and, when the module has one, its typed default
///   (`default: Some(ArgDefault::Bool(false))`). The checker validates playbooks
///   against it and `cargo xtask codegen` renders it into `docs/modules.md`, defaults
///   included, so the spec is the only place an argument is described.
/// - An enum argument with a Rust enum implements [`Choice`] and declares
///   `ArgKind::Enum(T::NAMES)`; `decode` reads it with `args.choice::<T>("name")`.
/// - [`Module::decode`] reads through the [`Reader`] it is given: `args.bool("backup")`
///   is the value given or the spec's default; `opt_*` readers give `None` when the
///   argument is absent; `args.str("dest")` without a default is a required argument.
///   Never write a default as a literal in `decode` (`unwrap_or(false)`): it would be a
///   second copy that the docs do not show.
/// - A default that only applies after another source had its say (a cfssl CSR file
///   gives the key type unless `key-type=` does) stays `opt_*` in `decode`, and the
///   spec and the code that falls back share one named constant
///   (`default: Some(ArgDefault::Duration(DEFAULT_EXPIRY))`).
///
/// [`ArgKind`]: troupe_dsl::registry::ArgKind
/// [`Choice`]: crate::modules::args::Choice
#[async_trait]
pub trait Module: Send + Sync + 'static {
    type Spec: Send + Sync + 'static;
    type Plan: Send + 'static;

    fn spec(&self) -> &'static ModuleSpec;

    /// Turn rendered arguments into the typed request, rejecting bad values. `args`
    /// reads against [`Module::spec`], so absent arguments read as their defaults.
    fn decode(&self, args: &Reader<'_>) -> Result<Self::Spec, TaskError>;

    /// Read the host (never change it) and say what would change.
    async fn check(&self, spec: &Self::Spec, cx: &TaskCx<'_>) -> Result<Check<Self::Plan>, TaskError>;

    /// Make exactly the change `check` planned.
    async fn apply(&self, spec: &Self::Spec, plan: Self::Plan, cx: &TaskCx<'_>)
    -> Result<Outcome, TaskError>;
}

/// A planned change with its module's request and plan kept opaque to the executor.
pub struct DynChange {
    pub summary: String,
    pub diffs: Vec<Diff>,
    pub touches: Touches,
    state: Box<dyn Any + Send>,
}

pub enum DynCheck {
    Unchanged(Outcome),
    Change(DynChange),
}

/// Object-safe face of [`Module`], what the registry holds and the executor calls.
#[async_trait]
pub trait DynModule: Send + Sync {
    fn spec(&self) -> &'static ModuleSpec;
    async fn check(&self, args: &Args, cx: &TaskCx<'_>) -> Result<DynCheck, TaskError>;
    async fn apply(&self, change: DynChange, cx: &TaskCx<'_>) -> Result<Outcome, TaskError>;
}

#[async_trait]
impl<M: Module> DynModule for M {
    fn spec(&self) -> &'static ModuleSpec {
        Module::spec(self)
    }

    async fn check(&self, args: &Args, cx: &TaskCx<'_>) -> Result<DynCheck, TaskError> {
        let spec = self.decode(&Reader::new(Module::spec(self), args))?;
        match Module::check(self, &spec, cx).await? {
            Check::Unchanged(outcome) => Ok(DynCheck::Unchanged(outcome)),
            Check::Change(change) => Ok(DynCheck::Change(DynChange {
                summary: change.summary,
                diffs: change.diffs,
                touches: change.touches,
                state: Box::new((spec, change.plan)),
            })),
        }
    }

    async fn apply(&self, change: DynChange, cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
        let (spec, plan) = *change
            .state
            .downcast::<(M::Spec, M::Plan)>()
            .map_err(|_| TaskError::failed("internal: plan handed to the wrong module"))?;
        Module::apply(self, &spec, plan, cx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miette::Diagnostic;

    /// Domain errors keep their own code and help through `TaskError`, which is what
    /// `ErrorInfo::from_diagnostic` puts in the JSON output.
    #[test]
    fn etcd_and_pki_errors_keep_their_codes() {
        let etcd = TaskError::from(crate::etcd::EtcdError::WouldLoseQuorum {
            name: "podc03".into(),
            healthy: 1,
            needed: 2,
            voting: 3,
        });
        assert_eq!(
            etcd.code().unwrap().to_string(),
            "troupe::etcd::would_lose_quorum"
        );
        assert_eq!(
            etcd.help().unwrap().to_string(),
            "bring the unhealthy members back first, then remove podc03"
        );
        let pki = TaskError::from(crate::pki::PkiError::BadKey {
            source_name: "ca-key.pem".into(),
            detail: "garbage".into(),
        });
        assert_eq!(pki.code().unwrap().to_string(), "troupe::pki::bad_key");
        assert!(
            pki.to_string()
                .starts_with("ca-key.pem: not a usable private key")
        );
    }
}
