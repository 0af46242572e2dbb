//! Playbooks: plays, tasks, handlers, includes and roles, decoded and checked.
//!
//! ```kdl
//! play "Grow etcd" hosts=etcd serial=1 {
//!     vars { pki_dir "/etc/kubernetes/pki/etcd" }
//!     task "Write etcd manifest" notify="restart kubelet" {
//!         template src="etcd.yaml.j2" dest="/etc/kubernetes/manifests/etcd.yaml" mode=0o600
//!     }
//!     include "tasks/backup.kdl"
//!     role etcd-node { vars { etcd_version "3.4.23" } }
//!     handler "restart kubelet" { service name=kubelet state=restarted }
//! }
//! ```
//!
//! Decoding flattens a play into what the engine runs: includes are inlined and role
//! tasks expanded in place (each tagged with its [`RoleRef`]), role handlers join the
//! play's. Everything that can be known without an inventory is checked here: module
//! arguments against the registry, expressions compile, names are identifiers,
//! notified handlers exist, nothing is defined twice. What needs an inventory (do the
//! `hosts` patterns name real groups?) is [`check_against_inventory`].
//!
//! The only I/O is reading the files the playbook names (includes, role folders).
//!
//! Split along its seams: this file holds the play and the loader's state;
//! [`task`] the task node, its keywords and `module-defaults`; [`files`] includes,
//! roles and their entry points (everything that reads another file); [`inventory`]
//! the checks that need an inventory.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use kdl::{KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;
use minijinja::Environment;

use crate::LoadOptions;
use crate::args::{ModuleDefaults, is_template, module_args};
use crate::decode::value::{check_identifier, node_value, vars_node};
use crate::decode::{Cx, ReadError, read};
use crate::errors::{DslError, Problems, suggest};
use crate::model::{
    Arg, Expr, HostPattern, Inventory, Loop, Play, Playbook, RoleRef, Serial, Sources, Task, Vars,
};
use crate::registry::ModuleSpec;
use crate::source::SourceFile;

mod files;
mod inventory;
mod task;

use files::RoleFiles;
pub(crate) use inventory::check_against_inventory;

const PLAY_PROPS: &[&str] = &["hosts", "serial", "max-fail-percent"];
const PLAY_CHILDREN: &[&str] = &["vars", "module-defaults", "task", "role", "handler", "include"];
const TASK_FILE_NODES: &[&str] = &["task", "include", "role"];

/// Decodes playbook text; `path` names it and anchors relative includes and roles.
pub(crate) fn decode(
    path: &Path,
    text: &str,
    modules: &[ModuleSpec],
    opts: &LoadOptions,
) -> Result<Playbook, miette::Report> {
    let file = Arc::new(SourceFile::new(path, text));
    let mut cx = Cx::new(file.clone());
    let mut loader = Loader::new(modules, opts, &file);
    let mut plays = Vec::new();
    if let Some(doc) = cx.parse() {
        for node in doc.nodes() {
            match node.name().value() {
                "play" => {
                    if let Some(play) = loader.play(&mut cx, node) {
                        plays.push(play);
                    }
                }
                other => {
                    let help = if TASK_FILE_NODES.contains(&other) || other == "handler" {
                        Some(format!(
                            "`{other}` belongs inside a play: `play \"name\" hosts=all {{ {other} ... }}`"
                        ))
                    } else {
                        suggest(other, ["play"])
                    };
                    cx.error(DslError::UnknownNode {
                        name: other.to_string(),
                        context: "a playbook",
                        span: node.name().span(),
                        help,
                    });
                }
            }
        }
    }
    cx.problems.finish(&path.display().to_string())?;
    Ok(Playbook {
        path: path.to_path_buf(),
        plays,
        sources: loader.sources,
        secret_vars: std::mem::take(&mut cx.secrets),
    })
}

/// What a play collects while its nodes (and included files) are decoded.
#[derive(Default)]
struct PlayState {
    tasks: Vec<Task>,
    handlers: Vec<Task>,
    handler_names: HashMap<String, (Arc<SourceFile>, SourceSpan)>,
    notifies: Vec<(String, SourceSpan, Arc<SourceFile>)>,
    role_handlers: HashSet<PathBuf>,
    /// The play's `module-defaults` blocks, in the order written.
    module_defaults: Vec<ModuleDefaults>,
}

struct Loader<'a> {
    specs: &'a [ModuleSpec],
    modules: HashMap<&'static str, &'a ModuleSpec>,
    module_names: Vec<&'static str>,
    opts: &'a LoadOptions,
    env: Environment<'static>,
    sources: Sources,
    playbook_dir: PathBuf,
    /// Files being included right now (canonical paths), to catch cycles.
    stack: Vec<PathBuf>,
    roles: HashMap<PathBuf, Arc<RoleFiles>>,
}

impl<'a> Loader<'a> {
    fn new(modules: &'a [ModuleSpec], opts: &'a LoadOptions, main: &Arc<SourceFile>) -> Loader<'a> {
        let mut sources = Sources::default();
        sources.files.insert(main.path.clone(), main.text.clone());
        Loader {
            specs: modules,
            modules: modules.iter().map(|m| (m.name, m)).collect(),
            module_names: modules.iter().map(|m| m.name).collect(),
            opts,
            env: Environment::new(),
            sources,
            playbook_dir: main.dir(),
            stack: vec![canonical(&main.path)],
            roles: HashMap::new(),
        }
    }

    fn play(&mut self, cx: &mut Cx, node: &KdlNode) -> Option<Play> {
        cx.extra_args(
            node,
            1,
            "settings are properties: `play \"name\" hosts=etcd serial=1`",
        );
        let name = node
            .entries()
            .iter()
            .find(|e| e.name().is_none())
            .and_then(|e| cx.string(e, "the play name"));
        let mut hosts: Option<HostPattern> = None;
        let mut serial = None;
        let mut max_fail_percent = None;
        let mut seen = Vec::new();
        for e in node.entries() {
            let Some(key) = e.name() else { continue };
            if cx.repeated(&mut seen, key.value(), e.span()) {
                continue;
            }
            match key.value() {
                "hosts" => hosts = pattern(cx, e),
                "serial" => serial = serial_value(cx, e),
                "max-fail-percent" => {
                    max_fail_percent = cx.uint(e, "`max-fail-percent`", 100).map(|v| v as u8)
                }
                other => cx.unknown_prop("play", other, key.span(), PLAY_PROPS),
            }
        }
        if !seen.iter().any(|(k, _)| k == "hosts") {
            cx.error(DslError::Missing {
                node: "play".into(),
                what: "`hosts`".into(),
                span: node.name().span(),
                help: Some("say which hosts it runs on: `play \"name\" hosts=etcd { .. }` (`hosts=all` for every host)".into()),
            });
        }

        let mut state = PlayState::default();
        // module defaults first, wherever they are written: every task of the play
        // (role tasks and handlers too) gets them
        for child in node.children().map(|c| c.nodes()).unwrap_or_default() {
            if child.name().value() == "module-defaults"
                && let Some(d) = self.module_defaults(cx, child)
            {
                state.module_defaults.push(d);
            }
        }
        let mut vars = Vars::new();
        let mut vars_seen: Option<SourceSpan> = None;
        for child in node.children().map(|c| c.nodes()).unwrap_or_default() {
            match child.name().value() {
                "module-defaults" => {}
                "vars" => {
                    if let Some(first) = vars_seen {
                        cx.error(DslError::Duplicate {
                            kind: "block",
                            name: "vars".into(),
                            span: child.name().span(),
                            first: Some(first),
                            help: Some("merge the two `vars` blocks into one".into()),
                        });
                    } else {
                        vars_seen = Some(child.name().span());
                        vars_node(cx, child, &mut vars);
                    }
                }
                "handler" => {
                    if let Some(h) = self.task(cx, child, None, &mut state, true) {
                        self.add_handler(cx, &mut state, h, child);
                    }
                }
                "task" | "include" | "role" => self.task_file_node(cx, child, None, &mut state),
                other => self.unexpected(cx, child, other, "a play", PLAY_CHILDREN),
            }
        }
        self.check_notifies(cx, &mut state);
        let dir = self.playbook_dir.clone();
        Some(Play {
            name: name.unwrap_or_else(|| hosts.as_ref().map(|h| h.raw.clone()).unwrap_or_default()),
            hosts: hosts?,
            serial,
            max_fail_percent,
            vars,
            tasks: state.tasks,
            handlers: state.handlers,
            search_dirs: vec![dir.join("templates"), dir.join("files"), dir],
            loc: cx.loc(node.span()),
        })
    }

    fn unexpected(&mut self, cx: &mut Cx, node: &KdlNode, name: &str, context: &'static str, known: &[&str]) {
        if self.modules.contains_key(name) {
            cx.error(DslError::UnknownNode {
                name: name.to_string(),
                context,
                span: node.name().span(),
                help: Some(format!(
                    "a module runs inside a task: `task \"what it does\" {{ {name} ... }}`"
                )),
            });
        } else {
            cx.unknown_node(node, context, known);
        }
    }

    /// `task`, `include` or `role`, in a play or a task file.
    fn task_file_node(
        &mut self,
        cx: &mut Cx,
        node: &KdlNode,
        role: Option<&Arc<RoleRef>>,
        state: &mut PlayState,
    ) {
        match node.name().value() {
            "task" => {
                if let Some(t) = self.task(cx, node, role, state, false) {
                    state.tasks.push(t);
                }
            }
            "include" => self.include(cx, node, role, state),
            "role" => self.role(cx, node, state),
            _ => unreachable!("callers pass task file nodes only"),
        }
    }

    fn add_handler(&mut self, cx: &mut Cx, state: &mut PlayState, handler: Task, node: &KdlNode) {
        let span = node
            .entries()
            .iter()
            .find(|e| e.name().is_none())
            .map_or(node.name().span(), |e| e.span());
        if let Some((file, first)) = state.handler_names.get(&handler.name) {
            let first = Arc::ptr_eq(file, cx.file()).then_some(*first);
            let help = if first.is_none() {
                format!(
                    "the first is in {}; handler names must be unique in a play",
                    file.path.display()
                )
            } else {
                "handler names must be unique in a play: rename one".to_string()
            };
            cx.error(DslError::Duplicate {
                kind: "handler",
                name: handler.name.clone(),
                span,
                first,
                help: Some(help),
            });
            return;
        }
        state
            .handler_names
            .insert(handler.name.clone(), (cx.file().clone(), span));
        state.handlers.push(handler);
    }

    fn check_notifies(&mut self, cx: &mut Cx, state: &mut PlayState) {
        for (name, span, file) in std::mem::take(&mut state.notifies) {
            if state.handler_names.contains_key(&name) {
                continue;
            }
            let help = suggest(&name, state.handler_names.keys().map(String::as_str))
                .or_else(|| Some("define it in the play: `handler \"name\" { module ... }`".into()));
            cx.in_file(file, |cx| cx.error(DslError::UnknownHandler { name, span, help }));
        }
    }
}

fn pattern(cx: &mut Cx, e: &KdlEntry) -> Option<HostPattern> {
    let raw = cx.string(e, "`hosts`")?;
    match HostPattern::parse(&raw) {
        Ok(p) => Some(p),
        Err(err) => {
            let span = inner_span(e, &raw, Some(err.at.clone()));
            cx.error(DslError::BadPattern {
                pattern: raw,
                message: err.message,
                span,
            });
            None
        }
    }
}

fn serial_value(cx: &mut Cx, e: &KdlEntry) -> Option<Serial> {
    match e.value() {
        KdlValue::Integer(n) if *n >= 1 && *n <= u32::MAX as i128 => Some(Serial::Count(*n as usize)),
        KdlValue::String(s) => match s.strip_suffix('%').map(|p| p.trim().parse::<u8>()) {
            Some(Ok(p)) if (1..=100).contains(&p) => Some(Serial::Percent(p)),
            _ => {
                cx.invalid(
                    "`serial`",
                    format!("\"{s}\" is not a batch size"),
                    e.span(),
                    Some("write a count (`serial=1`) or a percentage (`serial=\"30%\"`, 1% to 100%)".into()),
                );
                None
            }
        },
        KdlValue::Integer(_) => {
            cx.invalid(
                "`serial`",
                "a batch needs at least one host",
                e.span(),
                Some("write `serial=1` or more".into()),
            );
            None
        }
        _ => {
            cx.wrong_type("`serial`", "a count or a percentage like \"30%\"", e);
            None
        }
    }
}

/// Narrows an error inside a string value to the characters it is about, when the
/// string is written plainly (no escapes) so offsets line up; else the whole entry.
fn inner_span(e: &KdlEntry, value: &str, range: Option<std::ops::Range<usize>>) -> SourceSpan {
    let whole = e.span();
    let Some(range) = range else { return whole };
    let Some(repr) = e.format().map(|f| f.value_repr.as_str()) else {
        return whole;
    };
    // the value must appear verbatim between symmetric delimiters: `x`, `"x"`, `#"x"#`
    let Some(lead) = repr.find(value) else {
        return whole;
    };
    if value.is_empty() || repr.len() != 2 * lead + value.len() {
        return whole;
    }
    let end = whole.offset() + whole.len();
    let Some(value_start) = end.checked_sub(repr.len() - lead) else {
        return whole;
    };
    let start = (value_start + range.start).min(end);
    let len = range
        .end
        .saturating_sub(range.start)
        .max(1)
        .min(end.saturating_sub(start));
    SourceSpan::from(start..start + len)
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}
