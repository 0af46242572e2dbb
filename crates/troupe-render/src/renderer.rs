//! The one place troupe turns templates and expressions into text and values.
//!
//! Rendering happens per host per task, so nothing is parsed twice: template files,
//! inline argument strings and `when`-style expressions are all compiled once and kept
//! in the minijinja environment's template cache, keyed by name. Inline strings and
//! expressions get synthetic names (never valid file names) that the loader below
//! recognises; an expression is compiled as `{% set RESULT = (EXPR) %}` so that its
//! value comes back with its native type (list, int, bool) rather than as text.
//!
//! Invariants: undefined values are errors (never empty strings), nothing is
//! HTML-escaped, and a trailing newline in a template file is kept.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use minijinja::syntax::SyntaxConfig;
use minijinja::{AutoEscape, Environment, ErrorKind, UndefinedBehavior, Value};
use serde_json::Value as Json;

use crate::context::Context;
use crate::error::{self, Origin, ReadFailure, RenderError};

/// Prefix of the synthetic name of an expression compiled by [`Renderer::eval`].
const EXPR_PREFIX: &str = "\u{0}troupe-expr:";
/// Prefix of the synthetic name of an inline string rendered by [`Renderer::render_str`].
const STR_PREFIX: &str = "\u{0}troupe-str:";
/// The variable an expression's value is stored in.
const RESULT: &str = "__troupe_result";
/// What an expression is wrapped in; its length is subtracted from error spans.
const WRAP_HEAD: &str = "{% set __troupe_result = (";
const WRAP_TAIL: &str = ") %}";

/// The work one render (a template file, an argument string or an expression, for one
/// host) may do, in minijinja fuel: about one unit per instruction executed and per 64
/// bytes of data produced. A million allows about a million instructions or 64 MB of
/// output, far beyond any configuration file, and stops a runaway template (nested
/// `range(100000)` loops) in well under a second instead of never. Documented in
/// `docs/templates.md`.
pub const FUEL: u64 = 1_000_000;

/// Renders template files, inline strings and expressions against a [`Context`].
///
/// Cheap to share: wrap it in an `Arc` and use it from every host's task.
pub struct Renderer {
    env: Environment<'static>,
    search_dirs: Arc<Vec<PathBuf>>,
    /// Template name → the file it was loaded from, for diagnostics.
    resolved: Arc<Mutex<HashMap<String, PathBuf>>>,
    lookups: Arc<crate::lookup::Lookups>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("search_dirs", &self.search_dirs)
            .finish_non_exhaustive()
    }
}

impl Renderer {
    /// A renderer that loads template files by name from `search_dirs`, first match
    /// wins (the engine passes the role's `templates/`, the playbook's `templates/`,
    /// then the top-level `templates/`). Each dir is searched as given.
    pub fn new(search_dirs: Vec<PathBuf>) -> Renderer {
        let search_dirs = Arc::new(search_dirs);
        let resolved: Arc<Mutex<HashMap<String, PathBuf>>> = Arc::default();

        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_syntax(
            SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .build()
                .expect("the default delimiters are valid"),
        );
        // Spans and undefined-origin tracking for diagnostics: costs nothing until an
        // error happens.
        env.set_debug(true);
        // A run renders a snapshot of the templates; no per-lookup stat() calls.
        env.set_auto_reload(false);
        // Without a budget a template can loop (or allocate) forever: `range(100000)`
        // nested twice never ends.
        env.set_fuel(Some(FUEL));
        crate::filters::register(&mut env);
        let lookups = Arc::new(crate::lookup::Lookups::default());
        crate::lookup::register(&mut env, &lookups);

        let dirs = search_dirs.clone();
        let seen = resolved.clone();
        env.set_loader(move |name| load(name, &dirs, &seen));

        Renderer {
            env,
            search_dirs,
            resolved,
            lookups,
        }
    }

    /// Sets the task's base folders (most specific first) that `lookup('file', NAME)`
    /// searches (`DIR/files/NAME`, then `DIR/NAME`) and that a relative
    /// `lookup('password', PATH)` is kept under (the first one).
    pub fn set_lookup_dirs(&self, dirs: Vec<PathBuf>) {
        *self.lookups.dirs.write().unwrap_or_else(|e| e.into_inner()) = dirs;
    }

    /// Installs what is called with every secret a lookup produces
    /// (`lookup('password')`), e.g. the engine's masker.
    pub fn on_secret(&self, sink: crate::SecretSink) {
        *self.lookups.on_secret.write().unwrap_or_else(|e| e.into_inner()) = Some(sink);
    }

    /// The directories template files are looked up in, in order.
    pub fn search_dirs(&self) -> &[PathBuf] {
        &self.search_dirs
    }

    /// Renders the template file `name` (looked up in the search dirs).
    pub fn render_file(&self, name: &str, ctx: &Context) -> Result<String, RenderError> {
        let tmpl = self.env.get_template(name).map_err(|e| self.convert(e, None))?;
        tmpl.render(ctx.to_value()).map_err(|e| self.convert(e, None))
    }

    /// Loads and compiles the template file `name` without rendering it, so syntax
    /// errors and missing files surface before any host is contacted. The compiled
    /// template stays cached for the run. (Templates it includes or imports are checked
    /// when it renders.)
    pub fn check_file(&self, name: &str) -> Result<(), RenderError> {
        self.env
            .get_template(name)
            .map(|_| ())
            .map_err(|e| self.convert(e, None))
    }

    /// Compiles an inline template string (a task argument) without rendering it.
    pub fn check_str(&self, src: &str) -> Result<(), RenderError> {
        if !is_template(src) {
            return Ok(());
        }
        self.env
            .get_template(&format!("{STR_PREFIX}{src}"))
            .map(|_| ())
            .map_err(|e| self.convert(e, Some((src, 0))))
    }

    /// Compiles a brace-less expression (`when`, `until`, ...) without evaluating it.
    pub fn check_expr(&self, expr: &str) -> Result<(), RenderError> {
        self.env
            .get_template(&format!("{EXPR_PREFIX}{expr}"))
            .map(|_| ())
            .map_err(|e| self.convert(e, Some((expr, WRAP_HEAD.len()))))
    }

    /// The filters, tests and functions `src` uses that this renderer does not
    /// provide, in order of use. `expr` says whether `src` is a bare expression (`when`)
    /// rather than template text. minijinja only resolves names when it runs them, so
    /// this is what lets the checker catch `| json_query` or `is finished` before any host
    /// is touched.
    pub fn unknown_names(&self, src: &str, expr: bool) -> Vec<crate::UsedName> {
        let mut known: HashMap<(crate::NameKind, String), bool> = HashMap::new();
        crate::names::used_names(src, expr)
            .into_iter()
            .filter(|u| {
                !*known
                    .entry((u.kind, u.name.clone()))
                    .or_insert_with(|| self.provides(u.kind, &u.name))
            })
            .collect()
    }

    /// The variables the template text `src` reads (top-level names, not defined by the
    /// template itself); `None` when it does not parse.
    pub fn referenced_vars(&self, src: &str) -> Option<std::collections::HashSet<String>> {
        self.env
            .template_from_str(src)
            .ok()
            .map(|t| t.undeclared_variables(false))
    }

    /// Whether the environment has a filter, test or function of that name: a probe
    /// render that fails with "unknown ..." only when it does not.
    fn provides(&self, kind: crate::NameKind, name: &str) -> bool {
        let probe = match kind {
            crate::NameKind::Filter => format!("{{{{ none | {name} }}}}"),
            crate::NameKind::Test => format!("{{{{ none is {name} }}}}"),
            crate::NameKind::Function => format!("{{{{ {name}() }}}}"),
        };
        match self.env.render_str(&probe, ()) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                ErrorKind::UnknownFilter | ErrorKind::UnknownTest | ErrorKind::UnknownFunction
            ),
        }
    }

    /// The path `name` resolves to, if a search dir holds it.
    pub fn find_file(&self, name: &str) -> Option<PathBuf> {
        self.search_dirs
            .iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }

    /// Renders an inline template string (a task argument). Strings without `{{`, `{%`
    /// or `{#` are returned unchanged without touching the template engine.
    pub fn render_str(&self, src: &str, ctx: &Context) -> Result<String, RenderError> {
        if !is_template(src) {
            return Ok(src.to_string());
        }
        let name = format!("{STR_PREFIX}{src}");
        let tmpl = self
            .env
            .get_template(&name)
            .map_err(|e| self.convert(e, Some((src, 0))))?;
        tmpl.render(ctx.to_value())
            .map_err(|e| self.convert(e, Some((src, 0))))
    }

    /// Renders every string inside `v` (lists and maps recursively; keys are left as
    /// they are). A string that is exactly one `{{ expr }}` becomes the expression's
    /// value with its own type, like Ansible: `"{{ groups.etcd }}"` is a list.
    pub fn render_value(&self, v: &Json, ctx: &Context) -> Result<Json, RenderError> {
        match v {
            Json::String(s) => {
                if let Some(expr) = single_expression(s) {
                    self.eval(expr, ctx)
                } else {
                    self.render_str(s, ctx).map(Json::String)
                }
            }
            Json::Array(items) => items
                .iter()
                .map(|i| self.render_value(i, ctx))
                .collect::<Result<Vec<_>, _>>()
                .map(Json::Array),
            Json::Object(map) => {
                let mut out = serde_json::Map::with_capacity(map.len());
                for (k, v) in map {
                    out.insert(k.clone(), self.render_value(v, ctx)?);
                }
                Ok(Json::Object(out))
            }
            other => Ok(other.clone()),
        }
    }

    /// Evaluates a Jinja expression written without braces (`groups.etcd | length > 1`)
    /// and returns its value as data. Undefined names are errors.
    pub fn eval(&self, expr: &str, ctx: &Context) -> Result<Json, RenderError> {
        let value = self.eval_value(expr, ctx)?;
        serde_json::to_value(&value).map_err(|e| RenderError::NotData {
            expr: expr.to_string(),
            detail: e.to_string(),
        })
    }

    /// Evaluates a condition (Ansible's `when`): the expression's truthiness. An
    /// undefined name is an error; write `x is defined` to test for presence.
    pub fn is_true(&self, expr: &str, ctx: &Context) -> Result<bool, RenderError> {
        let value = self.eval_value(expr, ctx)?;
        Ok(value.is_true())
    }

    fn eval_value(&self, expr: &str, ctx: &Context) -> Result<Value, RenderError> {
        let name = format!("{EXPR_PREFIX}{expr}");
        let origin = Some((expr, WRAP_HEAD.len()));
        let tmpl = self
            .env
            .get_template(&name)
            .map_err(|e| self.convert(e, origin))?;
        let captured = tmpl
            .render_captured(ctx.to_value())
            .map_err(|e| self.convert(e, origin))?;
        let value = captured.state().lookup(RESULT).unwrap_or_default();
        if value.is_undefined() {
            // Strict mode lets `set` store an undefined value; using it as data is where
            // it has to fail.
            return Err(RenderError::Undefined {
                name: expr.trim().to_string(),
                template: "<expression>".into(),
                line: 1,
                src: Some(Arc::new(miette::NamedSource::new("expression", expr.to_string()))),
                span: Some((0..expr.len()).into()),
                help: error::undefined_help(expr.trim()),
            });
        }
        Ok(value)
    }

    /// Turns a minijinja error into a diagnostic. `inline` is the user's text and the
    /// wrapper length when the failing template is a synthetic one.
    fn convert(&self, err: minijinja::Error, inline: Option<(&str, usize)>) -> RenderError {
        let origin = |name: &str, source: Option<&str>| -> Option<Origin> {
            if let Some(expr) = name.strip_prefix(EXPR_PREFIX) {
                return Some(Origin {
                    display: "<expression>".into(),
                    source_name: "expression".into(),
                    text: expr.to_string(),
                    offset: WRAP_HEAD.len(),
                });
            }
            if let Some(src) = name.strip_prefix(STR_PREFIX) {
                return Some(Origin {
                    display: "<string>".into(),
                    source_name: "string".into(),
                    text: src.to_string(),
                    offset: 0,
                });
            }
            let path = self.resolved.lock().ok()?.get(name).cloned();
            match (path, source) {
                (Some(path), source) => {
                    let text = match source {
                        Some(s) => s.to_string(),
                        None => std::fs::read_to_string(&path).ok()?,
                    };
                    Some(Origin {
                        display: name.to_string(),
                        source_name: path.display().to_string(),
                        text,
                        offset: 0,
                    })
                }
                // Not a file we loaded: a parse error of an inline expression (it is
                // checked on its own, without the wrapper, before it is compiled).
                (None, _) => inline.map(|(text, _)| Origin {
                    display: if inline.is_some_and(|(_, off)| off > 0) {
                        "<expression>".into()
                    } else {
                        "<string>".into()
                    },
                    source_name: if inline.is_some_and(|(_, off)| off > 0) {
                        "expression".into()
                    } else {
                        "string".into()
                    },
                    text: text.to_string(),
                    offset: 0,
                }),
            }
        };
        let searched = || {
            self.search_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        error::convert(err, &origin, &searched)
    }
}

/// The template loader: synthetic names for inline strings and expressions, files from
/// the search dirs for everything else.
fn load(
    name: &str,
    dirs: &[PathBuf],
    resolved: &Mutex<HashMap<String, PathBuf>>,
) -> Result<Option<String>, minijinja::Error> {
    if let Some(expr) = name.strip_prefix(EXPR_PREFIX) {
        // Check the expression on its own first: the wrapper would accept things like
        // `a, b` (a tuple) or `x) or (y` that are not one expression.
        Environment::empty().compile_expression(expr)?;
        return Ok(Some(format!("{WRAP_HEAD}{expr}{WRAP_TAIL}")));
    }
    if let Some(src) = name.strip_prefix(STR_PREFIX) {
        return Ok(Some(src.to_string()));
    }
    for dir in dirs {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                if let Ok(mut map) = resolved.lock() {
                    map.insert(name.to_string(), path);
                }
                return Ok(Some(text));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            // A directory of that name: keep looking in the next dir.
            Err(_) if path.is_dir() => continue,
            Err(e) => {
                return Err(minijinja::Error::new(
                    ErrorKind::TemplateNotFound,
                    format!("template {name:?} could not be read"),
                )
                .with_source(ReadFailure {
                    path,
                    kind: e.kind(),
                    message: e.to_string(),
                }));
            }
        }
    }
    Ok(None)
}

/// True when `s` contains template syntax at all.
pub(crate) fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// `"{{ expr }}"` → `Some("expr")` when the whole string is exactly one expression.
pub(crate) fn single_expression(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    if inner.contains("{{")
        || inner.contains("}}")
        || inner.contains("{%")
        || inner.contains("{#")
        || inner.trim().is_empty()
    {
        return None;
    }
    Some(inner.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_expression_only_matches_one_whole_expression() {
        assert_eq!(single_expression("{{ groups.etcd }}"), Some("groups.etcd"));
        assert_eq!(single_expression("{{x}}"), Some("x"));
        assert_eq!(single_expression("{{ a }} and {{ b }}"), None);
        assert_eq!(single_expression(" {{ a }}"), None);
        assert_eq!(single_expression("{{ a }}/x"), None);
        assert_eq!(single_expression("{{ }}"), None);
    }

    #[test]
    fn is_template_spots_all_three_delimiters() {
        assert!(is_template("a {{ b }}"));
        assert!(is_template("{% if x %}{% endif %}"));
        assert!(is_template("{# note #}"));
        assert!(!is_template("plain { text } here"));
    }
}
