//! Tasks and handlers: the task node, its keywords (as properties or children), and
//! the `module-defaults` that fill in its module's arguments.

use super::*;

/// Task keywords: each may be a property (`when="x"`) or a child node (`when "x"`).
pub(super) const TASK_KEYWORDS: &[&str] = &[
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
pub(super) const DEFAULT_DELAY: Duration = Duration::from_secs(5);
/// Attempts after the first when `until` is given without `retries` (Ansible's default).
pub(super) const DEFAULT_UNTIL_RETRIES: u32 = 3;

impl<'a> Loader<'a> {
    pub(super) fn module_defaults(&mut self, cx: &mut Cx, node: &KdlNode) -> Option<ModuleDefaults> {
        let specs: Vec<&ModuleSpec> = self.specs.iter().collect();
        crate::args::module_defaults(cx, &mut self.env, &specs, node)
    }

    /// The `module-defaults` arguments a task of `module` gets, each from the nearest
    /// scope that gives it: the task's role (its `defaults.kdl`), then the play; within
    /// a scope a later block wins over an earlier one. The task's own arguments win
    /// over all of them (`module_args`).
    pub(super) fn defaults_for(
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

    /// A `task` (or, with `handler`, a handler) node.
    pub(super) fn task(
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
    pub(super) fn keyword_node(
        &mut self,
        cx: &mut Cx,
        node: &KdlNode,
        task: &mut Task,
        state: &mut PlayState,
    ) {
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
    pub(super) fn keyword(
        &mut self,
        cx: &mut Cx,
        key: &str,
        e: &KdlEntry,
        task: &mut Task,
        state: &mut PlayState,
    ) {
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
    pub(super) fn bool_or_expr(&mut self, cx: &mut Cx, key: &str, e: &KdlEntry) -> Option<Expr> {
        match e.value() {
            KdlValue::Bool(b) => Some(Expr {
                src: if *b { "true".into() } else { "false".into() },
                loc: cx.loc(e.span()),
            }),
            _ => self.expr(cx, key, e),
        }
    }

    /// A template expression (no braces), compiled now so syntax errors surface early.
    pub(super) fn expr(&mut self, cx: &mut Cx, key: &str, e: &KdlEntry) -> Option<Expr> {
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
}

/// Tags from one value (`"a"` or `"a,b"`), added to `out` without repeats.
pub(super) fn tags(cx: &mut Cx, e: &KdlEntry, out: &mut Vec<String>) {
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

pub(super) fn missing_value(cx: &mut Cx, node: &KdlNode) {
    let key = node.name().value();
    cx.error(DslError::Missing {
        node: key.to_string(),
        what: "a value".into(),
        span: node.name().span(),
        help: Some(format!("write `{key} value` (or `{key}=value` on the task)")),
    });
}

/// The expression inside a string that is exactly one `{{ expression }}`.
pub(super) fn whole_template(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

pub(super) fn strip_braces(s: &str) -> String {
    s.trim()
        .trim_start_matches("{{")
        .trim_end_matches("}}")
        .trim()
        .to_string()
}
