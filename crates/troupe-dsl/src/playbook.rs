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

const PLAY_PROPS: &[&str] = &["hosts", "serial", "max-fail-percent"];
const PLAY_CHILDREN: &[&str] = &["vars", "module-defaults", "task", "role", "handler", "include"];
const TASK_FILE_NODES: &[&str] = &["task", "include", "role"];
/// Task keywords: each may be a property (`when="x"`) or a child node (`when "x"`).
const TASK_KEYWORDS: &[&str] = &[
    "when",
    "loop",
    "loop-var",
    "register",
    "notify",
    "tags",
    "changed-when",
    "failed-when",
    "ignore-errors",
    "retries",
    "delay",
    "until",
    "no-log",
    "run-once",
    "delegate-to",
    "timeout",
    "vars",
];
/// Ansible's default pause between retries.
const DEFAULT_DELAY: Duration = Duration::from_secs(5);
/// Attempts after the first when `until` is given without `retries` (Ansible's default).
const DEFAULT_UNTIL_RETRIES: u32 = 3;

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

struct RoleFiles {
    /// The default entry point: `tasks.kdl` or `tasks/main.kdl`, if the role has one.
    tasks: Option<PathBuf>,
    /// Every entry point `role NAME tasks="ENTRY"` may name, by name, sorted: the
    /// `.kdl` files in the role's folder (but `defaults.kdl` and `handlers.kdl`), then
    /// those in its `tasks/` folder.
    entries: Vec<(String, PathBuf)>,
    handlers: Option<PathBuf>,
    defaults: Vars,
    /// The `module-defaults` blocks of the role's `defaults.kdl`, in the order written.
    module_defaults: Vec<ModuleDefaults>,
}

impl RoleFiles {
    fn entry(&self, name: &str) -> Option<&PathBuf> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }

    /// The entry points as file names relative to the role folder, for help texts.
    fn entry_list(&self, dir: &Path) -> String {
        let names: Vec<String> = self
            .entries
            .iter()
            .map(|(_, p)| format!("`{}`", p.strip_prefix(dir).unwrap_or(p).display()))
            .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }
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

    fn module_defaults(&mut self, cx: &mut Cx, node: &KdlNode) -> Option<ModuleDefaults> {
        let specs: Vec<&ModuleSpec> = self.specs.iter().collect();
        crate::args::module_defaults(cx, &mut self.env, &specs, node)
    }

    /// The `module-defaults` arguments a task of `module` gets, each from the nearest
    /// scope that gives it: the task's role (its `defaults.kdl`), then the play; within
    /// a scope a later block wins over an earlier one. The task's own arguments win
    /// over all of them (`module_args`).
    fn defaults_for(
        &self,
        module: &str,
        role: Option<&Arc<RoleRef>>,
        state: &PlayState,
    ) -> IndexMap<String, Arg> {
        let role_blocks = role
            .and_then(|r| self.roles.get(&r.dir))
            .map(|f| f.module_defaults.as_slice())
            .unwrap_or_default();
        let mut out = IndexMap::new();
        for block in role_blocks.iter().rev().chain(state.module_defaults.iter().rev()) {
            if block.matches(module) {
                for (k, v) in &block.args {
                    out.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        out
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

    /// A `task` (or, with `handler`, a handler) node.
    fn task(
        &mut self,
        cx: &mut Cx,
        node: &KdlNode,
        role: Option<&Arc<RoleRef>>,
        state: &mut PlayState,
        handler: bool,
    ) -> Option<Task> {
        let kind = if handler { "handler" } else { "task" };
        cx.extra_args(
            node,
            1,
            &format!("keywords are properties: `{kind} \"name\" when=\"x\"`"),
        );
        let name_entry = node.entries().iter().find(|e| e.name().is_none());
        let name = name_entry.and_then(|e| cx.string(e, &format!("the {kind} name")));
        if handler && name_entry.is_none() {
            cx.error(DslError::Missing {
                node: "handler".into(),
                what: "a name".into(),
                span: node.name().span(),
                help: Some("tasks notify handlers by name: `handler \"restart kubelet\" { .. }`".into()),
            });
        }
        let mut task = Task {
            name: String::new(),
            module: String::new(),
            args: IndexMap::new(),
            when: None,
            loop_: None,
            loop_var: "item".into(),
            register: None,
            notify: vec![],
            tags: vec![],
            changed_when: None,
            failed_when: None,
            ignore_errors: false,
            retries: 0,
            delay: DEFAULT_DELAY,
            until: None,
            no_log: false,
            run_once: false,
            delegate_to: None,
            timeout: None,
            vars: Vars::new(),
            role: role.cloned(),
            loc: cx.loc(node.span()),
        };
        let mut seen: Vec<(String, SourceSpan)> = Vec::new();
        for e in node.entries() {
            let Some(key) = e.name() else { continue };
            if cx.repeated(&mut seen, key.value(), e.span()) {
                continue;
            }
            if key.value() == "vars" {
                cx.invalid(
                    "`vars`",
                    "task vars are a block",
                    e.span(),
                    Some("write `vars { name \"value\" }` inside the task".into()),
                );
                continue;
            }
            if !TASK_KEYWORDS.contains(&key.value()) {
                cx.unknown_prop(kind, key.value(), key.span(), TASK_KEYWORDS);
                continue;
            }
            self.keyword(cx, key.value(), e, &mut task, state);
        }
        let mut module: Option<&KdlNode> = None;
        for child in node.children().map(|c| c.nodes()).unwrap_or_default() {
            let cname = child.name().value();
            if TASK_KEYWORDS.contains(&cname) {
                if cx.repeated(&mut seen, cname, child.name().span()) {
                    continue;
                }
                self.keyword_node(cx, child, &mut task, state);
                continue;
            }
            if let Some(first) = module {
                cx.invalid(
                    "task",
                    format!(
                        "a {kind} runs one module, but `{}` follows `{}`",
                        cname,
                        first.name().value()
                    ),
                    child.name().span(),
                    Some("split it into two tasks".into()),
                );
                continue;
            }
            module = Some(child);
            match self.modules.get(cname).copied() {
                Some(spec) => {
                    let defaults = self.defaults_for(spec.name, role, state);
                    task.module = spec.name.to_string();
                    task.args = module_args(cx, &mut self.env, spec, child, &defaults);
                }
                None => {
                    let help = if ["task", "include", "role", "handler", "play"].contains(&cname) {
                        Some(format!("`{cname}` cannot be nested in a {kind}"))
                    } else {
                        suggest(
                            cname,
                            self.module_names
                                .iter()
                                .copied()
                                .chain(TASK_KEYWORDS.iter().copied()),
                        )
                    };
                    cx.error(DslError::UnknownModule {
                        name: cname.to_string(),
                        span: child.name().span(),
                        help,
                    });
                }
            }
        }
        if module.is_none() {
            cx.error(DslError::Missing {
                node: kind.into(),
                what: "a module".into(),
                span: node.name().span(),
                help: Some(format!(
                    "say what the {kind} does with one module node: `{kind} \"name\" {{ shell \"echo hi\" }}`"
                )),
            });
        }
        if task.until.is_some() && !seen.iter().any(|(k, _)| k == "retries") {
            task.retries = DEFAULT_UNTIL_RETRIES;
        }
        task.name = name.unwrap_or_else(|| task.module.clone());
        Some(task)
    }

    /// A keyword written as a child node: `when "x"`, `notify "a" "b"`, `loop { - 1 }`,
    /// `vars { .. }`.
    fn keyword_node(&mut self, cx: &mut Cx, node: &KdlNode, task: &mut Task, state: &mut PlayState) {
        let key = node.name().value();
        match key {
            "vars" => vars_node(cx, node, &mut task.vars),
            "loop" => {
                let args: Vec<&KdlEntry> = node.entries().iter().collect();
                if node.children().is_none()
                    && args.len() == 1
                    && args[0].name().is_none()
                    && args[0].value().is_string()
                {
                    self.keyword(cx, key, args[0], task, state);
                } else if let Some(v) = node_value(cx, node) {
                    match v {
                        serde_json::Value::Array(items) => {
                            for item in &items {
                                crate::args::check_templates(cx, &mut self.env, item, "a `loop` item", node.span());
                            }
                            task.loop_ = Some(Loop::Items(items));
                        }
                        _ => cx.invalid(
                            "`loop`",
                            "a loop needs a list or an expression",
                            node.span(),
                            Some("write `loop \"a\" \"b\"`, `loop { - \"a\" }`, or an expression: `loop \"groups.etcd\"`".into()),
                        ),
                    }
                }
            }
            "notify" | "tags" => {
                cx.no_children(node);
                let mut any = false;
                for e in node.entries() {
                    if e.name().is_some() {
                        cx.invalid(
                            &format!("`{key}`"),
                            "expected names",
                            e.span(),
                            Some(format!("write `{key} \"a\" \"b\"`")),
                        );
                        continue;
                    }
                    any = true;
                    self.keyword(cx, key, e, task, state);
                }
                if !any {
                    missing_value(cx, node);
                }
            }
            _ => {
                cx.no_children(node);
                let mut entries = node.entries().iter();
                match entries.next() {
                    Some(e) if e.name().is_none() => self.keyword(cx, key, e, task, state),
                    Some(e) => cx.invalid(
                        &format!("`{key}`"),
                        "expected a value",
                        e.span(),
                        Some(format!("write `{key} value`")),
                    ),
                    None => missing_value(cx, node),
                }
                for e in entries {
                    cx.invalid(&format!("`{key}`"), "takes one value", e.span(), None);
                }
            }
        }
    }

    /// One keyword value, from a property or a child node's argument.
    fn keyword(&mut self, cx: &mut Cx, key: &str, e: &KdlEntry, task: &mut Task, state: &mut PlayState) {
        let what = format!("`{key}`");
        match key {
            "when" => task.when = self.expr(cx, key, e),
            "until" => task.until = self.expr(cx, key, e),
            "changed-when" => task.changed_when = self.bool_or_expr(cx, key, e),
            "failed-when" => task.failed_when = self.bool_or_expr(cx, key, e),
            "loop" => task.loop_ = self.expr(cx, key, e).map(Loop::Expr),
            "loop-var" => {
                if let Some(v) = cx.string(e, &what)
                    && check_identifier(cx, &v, e.span(), "loop variable")
                {
                    task.loop_var = v;
                }
            }
            "register" => {
                if let Some(v) = cx.string(e, &what)
                    && check_identifier(cx, &v, e.span(), "registered variable")
                {
                    task.register = Some(v);
                }
            }
            "notify" => {
                if let Some(v) = cx.string(e, &what) {
                    state.notifies.push((v.clone(), e.span(), cx.file().clone()));
                    task.notify.push(v);
                }
            }
            "tags" => tags(cx, e, &mut task.tags),
            "ignore-errors" => task.ignore_errors = cx.bool(e, &what).unwrap_or(false),
            "no-log" => task.no_log = cx.bool(e, &what).unwrap_or(false),
            "run-once" => task.run_once = cx.bool(e, &what).unwrap_or(false),
            "retries" => task.retries = cx.uint(e, &what, 10_000).unwrap_or(0) as u32,
            "delay" => task.delay = cx.duration(e, &what).unwrap_or(DEFAULT_DELAY),
            "timeout" => {
                task.timeout = match cx.duration(e, &what) {
                    Some(d) if d.is_zero() => {
                        cx.invalid(&what, "a zero timeout would fail every command", e.span(), None);
                        None
                    }
                    d => d,
                }
            }
            "delegate-to" => {
                if let Some(v) = cx.string(e, &what) {
                    if v.trim().is_empty() {
                        cx.invalid(&what, "empty host name", e.span(), None);
                    } else {
                        if is_template(&v) {
                            let value = serde_json::Value::String(v.clone());
                            crate::args::check_templates(cx, &mut self.env, &value, &what, e.span());
                        }
                        task.delegate_to = Some(v);
                    }
                }
            }
            _ => unreachable!("TASK_KEYWORDS lists every keyword handled here"),
        }
    }

    /// `changed-when=#false` is a common shorthand for "never changed".
    fn bool_or_expr(&mut self, cx: &mut Cx, key: &str, e: &KdlEntry) -> Option<Expr> {
        match e.value() {
            KdlValue::Bool(b) => Some(Expr {
                src: if *b { "true".into() } else { "false".into() },
                loc: cx.loc(e.span()),
            }),
            _ => self.expr(cx, key, e),
        }
    }

    /// A template expression (no braces), compiled now so syntax errors surface early.
    fn expr(&mut self, cx: &mut Cx, key: &str, e: &KdlEntry) -> Option<Expr> {
        let src = match e.value() {
            // Ansible writes `loop: "{{ groups.etcd }}"`: a loop that is one whole
            // `{{ .. }}` means the expression inside
            KdlValue::String(s) if key == "loop" => match whole_template(s) {
                Some(inner) => inner.to_string(),
                None => s.clone(),
            },
            KdlValue::String(s) => s.clone(),
            _ => {
                cx.wrong_type(&format!("`{key}`"), "an expression string", e);
                return None;
            }
        };
        if src.trim().is_empty() {
            cx.invalid(&format!("`{key}`"), "the expression is empty", e.span(), None);
            return None;
        }
        if let Err(err) = self.env.compile_expression_owned(src.clone()) {
            let detail = err.detail().unwrap_or("syntax error").to_string();
            let span = inner_span(e, &src, err.range());
            let help = if src.contains("{{") {
                Some(format!(
                    "`{key}` is a bare expression, like Ansible's `when`: write {key}=\"{}\"",
                    strip_braces(&src)
                ))
            } else {
                None
            };
            cx.error(DslError::BadExpression {
                keyword: key.to_string(),
                detail,
                span,
                help,
            });
            return None;
        }
        Some(Expr {
            src,
            loc: cx.loc(e.span()),
        })
    }

    fn include(&mut self, cx: &mut Cx, node: &KdlNode, role: Option<&Arc<RoleRef>>, state: &mut PlayState) {
        cx.extra_args(node, 1, "`include \"file.kdl\"` names one file");
        cx.no_children(node);
        let gate = self.gate(cx, node, "include", &[]);
        let Some((rel, span)) = cx.name_arg(node, "a file name", "`include \"tasks/backup.kdl\"`") else {
            return;
        };
        let path = cx.file().dir().join(&rel);
        let start = state.tasks.len();
        self.task_file(cx, &path, span, role, state, "included file");
        gate.apply(&mut state.tasks[start..]);
    }

    /// The `when=` and `tags=` properties of a `role` or `include` node; `also` names
    /// the other properties the caller reads itself.
    fn gate(&mut self, cx: &mut Cx, node: &KdlNode, kind: &str, also: &[&str]) -> Gate {
        let mut gate = Gate::default();
        let mut seen = Vec::new();
        for e in node.entries().iter() {
            let Some(name) = e.name() else { continue };
            if cx.repeated(&mut seen, name.value(), e.span()) {
                continue;
            }
            match name.value() {
                "when" => gate.when = self.expr(cx, "when", e),
                "tags" => tags(cx, e, &mut gate.tags),
                other if also.contains(&other) => {}
                other => {
                    let known: Vec<&str> = ["when", "tags"].iter().chain(also).copied().collect();
                    cx.unknown_prop(kind, other, e.span(), &known)
                }
            }
        }
        gate
    }

    /// Reads a task file and decodes its `task`/`include`/`role` nodes into `state`.
    fn task_file(
        &mut self,
        cx: &mut Cx,
        path: &Path,
        span: SourceSpan,
        role: Option<&Arc<RoleRef>>,
        state: &mut PlayState,
        what: &'static str,
    ) {
        let Some(file) = self.open(cx, path, span, what) else {
            return;
        };
        let key = canonical(path);
        self.stack.push(key);
        cx.in_file(file, |cx| {
            if let Some(doc) = cx.parse() {
                for node in doc.nodes() {
                    match node.name().value() {
                        "task" | "include" | "role" => self.task_file_node(cx, node, role, state),
                        "handler" => cx.error(DslError::UnknownNode {
                            name: "handler".into(),
                            context: "a task file",
                            span: node.name().span(),
                            help: Some("handlers belong in the play, or in a role's handlers.kdl".into()),
                        }),
                        other => self.unexpected(cx, node, other, "a task file", TASK_FILE_NODES),
                    }
                }
            }
        });
        self.stack.pop();
    }

    /// Reads a file another one refers to; reports missing files and cycles.
    fn open(
        &mut self,
        cx: &mut Cx,
        path: &Path,
        span: SourceSpan,
        what: &'static str,
    ) -> Option<Arc<SourceFile>> {
        let key = canonical(path);
        if self.stack.contains(&key) {
            cx.error(DslError::IncludeCycle {
                path: path.display().to_string(),
                span,
            });
            return None;
        }
        if self.stack.len() > 64 {
            cx.error(DslError::IncludeCycle {
                path: path.display().to_string(),
                span,
            });
            return None;
        }
        match read(path) {
            Ok(text) => {
                let file = Arc::new(SourceFile::new(path, &text));
                self.sources.files.insert(file.path.clone(), file.text.clone());
                Some(file)
            }
            Err(ReadError::NotUtf8(bad)) => {
                let (file, error) = bad.problem(path, what);
                cx.in_file(file, |cx| cx.error(error));
                None
            }
            Err(ReadError::Io(message)) => {
                cx.error(DslError::Io {
                    what,
                    path: path.display().to_string(),
                    message,
                    span: Some(span),
                });
                None
            }
        }
    }

    fn role(&mut self, cx: &mut Cx, node: &KdlNode, state: &mut PlayState) {
        cx.extra_args(node, 1, "`role NAME { vars { .. } }`");
        let gate = self.gate(cx, node, "role", &["tasks"]);
        let entry = node
            .entries()
            .iter()
            .find(|e| e.name().is_some_and(|n| n.value() == "tasks"))
            .and_then(|e| {
                cx.string(e, "`tasks` (the role's entry point)")
                    .map(|v| (v, e.span()))
            });
        let Some((name, span)) = cx.name_arg(node, "a role name", "`role etcd-node`") else {
            return;
        };
        let mut vars = Vars::new();
        let mut vars_seen = None;
        for child in node.children().map(|c| c.nodes()).unwrap_or_default() {
            if child.name().value() == "vars" && vars_seen.is_none() {
                vars_seen = Some(());
                vars_node(cx, child, &mut vars);
            } else {
                cx.unknown_node(child, "a role", &["vars"]);
            }
        }
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            cx.invalid(
                "role name",
                format!("`{name}` is not a role name"),
                span,
                Some("a role is named by its folder: `role etcd-node`".into()),
            );
            return;
        }
        let mut candidates = vec![self.playbook_dir.join("roles").join(&name)];
        candidates.extend(self.opts.roles_path.iter().map(|d| d.join(&name)));
        let Some(dir) = candidates.iter().find(|d| d.is_dir()).cloned() else {
            let looked: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
            cx.error(DslError::UnknownRole {
                name,
                span,
                help: format!(
                    "a role is a folder with tasks.kdl; looked in {} (add folders with --roles-path)",
                    looked.join(", ")
                ),
            });
            return;
        };
        let files = match self.role_files(cx, &dir, span) {
            Some(f) => f,
            None => return,
        };
        let tasks = match &entry {
            Some((entry, entry_span)) => match files.entry(entry) {
                Some(path) => path.clone(),
                None => {
                    let list = files.entry_list(&dir);
                    let help = if let Some(stem) = entry.strip_suffix(".kdl") {
                        format!("name the entry point without `.kdl`: tasks=\"{stem}\"")
                    } else {
                        let entry_points = format!("the entry points of `{name}` are its task files: {list}");
                        match suggest(entry, files.entries.iter().map(|(n, _)| n.as_str()))
                            .filter(|s| s.starts_with("did you mean"))
                        {
                            Some(close) => format!("{close} {entry_points}"),
                            None => entry_points,
                        }
                    };
                    cx.error(DslError::UnknownEntryPoint {
                        role: name,
                        name: entry.clone(),
                        span: *entry_span,
                        help,
                    });
                    return;
                }
            },
            None => match &files.tasks {
                Some(path) => path.clone(),
                None => {
                    cx.error(DslError::Io {
                        what: "role",
                        path: dir.display().to_string(),
                        message: format!(
                            "it has no tasks.kdl (or tasks/main.kdl) to run by default; name an entry point with tasks=\"..\" (it has {})",
                            files.entry_list(&dir)
                        ),
                        span: Some(span),
                    });
                    return;
                }
            },
        };
        let role = Arc::new(RoleRef {
            name,
            dir: dir.clone(),
            defaults: files.defaults.clone(),
            vars,
        });
        let start = state.tasks.len();
        self.task_file(cx, &tasks, span, Some(&role), state, "role tasks");
        gate.apply(&mut state.tasks[start..]);
        if let Some(h) = &files.handlers
            && state.role_handlers.insert(dir)
        {
            self.handler_file(cx, h, span, &role, state);
        }
    }

    /// The files of a role folder, read once per run.
    fn role_files(&mut self, cx: &mut Cx, dir: &Path, span: SourceSpan) -> Option<Arc<RoleFiles>> {
        if let Some(f) = self.roles.get(dir) {
            return Some(f.clone());
        }
        let tasks = [dir.join("tasks.kdl"), dir.join("tasks").join("main.kdl")]
            .into_iter()
            .find(|p| p.is_file());
        let entries = entry_points(dir);
        let handlers = Some(dir.join("handlers.kdl")).filter(|p| p.is_file());
        let defaults_path = dir.join("defaults.kdl");
        let mut defaults = Vars::new();
        let mut module_defaults = Vec::new();
        if defaults_path.is_file()
            && let Some(file) = self.open(cx, &defaults_path, span, "role defaults")
        {
            cx.in_file(file, |cx| {
                if let Some(doc) = cx.parse() {
                    // variables, and `module-defaults` blocks for the role's tasks
                    let is_md = |n: &KdlNode| n.name().value() == "module-defaults";
                    let mut vars_doc = doc.clone();
                    vars_doc.nodes_mut().retain(|n| !is_md(n));
                    crate::decode::value::vars_block(cx, &vars_doc, &mut defaults);
                    for node in doc.nodes().iter().filter(|n| is_md(n)) {
                        if let Some(d) = self.module_defaults(cx, node) {
                            module_defaults.push(d);
                        }
                    }
                }
            });
        }
        let files = Arc::new(RoleFiles {
            tasks,
            entries,
            handlers,
            defaults,
            module_defaults,
        });
        self.roles.insert(dir.to_path_buf(), files.clone());
        Some(files)
    }

    fn handler_file(
        &mut self,
        cx: &mut Cx,
        path: &Path,
        span: SourceSpan,
        role: &Arc<RoleRef>,
        state: &mut PlayState,
    ) {
        let Some(file) = self.open(cx, path, span, "role handlers") else {
            return;
        };
        cx.in_file(file, |cx| {
            if let Some(doc) = cx.parse() {
                for node in doc.nodes() {
                    if node.name().value() == "handler" {
                        if let Some(h) = self.task(cx, node, Some(role), state, true) {
                            self.add_handler(cx, state, h, node);
                        }
                    } else {
                        self.unexpected(cx, node, node.name().value(), "a handlers file", &["handler"]);
                    }
                }
            }
        });
    }
}

/// The entry points of a role folder (see [`RoleFiles::entries`]).
fn entry_points(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for (folder, top) in [(dir.to_path_buf(), true), (dir.join("tasks"), false)] {
        let Ok(listing) = std::fs::read_dir(&folder) else {
            continue;
        };
        let mut files: Vec<(String, PathBuf)> = listing
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "kdl") && p.is_file())
            .filter_map(|p| Some((p.file_stem()?.to_str()?.to_string(), p)))
            .filter(|(n, _)| !(top && (n == "defaults" || n == "handlers")))
            .collect();
        files.sort();
        for (name, path) in files {
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, path));
            }
        }
    }
    out
}

/// Tags from one value (`"a"` or `"a,b"`), added to `out` without repeats.
fn tags(cx: &mut Cx, e: &KdlEntry, out: &mut Vec<String>) {
    let Some(v) = cx.string(e, "`tags`") else {
        return;
    };
    for tag in v.split(',').map(str::trim) {
        if tag.is_empty() || tag.contains(char::is_whitespace) {
            cx.invalid(
                "tag",
                format!("`{tag}` is not a tag"),
                e.span(),
                Some("tags are words; give several as `tags \"a\" \"b\"` or tags=\"a,b\"".into()),
            );
        } else if !out.iter().any(|t| t == tag) {
            out.push(tag.to_string());
        }
    }
}

/// What a `role` or `include` node's `when=` and `tags=` put on every task it brings.
#[derive(Default)]
struct Gate {
    when: Option<Expr>,
    tags: Vec<String>,
}

impl Gate {
    /// Apply to the tasks the node expanded to: its `when` joins each task's own (both
    /// must hold, as Ansible does for a role's or an import's `when`), its tags add to
    /// each task's.
    fn apply(&self, tasks: &mut [Task]) {
        for task in tasks {
            if let Some(gate) = &self.when {
                task.when = Some(match task.when.take() {
                    Some(own) => Expr {
                        src: format!("({}) and ({})", gate.src, own.src),
                        loc: own.loc,
                    },
                    None => gate.clone(),
                });
            }
            for tag in &self.tags {
                if !task.tags.contains(tag) {
                    task.tags.push(tag.clone());
                }
            }
        }
    }
}

fn missing_value(cx: &mut Cx, node: &KdlNode) {
    let key = node.name().value();
    cx.error(DslError::Missing {
        node: key.to_string(),
        what: "a value".into(),
        span: node.name().span(),
        help: Some(format!("write `{key} value` (or `{key}=value` on the task)")),
    });
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

/// The expression inside a string that is exactly one `{{ expression }}`.
fn whole_template(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

fn strip_braces(s: &str) -> String {
    s.trim()
        .trim_start_matches("{{")
        .trim_end_matches("}}")
        .trim()
        .to_string()
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Checks what only an inventory can tell: that every `hosts` pattern term and every
/// literal `delegate-to` names a host or group that exists.
pub(crate) fn check_against_inventory(pb: &Playbook, inv: &Inventory) -> Result<(), miette::Report> {
    let mut problems = Problems::default();
    // each file is parsed again (only when it has a problem) to find the entry spans
    type Parsed = (usize, Arc<Option<kdl::KdlDocument>>);
    let mut files: HashMap<PathBuf, Parsed> = HashMap::new();
    let mut file_for = |problems: &mut Problems, path: &Path| -> Option<Parsed> {
        if let Some((i, doc)) = files.get(path) {
            return Some((*i, doc.clone()));
        }
        // a playbook built without its sources still gets its problems reported,
        // just without a snippet
        let text = pb.sources.get(path).cloned().unwrap_or_else(|| Arc::from(""));
        let file = Arc::new(SourceFile::new(path, &text));
        let idx = problems.add_file(&file);
        let doc = Arc::new(crate::decode::fast::parse(&text).or_else(|| kdl::KdlDocument::parse(&text).ok()));
        files.insert(path.to_path_buf(), (idx, doc.clone()));
        Some((idx, doc))
    };
    let hosts_known: Vec<&str> = inv
        .hosts
        .keys()
        .chain(inv.groups.keys())
        .map(String::as_str)
        .chain(["all", "localhost"])
        .collect();
    for play in &pb.plays {
        let missing: Vec<&str> = play
            .hosts
            .terms
            .iter()
            .map(|t| t.name())
            .filter(|t| !inv.term_exists(t))
            .collect();
        if !missing.is_empty() {
            let Some((idx, doc)) = file_for(&mut problems, &play.loc.file) else {
                continue;
            };
            let entry = doc
                .as_ref()
                .as_ref()
                .and_then(|d| find_node(d.nodes(), play.loc.span.offset()))
                .and_then(|n| n.entry("hosts").cloned());
            for name in missing {
                let span = entry
                    .as_ref()
                    .map(|e| term_span(e, &play.hosts.raw, name))
                    .unwrap_or(if doc.as_ref().is_some() {
                        play.loc.span
                    } else {
                        SourceSpan::from(0..0)
                    });
                let help = if crate::pattern::is_glob(name) {
                    Some("this glob matches no host or group".to_string())
                } else {
                    suggest(name, hosts_known.iter().copied())
                };
                problems.push(
                    idx,
                    DslError::UnknownHost {
                        name: name.to_string(),
                        span,
                        help,
                    },
                );
            }
        }
        for task in play.tasks.iter().chain(&play.handlers) {
            let Some(target) = &task.delegate_to else { continue };
            if is_template(target) || inv.host(target).is_some() {
                continue;
            }
            let Some((idx, doc)) = file_for(&mut problems, &task.loc.file) else {
                continue;
            };
            let span = doc
                .as_ref()
                .as_ref()
                .and_then(|d| find_node(d.nodes(), task.loc.span.offset()))
                .and_then(|n| {
                    n.entry("delegate-to").map(|e| e.span()).or_else(|| {
                        n.children()
                            .and_then(|c| c.nodes().iter().find(|c| c.name().value() == "delegate-to"))
                            .map(|c| c.span())
                    })
                })
                .unwrap_or(if doc.as_ref().is_some() {
                    task.loc.span
                } else {
                    SourceSpan::from(0..0)
                });
            let help = suggest(target, inv.hosts.keys().map(String::as_str).chain(["localhost"]));
            problems.push(
                idx,
                DslError::UnknownHost {
                    name: target.clone(),
                    span,
                    help,
                },
            );
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    problems.finish(&pb.path.display().to_string())
}

/// The node starting at `offset`, searching nested blocks.
fn find_node(nodes: &[KdlNode], offset: usize) -> Option<&KdlNode> {
    for n in nodes {
        let s = n.span();
        if s.offset() == offset {
            return Some(n);
        }
        if s.offset() < offset && offset < s.offset() + s.len() {
            return n.children().and_then(|c| find_node(c.nodes(), offset));
        }
    }
    None
}

/// The span of one term inside a `hosts="..."` entry.
fn term_span(e: &KdlEntry, raw: &str, name: &str) -> SourceSpan {
    let mut start = 0;
    for piece in raw.split([':', ',']) {
        let trimmed = piece.trim().trim_start_matches(['&', '!']).trim();
        if trimmed == name {
            let lead = piece.find(name).unwrap_or(0);
            return inner_span(e, raw, Some(start + lead..start + lead + name.len()));
        }
        start += piece.len() + 1;
    }
    e.span()
}
