//! Module arguments: from a module node to checked [`Arg`]s, using the registry.
//!
//! The run crate owns the modules; what the checker knows about them is their
//! [`ModuleSpec`] (names, kinds, required, positional, `one_of`). A module node is read
//! the same way for every module:
//!
//! ```kdl
//! task "Write the manifest" {
//!     template src="etcd.yaml.j2" dest="/etc/kubernetes/manifests/etcd.yaml" mode=0o600
//! }
//! task "Say hello" { shell "echo hello" }          // first positional value
//! task "Run it" {
//!     command "etcdctl member list" {
//!         env { ETCDCTL_API "3" }                   // a child holds a list or map
//!     }
//! }
//! ```
//!
//! Every value is checked against its [`ArgKind`] now, before any host is touched,
//! except strings holding `{{ .. }}`: those are rendered per host and checked again by
//! the module. Their template syntax is still checked here.

use indexmap::IndexMap;
use kdl::{KdlEntry, KdlNode};
use miette::SourceSpan;
use minijinja::Environment;
use serde_json::Value;

use crate::decode::Cx;
use crate::decode::value::{node_value, scalar};
use crate::errors::{DslError, suggest};
use crate::model::Arg;
use crate::pattern::glob_match;
use crate::registry::{ArgKind, ModuleSpec};

/// Whether a string is a template that can only be checked once rendered.
pub(crate) fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%")
}

/// Checks the template syntax of every string inside `v`.
pub(crate) fn check_templates(
    cx: &mut Cx,
    env: &mut Environment<'static>,
    v: &Value,
    what: &str,
    span: SourceSpan,
) {
    match v {
        Value::String(s) if is_template(s) => {
            // compiling (not rendering) is all the check does; the template is dropped again
            let compiled = env.add_template_owned("<check>", s.clone());
            env.remove_template("<check>");
            if let Err(e) = compiled {
                cx.error(DslError::BadTemplate {
                    what: what.to_string(),
                    detail: e.detail().unwrap_or("syntax error").to_string(),
                    span,
                });
            }
        }
        Value::Array(items) => items.iter().for_each(|i| check_templates(cx, env, i, what, span)),
        Value::Object(map) => map.values().for_each(|i| check_templates(cx, env, i, what, span)),
        _ => {}
    }
}

/// Decodes and checks the arguments of a module node. `defaults` (from `module-defaults`,
/// already checked against this module) fill in what the node does not give, before the
/// required and one-of checks: a default never overrides an argument the task writes,
/// nor stands beside one of its `one_of` alternatives.
pub(crate) fn module_args(
    cx: &mut Cx,
    env: &mut Environment<'static>,
    spec: &ModuleSpec,
    node: &KdlNode,
    defaults: &IndexMap<String, Arg>,
) -> IndexMap<String, Arg> {
    let module = spec.name;
    let mut args: IndexMap<String, Arg> = IndexMap::new();
    let mut spans: Vec<SourceSpan> = Vec::new();
    let known: Vec<&str> = spec.args.iter().map(|a| a.name).collect();

    // an unknown argument that looks like a missing required one is reported once,
    // as the misspelling, not again as "missing"
    let mut suggested: Vec<&str> = Vec::new();
    let mut add = |cx: &mut Cx,
                   name: &str,
                   name_span: SourceSpan,
                   value: Option<Value>,
                   span: SourceSpan,
                   entry: Option<&KdlEntry>| {
        let Some(arg) = spec.arg(name) else {
            if let Some(close) = known.iter().find(|k| strsim::jaro_winkler(name, k) >= 0.8) {
                suggested.push(close);
            }
            cx.error(DslError::UnknownArgument {
                module: module.to_string(),
                name: name.to_string(),
                span: name_span,
                help: suggest(name, known.iter().copied())
                    .or_else(|| Some(format!("`{module}` takes no arguments"))),
            });
            return;
        };
        if let Some(i) = args.get_index_of(name) {
            cx.error(DslError::Duplicate {
                kind: "argument",
                name: name.to_string(),
                span: name_span,
                first: spans.get(i).copied(),
                help: Some("give each argument once".into()),
            });
            return;
        }
        let Some(value) = value else { return };
        check_kind(cx, env, module, arg.name, arg.kind, &value, span, entry);
        args.insert(
            name.to_string(),
            Arg {
                value,
                loc: cx.loc(span),
            },
        );
        spans.push(name_span);
    };

    let mut positional = 0;
    for e in node.entries() {
        match e.name() {
            None => {
                positional += 1;
                match spec.positional() {
                    Some(arg) if positional == 1 => {
                        let v = scalar(cx, e);
                        add(cx, arg.name, e.span(), v, e.span(), Some(e));
                    }
                    Some(arg) => cx.invalid(
                        "argument",
                        format!("`{module}` takes one positional value (`{}`)", arg.name),
                        e.span(),
                        Some("quote the whole value as one string, or use a child node for a list".into()),
                    ),
                    None => cx.invalid(
                        "argument",
                        format!("`{module}` takes no positional value"),
                        e.span(),
                        Some(format!(
                            "name the argument: `{module} name=value`; arguments: {}",
                            list(&known)
                        )),
                    ),
                }
            }
            Some(key) => {
                let v = scalar(cx, e);
                add(cx, key.value(), key.span(), v, e.span(), Some(e));
            }
        }
    }
    for child in node.children().map(|c| c.nodes()).unwrap_or_default() {
        let v = node_value(cx, child);
        add(
            cx,
            child.name().value(),
            child.name().span(),
            v,
            child.span(),
            None,
        );
    }

    let given: Vec<String> = args.keys().cloned().collect();
    for (name, arg) in defaults {
        let alternative_given = spec
            .one_of
            .iter()
            .any(|set| set.contains(&name.as_str()) && set.iter().any(|a| given.iter().any(|g| g == a)));
        if !args.contains_key(name) && !alternative_given {
            args.insert(name.clone(), arg.clone());
        }
    }

    for arg in spec.args.iter().filter(|a| a.required) {
        if !args.contains_key(arg.name) && !suggested.contains(&arg.name) {
            let how = if arg.positional {
                format!("add it: `{module} \"...\"` or `{}=...`", arg.name)
            } else {
                format!("add `{}=...`", arg.name)
            };
            let doc = if arg.doc.is_empty() {
                String::new()
            } else {
                format!(" ({})", arg.doc.trim_end_matches('.'))
            };
            cx.error(DslError::MissingArgument {
                module: module.to_string(),
                arg: arg.name.to_string(),
                span: node.name().span(),
                help: Some(format!("{how}{doc}")),
            });
        }
    }
    for set in spec.one_of {
        let found = set.iter().filter(|a| args.contains_key(**a)).count();
        if found != 1 {
            cx.error(DslError::OneOf {
                module: module.to_string(),
                args: set
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                found,
                span: node.name().span(),
            });
        }
    }
    args
}

/// One `module-defaults "GLOB" { name value .. }` block: arguments every task whose
/// module the glob matches gets when it does not give them itself.
#[derive(Debug, Clone)]
pub(crate) struct ModuleDefaults {
    pub(crate) glob: String,
    pub(crate) args: IndexMap<String, Arg>,
}

impl ModuleDefaults {
    pub(crate) fn matches(&self, module: &str) -> bool {
        glob_match(&self.glob, module)
    }
}

/// Decodes a `module-defaults` node and checks each argument against every module of
/// `modules` the glob matches: a default one of them does not take, or of a type one
/// of them refuses, is an error here (not at the task that would receive it).
pub(crate) fn module_defaults(
    cx: &mut Cx,
    env: &mut Environment<'static>,
    modules: &[&ModuleSpec],
    node: &KdlNode,
) -> Option<ModuleDefaults> {
    cx.extra_args(
        node,
        1,
        "name the modules once and give the arguments as properties or children: `module-defaults \"etcd-*\" { endpoints \"..\" }`",
    );
    let (glob, span) = cx.name_arg(
        node,
        "a module name or glob",
        "`module-defaults \"etcd-*\" { .. }`",
    )?;
    let matched: Vec<&ModuleSpec> = modules
        .iter()
        .copied()
        .filter(|m| glob_match(&glob, m.name))
        .collect();
    if matched.is_empty() {
        let names = modules.iter().map(|m| m.name);
        let help = if crate::pattern::is_glob(&glob) {
            Some(format!(
                "the glob is matched against module names: {}",
                list(&names.collect::<Vec<_>>())
            ))
        } else {
            suggest(&glob, names)
        };
        cx.error(DslError::NoModuleMatches { glob, span, help });
        return None;
    }
    let matched_names: Vec<&str> = matched.iter().map(|m| m.name).collect();
    let mut args: IndexMap<String, Arg> = IndexMap::new();
    let mut spans: Vec<SourceSpan> = Vec::new();
    let mut add = |cx: &mut Cx,
                   name: &str,
                   name_span: SourceSpan,
                   value: Option<Value>,
                   span: SourceSpan,
                   entry: Option<&KdlEntry>| {
        if let Some(i) = args.get_index_of(name) {
            cx.error(DslError::Duplicate {
                kind: "argument",
                name: name.to_string(),
                span: name_span,
                first: spans.get(i).copied(),
                help: Some("give each argument once".into()),
            });
            return;
        }
        let lacking: Vec<&str> = matched
            .iter()
            .filter(|m| m.arg(name).is_none())
            .map(|m| m.name)
            .collect();
        if !lacking.is_empty() {
            let help = if lacking.len() == matched.len() {
                let known: Vec<&str> = {
                    let mut k: Vec<&str> = Vec::new();
                    for a in matched.iter().flat_map(|m| m.args) {
                        if !k.contains(&a.name) {
                            k.push(a.name);
                        }
                    }
                    k
                };
                suggest(name, known)
            } else {
                Some(format!(
                    "`{glob}` matches {}: narrow it to the modules that take `{name}`, or give `{name}` in their tasks",
                    list(&matched_names)
                ))
            };
            cx.error(DslError::UnknownDefault {
                glob: glob.clone(),
                name: name.to_string(),
                modules: list(&lacking),
                span: name_span,
                help,
            });
            return;
        }
        let Some(value) = value else { return };
        let mut kinds: Vec<ArgKind> = Vec::new();
        for m in &matched {
            let Some(arg) = m.arg(name) else { continue };
            if !kinds.contains(&arg.kind) {
                kinds.push(arg.kind);
                check_kind(cx, env, m.name, arg.name, arg.kind, &value, span, entry);
            }
        }
        args.insert(
            name.to_string(),
            Arg {
                value,
                loc: cx.loc(span),
            },
        );
        spans.push(name_span);
    };
    for e in node.entries() {
        if let Some(key) = e.name() {
            let v = scalar(cx, e);
            add(cx, key.value(), key.span(), v, e.span(), Some(e));
        }
    }
    for child in node.children().map(|c| c.nodes()).unwrap_or_default() {
        let v = node_value(cx, child);
        add(
            cx,
            child.name().value(),
            child.name().span(),
            v,
            child.span(),
            None,
        );
    }
    Some(ModuleDefaults { glob, args })
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn describe_json(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() > 40 => "a string".into(),
        Value::String(s) => format!("the string \"{s}\""),
        Value::Number(n) => format!("the number {n}"),
        Value::Bool(b) => format!("#{b}"),
        Value::Null => "#null".into(),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a map".into(),
    }
}

/// Whether any string in a value (or a map key) holds a NUL byte: no such string can
/// reach a host (sshd drops the connection, a shell drops the byte). The checker asks it
/// of literal arguments, the executor of rendered ones.
pub fn holds_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

#[allow(clippy::too_many_arguments)]
fn check_kind(
    cx: &mut Cx,
    env: &mut Environment<'static>,
    module: &str,
    name: &str,
    kind: ArgKind,
    value: &Value,
    span: SourceSpan,
    entry: Option<&KdlEntry>,
) {
    let what = format!("argument `{name}` of `{module}`");
    if holds_nul(value) {
        // No path, command or shell word can hold one: over SSH it cuts the string
        // short or drops the connection. Rendered values are checked by the executor.
        cx.invalid(
            &what,
            "it holds a NUL byte (\\u{0})",
            span,
            Some("remove the `\\u{0}` escape: no path, command or argument can contain a NUL".into()),
        );
        return;
    }
    if let Value::String(s) = value
        && is_template(s)
    {
        check_templates(cx, env, value, &what, span);
        return;
    }
    let wrong = |cx: &mut Cx, help: Option<String>| {
        cx.error(DslError::WrongType {
            what: what.clone(),
            expected: kind.describe(),
            found: describe_json(value),
            span,
            help,
        })
    };
    match kind {
        ArgKind::Any => check_templates(cx, env, value, &what, span),
        ArgKind::String | ArgKind::Path => match value {
            Value::String(s) if kind == ArgKind::Path && s.is_empty() => {
                cx.invalid(&what, "the path is empty", span, None);
            }
            Value::String(_) => {}
            Value::Number(n) if kind == ArgKind::String => wrong(cx, Some(format!("quote it: \"{n}\""))),
            Value::Bool(b) if kind == ArgKind::String => wrong(cx, Some(format!("quote it: \"{b}\""))),
            _ => wrong(cx, None),
        },
        ArgKind::Bool => match value {
            Value::Bool(_) => {}
            Value::String(s) if matches!(s.as_str(), "true" | "false" | "yes" | "no") => {
                let b = matches!(s.as_str(), "true" | "yes");
                wrong(
                    cx,
                    Some(format!(
                        "booleans are written `#true` and `#false` in KDL v2: write #{b}"
                    )),
                )
            }
            _ => wrong(cx, None),
        },
        ArgKind::Int => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => {}
            Value::String(s) if s.trim().parse::<i64>().is_ok() => {
                wrong(cx, Some(format!("write the number without quotes: {}", s.trim())))
            }
            _ => wrong(cx, None),
        },
        ArgKind::Mode => match value {
            Value::Number(n) => {
                let repr = entry
                    .and_then(|e| e.format())
                    .map(|f| f.value_repr.as_str())
                    .unwrap_or("0o");
                match n.as_u64() {
                    Some(m) if m > 0o7777 => cx.invalid(
                        &what,
                        format!("{m:#o} is not a file mode"),
                        span,
                        Some("modes go up to 0o7777".into()),
                    ),
                    Some(m) if !repr.starts_with("0o") => cx.invalid(
                        &what,
                        format!("file modes are octal, but {repr} is written in decimal"),
                        span,
                        Some(format!(
                            "write 0o{repr} (or \"{repr}\"); decimal {m} would mean mode {m:#o}"
                        )),
                    ),
                    Some(_) => {}
                    None => wrong(cx, None),
                }
            }
            Value::String(s) => {
                let digits = s.strip_prefix("0o").unwrap_or(s);
                let ok =
                    (3..=4).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
                if !ok {
                    cx.invalid(
                        &what,
                        format!("\"{s}\" is not an octal mode"),
                        span,
                        Some("write a mode like 0o644 or \"0644\"".into()),
                    );
                }
            }
            _ => wrong(cx, None),
        },
        ArgKind::Duration => match value {
            Value::Number(n) if n.is_u64() => {}
            Value::String(s) if crate::duration::parse_duration(s).is_some() => {}
            Value::String(s) => cx.invalid(
                &what,
                format!("`{s}` is not a duration"),
                span,
                Some("write a duration like \"2s\", \"500ms\", \"1m30s\" or \"1h\"".into()),
            ),
            _ => wrong(cx, None),
        },
        ArgKind::List => match value {
            Value::Array(_) => check_templates(cx, env, value, &what, span),
            _ => wrong(
                cx,
                Some(format!(
                    "write a list as `{name} \"a\" \"b\"` or `{name} {{ - \"a\"; - \"b\" }}`, or `(list){name} \"a\"` for one item"
                )),
            ),
        },
        ArgKind::Map => match value {
            Value::Object(_) => check_templates(cx, env, value, &what, span),
            _ => wrong(
                cx,
                Some(format!(
                    "write a map as `{name} key=\"value\"` or `{name} {{ key \"value\" }}`"
                )),
            ),
        },
        ArgKind::Enum(values) => match value {
            Value::String(s) if values.contains(&s.as_str()) => {}
            Value::String(s) => wrong(cx, suggest(s, values.iter().copied())),
            _ => wrong(cx, None),
        },
    }
}
