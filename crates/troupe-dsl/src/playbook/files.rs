//! What a play pulls in from other files: `include`d task files (with the `when=` and
//! `tags=` they put on every task they bring), roles (their entry points, defaults,
//! `module-defaults` and handlers), and the reading of each file, with cycles caught.

use super::task::tags;
use super::*;

pub(super) struct RoleFiles {
    /// The default entry point: `tasks.kdl` or `tasks/main.kdl`, if the role has one.
    pub(super) tasks: Option<PathBuf>,
    /// Every entry point `role NAME tasks="ENTRY"` may name, by name, sorted: the
    /// `.kdl` files in the role's folder (but `defaults.kdl` and `handlers.kdl`), then
    /// those in its `tasks/` folder.
    pub(super) entries: Vec<(String, PathBuf)>,
    pub(super) handlers: Option<PathBuf>,
    pub(super) defaults: Vars,
    /// The `module-defaults` blocks of the role's `defaults.kdl`, in the order written.
    pub(super) module_defaults: Vec<ModuleDefaults>,
}

impl RoleFiles {
    pub(super) fn entry(&self, name: &str) -> Option<&PathBuf> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }

    /// The entry points as file names relative to the role folder, for help texts.
    pub(super) fn entry_list(&self, dir: &Path) -> String {
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

impl<'a> Loader<'a> {
    pub(super) fn include(
        &mut self,
        cx: &mut Cx,
        node: &KdlNode,
        role: Option<&Arc<RoleRef>>,
        state: &mut PlayState,
    ) {
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
    pub(super) fn gate(&mut self, cx: &mut Cx, node: &KdlNode, kind: &str, also: &[&str]) -> Gate {
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
    pub(super) fn task_file(
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
    pub(super) fn open(
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

    pub(super) fn role(&mut self, cx: &mut Cx, node: &KdlNode, state: &mut PlayState) {
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
    pub(super) fn role_files(&mut self, cx: &mut Cx, dir: &Path, span: SourceSpan) -> Option<Arc<RoleFiles>> {
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

    pub(super) fn handler_file(
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
pub(super) fn entry_points(dir: &Path) -> Vec<(String, PathBuf)> {
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

/// What a `role` or `include` node's `when=` and `tags=` put on every task it brings.
#[derive(Default)]
pub(super) struct Gate {
    when: Option<Expr>,
    tags: Vec<String>,
}

impl Gate {
    /// Apply to the tasks the node expanded to: its `when` joins each task's own (both
    /// must hold, as Ansible does for a role's or an import's `when`), its tags add to
    /// each task's.
    pub(super) fn apply(&self, tasks: &mut [Task]) {
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
